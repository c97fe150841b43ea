"""The Grok-1 forward pass in float64 numpy, written from docs/grok1.md (the official model.py).

It reads the release-format checkpoint directly (not a GGUF), so it is an independent witness for
the converter, llama.cpp and our engine. API (kept simple; the engine tests reuse it):

    params = load_checkpoint(ckpt_dir, key_size)   # {module path: float64 array, official shapes}
    config = GrokConfig.from_params(params, key_size)
    logits = forward(params, config, tokens)        # [T, vocab] float64, every position

Independence: nothing here comes from the converter's numerics. The file order (sorted module paths),
the dequantization and the constants are written here from docs/grok1.md; only the pickles are parsed by
the converter's safe unpickler (``read_leaf``, which executes nothing and returns the raw arrays).
Weights are the values the official code computes from the int8 release: the exact product
int8 x bf16 scale (XLA keeps ``weight.astype(bf16) * scales`` in float32, where it is exact), here in
float64; all arithmetic is float64. The official run keeps activations in bf16, so its logits differ
from these by bf16 rounding; ours is the exact math.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edge.convert.safe_pickle import QuantizedWeight8bit, read_leaf

# docs/grok1.md, "Hyperparameters" (run.py / model.py)
EMBEDDING_MULTIPLIER = 78.38367176906169
OUTPUT_MULTIPLIER = 0.5773502691896257
ATTN_OUTPUT_MULTIPLIER = 0.08838834764831845
ATTN_LOGIT_CAP = 30.0
RMS_EPS = 1e-5
ROPE_BASE = 10000.0
N_SELECTED_EXPERTS = 2
DEFAULT_KEY_SIZE = 128
PAD_ID = 0

LAYER_MODULES = (
    "moe/linear",
    "moe/linear_1",
    "moe/linear_v",
    "multi_head_attention/key",
    "multi_head_attention/linear",
    "multi_head_attention/query",
    "multi_head_attention/value",
    "rms_norm",
    "rms_norm_1",
    "rms_norm_2",
    "rms_norm_3",
    "router",
)


@dataclass(frozen=True)
class GrokConfig:
    vocab_size: int = 131072
    d_model: int = 6144
    n_layers: int = 64
    n_q_heads: int = 48
    n_kv_heads: int = 8
    key_size: int = 128
    ffn_size: int = 32768
    n_experts: int = 8
    n_selected_experts: int = N_SELECTED_EXPERTS
    embedding_multiplier: float = EMBEDDING_MULTIPLIER
    output_multiplier: float = OUTPUT_MULTIPLIER
    attn_output_multiplier: float = ATTN_OUTPUT_MULTIPLIER
    attn_logit_cap: float = ATTN_LOGIT_CAP
    rms_eps: float = RMS_EPS
    rope_base: float = ROPE_BASE

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray], key_size: int = DEFAULT_KEY_SIZE) -> GrokConfig:
        vocab, d = params["language_model/in_out_embed"].shape
        n_layers = len({p.split("/")[1] for p in params if p.startswith("transformer/")})
        q = params["transformer/decoder_layer_0/multi_head_attention/query"].shape[1]
        kv = params["transformer/decoder_layer_0/multi_head_attention/key"].shape[1]
        e, _, f = params["transformer/decoder_layer_0/moe/linear"].shape
        return cls(vocab, d, n_layers, q // key_size, kv // key_size, key_size, f, e)


def release_paths(n_layers: int) -> list[str]:
    """Module paths in file order: jax flattens the parameter dicts in sorted key order, so file i holds
    the i-th path of the sorted list (layers 0, 1, 10, 11, ..., 2, 20, ...)."""
    top = ["language_model/in_out_embed", "language_model/rms_norm"]
    layers = [f"transformer/decoder_layer_{n}/{m}" for n in range(n_layers) for m in LAYER_MODULES]
    return sorted(top + layers)


def dequantize(leaf: np.ndarray | QuantizedWeight8bit) -> np.ndarray:
    """float64 values of one leaf: float arrays as they are; int8 weights [.., in, out] times their bf16
    scales [.., blocks, out], input rows split into ``blocks`` equal runs, run b scaled by row b."""
    if not isinstance(leaf, QuantizedWeight8bit):
        return np.array(leaf, dtype=np.float64)
    scales = np.asarray(leaf.scales).astype(np.float64)  # bf16 -> float64 is exact
    n_in, blocks = leaf.weight.shape[-2], scales.shape[-2]
    assert n_in % blocks == 0, (n_in, blocks)
    return leaf.weight.astype(np.float64) * np.repeat(scales, n_in // blocks, axis=-2)


def load_checkpoint(
    ckpt_dir: str | os.PathLike[str], key_size: int = DEFAULT_KEY_SIZE
) -> dict[str, np.ndarray]:
    """Every module of a release-format ``ckpt-0`` as float64, keyed by module path (official shapes).

    ``key_size`` is not needed to read the files (GrokConfig.from_params takes it); it is accepted so the
    call reads like the converter's."""
    del key_size
    files = sorted(Path(ckpt_dir).glob("tensor*_000"))
    n_layers, rest = divmod(len(files) - 2, len(LAYER_MODULES))
    assert n_layers > 0 and rest == 0, f"{ckpt_dir}: {len(files)} tensor files"
    paths = release_paths(n_layers)
    return {
        path: dequantize(read_leaf(Path(ckpt_dir) / f"tensor{i:05d}_000")) for i, path in enumerate(paths)
    }


