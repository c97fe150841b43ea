"""The Grok-1 release checkpoint (``ckpt-0``): validated reading and exact-format writing.

Reading: ``open_checkpoint(ckpt_dir)`` checks the file set (``tensor00000_000`` ..., none missing,
none extra), infers the dimensions from a few pickle headers (memory-mapped, no tensor data read),
and yields each leaf with its module path in file order. ``dequantize`` gives the float32 values
the official code computes: it writes ``weight.astype(bf16) * scales``, but XLA keeps that product
in float32 (the bf16 round trip is removed as excess precision), and the product of an int8 and a
bf16 scale (8 x 8 significant bits) is exact in float32. So the weights are that exact product, not
rounded to bf16 (see docs/grok1.md, "Checkpoint on disk").

Writing: ``write_checkpoint(out_dir, params, ...)`` for the train helper and tests, and
``write_module`` for streaming generators.
"""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edge.convert.layout import (
    EMBED_PATH,
    FILES_PER_LAYER,
    ROW_PARALLEL_BLOCKS,
    TOP_LEVEL_FILES,
    CheckpointShape,
    Kind,
    LeafSpec,
    leaf_specs,
    module_kind,
    module_paths,
    validate_shape,
)
from edge.convert.safe_pickle import (
    BF16,
    CheckpointFormatError,
    Leaf,
    QuantizedWeight8bit,
    read_leaf,
    read_leaf_mapped,
    write_leaf,
)

_FILE_RE = re.compile(r"^tensor(\d{5})_(\d{3})$")
DEFAULT_KEY_SIZE = 128  # run.py's key_size; not recoverable from shapes (only heads x key_size is)


# ---------------------------------------------------------------------------------------------------
# quantization as in the release


