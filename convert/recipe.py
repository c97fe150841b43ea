"""Quantization presets: a GGML type per tensor, chosen by tensor class and layer.

Modelled on llama.cpp's ``llama_tensor_get_type`` for an 8-expert MoE with a tied output:
- ``token_embd`` doubles as the output projection, so it gets the output's type (Q6_K for the
  k-quant and IQ presets, the base type for q8_0 and the float presets);
- attn_k and attn_v are Q8_0 (llama.cpp: "for the 8-expert model, bumping this to Q8_0 trades just
  ~128MB"), attn_output Q5_K for the <= 4.5-bit presets;
- the _M presets give ffn_down more bits in the layers ``use_more_bits`` picks (first and last
  eighth, every third in between); q3_k_m also for the first 1/16 of layers;
- router (ffn_gate_inp) and norms stay F32.
Rows whose length is not a multiple of a type's block fall back like llama.cpp (Q4_K -> Q5_0, ...).
``--tensor-type CLASS=TYPE`` overrides a class everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.convert.mapping import TENSOR_CLASSES, TensorTarget

PRESETS = ("f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k", "iq4_xs")

# llama.cpp's general.file_type (enum llama_ftype)
FILE_TYPES = {
    "f32": 0,
    "f16": 1,
    "q8_0": 7,
    "q2_k": 10,
    "q3_k_m": 12,
    "q4_k_m": 15,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_xs": 30,
    "bf16": 32,
}

# llama.cpp's llama_ftype whose quantization with `pure` set gives every 2-D tensor this one type
# (used to compare our quantizers with llama_model_quantize on the same tensors)
LLAMA_PURE_FTYPES = {
    "F32": 0,  # ALL_F32
    "F16": 1,  # MOSTLY_F16
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K": 12,  # MOSTLY_Q3_K_M
    "Q4_K": 15,  # MOSTLY_Q4_K_M
    "Q5_K": 17,  # MOSTLY_Q5_K_M
    "Q6_K": 18,
    "IQ4_NL": 25,
    "IQ4_XS": 30,
    "BF16": 32,
}

BLOCK_SIZES = {
    "F32": 1,
    "F16": 1,
    "BF16": 1,
    "Q8_0": 32,
    "Q4_0": 32,
    "Q4_1": 32,
    "Q5_0": 32,
    "Q5_1": 32,
    "IQ4_NL": 32,
    "Q2_K": 256,
    "Q3_K": 256,
    "Q4_K": 256,
    "Q5_K": 256,
    "Q6_K": 256,
    "IQ4_XS": 256,
}
# llama.cpp's fallback when a row is not a multiple of 256
_FALLBACK = {
    "Q2_K": "IQ4_NL",
    "Q3_K": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}
FLOAT_ONLY_CLASSES = {"norm": ("F32",), "ffn_gate_inp": ("F32", "F16", "BF16")}


def use_more_bits(layer: int, n_layers: int) -> bool:
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _preset_type(preset: str, cls: str, layer: int | None, n_layers: int) -> str:
    if cls in ("norm", "ffn_gate_inp"):
        return "F32"
    if preset in ("f32", "f16", "bf16", "q8_0"):
        return preset.upper()
    base = {
        "q6_k": "Q6_K",
        "q5_k_m": "Q5_K",
        "q4_k_m": "Q4_K",
        "q3_k_m": "Q3_K",
        "q2_k": "Q2_K",
        "iq4_xs": "IQ4_XS",
    }[preset]
    if cls == "token_embd":
        return "Q6_K"
    if cls in ("attn_k", "attn_v"):
        return "Q8_0"
    if cls == "attn_output":
        return "Q5_K" if preset in ("q2_k", "q3_k_m", "q4_k_m", "iq4_xs") else base
    if cls == "ffn_down_exps":
        i = layer or 0
        if preset in ("q4_k_m", "q5_k_m") and use_more_bits(i, n_layers):
            return "Q6_K"
        if preset == "q3_k_m":
            return "Q5_K" if i < n_layers // 16 else "Q4_K" if use_more_bits(i, n_layers) else "Q3_K"
        if preset == "q2_k":
            return "Q3_K"
    return base


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["attn_q=Q8_0", ...]`` -> {class: TYPE}; errors name the bad item."""
    out: dict[str, str] = {}
    for item in items or []:
        cls, sep, qtype = item.partition("=")
        cls, qtype = cls.strip(), qtype.strip().upper()
        if not sep or cls not in TENSOR_CLASSES:
            raise ValueError(
                f"--tensor-type {item!r}: expected CLASS=TYPE with CLASS one of {', '.join(TENSOR_CLASSES)}"
            )
        if qtype not in BLOCK_SIZES:
            raise ValueError(f"--tensor-type {item!r}: unknown type (known: {', '.join(BLOCK_SIZES)})")
        allowed = FLOAT_ONLY_CLASSES.get(cls)
        if allowed and qtype not in allowed:
            raise ValueError(f"--tensor-type {item!r}: {cls} must be one of {', '.join(allowed)}")
        out[cls] = qtype
    return out


def choose_type(preset: str, target: TensorTarget, n_layers: int, overrides: Mapping[str, str]) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    qtype = overrides.get(target.tensor_class) or _preset_type(
        preset, target.tensor_class, target.layer, n_layers
    )
    n = target.row_length
    if n % BLOCK_SIZES[qtype]:
        qtype = _FALLBACK.get(qtype, qtype)
        if n % BLOCK_SIZES[qtype]:
            qtype = "F16"
    return qtype
