"""`grok-edge info` lists what gguf-py reads, with per-class totals; a bad file gives one clean error.

`grok-edge info FILE.gguf`: lists the same tensors and metadata gguf-py reads, with per-class totals;
a bad file gives one clean error line and exit status 1."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf_cases import (
    GGUF_PY_TYPE_SIZE_BUGS,
    STRING,
    T_F32,
    base_file,
    every_type_file,
    gguf_bytes,
    gstr,
    kv,
    malformed_cases,
    tensor_info,
)

from edge.cli import main
from edge.commands.info import JSON_ARRAY_LIMIT


@pytest.fixture(scope="module")
def every_type(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("info") / "every_type.gguf"
    every_type_file(path)
    return path


def _info_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_lists_what_gguf_py_reads(every_type: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = _info_json(every_type, capsys)
    reader = gguf.GGUFReader(every_type)
    assert info["gguf_version"] == 3 and info["architecture"] == "grok"
    assert [t["name"] for t in info["tensors"]] == [t.name for t in reader.tensors]
    for ours, theirs in zip(info["tensors"], reader.tensors, strict=True):
        assert ours["type"] == theirs.tensor_type.name
        assert ours["ne"] == [int(n) for n in theirs.shape]
        assert ours["shape"] == list(reversed(ours["ne"]))
        assert ours["params"] == theirs.n_elements
        if ours["type"] not in GGUF_PY_TYPE_SIZE_BUGS:  # see test_gguf_reader.py
            assert ours["bytes"] == theirs.n_bytes
    fields = {k: v for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(info["metadata"]) == list(fields)
    for key, field in fields.items():
        entry = info["metadata"][key]
        assert entry["type"] == field.types[0].name, key
        expected = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert entry["elem_type"] == field.types[-1].name and entry["length"] == len(expected), key
            if len(expected) <= JSON_ARRAY_LIMIT:
                assert entry["value"] == expected, key
        else:
            assert entry["value"] == expected, key
    tok = info["tokenizer"]
    assert tok["model"] == "llama" and tok["vocab_size"] == 4
    assert tok["bos_token_id"] == 2 and tok["eos_token_id"] == 1 and tok["padding_token_id"] is None
    assert info["hyperparameters"] == {"grok.block_count": 1, "grok.context_length": 8192}


def test_long_arrays_are_summarized_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(str(path), "grok")
    w.add_token_list([f"t{i}" for i in range(1000)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    entry = _info_json(path, capsys)["metadata"]["tokenizer.ggml.tokens"]
    assert entry["length"] == 1000 and entry["head"][:3] == ["t0", "t1", "t2"] and "value" not in entry


def test_totals_per_class_and_bits_per_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(base_file())
    info = _info_json(path, capsys)
    totals = info["totals"]
    # token_embd F32 [32, 2]; blk.0.attn_q Q4_0 [64, 2] (18 bytes per 32 weights); attn_norm I8 [16]
    assert totals["embeddings"] == {"tensors": 1, "params": 64, "bytes": 256, "bits_per_weight": 32.0}
    assert totals["attention"] == {"tensors": 1, "params": 128, "bytes": 72, "bits_per_weight": 4.5}
    assert totals["norms"] == {"tensors": 1, "params": 16, "bytes": 16, "bits_per_weight": 8.0}
    assert totals["router"]["tensors"] == 0 and totals["experts"]["tensors"] == 0
    assert "other" not in totals
    assert info["total"] == {
        "tensors": 3,
        "params": 208,
        "bytes": 344,
        "bits_per_weight": round(344 * 8 / 208, 4),
    }


def test_text_output_lists_every_tensor_and_key(every_type: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(every_type)]) == 0
    out = capsys.readouterr().out
    reader = gguf.GGUFReader(every_type)
    lines = out.splitlines()
    for t in reader.tensors:
        row = next((ln for ln in lines if ln.split()[:1] == [t.name]), None)
        assert row is not None, t.name
        assert t.tensor_type.name in row.split()
    for key in reader.fields:
        if not key.startswith("GGUF."):
            assert any(ln.split()[:1] == [key] for ln in lines), key
    assert "architecture: grok" in out and "tokenizer: model llama, vocab 4, bos 2, eos 1" in out
    assert "bits/weight" in out and np.any([ln.strip().startswith("total ") for ln in lines])


def _cli() -> list[str]:
    exe = shutil.which("grok-edge", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())"]


def test_bad_file_prints_one_clean_line(tmp_path: Path) -> None:
    case = next(c for c in malformed_cases() if c.name == "offset_past_end")
    path = tmp_path / "bad.gguf"
    path.write_bytes(case.data)
    result = subprocess.run([*_cli(), "info", str(path)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"grok-edge info: error: {path}: ") and case.expect in lines[0]


def test_missing_file_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nope.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("grok-edge info: error: ") and "nope.gguf: cannot open" in err


def test_system_flag_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--system"]) == 0
    assert "cuda: compiled=" in capsys.readouterr().out


def test_non_utf8_names_print_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bytes.gguf"
    path.write_bytes(
        gguf_bytes(
            [kv(b"general.\xffname", STRING, gstr(b"x\xfe"))],
            [tensor_info(b"t\xe9", [1], T_F32, 0)],
            b"\0" * 4,
        )
    )
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "general.\\udcffname" in out and "t\\udce9" in out
    info = _info_json(path, capsys)
    assert list(info["metadata"]) == ["general.\udcffname"] and info["tensors"][0]["name"] == "t\udce9"


def _grok_like_file(path: Path) -> None:
    """Two layers in llama.cpp's grok naming, experts stacked 3-D, one quant type per class."""
    qt = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1)
    n_embd, n_ff, n_expert, n_vocab = 256, 512, 4, 32
    w = gguf.GGUFWriter(str(path), "grok")
    w.add_block_count(2)
    w.add_embedding_length(n_embd)
    w.add_expert_count(n_expert)

    def raw(name: str, shape: tuple[int, ...], t: qt) -> None:
        block, size = gguf.GGML_QUANT_SIZES[t]
        w.add_tensor(
            name, rng.integers(0, 256, (*shape[:-1], shape[-1] // block * size), dtype=np.uint8), raw_dtype=t
        )

    raw("token_embd.weight", (n_vocab, n_embd), qt.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(2):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            raw(f"blk.{i}.{name}.weight", (n_embd, n_embd), qt.Q8_0)
        for name in ("attn_norm", "attn_output_norm", "ffn_norm", "layer_output_norm"):
            w.add_tensor(f"blk.{i}.{name}.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate_inp.weight", np.zeros((n_expert, n_embd), dtype=np.float32))
        raw(f"blk.{i}.ffn_gate_exps.weight", (n_expert, n_ff, n_embd), qt.Q4_K)
        raw(f"blk.{i}.ffn_up_exps.weight", (n_expert, n_ff, n_embd), qt.Q4_K)
        raw(f"blk.{i}.ffn_down_exps.weight", (n_expert, n_embd, n_ff), qt.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_grok_tensor_classes_and_bits_per_weight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "grok.gguf"
    _grok_like_file(path)
    info = _info_json(path, capsys)
    totals = info["totals"]
    e, f = 256, 512 * 4  # n_embd; n_ff × n_expert
    # bits per weight: Q8_0 34 B / 32, Q4_K 144 B / 256, Q6_K 210 B / 256, F32 32
    assert totals["embeddings"] == {
        "tensors": 1,
        "params": 32 * e,
        "bytes": 32 * e // 32 * 34,
        "bits_per_weight": 8.5,
    }
    assert totals["attention"]["params"] == 2 * 4 * e * e and totals["attention"]["bits_per_weight"] == 8.5
    assert totals["router"] == {
        "tensors": 2,
        "params": 2 * 4 * e,
        "bytes": 2 * 4 * e * 4,
        "bits_per_weight": 32.0,
    }
    assert totals["norms"] == {"tensors": 9, "params": 9 * e, "bytes": 9 * e * 4, "bits_per_weight": 32.0}
    expert_bytes = 2 * (2 * f * e // 256 * 144 + f * e // 256 * 210)
    assert totals["experts"] == {
        "tensors": 6,
        "params": 2 * 3 * f * e,
        "bytes": expert_bytes,
        "bits_per_weight": round(8 * expert_bytes / (2 * 3 * f * e), 4),
    }
    assert "other" not in totals
    assert info["total"]["bytes"] == sum(t.n_bytes for t in gguf.GGUFReader(path).tensors)
    assert info["hyperparameters"] == {
        "grok.block_count": 2,
        "grok.embedding_length": 256,
        "grok.expert_count": 4,
    }