def dequantize(leaf: Leaf) -> np.ndarray:
    """float32 values the official code uses: the exact int8 x bf16 scale product, per scale block."""
    if not isinstance(leaf, QuantizedWeight8bit):
        return np.asarray(leaf, dtype=np.float32)
    w, s = leaf.weight, leaf.scales.astype(np.float32)
    blocks = s.shape[-2]
    n_in = w.shape[-2]
    wf = w.astype(np.float32)
    if blocks == 1:
        prod = wf * s
    else:
        shaped = wf.reshape(*w.shape[:-2], blocks, n_in // blocks, w.shape[-1])
        prod = (shaped * s[..., :, None, :]).reshape(w.shape)
    return prod  # exact: |int8| < 2^8 times an 8-bit significand fits float32's 24 bits


def _transpose_int8(w: np.ndarray, block: int = 16) -> np.ndarray:
    """[in, out] -> contiguous [out, in], in blocks of input rows (a plain .T copy is ~5x slower)."""
    n_in, n_out = w.shape
    out = np.empty((n_out, n_in), dtype=w.dtype)
    for i in range(0, n_in, block):
        out[:, i : i + block] = w[i : i + block].T
    return out


def dequantize_transposed(leaf: QuantizedWeight8bit) -> np.ndarray:
    """``dequantize(leaf).T`` for a 2-D [in, out] weight, as contiguous float32 [out, in]; same values."""
    w, s = leaf.weight, leaf.scales
    n_in, n_out = w.shape
    blocks = s.shape[0]
    wt = _transpose_int8(w).astype(np.float32).reshape(n_out, blocks, n_in // blocks)
    wt *= s.astype(np.float32).T[:, :, None]  # int8 x bf16 is exact in float32
    return wt.reshape(n_out, n_in)


def quantize_release(x: np.ndarray, kind: Kind) -> QuantizedWeight8bit:
    """Symmetric int8 with one bf16 scale per output channel (per input block for row-parallel)."""
    x = np.asarray(x, dtype=np.float32)
    blocks = 1 if kind is Kind.COLUMN_PARALLEL else ROW_PARALLEL_BLOCKS
    n_in, n_out = x.shape[-2], x.shape[-1]
    if n_in % blocks:
        raise ValueError(f"input dim {n_in} is not a multiple of {blocks}")
    shaped = x.reshape(*x.shape[:-2], blocks, n_in // blocks, n_out)
    amax = np.abs(shaped).max(axis=-2)  # [.., blocks, out]
    scales = (np.maximum(amax, 1e-30) / 127.0).astype(BF16)
    s32 = scales.astype(np.float32)[..., :, None, :]
    q = np.clip(np.rint(shaped / s32), -127, 127).astype(np.int8).reshape(x.shape)
    return QuantizedWeight8bit(q, scales)


def write_module(
    out_dir: str | os.PathLike[str], spec: LeafSpec, values: np.ndarray | QuantizedWeight8bit
) -> None:
    """Write one file of the release: float arrays as float32, matrices quantized per ``spec.kind``."""
    if isinstance(values, QuantizedWeight8bit):
        leaf: Leaf = values
    elif spec.kind is Kind.FLOAT:
        leaf = np.ascontiguousarray(values, dtype=np.float32)
    else:
        leaf = quantize_release(values, spec.kind)
    if leaf.shape != spec.shape:
        raise ValueError(f"{spec.path}: shape {leaf.shape}, the release layout needs {spec.shape}")
    write_leaf(Path(out_dir) / spec.file_name, leaf)


def write_checkpoint(
    out_dir: str | os.PathLike[str],
    params: Mapping[str, np.ndarray | QuantizedWeight8bit],
    *,
    key_size: int = DEFAULT_KEY_SIZE,
) -> CheckpointShape:
    """Write a release-format ``ckpt-0`` directory from float parameters keyed by official module path.

    ``params`` maps every module path (``language_model/in_out_embed``, ``language_model/rms_norm``,
    ``transformer/decoder_layer_N/{moe/linear, moe/linear_1, moe/linear_v, multi_head_attention/{key,
    linear, query, value}, rms_norm, rms_norm_1, rms_norm_2, rms_norm_3, router}``) to an array in the
    official shape: matrices [in, out], experts [n_experts, in, out], norms [d_model], embeddings
    [vocab, d_model], router [d_model, n_experts]. Embeddings, norms and routers are written float32;
    every other matrix as QuantizedWeight8bit (int8, bf16 scales [.., 1, out] for q/k/v and expert
    linear/linear_v, [.., 8, out] for attention linear and expert linear_1). A value may also be a
    ready QuantizedWeight8bit. ``key_size`` (head dim) splits q/k widths into heads. Files go to
    ``out_dir/tensor{i:05d}_000`` in the official (sorted module path) order. Returns the shape.
    """
    shape = shape_from_params(params, key_size)
    expected = set(module_paths(shape.n_layers))
    if set(params) != expected:
        missing, extra = sorted(expected - set(params)), sorted(set(params) - expected)
        raise ValueError(
            f"params do not match the Grok-1 module set: missing {missing[:5]}, extra {extra[:5]}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for spec in leaf_specs(shape):
        write_module(out, spec, params[spec.path])
    return shape


def shape_from_params(
    params: Mapping[str, np.ndarray | QuantizedWeight8bit], key_size: int
) -> CheckpointShape:
    layers = {p.split("/")[1] for p in params if p.startswith("transformer/decoder_layer_")}
    vocab, d_model = params[EMBED_PATH].shape
    q = params["transformer/decoder_layer_0/multi_head_attention/query"].shape
    k = params["transformer/decoder_layer_0/multi_head_attention/key"].shape
    e, _, ffn = params["transformer/decoder_layer_0/moe/linear"].shape
    return _checked_shape(vocab, d_model, len(layers), q[1], k[1], key_size, ffn, e, "params")


def _checked_shape(
    vocab: int, d: int, n_layers: int, q_dim: int, kv_dim: int, key_size: int, ffn: int, e: int, where: str
) -> CheckpointShape:
    if q_dim % key_size or kv_dim % key_size:
        raise CheckpointFormatError(
            f"{where}: query/key widths {q_dim}/{kv_dim} are not multiples of key size {key_size}"
        )
    shape = CheckpointShape(vocab, d, n_layers, q_dim // key_size, kv_dim // key_size, key_size, ffn, e)
    try:
        validate_shape(shape)
    except ValueError as exc:
        raise CheckpointFormatError(f"{where}: {exc}") from exc
    return shape


# ---------------------------------------------------------------------------------------------------
# reading


@dataclass
class Checkpoint:
    """A validated ``ckpt-0`` directory: its dimensions and the spec of every file, in file order."""

    directory: Path
    shape: CheckpointShape
    specs: list[LeafSpec]

    def path_of(self, spec: LeafSpec) -> Path:
        return self.directory / spec.file_name

    def read(self, spec: LeafSpec) -> Leaf:
        """Parse one file (memory-mapped) and check its type, dtype and shape against the layout."""
        file = self.path_of(spec)
        leaf = read_leaf(file)
        check_leaf(file, spec, leaf)
        return leaf

    def read_mapped(self, spec: LeafSpec) -> tuple[Leaf, mmap.mmap]:
        """``read`` plus the file's map (for ``drop_pages`` while streaming)."""
        file = self.path_of(spec)
        leaf, buf = read_leaf_mapped(file)
        check_leaf(file, spec, leaf)
        return leaf, buf

    def leaves(self) -> Iterator[tuple[LeafSpec, Leaf]]:
        for spec in self.specs:
            yield spec, self.read(spec)

    @property
    def total_bytes(self) -> int:
        return sum(self.path_of(s).stat().st_size for s in self.specs)


def check_leaf(file: Path, spec: LeafSpec, leaf: Leaf) -> None:
    if spec.kind is Kind.FLOAT:
        if isinstance(leaf, QuantizedWeight8bit):
            raise CheckpointFormatError(
                f"{file}: {spec.path} should be a float32 array, found QuantizedWeight8bit"
            )
        if leaf.dtype != np.float32 or leaf.shape != spec.shape:
            raise CheckpointFormatError(
                f"{file}: {spec.path} should be float32 {spec.shape}, found {leaf.dtype} {leaf.shape}"
            )
        return
    if not isinstance(leaf, QuantizedWeight8bit):
        raise CheckpointFormatError(f"{file}: {spec.path} should be a QuantizedWeight8bit, found an array")
    if leaf.weight.dtype != np.int8 or leaf.weight.shape != spec.shape:
        raise CheckpointFormatError(
            f"{file}: {spec.path} weight should be int8 {spec.shape}, "
            f"found {leaf.weight.dtype} {leaf.weight.shape}"
        )
    if leaf.scales.dtype != BF16 or leaf.scales.shape != spec.scales_shape:
        raise CheckpointFormatError(
            f"{file}: {spec.path} scales should be bfloat16 {spec.scales_shape}, "
            f"found {leaf.scales.dtype} {leaf.scales.shape}"
        )


def open_checkpoint(ckpt_dir: str | os.PathLike[str], key_size: int = DEFAULT_KEY_SIZE) -> Checkpoint:
    """Validate the file set of ``ckpt_dir`` (the ``ckpt-0`` directory) and infer its dimensions."""
    directory = Path(ckpt_dir)
    if not directory.is_dir():
        raise CheckpointFormatError(f"{directory}: not a directory")
    indices: list[int] = []
    for entry in sorted(os.listdir(directory)):
        m = _FILE_RE.match(entry)
        if not m:
            raise CheckpointFormatError(
                f"{directory / entry}: unexpected file in a Grok-1 checkpoint directory"
            )
        if m.group(2) != "000":
            raise CheckpointFormatError(f"{directory / entry}: only host shard 000 is supported")
        indices.append(int(m.group(1)))
    n = len(indices)
    present = set(indices)
    for i in range(max(indices, default=-1) + 1):  # a gap names the missing file
        if i not in present:
            raise CheckpointFormatError(f"{directory / f'tensor{i:05d}_000'}: missing tensor file")
    rest = (n - TOP_LEVEL_FILES) % FILES_PER_LAYER
    if n < TOP_LEVEL_FILES + FILES_PER_LAYER or rest:
        # no gap: files are missing at the end or extra ones follow; name the nearer explanation
        if n > TOP_LEVEL_FILES + FILES_PER_LAYER and rest <= FILES_PER_LAYER // 2:
            first_extra = n - rest
            what = "extra tensor file"
        else:
            first_extra = n
            what = "missing tensor file"
        raise CheckpointFormatError(
            f"{directory / f'tensor{first_extra:05d}_000'}: {what} ({n} files found; a Grok-1 checkpoint "
            "has 2 + 12 per layer, 770 for the release)"
        )
    n_layers = (n - TOP_LEVEL_FILES) // FILES_PER_LAYER

    paths = module_paths(n_layers)
    index_of = {p: i for i, p in enumerate(paths)}

    def peek(path: str) -> tuple[int, ...]:
        file = directory / f"tensor{index_of[path]:05d}_000"
        leaf = read_leaf(file)
        return tuple(leaf.shape)

    vocab_d = peek(EMBED_PATH)
    q = peek("transformer/decoder_layer_0/multi_head_attention/query")
    k = peek("transformer/decoder_layer_0/multi_head_attention/key")
    moe = peek("transformer/decoder_layer_0/moe/linear")
    if len(vocab_d) != 2 or len(q) != 2 or len(k) != 2 or len(moe) != 3:
        raise CheckpointFormatError(f"{directory}: embedding/query/key/expert tensors have unexpected ranks")
    shape = _checked_shape(
        vocab_d[0], vocab_d[1], n_layers, q[1], k[1], key_size, moe[2], moe[0], str(directory)
    )
    specs = leaf_specs(shape)
    assert [s.path for s in specs] == paths and all(module_kind(s.path) is s.kind for s in specs)
    return Checkpoint(directory, shape, specs)
