"""ONNX export (edge.onnx): the exported graph computes the engine's Grok numerics through onnxruntime.

Models: the shipped demo model (tiny-grok, trained; converted to an F32 GGUF) and the synthetic ``tiny``
checkpoint (random weights, conftest's ``converted("f32")``). The native engine runs with an f32 KV
cache, so both sides compute the same float32 math.

Tolerances (relative: max |difference| / max |logit|):

- fp32 export vs engine: ``FP32_TOL`` = 1e-5. Both evaluate the same float32 operations; only summation
  order and the tanh/exp implementations differ (float32 rounding 6e-8 a step, over 11 layers of ~10
  reductions each). Measured: 9.0e-7 (demo prompt), 9.1e-7 (32 cached decode steps). A modelling error
  moves logits by 1e-2 or more (e.g. renormalized gates, interleaved RoPE pairing, a missing cap).
- fp16 export vs fp32 export: ``FP16_TOL`` = 2e-3: weights rounded to float16 (relative 4.9e-4 each);
  measured 1.9e-4 (prompt) and 3.5e-4 (decode).
- int8 / int4: mean KL(fp32 export ‖ quantized) over 240 held-out tokens must not exceed that of the
  engine's GGUF of similar size against the same fp32 export. Measured on the demo model
  (model.onnx + data vs .gguf): int8 25.8 MB, KL 9.2e-6 vs Q8_0 22.0 MB, 3.6e-5 (the largest quantized
  preset); int4 17.1 MB, KL 3.1e-4 vs Q6_K 17.2 MB, 3.7e-4 (Q5_K_M 15.1 MB 5.6e-4, Q4_K_M 13.2 MB 6.1e-4).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install '.[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install '.[onnx]')")

from edge import Model  # noqa: E402
from edge.cancel import CancelToken  # noqa: E402
from edge.commands.demo import convert_preset, data_dir  # noqa: E402
from edge.onnx import OnnxModel, export_onnx  # noqa: E402

FP32_TOL = 1e-5
FP16_TOL = 2e-3
PROMPT = "And God said, Let there be light: and there was light."
N_DECODE = 32


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(np.asarray(b, np.float64)).max())


def kl(ref: np.ndarray, x: np.ndarray) -> float:
    """Mean over positions of KL(softmax(ref) ‖ softmax(x)), float64."""
    lp = ref - np.logaddexp.reduce(np.asarray(ref, np.float64), axis=1, keepdims=True)
    lq = x - np.logaddexp.reduce(np.asarray(x, np.float64), axis=1, keepdims=True)
    return float((np.exp(lp) * (lp - lq)).sum(axis=1).mean())


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    out = tmp_path_factory.mktemp("demo_gguf")
    return lambda preset: convert_preset(preset, out)


@pytest.fixture(scope="session")
def demo_export(
    demo_gguf: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """precision -> the demo model's F32 GGUF exported at that precision (once per session)."""
    root = tmp_path_factory.mktemp("demo_onnx")
    cache: dict[str, Path] = {}

    def get(precision: str) -> Path:
        if precision not in cache:
            cache[precision] = export_onnx(demo_gguf("f32"), root / precision, precision)
        return cache[precision]

    return get


@pytest.fixture(scope="session")
def heldout_ids(demo_export: Callable[[str], Path]) -> list[int]:
    text = (data_dir() / "heldout.txt").read_text()[:4000]
    return OnnxModel(demo_export("fp32")).tokenize(text)[:240]


def _engine_vs_onnx(gguf: Path, folder: Path, prompt: list[int]) -> None:
    """Prompt logits (every position), then N_DECODE cached greedy steps: logits and tokens."""
    with Model(gguf, kv_type="f32", n_ctx=256) as engine, OnnxModel(folder) as model:
        assert rel(model.logits(prompt), engine.logits(prompt)) <= FP32_TOL
        engine_tokens = engine.generate_tokens(prompt, N_DECODE, temperature=0)
        assert model.generate_tokens(prompt, N_DECODE, temperature=0) == engine_tokens
        engine.reset()
        model.reset()
        engine.eval(prompt)
        model.eval(prompt)
        worst = max(rel(model.eval([t]), engine.eval([t])) for t in engine_tokens)
        assert worst <= FP32_TOL, f"decode steps: {worst:.2e}"


