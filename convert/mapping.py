"""Release module paths -> llama.cpp ``grok`` tensor names, tensor classes and GGUF layouts.

GGUF stores a matrix as [out, in] rows (ggml ne0 = in); the release stores [in, out], so every matrix
is transposed. Experts become one 3-D tensor [n_expert, out, in]. The output projection is tied to
``token_embd`` (no ``output`` tensor; llama.cpp falls back to token_embd when it is absent).
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.convert import grok1
from edge.convert.layout import EMBED_PATH, FINAL_NORM_PATH, CheckpointShape, LeafSpec, parse_layer_path

# tensor classes a recipe chooses types for (``--tensor-type CLASS=TYPE``)
TENSOR_CLASSES = (
    "token_embd",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate_inp",
    "ffn_gate_exps",
    "ffn_up_exps",
    "ffn_down_exps",
    "norm",
)

_LAYER_NAMES = {
    "moe/linear": ("ffn_gate_exps", "ffn_gate_exps"),
    "moe/linear_1": ("ffn_down_exps", "ffn_down_exps"),
    "moe/linear_v": ("ffn_up_exps", "ffn_up_exps"),
    "multi_head_attention/key": ("attn_k", "attn_k"),
    "multi_head_attention/linear": ("attn_output", "attn_output"),
    "multi_head_attention/query": ("attn_q", "attn_q"),
    "multi_head_attention/value": ("attn_v", "attn_v"),
    "rms_norm": ("attn_norm", "norm"),
    "rms_norm_1": ("attn_output_norm", "norm"),
    "rms_norm_2": ("ffn_norm", "norm"),
    "rms_norm_3": ("layer_output_norm", "norm"),
    "router": ("ffn_gate_inp", "ffn_gate_inp"),
}


@dataclass(frozen=True)
class TensorTarget:
    """Where a release module goes in the GGUF."""

    name: str  # e.g. "blk.3.attn_q.weight"
    tensor_class: str  # one of TENSOR_CLASSES
    layer: int | None
    gguf_shape: tuple[int, ...]  # numpy order (rows last = ne0): [out, in] / [E, out, in] / [n]
    transpose: bool  # release [.., in, out] -> [.., out, in]

    @property
    def row_length(self) -> int:
        return self.gguf_shape[-1]

    @property
    def n_rows(self) -> int:
        n = 1
        for d in self.gguf_shape[:-1]:
            n *= d
        return n


def target_for(spec: LeafSpec) -> TensorTarget:
    if spec.path == EMBED_PATH:  # [vocab, d]: already rows of d
        return TensorTarget("token_embd.weight", "token_embd", None, spec.shape, False)
    if spec.path == FINAL_NORM_PATH:
        return TensorTarget("output_norm.weight", "norm", None, spec.shape, False)
    parsed = parse_layer_path(spec.path)
    if parsed is None or parsed[1] not in _LAYER_NAMES:
        raise KeyError(f"no GGUF name for {spec.path}")
    layer, module = parsed
    base, cls = _LAYER_NAMES[module]
    if len(spec.shape) == 1:
        return TensorTarget(f"blk.{layer}.{base}.weight", cls, layer, spec.shape, False)
    gguf_shape = (*spec.shape[:-2], spec.shape[-1], spec.shape[-2])
    return TensorTarget(f"blk.{layer}.{base}.weight", cls, layer, gguf_shape, True)


def metadata(shape: CheckpointShape, context_length: int) -> dict[str, tuple[str, object]]:
    """grok.* hyperparameters and constants: key -> (gguf value kind, value)."""
    return {
        "grok.context_length": ("u32", context_length),
        "grok.embedding_length": ("u32", shape.d_model),
        "grok.block_count": ("u32", shape.n_layers),
        "grok.feed_forward_length": ("u32", shape.ffn_size),
        "grok.expert_feed_forward_length": ("u32", shape.ffn_size),
        "grok.attention.head_count": ("u32", shape.n_q_heads),
        "grok.attention.head_count_kv": ("u32", shape.n_kv_heads),
        "grok.attention.key_length": ("u32", shape.key_size),
        "grok.attention.value_length": ("u32", shape.key_size),
        "grok.attention.layer_norm_rms_epsilon": ("f32", grok1.RMS_EPS),
        "grok.expert_count": ("u32", shape.n_experts),
        "grok.expert_used_count": ("u32", grok1.N_SELECTED_EXPERTS),
        "grok.rope.freq_base": ("f32", grok1.ROPE_BASE),
        "grok.rope.dimension_count": ("u32", shape.key_size),
        "grok.vocab_size": ("u32", shape.vocab_size),
        # constants of the official forward pass (model.py / run.py), read by our engine
        "grok.embedding_scale": ("f32", grok1.EMBEDDING_MULTIPLIER),
        "grok.output_scale": ("f32", grok1.OUTPUT_MULTIPLIER),
        "grok.attention.output_multiplier": ("f32", grok1.ATTN_OUTPUT_MULTIPLIER),
        "grok.attn_logit_softcapping": ("f32", grok1.ATTN_LOGIT_CAP),
    }
