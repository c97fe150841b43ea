"""Grok GGUF → onnxruntime-genai model folder (model.onnx + model.onnx.data, genai_config.json, tokenizer).

The graph (per layer, hidden state as rows [batch·seq, d]):

- RMSNorm: ONNX ``RMSNormalization`` (opset 23, float32 statistics). It is onnxruntime's
  SimplifiedLayerNormalization in the standard domain, the one onnx.checker knows.
- q, k, v, o and the experts' matrices: ``Gemm(x, W, transB=1)`` on the GGUF's own [out, in] rows (fp32;
  fp16 stores W in float16 and casts it), or ``MatMulNBits`` (int8 / int4, see edge.onnx.nbits).
- Attention: ``GroupQueryAttention`` (com.microsoft) with ``scale`` = the attention multiplier and
  ``softcap`` = 30, which onnxruntime applies in Grok's order: s·scale, then cap·tanh(s/cap), then the
  attention bias, causal mask, float32 softmax; rotate-half rotary (``do_rotary``, not interleaved) from
  cos/sin caches of ``position · base^(-2j/D)``, positions 0, 1, ... from the cache length. The bias is
  -1e30 on keys whose ``attention_mask`` is 0. edge.onnx.runner sets 0 for [PAD] (id 0) tokens, so
  [PAD] keys are masked as the engine masks them; onnxruntime-genai's loop passes a mask of ones for a
  single sequence (measured), so there a [PAD] inside a prompt is attended like any token.
  ``seqlens_k`` and ``total_sequence_length`` come from the mask's length, not its sum, so a masked key
  in the middle changes no position.
- MoE: router ``softmax(x·Wr)`` in float32, ``TopK`` (k = expert_used_count); the gates are the
  probabilities themselves, not renormalized. Every token is routed ([PAD] too). Each expert is an
  ``If`` over "some row chose it": the rows that did are gathered, run through
  ``(gelu_tanh(x·W1) ⊙ (x·V))·W2``, scaled by their gate and added back (``ScatterND``, reduction add):
  only the selected experts computed. onnxruntime's MoE/QMoE operators are not used: on CPU their
  activations (relu, gelu, silu, identity: not gated; swiglu: SiLU-gated) include no GELU-gated expert,
  and "geglu" (GELU-tanh gated, Grok's expert) is CUDA-only; tests/test_onnx_export.py runs each against
  Grok's expert on CPU. The If form runs on every execution provider.
- Embedding ``Gather · embedding_scale``; logits ``h·Eᵀ · output_scale`` (tied to the embedding unless
  the GGUF has ``output.weight``). fp32 uses one table for both; the other precisions gather from a
  float16 copy of the table and compute the logits with their own form of it (int: 8-bit MatMulNBits).

Weights are written one at a time to ``model.onnx.data`` (edge.onnx.external_data); a stacked expert
tensor is read one expert at a time, so the export's memory is about one matrix, not the model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge.onnx import nbits
from edge.onnx.external_data import ExternalDataWriter
from edge.onnx.graph import FLOAT, INT64, MS, OPSET, Graph, Names, value_info
from edge.onnx.grok_gguf import GrokGGUF, GrokHparams

PRECISIONS = ("fp32", "fp16", "int8", "int4")
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
CHUNK_BYTES = 64 << 20  # float32 bytes of the rows decoded at a time
MASK_BIAS = -1e30  # added to masked keys' capped scores (the official code's mask value)


class _Exporter:
    def __init__(
        self,
        src: GrokGGUF,
        writer: ExternalDataWriter,
        precision: str,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.src = src
        self.hp: GrokHparams = src.hp
        self.writer = writer
        self.precision = precision
        self.progress = progress
        self.g = Graph(Names())

    # -- weights ---------------------------------------------------------------------------------------

    def _init(self, name: str, arr: np.ndarray) -> str:
        return self.g.add_initializer(self.writer.tensor(name, arr))

    def vector(self, gguf_name: str) -> str:
        return self._init(gguf_name, self.src.vector(gguf_name, self.hp.n_embd))

    def _chunks(self, rows: int, cols: int) -> list[tuple[int, int]]:
        step = max(1, CHUNK_BYTES // (4 * cols))
        return [(r, min(rows, r + step)) for r in range(0, rows, step)]

    def _float_matrix(
        self, name: str, gguf_name: str, rows: int, cols: int, dtype: type, expert: int | None = None
    ) -> str:
        """The GGUF matrix as a float initializer [rows, cols], dequantized and written in row chunks."""

        def parts() -> Iterator[np.ndarray]:
            for a, b in self._chunks(rows, cols):
                raw, tname = self.src.rows(gguf_name, rows, cols, expert, a, b)
                yield nbits.dequantize(raw, tname, b - a, cols).astype(dtype)

        proto = self.writer.streamed(name, np.dtype(dtype), (rows, cols), parts())
        return self.g.add_initializer(proto)

    def linear(
        self,
        g: Graph,
        x: str,
        gguf_name: str,
        n_out: int,
        n_in: int,
        expert: int | None = None,
        hint: str = "y",
    ) -> str:
        """``x · Wᵀ`` for the GGUF matrix ``gguf_name`` [n_out, n_in] (one expert of it if given)."""
        base = gguf_name.removesuffix(".weight") + ("" if expert is None else f".{expert}")
        if self.precision == "fp32":
            w_name = self._float_matrix(base, gguf_name, n_out, n_in, np.float32, expert)
            return g.op("Gemm", [x, w_name], hint=hint, transB=1)
        if self.precision == "fp16":
            w16 = self._float_matrix(base + ".fp16", gguf_name, n_out, n_in, np.float16, expert)
            w_name = g.op("Cast", [w16], hint=base + ".cast", to=TensorProto.FLOAT)
            return g.op("Gemm", [x, w_name], hint=hint, transB=1)
        bits = self._bits(gguf_name)
        nbits.target_type(bits, n_in)  # ValueError for rows MatMulNBits cannot block
        scales: list[np.ndarray] = []

        def parts() -> Iterator[np.ndarray]:
            for a, b in self._chunks(n_out, n_in):
                raw, tname = self.src.rows(gguf_name, n_out, n_in, expert, a, b)
                q = nbits.to_nbits(raw, tname, b - a, n_in, bits)
                scales.append(q.scales)
                yield q.b

        shape = (n_out, n_in // nbits.BLOCK, nbits.BLOCK * bits // 8)
        proto = self.writer.streamed(base + ".qweight", np.dtype(np.uint8), shape, parts())
        inputs = [x, self.g.add_initializer(proto), self._init(base + ".scales", np.concatenate(scales))]
        return g.op(
            "MatMulNBits",
            inputs,
            hint=hint,
            domain=MS,
            K=n_in,
            N=n_out,
            bits=bits,
            block_size=nbits.BLOCK,
            accuracy_level=0,
        )

    def _bits(self, gguf_name: str) -> int:
        """int8: 8 bits everywhere. int4: 4-bit experts; attention and output matrices (about 2 % of
        Grok-1's weights) at 8 bits, as llama.cpp's Q4_K_M keeps them at 5-8 bits."""
        if self.precision == "int8" or "_exps." not in gguf_name:
            return 8
        return 4

    def rms(self, g: Graph, x: str, gguf_name: str) -> str:
        return g.op(
            "RMSNormalization",
            [x, self.vector(gguf_name)],
            hint="rms",
            epsilon=self.hp.rms_eps,
            axis=-1,
            stash_type=1,
        )

    # -- graph -----------------------------------------------------------------------------------------

    def build(self) -> onnx.ModelProto:
        hp, g = self.hp, self.g
        hd = hp.head_dim
        ids_shape = g.op("Shape", ["input_ids"], hint="ids_shape")
        batch = g.op("Gather", [ids_shape, g.const([0])], hint="batch", axis=0)
        seq = g.op("Gather", [ids_shape, g.const([1])], hint="seq", axis=0)
        flat_ids = g.op("Reshape", ["input_ids", g.const([-1])], hint="flat_ids")
        h = self._embedding(flat_ids)
        # cache length → GQA's total_sequence_length and seqlens_k; mask → additive key bias
        total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.const([1])], hint="total", axis=0)
        total32 = g.op("Cast", [g.op("Squeeze", [total])], hint="total_sequence_length", to=TensorProto.INT32)
        seqlens = g.op(
            "Cast",
            [g.op("Expand", [g.op("Sub", [total, g.const([1])]), batch])],
            hint="seqlens_k",
            to=TensorProto.INT32,
        )
        maskf = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
        bias2 = g.op("Mul", [g.op("Sub", [maskf, g.const(1.0, np.float32)]), g.const(-MASK_BIAS, np.float32)])
        bias_shape = g.op("Concat", [batch, g.const([1]), seq, total], axis=0)
        bias = g.op(
            "Expand", [g.op("Unsqueeze", [bias2, g.const([1, 2])]), bias_shape], hint="attention_bias"
        )
        shape3 = g.op("Concat", [batch, seq, g.const([-1])], hint="shape3", axis=0)
        cos, sin = self._rotary_caches()
        for layer in range(hp.n_layer):
            if self.progress:
                self.progress(f"layer {layer + 1}/{hp.n_layer}")
            h = self._layer(layer, h, seqlens, total32, bias, shape3, cos, sin)
        h = self.rms(g, h, "output_norm.weight")
        logits = self._output(h)
        shape_logits = g.op("Concat", [batch, seq, g.const([hp.n_vocab])], axis=0)
        g.nodes.append(helper.make_node("Reshape", [logits, shape_logits], ["logits"], name="logits_reshape"))

        kv = [hp.n_head_kv]
        inputs = [
            value_info("input_ids", INT64, ["batch_size", "sequence_length"]),
            value_info("attention_mask", INT64, ["batch_size", "total_sequence_length"]),
        ]
        outputs = [value_info("logits", FLOAT, ["batch_size", "sequence_length", hp.n_vocab])]
        for i in range(hp.n_layer):
            for kind in ("key", "value"):
                inputs.append(
                    value_info(
                        f"past_key_values.{i}.{kind}", FLOAT, ["batch_size", *kv, "past_sequence_length", hd]
                    )
                )
                outputs.append(
                    value_info(f"present.{i}.{kind}", FLOAT, ["batch_size", *kv, "total_sequence_length", hd])
                )
        graph = g.to_graph("grok", outputs, inputs)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
            producer_name="grok-edge",
        )
        model.ir_version = 11
        return model

    def _embedding(self, flat_ids: str) -> str:
        hp, g = self.hp, self.g
        if self.precision == "fp32":
            self.embd = self._float_matrix(
                "token_embd", "token_embd.weight", hp.n_vocab, hp.n_embd, np.float32
            )
            rows = g.op("Gather", [self.embd, flat_ids], hint="embd", axis=0)
        else:  # float16 table (gathered rows cast back); int exports quantize the output side separately
            self.embd = self._float_matrix(
                "token_embd.fp16", "token_embd.weight", hp.n_vocab, hp.n_embd, np.float16
            )
            rows = g.op("Cast", [g.op("Gather", [self.embd, flat_ids], axis=0)], hint="embd", to=FLOAT)
        return g.op("Mul", [rows, g.const(hp.embedding_scale, np.float32)], hint="h")

    def _output(self, h: str) -> str:
        hp, g = self.hp, self.g
        name = "output.weight" if self.src.has("output.weight") else "token_embd.weight"
        if self.precision == "fp32" and name == "token_embd.weight":  # tied: the same initializer
            return g.op("Gemm", [h, self.embd], hint="logits2d", transB=1, alpha=hp.output_scale)
        if self.precision == "fp16" and name == "token_embd.weight":
            w = g.op("Cast", [self.embd], to=FLOAT)
            return g.op("Gemm", [h, w], hint="logits2d", transB=1, alpha=hp.output_scale)
        out = self.linear(g, h, name, hp.n_vocab, hp.n_embd, hint="out")
        return g.op("Mul", [out, g.const(hp.output_scale, np.float32)], hint="logits2d")

    def _rotary_caches(self) -> tuple[str, str]:
        hp = self.hp
        inv_freq = hp.rope_base ** (-np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim)
        phase = np.arange(hp.n_ctx, dtype=np.float64)[:, None] * inv_freq[None, :]
        cos = self._init("rope_cos", np.cos(phase).astype(np.float32))
        sin = self._init("rope_sin", np.sin(phase).astype(np.float32))
        return cos, sin

    def _layer(
        self, layer: int, h: str, seqlens: str, total: str, bias: str, shape3: str, cos: str, sin: str
    ) -> str:
        hp, g = self.hp, self.g
        d, hd = hp.n_embd, hp.head_dim
        nq, nkv = hp.n_head * hd, hp.n_head_kv * hd
        p = f"blk.{layer}."
        x = self.rms(g, h, p + "attn_norm.weight")
        q = self.linear(g, x, p + "attn_q.weight", nq, d, hint="q")
        k = self.linear(g, x, p + "attn_k.weight", nkv, d, hint="k")
        v = self.linear(g, x, p + "attn_v.weight", nkv, d, hint="v")
        q3, k3, v3 = (g.op("Reshape", [t, shape3]) for t in (q, k, v))
        attn = g.op(
            "GroupQueryAttention",
            [
                q3,
                k3,
                v3,
                f"past_key_values.{layer}.key",
                f"past_key_values.{layer}.value",
                seqlens,
                total,
                cos,
                sin,
                "",
                bias,
            ],
            hint="attn",
            n_out=3,
            domain=MS,
            num_heads=hp.n_head,
            kv_num_heads=hp.n_head_kv,
            scale=hp.attn_multiplier,
            softcap=hp.softcap,
            do_rotary=1,
            rotary_interleaved=0,
        )
        # GQA's present outputs take the genai names
        node = g.nodes[-1]
        node.output[1] = f"present.{layer}.key"
        node.output[2] = f"present.{layer}.value"
        a = g.op("Reshape", [attn[0], g.const([-1, nq])])
        o = self.linear(g, a, p + "attn_output.weight", d, nq, hint="o")
        h = g.op("Add", [h, self.rms(g, o, p + "attn_output_norm.weight")], hint="h")
        x = self.rms(g, h, p + "ffn_norm.weight")
        m = self._moe(layer, x)
        return g.op("Add", [h, self.rms(g, m, p + "layer_output_norm.weight")], hint="h")

    def _moe(self, layer: int, x: str) -> str:
        hp, g = self.hp, self.g
        d, ff = hp.n_embd, hp.n_ff
        p = f"blk.{layer}."
        raw, tname = self.src.matrix(p + "ffn_gate_inp.weight", hp.n_expert, d)
        router = self._init(p + "ffn_gate_inp", nbits.dequantize(raw, tname, hp.n_expert, d))
        probs = g.op(
            "Softmax", [g.op("Gemm", [x, router], hint="router_logits", transB=1)], hint="probs", axis=-1
        )
        gates, chosen = g.op(
            "TopK", [probs, g.const([hp.n_expert_used])], hint="topk", n_out=2, axis=-1, largest=1, sorted=1
        )
        acc = g.op("Mul", [x, g.const(0.0, np.float32)], hint="moe_zero")
        zero = g.const(0.0, np.float32)
        for e in range(hp.n_expert):
            sel = g.op("Equal", [chosen, g.const(e)], hint=f"sel{e}")
            gate = g.op(
                "ReduceSum", [g.op("Where", [sel, gates, zero]), g.const([1])], hint=f"gate{e}", keepdims=0
            )
            picked = g.op("ReduceMax", [g.op("Cast", [sel], to=FLOAT), g.const([1])], keepdims=0)
            rows_mask = g.op("Greater", [picked, zero], hint=f"rows{e}")
            any_row = g.op("Greater", [g.op("ReduceMax", [picked], keepdims=0), zero], hint=f"any{e}")
            then = g.branch()
            nz = then.op("NonZero", [rows_mask], hint=f"nz{e}")
            rows = then.op("Reshape", [nz, g.const([-1])], hint=f"rowidx{e}")
            xs = then.op("Gather", [x, rows], hint=f"xs{e}", axis=0)
            up1 = self.linear(then, xs, p + "ffn_gate_exps.weight", ff, d, expert=e, hint=f"gate_proj{e}")
            act = then.op("Gelu", [up1], hint=f"gelu{e}", approximate="tanh")
            up = self.linear(then, xs, p + "ffn_up_exps.weight", ff, d, expert=e, hint=f"up_proj{e}")
            y = self.linear(
                then, then.op("Mul", [act, up]), p + "ffn_down_exps.weight", d, ff, expert=e, hint=f"down{e}"
            )
            gsel = then.op("Unsqueeze", [then.op("Gather", [gate, rows], axis=0), g.const([1])])
            out_then = then.op(
                "ScatterND",
                [acc, then.op("Transpose", [nz]), then.op("Mul", [y, gsel])],
                hint=f"moe_acc{e}",
                reduction="add",
            )
            other = g.branch()
            out_else = other.op("Identity", [acc], hint=f"moe_keep{e}")
            shape = ["rows", d]
            acc = g.op(
                "If",
                [any_row],
                hint=f"moe{e}",
                then_branch=then.to_graph(f"layer{layer}_expert{e}", [value_info(out_then, FLOAT, shape)]),
                else_branch=other.to_graph(f"layer{layer}_skip{e}", [value_info(out_else, FLOAT, shape)]),
            )
        return acc


def export_onnx(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    precision: str = "fp32",
    *,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the onnxruntime-genai folder for ``gguf_path`` into ``out_dir``; returns the folder."""
    from edge.onnx.genai_files import write_genai_config, write_tokenizer_files

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    out = Path(out_dir)
    with GrokGGUF(gguf_path) as src:  # a bad GGUF fails before anything is written
        if out.exists() and any(out.iterdir()) and not force:
            raise FileExistsError(f"{out}: exists and is not empty (use force=True / --force to overwrite)")
        out.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILE, DATA_FILE):  # a half-written folder is never taken for a model
            (out / name).unlink(missing_ok=True)
        writer = ExternalDataWriter(out, DATA_FILE)
        try:
            model = _Exporter(src, writer, precision, progress).build()
        except BaseException:
            writer.close()
            (out / DATA_FILE).unlink(missing_ok=True)
            raise
        writer.close()
        tmp = out / (MODEL_FILE + ".partial")
        tmp.write_bytes(model.SerializeToString())
        write_genai_config(out, src, precision)
        write_tokenizer_files(out, src)
        os.replace(tmp, out / MODEL_FILE)
    return out
