"""The parameter tree of the official Grok-1 release: module paths, file order, shapes, scale layouts.

Facts from xai-org/grok-1 (model.py, checkpoint.py; see docs/grok1.md):
- haiku names every parameter by module path; the checkpoint holds one file per module parameter,
  ``ckpt-0/tensor{i:05d}_000``, file i being the i-th leaf of ``jax.tree_util`` flattening, which
  sorts dict keys as strings. So the order is the SORTED list of module paths (layers 0, 1, 10, 11,
  ..., 19, 2, 20, ...), derived here by sorting, never by counting.
- ``QuantizedWeight8bit`` is a pytree node in model.py, but the loader flattens the *shape* tree
  (one ShapeDtypeStruct per parameter) and unpickles one whole object per file; so each file holds
  either a plain array or a whole ``QuantizedWeight8bit(weight, scales)``: 2 + 12 per layer files.
- Linear weights are stored [in, out] (experts [E, in, out]); int8 with bf16 scales. Column-parallel
  modules (q, k, v, expert ``linear``/``linear_v``) have scales [1, out] ([E, 1, out]); row-parallel
  modules (attention ``linear`` = Wo, expert ``linear_1`` = W2) have scales [8, out] ([E, 8, out]):
  the input dimension is split into 8 equal blocks and block b uses scale row b.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ROW_PARALLEL_BLOCKS = 8  # the release shards row-parallel weights 8 ways on the input dim


class Kind(Enum):
    """How a module's parameter is stored."""

    FLOAT = "float32 array"
    COLUMN_PARALLEL = "int8 + bf16 scales [.., 1, out]"
    ROW_PARALLEL = "int8 + bf16 scales [.., 8, out]"


# module path suffix inside transformer/decoder_layer_N -> (storage kind, is expert-stacked)
LAYER_MODULES: dict[str, tuple[Kind, bool]] = {
    "moe/linear": (Kind.COLUMN_PARALLEL, True),
    "moe/linear_1": (Kind.ROW_PARALLEL, True),
    "moe/linear_v": (Kind.COLUMN_PARALLEL, True),
    "multi_head_attention/key": (Kind.COLUMN_PARALLEL, False),
    "multi_head_attention/linear": (Kind.ROW_PARALLEL, False),
    "multi_head_attention/query": (Kind.COLUMN_PARALLEL, False),
    "multi_head_attention/value": (Kind.COLUMN_PARALLEL, False),
    "rms_norm": (Kind.FLOAT, False),
    "rms_norm_1": (Kind.FLOAT, False),
    "rms_norm_2": (Kind.FLOAT, False),
    "rms_norm_3": (Kind.FLOAT, False),
    "router": (Kind.FLOAT, False),
}
EMBED_PATH = "language_model/in_out_embed"
FINAL_NORM_PATH = "language_model/rms_norm"
FILES_PER_LAYER = len(LAYER_MODULES)
TOP_LEVEL_FILES = 2


def layer_path(layer: int, module: str) -> str:
    return f"transformer/decoder_layer_{layer}/{module}"


def parse_layer_path(path: str) -> tuple[int, str] | None:
    """``transformer/decoder_layer_N/module`` -> (N, module); None for a top-level path."""
    prefix = "transformer/decoder_layer_"
    if not path.startswith(prefix):
        return None
    layer, _, module = path[len(prefix) :].partition("/")
    return int(layer), module


@dataclass(frozen=True)
class CheckpointShape:
    """The dimensions that fix every tensor shape of a release-format checkpoint."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_q_heads: int
    n_kv_heads: int
    key_size: int
    ffn_size: int
    n_experts: int

    @property
    def q_dim(self) -> int:
        return self.n_q_heads * self.key_size

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.key_size


@dataclass(frozen=True)
class LeafSpec:
    """One checkpoint file: its module path, storage kind, and the shape of its (dequantized) array."""

    index: int
    path: str
    kind: Kind
    shape: tuple[int, ...]

    @property
    def file_name(self) -> str:
        return f"tensor{self.index:05d}_000"

    @property
    def scales_shape(self) -> tuple[int, ...]:
        if self.kind is Kind.FLOAT:
            raise ValueError(f"{self.path} is not quantized")
        rows = 1 if self.kind is Kind.COLUMN_PARALLEL else ROW_PARALLEL_BLOCKS
        return (*self.shape[:-2], rows, self.shape[-1])


def module_paths(n_layers: int) -> list[str]:
    """All module paths of the release, in checkpoint file order (sorted as strings, like jax)."""
    paths = [EMBED_PATH, FINAL_NORM_PATH]
    paths += [layer_path(i, m) for i in range(n_layers) for m in LAYER_MODULES]
    return sorted(paths)


def module_shape(path: str, s: CheckpointShape) -> tuple[int, ...]:
    """The official [in, out] (experts [E, in, out]) shape of a module's parameter."""
    if path == EMBED_PATH:
        return (s.vocab_size, s.d_model)
    if path == FINAL_NORM_PATH:
        return (s.d_model,)
    parsed = parse_layer_path(path)
    if parsed is None:
        raise KeyError(path)
    module = parsed[1]
    shapes = {
        "moe/linear": (s.n_experts, s.d_model, s.ffn_size),
        "moe/linear_1": (s.n_experts, s.ffn_size, s.d_model),
        "moe/linear_v": (s.n_experts, s.d_model, s.ffn_size),
        "multi_head_attention/key": (s.d_model, s.kv_dim),
        "multi_head_attention/linear": (s.q_dim, s.d_model),
        "multi_head_attention/query": (s.d_model, s.q_dim),
        "multi_head_attention/value": (s.d_model, s.kv_dim),
        "router": (s.d_model, s.n_experts),
    }
    return shapes.get(module, (s.d_model,))


def module_kind(path: str) -> Kind:
    if path in (EMBED_PATH, FINAL_NORM_PATH):
        return Kind.FLOAT
    parsed = parse_layer_path(path)
    if parsed is None or parsed[1] not in LAYER_MODULES:
        raise KeyError(f"not a Grok-1 module path: {path}")
    return LAYER_MODULES[parsed[1]][0]


def leaf_specs(s: CheckpointShape) -> list[LeafSpec]:
    """Every file of a checkpoint of shape ``s``, in file order."""
    return [
        LeafSpec(i, p, module_kind(p), module_shape(p, s)) for i, p in enumerate(module_paths(s.n_layers))
    ]


def validate_shape(s: CheckpointShape) -> None:
    if s.q_dim % ROW_PARALLEL_BLOCKS or s.ffn_size % ROW_PARALLEL_BLOCKS:
        raise ValueError(
            f"row-parallel input dims ({s.q_dim}, {s.ffn_size}) must be multiples of {ROW_PARALLEL_BLOCKS}"
        )
    if s.n_q_heads % s.n_kv_heads:
        raise ValueError(f"n_q_heads {s.n_q_heads} is not a multiple of n_kv_heads {s.n_kv_heads}")


GROK1_SHAPE = CheckpointShape(
    vocab_size=131072,
    d_model=6144,
    n_layers=64,
    n_q_heads=48,
    n_kv_heads=8,
    key_size=128,
    ffn_size=32768,
    n_experts=8,
)