def test_fp32_demo_matches_engine(
    demo_gguf: Callable[[str], Path], demo_export: Callable[[str], Path]
) -> None:
    folder = demo_export("fp32")
    onnx.checker.check_model(str(folder / "model.onnx"))
    assert (folder / "model.onnx.data").stat().st_size > 10 * (folder / "model.onnx").stat().st_size
    prompt = OnnxModel(folder).tokenize(PROMPT)
    _engine_vs_onnx(demo_gguf("f32"), folder, prompt)


def test_stream_runs_the_engines_generation_loop(
    demo_gguf: Callable[[str], Path], demo_export: Callable[[str], Path]
) -> None:
    """OnnxModel.stream is edge.Model's loop (edge.stream_loop) over onnxruntime: the same greedy text,
    finish reason and counts as the engine's stream; a cancelled stream ends with "cancelled"."""
    with Model(demo_gguf("f32"), kv_type="f32", n_ctx=256) as engine, OnnxModel(demo_export("fp32")) as model:
        ref = engine.stream(PROMPT, max_tokens=N_DECODE, temperature=0)
        ours = model.stream(PROMPT, max_tokens=N_DECODE, temperature=0)
        ref_text, our_text = "".join(ref), "".join(ours)
        assert our_text == ref_text and our_text
        assert ours.finish_reason == ref.finish_reason
        assert ours.finish_reason in ("stop", "length")
        assert ours.stats.prompt_tokens == ref.stats.prompt_tokens
        assert ours.stats.decode_tokens == ref.stats.decode_tokens > 0
        assert model.last_stats is ours.stats
        token = CancelToken()
        token.cancel()
        cancelled = model.stream(PROMPT, max_tokens=N_DECODE, cancel=token)
        assert "".join(cancelled) == "" and cancelled.finish_reason == "cancelled"


def test_fp32_synthetic_matches_engine(
    converted: Callable[[str], Path], parity_tokens: list[int], tmp_path: Path
) -> None:
    folder = export_onnx(converted("f32"), tmp_path / "onnx", "fp32")
    onnx.checker.check_model(str(folder / "model.onnx"))
    _engine_vs_onnx(converted("f32"), folder, parity_tokens)


def test_fp32_head_dim_128_matches_engine(tiny_tokenizer: Path, tmp_path: Path) -> None:
    """Grok-1's head size (128) and a 4:1 GQA group, which the tiny models (64, 2:1) do not have."""
    from edge.convert.layout import CheckpointShape
    from edge.convert.pipeline import convert_checkpoint
    from edge.convert.synthetic import make_synthetic

    shape = CheckpointShape(
        vocab_size=512,
        d_model=512,
        n_layers=2,
        n_q_heads=4,
        n_kv_heads=1,
        key_size=128,
        ffn_size=256,
        n_experts=8,
    )
    make_synthetic(tmp_path / "ckpt-0", shape, seed=3)
    gguf = tmp_path / "wide.gguf"
    convert_checkpoint(
        tmp_path / "ckpt-0", gguf, tiny_tokenizer, preset="f32", key_size=128, show_progress=False
    )
    folder = export_onnx(gguf, tmp_path / "onnx", "fp32")
    prompt = [int(t) for t in np.random.default_rng(5).integers(4, 512, size=12)]
    _engine_vs_onnx(gguf, folder, prompt)


def test_prompt_in_chunks_equals_one_pass(demo_export: Callable[[str], Path], heldout_ids: list[int]) -> None:
    """Cached evaluation in chunks (rotary positions, cache offsets) gives the one-pass logits."""
    ids = heldout_ids[:40]
    whole = OnnxModel(demo_export("fp32")).logits(ids)
    chunked = OnnxModel(demo_export("fp32"), n_batch=7)
    assert rel(chunked.logits(ids), whole) <= FP32_TOL


