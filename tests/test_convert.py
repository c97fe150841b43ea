"""grok-edge convert: every preset, exact F32 mapping, metadata, CLI behaviour, malformed inputs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import gguf
import grok_reference as ref
import ml_dtypes
import numpy as np
import pytest
from edge.convert.layout import parse_layer_path
from edge.convert.mapping import target_for
from edge.convert.recipe import FILE_TYPES, PRESETS, choose_type
from edge.convert.release import open_checkpoint
from edge.convert.safe_pickle import QuantizedWeight8bit, write_leaf
from parity import llama_logits
from tiny_models import TINY_KEY_SIZE

from edge.cli import main


def _tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields[key]
    return f.contents()


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_converts_and_runs_in_llama_cpp(
    converted: Callable[[str], Path], tiny_ckpt, preset
) -> None:
    path = converted(preset)
    reader = gguf.GGUFReader(path)
    assert _field(reader, "general.architecture") == "grok"
    assert _field(reader, "general.file_type") == FILE_TYPES[preset]
    assert _field(reader, "general.quantization_version") == 2
    ckpt = open_checkpoint(tiny_ckpt, TINY_KEY_SIZE)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 12 * ckpt.shape.n_layers
    for spec in ckpt.specs:  # every tensor has the type the recipe chose and ggml's [in, out, ...] shape
        target = target_for(spec)
        t = tensors[target.name]
        assert t.tensor_type.name == choose_type(preset, target, ckpt.shape.n_layers, {})
        assert tuple(int(d) for d in t.shape) == tuple(reversed(target.gguf_shape))
    logits = llama_logits(path, [5, 17, 300])
    assert logits.shape == (3, 512) and np.all(np.isfinite(logits))


def _not_bf16(x: np.ndarray) -> float:
    """Fraction of the values that bf16 cannot represent (rounding to bf16 would change them)."""
    return float(np.mean(x.astype(ml_dtypes.bfloat16).astype(np.float64) != x))


def test_f32_tensors_hold_the_exact_int8_times_bf16_products(
    converted: Callable[[str], Path], tiny_ckpt
) -> None:
    # The official code's weights are the exact products int8 x bf16 scale (XLA keeps them in float32,
    # where 8 x 8 significant bits are exact; docs/grok1.md). Expected values come from the float64
    # reference's own dequantization of the raw pickled arrays, not from the converter's. Most products
    # of the tiny checkpoint are not bf16 values, in both scale layouts, so a bf16 rounding anywhere
    # fails here.
    tensors = _tensors(converted("f32"))
    ckpt = open_checkpoint(tiny_ckpt, TINY_KEY_SIZE)
    seen = {1: 0, 8: 0}  # scale blocks per output channel: column-parallel 1, row-parallel 8
    for spec, leaf in ckpt.leaves():
        want = ref.dequantize(leaf)
        if isinstance(leaf, QuantizedWeight8bit):
            assert np.all(want.astype(np.float32) == want), spec.path  # exact in float32
            assert _not_bf16(want) > 0.5, (spec.path, _not_bf16(want))
            seen[leaf.scales.shape[-2]] += 1
        if len(spec.shape) >= 2 and "in_out_embed" not in spec.path:
            want = np.swapaxes(want, -1, -2)  # release [in, out] -> GGUF rows [out, in]
        got = np.asarray(tensors[target_for(spec).name].data).reshape(want.shape)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=spec.path)
    assert seen[1] == 5 * ckpt.shape.n_layers and seen[8] == 2 * ckpt.shape.n_layers
    # spot-check names against paths, including a two-digit layer
    assert "blk.10.ffn_down_exps.weight" in tensors and "output.weight" not in tensors  # tied output
    parsed = parse_layer_path("transformer/decoder_layer_10/moe/linear_1")
    assert parsed == (10, "moe/linear_1")
    down = tensors["blk.10.ffn_down_exps.weight"]
    assert tuple(int(d) for d in down.shape) == (256, 256, 8)  # ne = [n_ff, n_embd, n_expert]


@pytest.mark.parametrize(("preset", "dtype"), [("f16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_f16_and_bf16_round_the_exact_product_once(
    converted: Callable[[str], Path], tiny_ckpt, preset: str, dtype
) -> None:
    # Each matrix of these presets is the exact product rounded once (to nearest even) to the file's
    # type: not first to bf16 and then again. Norms and routers stay F32.
    tensors = _tensors(converted(preset))
    ckpt = open_checkpoint(tiny_ckpt, TINY_KEY_SIZE)
    for spec, leaf in ckpt.leaves():
        if not isinstance(leaf, QuantizedWeight8bit):
            continue
        want = np.swapaxes(ref.dequantize(leaf), -1, -2).astype(dtype)
        t = tensors[target_for(spec).name]
        assert t.tensor_type.name == preset.upper(), spec.path
        got = np.asarray(t.data).view(dtype).reshape(want.shape)
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16), err_msg=spec.path)


def test_metadata_carries_hyperparameters_constants_and_tokenizer(converted: Callable[[str], Path]) -> None:
    reader = gguf.GGUFReader(converted("q8_0"))
    expected = {
        "grok.embedding_length": 256,
        "grok.block_count": 11,
        "grok.feed_forward_length": 256,
        "grok.expert_feed_forward_length": 256,
        "grok.attention.head_count": 4,
        "grok.attention.head_count_kv": 2,
        "grok.attention.key_length": 64,
        "grok.expert_count": 8,
        "grok.expert_used_count": 2,
        "grok.context_length": 8192,
    }
    for key, value in expected.items():
        assert _field(reader, key) == value, key
    floats = {
        "grok.embedding_scale": 78.38367176906169,
        "grok.output_scale": 0.5773502691896257,
        "grok.attention.output_multiplier": 0.08838834764831845,
        "grok.attn_logit_softcapping": 30.0,
        "grok.attention.layer_norm_rms_epsilon": 1e-5,
        "grok.rope.freq_base": 10000.0,
    }
    for key, value in floats.items():
        assert _field(reader, key) == pytest.approx(value, rel=1e-6), key
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    assert len(_field(reader, "tokenizer.ggml.tokens")) == 512


def test_chunking_does_not_change_the_output(
    tiny_ckpt, tiny_tokenizer, converted, tmp_path, monkeypatch
) -> None:
    import edge.convert.pipeline as pipeline

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 4 * 256 * 3)  # 3 rows per chunk: many partial chunks
    out = tmp_path / "chunked.gguf"
    pipeline.convert_checkpoint(
        tiny_ckpt, out, tiny_tokenizer, preset="q4_k_m", key_size=TINY_KEY_SIZE, show_progress=False
    )
    assert out.read_bytes() == converted("q4_k_m").read_bytes()


def _cli(*args: str) -> int:
    return main(["convert", *args, "--quiet"])


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "x.gguf"
    rc = _cli(str(tiny_ckpt), "-o", str(out), "--head-dim", "64", "--dry-run", "--tensor-type", "attn_q=Q8_0")
    text = capsys.readouterr().out
    assert rc == 0 and not out.exists()
    assert "ffn_gate_exps" in text and "bpw" in text and "output size" in text
    assert any(line.startswith("attn_q") and "Q8_0" in line for line in text.splitlines())


def test_tensor_type_override_and_force(tiny_ckpt, tiny_tokenizer, tmp_path, capsys) -> None:
    out = tmp_path / "o.gguf"
    args = [str(tiny_ckpt), "-o", str(out), "--tokenizer", str(tiny_tokenizer), "--head-dim", "64"]
    assert _cli(*args, "--preset", "q4_k_m", "--tensor-type", "ffn_gate_exps=Q5_K") == 0
    types = {n: t.tensor_type.name for n, t in _tensors(out).items()}
    assert types["blk.3.ffn_gate_exps.weight"] == "Q5_K" and types["blk.3.ffn_up_exps.weight"] == "Q4_K"
    capsys.readouterr()
    before = out.read_bytes()
    assert _cli(*args) == 1  # exists, no --force
    err = capsys.readouterr().err
    assert "--force" in err and str(out) in err and out.read_bytes() == before
    assert _cli(*args, "--preset", "q8_0", "--force") == 0
    assert out.read_bytes() != before
    assert _cli(*args, "--force", "--tensor-type", "norm=Q8_0") == 1  # norms stay F32
    assert "norm" in capsys.readouterr().err


def _copy(tiny_ckpt: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ckpt-0"
    shutil.copytree(tiny_ckpt, dst)
    return dst


def _break_missing(d: Path) -> Path:
    (d / "tensor00007_000").unlink()
    return d / "tensor00007_000"


def _break_extra(d: Path) -> Path:
    (d / "notes.txt").write_text("hi")
    return d / "notes.txt"


def _break_extra_tensor(d: Path) -> Path:
    shutil.copy(d / "tensor00001_000", d / "tensor00134_000")
    return d / "tensor00134_000"


def _break_missing_last(d: Path) -> Path:
    (d / "tensor00133_000").unlink()
    return d / "tensor00133_000"


def _break_shape(d: Path) -> Path:
    f = d / "tensor00001_000"  # language_model/rms_norm [256]
    write_leaf(f, np.ones(255, np.float32))
    return f


def _break_dtype(d: Path) -> Path:
    f = d / "tensor00012_000"  # transformer/decoder_layer_0/rms_norm_3
    write_leaf(f, np.ones(256, np.float16))
    return f


def _break_layer_dtype(d: Path) -> Path:
    ckpt = open_checkpoint(d, TINY_KEY_SIZE)
    spec = next(s for s in ckpt.specs if s.path == "transformer/decoder_layer_10/multi_head_attention/value")
    f = d / spec.file_name
    write_leaf(f, np.ones(spec.shape, np.float32))  # float instead of QuantizedWeight8bit
    return f


def _break_truncated(d: Path) -> Path:
    f = d / "tensor00020_000"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    return f


def _break_other_class(d: Path) -> Path:
    f = d / "tensor00030_000"
    f.write_bytes(b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85R.")
    return f


@pytest.mark.parametrize(
    "breaker",
    [
        _break_missing,
        _break_extra,
        _break_extra_tensor,
        _break_missing_last,
        _break_shape,
        _break_dtype,
        _break_layer_dtype,
        _break_truncated,
        _break_other_class,
    ],
)
def test_malformed_checkpoints_fail_cleanly(breaker, tiny_ckpt, tiny_tokenizer, tmp_path, capsys) -> None:
    ckpt = _copy(tiny_ckpt, tmp_path)
    culprit = breaker(ckpt)
    out = tmp_path / "out.gguf"
    rc = _cli(str(ckpt), "-o", str(out), "--tokenizer", str(tiny_tokenizer), "--head-dim", "64")
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and str(culprit) in err, err
    assert not out.exists() and not (tmp_path / "out.gguf.part").exists()


@pytest.mark.parametrize("content", [b"", b"not a protobuf \xff\xff\xff", None])
def test_unreadable_tokenizer_fails_cleanly(content, tiny_ckpt, tmp_path, capsys) -> None:
    tok = tmp_path / "tokenizer.model"
    if content is not None:
        tok.write_bytes(content)
    out = tmp_path / "out.gguf"
    rc = _cli(str(tiny_ckpt), "-o", str(out), "--tokenizer", str(tok), "--head-dim", "64")
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and str(tok) in err, err
    assert not out.exists() and not (tmp_path / "out.gguf.part").exists()


def test_wrong_vocab_tokenizer_is_refused(tiny_ckpt, tmp_path, capsys) -> None:
    from tiny_models import train_tiny_tokenizer

    tok = train_tiny_tokenizer(tmp_path / "tok400", 400)
    out = tmp_path / "out.gguf"
    rc = _cli(str(tiny_ckpt), "-o", str(out), "--tokenizer", str(tok), "--head-dim", "64")
    err = capsys.readouterr().err
    assert rc == 1 and str(tok) in err and "512" in err and not out.exists()


def test_interrupt_leaves_no_partial_output(tiny_ckpt, tiny_tokenizer, tmp_path, monkeypatch) -> None:
    from edge.convert.pipeline import convert_checkpoint

    from edge import quant

    real = quant.quantize
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(quant, "quantize", interrupted)
    out = tmp_path / "out.gguf"
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_ckpt, out, tiny_tokenizer, preset="q8_0", key_size=64, show_progress=False)
    assert calls["n"] == 20
    assert list(tmp_path.iterdir()) == []


def test_make_synthetic_command_writes_the_release_layout(tmp_path, capsys) -> None:
    out = tmp_path / "ckpt-0"
    rc = main(["make-synthetic", str(out), "--n-layers", "12", "--vocab-size", "256", "--quiet"])
    assert rc == 0
    ckpt = open_checkpoint(out, 64)
    assert ckpt.shape.n_layers == 12 and ckpt.shape.vocab_size == 256
    assert len(list(out.iterdir())) == 2 + 12 * 12
    assert main(["make-synthetic", str(out), "--quiet"]) == 1  # refuses a non-empty directory


def test_llama_ftype_numbers_match_llama_cpp() -> None:
    """general.file_type per preset and the `pure` ftype per single type are llama.cpp's own enum values."""
    from edge.convert.recipe import LLAMA_PURE_FTYPES

    llama_cpp = pytest.importorskip("llama_cpp")
    preset_names = {
        "f32": "ALL_F32",
        "q5_k_m": "MOSTLY_Q5_K_M",
        "q4_k_m": "MOSTLY_Q4_K_M",
        "q3_k_m": "MOSTLY_Q3_K_M",
    }
    for preset, value in FILE_TYPES.items():
        name = preset_names.get(preset, f"MOSTLY_{preset.upper()}")
        assert getattr(llama_cpp, f"LLAMA_FTYPE_{name}") == value, preset
    type_names = {"F32": "ALL_F32", "Q3_K": "MOSTLY_Q3_K_M", "Q4_K": "MOSTLY_Q4_K_M", "Q5_K": "MOSTLY_Q5_K_M"}
    for qtype, value in LLAMA_PURE_FTYPES.items():
        name = type_names.get(qtype, f"MOSTLY_{qtype}")
        assert getattr(llama_cpp, f"LLAMA_FTYPE_{name}") == value, qtype
