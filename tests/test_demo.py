"""`grok-edge demo`: the shipped tiny model is a valid release checkpoint, converts, and generates text."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from edge.convert.release import open_checkpoint
from edge.convert.safe_pickle import QuantizedWeight8bit

from edge.commands.demo import DEMO_PRESETS, data_dir, model_info


def test_shipped_model_is_a_release_checkpoint() -> None:
    info = model_info()
    ckpt = open_checkpoint(data_dir() / "ckpt-0", int(info["key_size"]))
    assert ckpt.shape.n_layers >= 11  # file order 0, 1, 10, 2, ... differs from numeric order
    assert ckpt.shape.n_experts == 8
    assert ckpt.shape.d_model % 256 == 0 and ckpt.shape.ffn_size % 256 == 0  # whole K-quant blocks
    kinds = {spec.path: type(leaf) for spec, leaf in ckpt.leaves()}
    assert kinds["language_model/in_out_embed"] is not QuantizedWeight8bit
    assert kinds["transformer/decoder_layer_10/moe/linear_1"] is QuantizedWeight8bit
    assert kinds["transformer/decoder_layer_10/router"] is not QuantizedWeight8bit
    assert (data_dir() / "tokenizer.model").is_file() and (data_dir() / "heldout.txt").is_file()


def _grok_edge() -> list[str]:
    script = Path(sys.executable).parent / "grok-edge"
    if script.exists():
        return [str(script)]
    found = shutil.which("grok-edge")
    assert found, "the grok-edge console script is not installed"
    return [found]


def test_demo_converts_and_generates(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [*_grok_edge(), "demo", "--out", str(out), "--max-tokens", "32"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    sizes = {}
    for preset in DEMO_PRESETS:
        m = re.search(rf"^\s+{preset}\s+([0-9.]+) MiB", text, re.MULTILINE)
        assert m, f"no size line for {preset} in:\n{text}"
        sizes[preset] = float(m.group(1))
        assert (out / f"tiny-grok-{preset}.gguf").stat().st_size > 0
    assert sizes["f32"] > sizes["q8_0"] > sizes["q4_k_m"] > sizes["q2_k"]
    prompt = model_info()["prompt"]
    assert prompt in text
    completion = text.split(prompt, 1)[1].split("tokens/s")[0]
    words = re.findall(r"[A-Za-z]+", completion)
    assert len(words) >= 5, completion
    # reads like the training text: its words are King James words (held-out chapters as a sample)
    vocab = set(re.findall(r"[A-Za-z]+", (data_dir() / "heldout.txt").read_text()))
    known = sum(w in vocab for w in words) / len(words)
    assert known >= 0.8, (known, completion)
    assert re.search(r"[0-9.]+ tokens/s", text)


def test_model_json_records_training() -> None:
    info = json.loads((data_dir() / "model.json").read_text())
    assert info["n_params"] > 5_000_000
    assert len(info["train_unigram_counts"]) == info["model"]["vocab_size"]


def test_cached_demo_files_of_an_older_converter_are_converted_again(tmp_path: Path) -> None:
    from edge.convert.pipeline import CONVERTER_REVISION

    from edge.commands.demo import convert_preset

    out = convert_preset("q8_0", tmp_path)
    stamp = out.with_name(out.name + ".rev")
    assert stamp.read_text().strip() == str(CONVERTER_REVISION)
    first = out.stat().st_mtime_ns
    assert convert_preset("q8_0", tmp_path).stat().st_mtime_ns == first  # current: reused
    stamp.write_text("1\n")  # a file written by the bf16-rounding converter
    again = convert_preset("q8_0", tmp_path)
    assert again.stat().st_mtime_ns != first
    assert stamp.read_text().strip() == str(CONVERTER_REVISION)
    stamp.unlink()  # no stamp at all (files from before stamps existed): converted again too
    convert_preset("q8_0", tmp_path)
    assert stamp.exists()
