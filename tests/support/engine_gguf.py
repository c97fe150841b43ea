"""Test helper for the engine tests: write a grok GGUF straight from float64 official-layout params.

Independent of the converter on purpose (the engine is tested against the reference even while the
converter changes); tests that exercise the converter's own files use its fixtures. Matrices are
transposed to GGUF's [out, in] rows; quantized types go through edge.quant (ggml byte layout).
Options write the variants the error tests need (another architecture, a missing tensor, llama.cpp-style
metadata without our constants).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import gguf
import numpy as np
from edge.convert import grok1

from edge import quant

LAYER_TENSORS = {  # GGUF name -> official module under transformer/decoder_layer_N/
    "attn_norm": "rms_norm",
    "attn_q": "multi_head_attention/query",
    "attn_k": "multi_head_attention/key",
    "attn_v": "multi_head_attention/value",
    "attn_output": "multi_head_attention/linear",
    "attn_output_norm": "rms_norm_1",
    "ffn_norm": "rms_norm_2",
    "ffn_gate_inp": "router",
    "ffn_gate_exps": "moe/linear",
    "ffn_up_exps": "moe/linear_v",
    "ffn_down_exps": "moe/linear_1",
    "layer_output_norm": "rms_norm_3",
}
SMALL_TYPES = {
    "attn_norm",
    "attn_output_norm",
    "ffn_norm",
    "layer_output_norm",
    "ffn_gate_inp",
    "output_norm",
}


def _type_for(name: str, qtype: str) -> str:
    short = name.split(".")[0] if not name.startswith("blk.") else name.split(".")[2]
    return "F32" if short in SMALL_TYPES else qtype


def _rows(x: np.ndarray, qtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """(raw bytes shaped like gguf-py wants them, type) of a float array whose last axis is the row."""
    t = gguf.GGMLQuantizationType[qtype]
    if qtype == "F32":
        return np.ascontiguousarray(x, dtype=np.float32), t
    lead = x.shape[:-1]
    raw = quant.quantize(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1]), qtype)
    return raw.reshape(*lead, raw.shape[-1]), t


def write_grok_gguf(
    path: str | os.PathLike[str],
    params: dict[str, np.ndarray],
    key_size: int,
    qtype: str = "F32",
    *,
    arch: str = "grok",
    omit_tensors: Iterable[str] = (),
    our_constants: bool = True,
    n_ctx_train: int = 8192,
    vocab: bool = True,
    split_experts: bool = False,
) -> None:
    """Write params (official layout, e.g. from tests/grok_reference.load_checkpoint) as a GGUF.

    ``split_experts`` writes the older per-expert 2-D tensors (``blk.N.ffn_gate.E.weight``) instead of
    the stacked 3-D ``ffn_*_exps``."""
    omit = set(omit_tensors)
    emb = params["language_model/in_out_embed"]
    n_vocab, d = emb.shape
    n_layers = len({p.split("/")[1] for p in params if p.startswith("transformer/")})
    q_dim = params["transformer/decoder_layer_0/multi_head_attention/query"].shape[1]
    kv_dim = params["transformer/decoder_layer_0/multi_head_attention/key"].shape[1]
    n_exp, _, n_ff = params["transformer/decoder_layer_0/moe/linear"].shape

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(d)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(q_dim // key_size)
    w.add_head_count_kv(kv_dim // key_size)
    w.add_key_length(key_size)
    w.add_value_length(key_size)
    w.add_layer_norm_rms_eps(grok1.RMS_EPS)
    w.add_expert_count(n_exp)
    w.add_expert_used_count(2)
    w.add_rope_freq_base(grok1.ROPE_BASE)
    if our_constants:
        w.add_float32(f"{arch}.embedding_scale", grok1.EMBEDDING_MULTIPLIER)
        w.add_float32(f"{arch}.output_scale", grok1.OUTPUT_MULTIPLIER)
        w.add_float32(f"{arch}.attention.output_multiplier", grok1.ATTN_OUTPUT_MULTIPLIER)
        w.add_float32(f"{arch}.attn_logit_softcapping", grok1.ATTN_LOGIT_CAP)
    if vocab:  # a minimal SentencePiece-style vocabulary so that llama.cpp can load the file
        tokens = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"<0x{b:02X}>" for b in range(256)]
        tokens += [f"tok{i}" for i in range(len(tokens), n_vocab)]
        tokens = tokens[:n_vocab]
        types = [3, 3, 3, 2] + [6] * 256 + [1] * max(0, n_vocab - 260)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores([0.0] * n_vocab)
        w.add_token_types(types[:n_vocab])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_unk_token_id(3)
        w.add_pad_token_id(0)
        w.add_add_bos_token(False)

    def put(name: str, x: np.ndarray) -> None:
        if name in omit:
            return
        raw, t = _rows(x, _type_for(name, qtype))
        w.add_tensor(name, raw, raw_dtype=t)

    put("token_embd.weight", emb)
    put("output_norm.weight", params["language_model/rms_norm"])
    for layer in range(n_layers):
        pre = f"transformer/decoder_layer_{layer}/"
        for gname, module in LAYER_TENSORS.items():
            x = params[pre + module]
            if x.ndim == 2:
                x = x.T  # official [in, out] -> GGUF rows [out, in]
            elif x.ndim == 3:
                x = np.transpose(x, (0, 2, 1))  # experts [E, in, out] -> [E, out, in]
                if split_experts:
                    single = gname.removesuffix("_exps")
                    for e in range(x.shape[0]):
                        put(f"blk.{layer}.{single}.{e}.weight", x[e])
                    continue
            put(f"blk.{layer}.{gname}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def params_from_gguf(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The weights a GGUF actually encodes, dequantized to float64, back in the official layout.

    The float64 reference run on these isolates the engine's own error (activation rounding in the
    kernels, the KV cache) from the error of the weight format."""
    from edge.gguf import GGUFFile

    out: dict[str, np.ndarray] = {}
    with GGUFFile(path) as g:

        def read(name: str) -> np.ndarray:
            info = g.tensor(name)
            raw = np.asarray(g.array(info))
            if info.type_name in ("F32", "F16", "BF16"):
                return raw.astype(np.float64)
            return quant.dequantize(raw, info.type_name, info.shape).astype(np.float64)

        out["language_model/in_out_embed"] = read("token_embd.weight")
        out["language_model/rms_norm"] = read("output_norm.weight")
        n_layers = int(g.metadata["grok.block_count"])
        for layer in range(n_layers):
            pre = f"transformer/decoder_layer_{layer}/"
            for gname, module in LAYER_TENSORS.items():
                x = read(f"blk.{layer}.{gname}.weight")
                if x.ndim == 2:
                    x = x.T
                elif x.ndim == 3:
                    x = np.transpose(x, (0, 2, 1))
                out[pre + module] = x
    return out