def test_pad_keys_are_masked(demo_gguf: Callable[[str], Path], demo_export: Callable[[str], Path]) -> None:
    """[PAD] (id 0) keys are masked as in the engine: every other position matches it (a [PAD]'s own
    logits depend on its routing, which the engine is changing; its key reaches no other position)."""
    folder = demo_export("fp32")
    ids = OnnxModel(folder).tokenize(PROMPT)
    ids[3] = ids[8] = 0
    keep = [i for i, t in enumerate(ids) if t != 0]
    with Model(demo_gguf("f32"), kv_type="f32", n_ctx=256) as engine:
        want = engine.logits(ids)[keep]
    got = OnnxModel(folder).logits(ids)
    assert rel(got[keep], want) <= FP32_TOL
    unmasked = OnnxModel(folder)
    unmasked_logits = unmasked.session.run(
        ["logits"],
        {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
            **{name: past for name, past in zip(_past_names(unmasked), unmasked._past, strict=True)},
        },
    )[0][0]
    assert rel(unmasked_logits[keep], want) > 1e-3  # the mask matters at the later positions


def _past_names(model: OnnxModel) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(model.n_layer) for kind in ("key", "value")]


def test_fp16_export_close_to_fp32(demo_export: Callable[[str], Path], heldout_ids: list[int]) -> None:
    ids = heldout_ids[:64]
    ref = OnnxModel(demo_export("fp32")).logits(ids)
    assert rel(OnnxModel(demo_export("fp16")).logits(ids), ref) <= FP16_TOL


@pytest.mark.parametrize(("precision", "gguf_preset"), [("int8", "q8_0"), ("int4", "q6_k")])
def test_quantized_export_kl_no_worse_than_gguf(
    precision: str,
    gguf_preset: str,
    demo_gguf: Callable[[str], Path],
    demo_export: Callable[[str], Path],
    heldout_ids: list[int],
) -> None:
    folder = demo_export(precision)
    onnx.checker.check_model(str(folder / "model.onnx"))
    ref = OnnxModel(demo_export("fp32")).logits(heldout_ids)
    ours = kl(ref, OnnxModel(folder).logits(heldout_ids))
    with Model(demo_gguf(gguf_preset), kv_type="f32", n_ctx=256) as engine:
        theirs = kl(ref, engine.logits(heldout_ids))
    print(f"{precision}: KL {ours:.3e} vs GGUF {gguf_preset} {theirs:.3e}")
    assert 0 < ours <= theirs
    prompt = heldout_ids[:12]
    greedy = OnnxModel(demo_export("fp32")).generate_tokens(prompt, 16, temperature=0)
    assert OnnxModel(folder).generate_tokens(prompt, 16, temperature=0) == greedy


def test_nbits_repack_is_exact(demo_gguf: Callable[[str], Path]) -> None:
    """Q8_0 blocks carry over to MatMulNBits unchanged (scales widened from float16)."""
    from edge import quant
    from edge.onnx import nbits
    from edge.onnx.grok_gguf import GrokGGUF

    with GrokGGUF(demo_gguf("q8_0")) as src:
        info = src.info("blk.2.ffn_down_exps.weight")
        assert info.type_name == "Q8_0"
        n, k = info.shape[1], info.shape[2]
        raw, tname = src.matrix("blk.2.ffn_down_exps.weight", n, k, expert=5)
        assert np.array_equal(
            nbits.to_nbits(raw, tname, n, k, 8).dequantize(), nbits.dequantize(raw, tname, n, k)
        )
        w = nbits.dequantize(raw, tname, n, k)
        q4 = quant.quantize(w, "Q4_0")
        assert np.array_equal(
            nbits.to_nbits(q4, "Q4_0", n, k, 4).dequantize(), quant.dequantize(q4, "Q4_0", (n, k))
        )


