"""The C engine's memory: weights used in place (peak RSS is file + KV cache), clean under ASan + UBSan.

The weights are used in place from the mapping, never copied; no memory error or leak under ASan +
UBSan over float, quantized and per-expert files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_gguf import write_grok_gguf
from native_build import asan_engine_driver

# VmHWM (the peak RSS of this process image) rather than ru_maxrss, which Linux carries over from the
# forked parent (pytest) across exec.
RSS_PROBE = """
import sys
import edge
def peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
model = edge.Model(sys.argv[1], n_threads=1)  # n_ctx 8192: the whole KV cache is allocated here
after_load = peak_rss()
model.eval(list(range(5, 5 + 300)))  # a prompt batch: every expert of every layer is read
for _ in range(4):
    model.eval([7])
print(after_load, peak_rss(), model.n_ctx)
"""


@pytest.fixture(scope="module")
def larger_gguf(tmp_path_factory) -> Path:
    """A ~360 MB Q8_0 grok GGUF of random weights (4 layers, d 1024, 8 experts of 3072), so that a copy
    of the weights would stand out against the 200 MB allowance."""
    rng = np.random.default_rng(3)
    d, ff, n_exp, layers, vocab = 1024, 3072, 8, 4, 32768

    def mat(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[-2]))).astype(
            np.float32
        )

    params: dict[str, np.ndarray] = {
        "language_model/in_out_embed": rng.standard_normal((vocab, d), dtype=np.float32) / np.float32(78.0),
        "language_model/rms_norm": np.ones(d, np.float32),
    }
    for layer in range(layers):
        pre = f"transformer/decoder_layer_{layer}/"
        params.update(
            {
                pre + "multi_head_attention/query": mat(d, d),
                pre + "multi_head_attention/key": mat(d, 256),
                pre + "multi_head_attention/value": mat(d, 256),
                pre + "multi_head_attention/linear": mat(d, d),
                pre + "router": mat(d, n_exp),
                pre + "moe/linear": mat(n_exp, d, ff),
                pre + "moe/linear_v": mat(n_exp, d, ff),
                pre + "moe/linear_1": mat(n_exp, ff, d),
            }
        )
        for norm in ("rms_norm", "rms_norm_1", "rms_norm_2", "rms_norm_3"):
            params[pre + norm] = np.ones(d, np.float32)
    path = tmp_path_factory.mktemp("rss") / "larger-q8_0.gguf"
    write_grok_gguf(path, params, 128, "Q8_0")
    return path


def test_peak_rss_is_the_mapped_file_plus_kv_cache(larger_gguf):
    """Peak RSS <= file size + KV cache + 200 MB (Python, numpy, buffers): the weights are used in place
    from the mapping, never copied. Right after loading, before any token, the mapped weights are not
    even resident: RSS is under the KV cache + 200 MB."""
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("peak RSS is read from /proc/self/status (Linux)")

    out = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(larger_gguf)],
        capture_output=True,
        text=True,
        check=True,
        cwd=larger_gguf.parent,  # not the source tree: import the installed package
    ).stdout.split()
    after_load, peak, n_ctx = (int(v) for v in out)
    file_size = larger_gguf.stat().st_size
    kv_bytes = 2 * 4 * n_ctx * 256 * 2  # K and V, 4 layers, 2 KV heads x 128, F16
    allowance = 200 * 2**20
    assert file_size > 300 * 2**20  # a copy of the weights would not fit in the allowance
    assert after_load < kv_bytes + allowance, (after_load, kv_bytes)
    assert peak < file_size + kv_bytes + allowance, (peak, file_size, kv_bytes)
    print(f"file {file_size / 2**20:.0f} MiB, KV {kv_bytes / 2**20:.0f} MiB, RSS after load "
          f"{after_load / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB")  # fmt: skip


def test_engine_is_sanitizer_clean(converted, tiny_reference, tmp_path):
    import os
    import platform
    import subprocess

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the driver build uses the x86-64 ISA file flags")
    params, config = tiny_reference
    split = tmp_path / "split.gguf"
    write_grok_gguf(split, params, config.key_size, "Q4_K", split_experts=True)
    files = [converted("f32"), converted("q8_0"), converted("q4_k_m"), split]
    env = {
        **os.environ,
        "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    result = subprocess.run(
        [str(asan_engine_driver()), *map(str, files)], capture_output=True, text=True, env=env, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for report in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert report not in output, output[-6000:]
    assert output.count("ok ") == len(files)