def rms_norm(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    # the learned scale multiplies directly (not 1 + scale)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    # jax.nn.gelu default (approximate=True)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Rotate-half (NeoX) RoPE over the full head dim: dim i pairs with i + head_dim/2. x [T, H, D]."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # 10000^(-2j/D)
    phase = positions[:, None].astype(np.float64) * inv_freq[None, :]
    phase = np.concatenate([phase, phase], axis=-1)[:, None, :]  # [T, 1, D]
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * np.cos(phase) + rotated * np.sin(phase)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def attention(
    p: dict[str, np.ndarray],
    prefix: str,
    x: np.ndarray,
    positions: np.ndarray,
    key_mask: np.ndarray,
    c: GrokConfig,
) -> np.ndarray:
    t = x.shape[0]
    q = (x @ p[prefix + "query"]).reshape(t, c.n_q_heads, c.key_size)
    k = (x @ p[prefix + "key"]).reshape(t, c.n_kv_heads, c.key_size)
    v = (x @ p[prefix + "value"]).reshape(t, c.n_kv_heads, c.key_size)
    q, k = rope(q, positions, c.rope_base), rope(k, positions, c.rope_base)
    group = c.n_q_heads // c.n_kv_heads
    k = np.repeat(k, group, axis=1)  # query head h uses KV head h // group
    v = np.repeat(v, group, axis=1)
    s = np.einsum("thd,shd->hts", q, k) * c.attn_output_multiplier
    s = c.attn_logit_cap * np.tanh(s / c.attn_logit_cap)
    allowed = np.tril(np.ones((t, t), dtype=bool)) & key_mask[None, :]
    s = np.where(allowed[None], s, -1e30)
    o = np.einsum("hts,shd->thd", softmax(s), v).reshape(t, c.n_q_heads * c.key_size)
    return o @ p[prefix + "linear"]


def moe(
    p: dict[str, np.ndarray],
    prefix: str,
    x: np.ndarray,
    c: GrokConfig,
    margins: np.ndarray | None = None,
) -> np.ndarray:
    # every token is routed, [PAD] included: MoELayer.__call__ calls _inference_call(inputs) without the
    # padding mask (docs/grok1.md, forward pass step 1)
    probs = softmax(x @ p[prefix + "router"])
    if margins is not None:  # how close each token came to choosing another expert pair
        ranked = -np.sort(-probs, axis=1)
        k = c.n_selected_experts
        np.minimum(margins, ranked[:, k - 1] - ranked[:, k], out=margins)
    w1, v1, w2 = p[prefix + "moe/linear"], p[prefix + "moe/linear_v"], p[prefix + "moe/linear_1"]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        top = np.argsort(-probs[t], kind="stable")[: c.n_selected_experts]
        for e in top:  # gates are the full-softmax probabilities, not renormalized over the top-2
            y = (gelu_tanh(x[t] @ w1[e]) * (x[t] @ v1[e])) @ w2[e]
            out[t] += probs[t, e] * y
    return out


def forward(
    params: dict[str, np.ndarray],
    config: GrokConfig,
    tokens: list[int],
    *,
    mask_padding: bool = True,
    route_pads: bool = True,
    route_margins: np.ndarray | None = None,
) -> np.ndarray:
    """Logits [T, vocab] (float64) of every position of ``tokens`` (no BOS added), positions from 0.

    ``mask_padding``: the official model masks token 0 ([PAD]) as an attention key (input_mask = tokens
    > 0) but routes it like any token; False does not mask it as a key either (what llama.cpp does;
    see test_llama_cpp_parity).
    ``route_pads``: False gives a [PAD] token no expert (its MoE output zero), a misreading of the
    official code; only for tests that show they can tell the two apart.
    ``route_margins``: optional float64 [T] array, set to each position's smallest gap (over layers)
    between the last chosen and the first unchosen router probability. Where it is tiny, rounding
    elsewhere may legitimately pick another expert, and that position's logits change discretely.
    """
    if route_margins is not None:
        route_margins[:] = np.inf
    c, p = config, params
    ids = np.asarray(tokens, dtype=np.int64)
    positions = np.arange(len(ids))
    mask = ids > PAD_ID if mask_padding else np.ones(len(ids), dtype=bool)  # input_mask = tokens > 0
    emb = p["language_model/in_out_embed"]
    h = emb[ids] * c.embedding_multiplier
    for layer in range(c.n_layers):
        pre = f"transformer/decoder_layer_{layer}/"
        attn_pre = pre + "multi_head_attention/"
        a = attention(p, attn_pre, rms_norm(h, p[pre + "rms_norm"], c.rms_eps), positions, mask, c)
        h = h + rms_norm(a, p[pre + "rms_norm_1"], c.rms_eps)
        x = rms_norm(h, p[pre + "rms_norm_2"], c.rms_eps)
        m = moe(p, pre, x, c, route_margins)
        if not route_pads:
            m[ids == PAD_ID] = 0.0
        h = h + rms_norm(m, p[pre + "rms_norm_3"], c.rms_eps)
    h = rms_norm(h, p["language_model/rms_norm"], c.rms_eps)
    return (h @ emb.T) * c.output_multiplier