def test_onnxruntime_moe_operator_is_not_grok_expert() -> None:
    """Why the graph does not use onnxruntime's MoE operator: on CPU none of its activations computes
    Grok's expert ``(gelu_tanh(x·W1) ⊙ (x·V))·W2`` (geglu is CUDA-only; swiglu is SiLU-gated; the others
    are not gated), so each either fails or gives other numbers than the float64 Grok expert."""
    from onnx import TensorProto, helper, numpy_helper

    t, d, ff, n_exp, k = 5, 16, 32, 4, 2
    rng = np.random.default_rng(0)
    x = rng.normal(size=(t, d)).astype(np.float32)
    router = (x @ rng.normal(size=(n_exp, d)).T).astype(np.float32)
    w1, v, w2 = (
        rng.normal(size=s).astype(np.float32) * 0.3 for s in ((n_exp, ff, d), (n_exp, ff, d), (n_exp, d, ff))
    )
    p = np.exp(router - router.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gelu = lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))  # noqa: E731
    want = np.zeros((t, d))
    for i in range(t):
        for e in np.argsort(-p[i], kind="stable")[:k]:  # gates not renormalized
            want[i] += p[i, e] * (w2[e] @ (gelu(w1[e] @ x[i]) * (v[e] @ x[i])))
    interleaved = np.stack([w1, v], axis=2).reshape(n_exp, 2 * ff, d)
    cases = {
        "relu": ({}, w1),
        "gelu": ({}, w1),
        "silu": ({}, w1),
        "identity": ({}, w1),
        "swiglu": ({"swiglu_fusion": 1}, interleaved),
        "geglu": ({"swiglu_fusion": 2}, np.concatenate([w1, v], axis=1)),
    }
    for act, (extra, fc1) in cases.items():
        node = helper.make_node(
            "MoE",
            ["x", "r", "fc1", "", "fc2"],
            ["y"],
            domain="com.microsoft",
            k=k,
            activation_type=act,
            normalize_routing_weights=0,
            **extra,
        )
        graph = helper.make_graph(
            [node],
            "moe",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, d]),
                helper.make_tensor_value_info("r", TensorProto.FLOAT, [t, n_exp]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [t, d])],
            [numpy_helper.from_array(fc1, "fc1"), numpy_helper.from_array(w2, "fc2")],
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
        )
        try:
            sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            got = sess.run(None, {"x": x, "r": router})[0]
        except Exception:  # noqa: BLE001 - unsupported on CPU is one of the two outcomes
            continue
        assert rel(got, want) > 1e-2, f"onnxruntime's MoE ({act}) computes Grok's expert: use it"


def test_genai_generate_equals_grok_edge_run(
    demo_gguf: Callable[[str], Path], demo_export: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime-genai's own tokenizer and greedy loop on the exported folder: `grok-edge run`'s text."""
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed")
    from edge.cli import main

    folder = demo_export("fp32")
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    ours = OnnxModel(folder)
    lines = [line for line in (data_dir() / "heldout.txt").read_text().splitlines() if line.strip()][:100]
    for line in [*lines, "  two  spaces", "ünïcödé ☃\ttab"]:
        assert list(tokenizer.encode(line)) == ours.tokenize(line), line

    prompt = "And God said,"
    ids = ours.tokenize(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + N_DECODE, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    tokens: list[int] = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    assert tokens == ours.generate_tokens(ids, len(tokens), temperature=0)
    text = tokenizer.decode(np.array(tokens, dtype=np.int32))

    assert main(["run", str(demo_gguf("f32")), "-p", prompt, "-n", str(len(tokens)), "--temp", "0"]) == 0
    assert capsys.readouterr().out == prompt + text + "\n"


def test_export_cli(
    demo_gguf: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    out = tmp_path / "int8"
    assert (
        main(["export-onnx", str(demo_gguf("q8_0")), "-o", str(out), "--precision", "int8", "--quiet"]) == 0
    )
    names = {p.name for p in out.iterdir()}
    want = {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"}
    assert want <= names
    assert main(["export-onnx", str(demo_gguf("q8_0")), "-o", str(out)]) == 1  # not empty, no --force
    assert "not empty" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 60)
    assert main(["export-onnx", str(bad), "-o", str(tmp_path / "x")]) == 1
    assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_streamed_in_small_chunks_same_bytes(
    precision: str,
    demo_gguf: Callable[[str], Path],
    demo_export: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Matrices decoded a few rows at a time (as a large model's are) give the same files."""
    from edge.onnx import exporter

    monkeypatch.setattr(exporter, "CHUNK_BYTES", 64 << 10)  # 64 rows of 256 a chunk on the demo model
    folder = export_onnx(demo_gguf("f32"), tmp_path / precision, precision)
    for name in ("model.onnx", "model.onnx.data"):
        assert (folder / name).read_bytes() == (demo_export(precision) / name).read_bytes()
