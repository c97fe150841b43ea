"""Checkpoint -> GGUF, streaming with bounded memory.

Order of work: validate the checkpoint's file set and dimensions, read the tokenizer and build every
metadata key and tensor info (all sizes are known from the plan) before any output exists; then
write header, metadata and tensor infos to ``OUT.part`` and stream the tensor data one file, one
expert, one chunk of output rows at a time: dequantize (the exact int8 x bf16 scale product, in
float32, as the official code) -> transpose to [out, in] -> round once or quantize (native, threaded)
-> append. Pages of the input map are dropped once consumed, so peak RSS stays near one chunk
(<= 64 MiB of float32) plus one expert slice of int8, whatever the model size. ``OUT.part`` is
fsynced and renamed; any error or Ctrl-C removes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from edge.convert.mapping import TensorTarget, metadata, target_for
from edge.convert.recipe import FILE_TYPES, choose_type
from edge.convert.release import DEFAULT_KEY_SIZE, Checkpoint, dequantize_transposed, open_checkpoint
from edge.convert.safe_pickle import Leaf, QuantizedWeight8bit, drop_pages
from tqdm import tqdm

CHUNK_BYTES = 64 << 20  # float32 bytes per quantize call: bounds the working set
# The converter's output revision: bumped whenever the same checkpoint and preset give other bytes, so
# caches of converted files (the demo's) know to convert again. 2: exact int8 x bf16 products.
CONVERTER_REVISION = 2
GGML_TYPES = {t.name: int(t) for t in gguf.GGMLQuantizationType}
AddTokenizer = Callable[[gguf.GGUFWriter, "str | os.PathLike[str]"], None]


@dataclass(frozen=True)
class PlannedTensor:
    spec_index: int
    target: TensorTarget
    qtype: str
    nbytes: int
    n_elements: int


def row_bytes(qtype: str, n: int) -> int:
    from edge import quant  # the native library; imported late so --help works without it

    return quant.row_bytes(qtype, n)


def plan_conversion(ckpt: Checkpoint, preset: str, overrides: Mapping[str, str]) -> list[PlannedTensor]:
    plan = []
    for spec in ckpt.specs:
        target = target_for(spec)
        qtype = choose_type(preset, target, ckpt.shape.n_layers, overrides)
        nbytes = target.n_rows * row_bytes(qtype, target.row_length)
        plan.append(PlannedTensor(spec.index, target, qtype, nbytes, target.n_rows * target.row_length))
    return plan


def describe_plan(plan: list[PlannedTensor]) -> str:
    """Per class: types, parameters, bytes, bits per weight; and the total."""
    classes: dict[str, list[PlannedTensor]] = {}
    for t in plan:
        classes.setdefault(t.target.tensor_class, []).append(t)
    lines = [f"{'class':<15}{'types':<22}{'params':>14}{'MiB':>12}{'bpw':>8}"]
    for cls, items in classes.items():
        types = ",".join(sorted({t.qtype for t in items}))
        n = sum(t.n_elements for t in items)
        b = sum(t.nbytes for t in items)
        lines.append(f"{cls:<15}{types:<22}{n:>14,}{b / 2**20:>12.1f}{8 * b / n:>8.3f}")
    n = sum(t.n_elements for t in plan)
    b = sum(t.nbytes for t in plan)
    lines.append(f"{'total':<15}{'':<22}{n:>14,}{b / 2**20:>12.1f}{8 * b / n:>8.3f}")
    lines.append(f"output size: {b / 2**30:.3f} GiB of tensor data plus metadata ({len(plan)} tensors)")
    return "\n".join(lines)


def _source_chunks(leaf: Leaf, target: TensorTarget, buf) -> Iterator[tuple[np.ndarray, int]]:
    """float32 chunks of GGUF rows ([k, row_length]) in GGUF order, with the input bytes they consumed."""
    n_in = target.row_length
    rows_per_chunk = max(1, CHUNK_BYTES // (4 * n_in))
    if not target.transpose:  # embeddings (rows already) and 1-D norms
        arr = leaf if isinstance(leaf, np.ndarray) else None
        assert arr is not None
        if arr.ndim == 1:
            yield np.asarray(arr, dtype=np.float32).reshape(1, -1), arr.nbytes
            return
        for r0 in range(0, arr.shape[0], rows_per_chunk):
            part = arr[r0 : r0 + rows_per_chunk]
            yield np.asarray(part, dtype=np.float32), part.nbytes
            drop_pages(buf, part)
        return
    if isinstance(leaf, QuantizedWeight8bit):
        weights, scales = leaf.weight, leaf.scales
        if weights.ndim == 2:
            weights, scales = weights[None], scales[None]
        for e in range(weights.shape[0]):
            w_e, s_e = weights[e], scales[e]  # [in, out], [1 or 8, out]
            n_out = w_e.shape[1]
            for o0 in range(0, n_out, rows_per_chunk):
                o1 = min(n_out, o0 + rows_per_chunk)
                rows = dequantize_transposed(QuantizedWeight8bit(w_e[:, o0:o1], s_e[:, o0:o1]))
                yield rows, w_e[:, o0:o1].nbytes + s_e[:, o0:o1].nbytes
            drop_pages(buf, w_e)
        return
    arr = np.asarray(leaf, dtype=np.float32)  # the router, [d, n_experts]
    yield np.ascontiguousarray(arr.T), arr.nbytes


def _add_metadata(
    writer: gguf.GGUFWriter, ckpt: Checkpoint, preset: str, name: str, context_length: int
) -> None:
    writer.add_name(name)
    writer.add_file_type(FILE_TYPES[preset])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, (kind, value) in metadata(ckpt.shape, context_length).items():
        if kind == "u32":
            writer.add_uint32(key, int(value))  # type: ignore[arg-type]
        else:
            writer.add_float32(key, float(value))  # type: ignore[arg-type]


def _default_add_tokenizer() -> AddTokenizer:
    from edge.convert.tokenizer import add_tokenizer

    return add_tokenizer


def convert_checkpoint(
    ckpt_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    tokenizer_path: str | os.PathLike[str],
    *,
    preset: str = "q4_k_m",
    overrides: Mapping[str, str] | None = None,
    threads: int = 0,
    force: bool = False,
    key_size: int = DEFAULT_KEY_SIZE,
    context_length: int = 8192,
    name: str = "Grok-1",
    add_tokenizer: AddTokenizer | None = None,
    show_progress: bool = True,
) -> list[PlannedTensor]:
    """Convert a release-format ``ckpt-0`` directory to ``out_path`` (GGUF v3, architecture grok)."""
    from edge import quant

    out = Path(out_path)
    if out.exists() and not force:
        raise FileExistsError(f"{out}: exists (use --force to overwrite)")
    ckpt = open_checkpoint(ckpt_dir, key_size)
    plan = plan_conversion(ckpt, preset, overrides or {})

    writer = gguf.GGUFWriter(None, "grok")
    _add_metadata(writer, ckpt, preset, name, context_length)
    (add_tokenizer or _default_add_tokenizer())(writer, tokenizer_path)
    tokens = writer.kv_data[0].get(gguf.Keys.Tokenizer.LIST)
    if tokens is not None and len(tokens.value) != ckpt.shape.vocab_size:
        raise ValueError(
            f"{tokenizer_path}: {len(tokens.value)} pieces, but the checkpoint's vocabulary is "
            f"{ckpt.shape.vocab_size} rows"
        )
    for t in plan:
        writer.add_tensor_info(
            t.target.name,
            t.target.gguf_shape,
            np.dtype(np.float32),
            t.nbytes,
            gguf.GGMLQuantizationType(GGML_TYPES[t.qtype]),
        )

    part = out.with_name(out.name + ".part")
    total_in = ckpt.total_bytes
    bar = tqdm(
        total=total_in,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"convert {preset}",
        disable=not show_progress,
        file=sys.stderr,
    )
    try:
        writer.write_header_to_file(path=part)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        writer.write_padding(fout, fout.tell())
        for t in plan:
            spec = ckpt.specs[t.spec_index]
            leaf, buf = ckpt.read_mapped(spec)
            written = 0
            consumed = 0
            for rows, n_in_bytes in _source_chunks(leaf, t.target, buf):
                data = quant.quantize(rows, t.qtype, n_threads=threads)
                fout.write(memoryview(data).cast("B") if data.flags.c_contiguous else data.tobytes())
                written += data.nbytes
                consumed += n_in_bytes
                bar.update(n_in_bytes)
            if written != t.nbytes:
                raise RuntimeError(f"{t.target.name}: wrote {written} bytes, planned {t.nbytes}")
            bar.update(max(0, ckpt.path_of(spec).stat().st_size - consumed))  # pickle framing bytes
            writer.write_padding(fout, t.nbytes)
            del leaf, buf
        fout.flush()
        os.fsync(fout.fileno())
        writer.close()
        os.replace(part, out)
        _fsync_dir(out.parent)
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return plan


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
