"""Quantization quality and speed: edge's quantizers against llama.cpp's on a Grok-like weight sample.

Grok-1's release stores matrices as int8 levels times bf16 scales: one scale per output channel for
q/k/v and the expert up/gate projections, and for the row-parallel ones (attention output, expert
down) 8 scales per output channel, one per eighth of the input dimension. The sample reproduces that:
heavy-tailed int8 levels (Student-t, clipped) times log-normally spread bf16 scales, in GGUF's
[out, in] orientation.

For each type: bits per weight, RMSE of ours, of gguf-py's numpy quantizer (where it has one) and of
llama.cpp (llama_model_quantize, pure, same tensors), ours / llama.cpp's, the throughput of both
quantizers (MB/s of float32 input; llama.cpp's includes reading and writing its GGUF files), and the
RMSE of ours given a uniform imatrix (all ones: llama.cpp's imatrix searches with no column preferred,
"ones" below; "—" for the types that take no imatrix).

    python bench/quant_quality.py [--scale 1.0] [--threads 2] [--types Q4_K,Q6_K]
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from pathlib import Path

import gguf
import ml_dtypes
import numpy as np
from edge.convert.recipe import LLAMA_PURE_FTYPES

from edge import quant

LLAMA_FTYPE = LLAMA_PURE_FTYPES


def grok_like_weights(scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def int8_levels(shape: tuple[int, int]) -> np.ndarray:
        t = rng.standard_t(4, size=shape) * 18.0
        return np.clip(np.rint(t), -127, 127)

    def bf16(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)

    d_model, d_ff = 6144, 32768
    rows_qkv = max(32, int(256 * scale))
    rows_down = max(8, int(64 * scale))
    # column-parallel (wq): one scale per output channel = per GGUF row
    wq_scales = bf16(np.exp(rng.normal(np.log(2e-4), 0.5, size=(rows_qkv, 1))))
    wq = int8_levels((rows_qkv, d_model)) * wq_scales
    # row-parallel (expert down, [out=6144, in=32768]): 8 scales per row, one per 4096 inputs
    down_scales = bf16(np.exp(rng.normal(np.log(1e-4), 0.7, size=(rows_down, 8, 1))))
    down_levels = int8_levels((rows_down * 8, d_ff // 8)).reshape(rows_down, 8, -1)
    down = (down_levels * down_scales).reshape(rows_down, d_ff)
    return {
        "blk.0.attn_q.weight": wq.astype(np.float32),
        "blk.0.ffn_down_exps.weight": down.astype(np.float32),
    }


def write_f32_gguf(path: Path, tensors: dict[str, np.ndarray]) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(6144)
    w.add_block_count(1)
    w.add_feed_forward_length(32768)
    w.add_head_count(48)
    w.add_head_count_kv(8)
    w.add_layer_norm_rms_eps(1e-5)
    for name, t in tensors.items():
        # llama.cpp's loader wants known tensor names; the row-parallel sample goes in as ffn_down
        w.add_tensor(name.replace("ffn_down_exps", "ffn_down"), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_quantize(src: Path, dst: Path, qtype: str, threads: int) -> tuple[dict[str, np.ndarray], float]:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE[qtype]
    params.pure = True
    params.nthread = threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed for {qtype}")
    out = {}
    for t in gguf.GGUFReader(str(dst)).tensors:
        if t.tensor_type.name == qtype:
            name = t.name.replace("ffn_down", "ffn_down_exps")
            out[name] = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
    return out, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="sample size factor (1.0: ~3.5 M weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--types", default=",".join(quant.QUANT_TYPES))
    args = ap.parse_args()

    tensors = grok_like_weights(args.scale)
    n_weights = sum(t.size for t in tensors.values())
    mb = n_weights * 4 / 1e6
    shapes = ", ".join(f"{k} {v.shape}" for k, v in tensors.items())
    print(f"sample: {shapes}; {n_weights / 1e6:.2f} M weights")
    print(f"threads: {args.threads} (ours and llama.cpp's)")
    header = (
        f"{'type':7s} {'bits/w':>6s} {'RMSE ours':>11s} {'RMSE gguf-py':>12s} {'RMSE llama':>11s} "
        f"{'ratio':>7s} {'ours MB/s':>9s} {'llama MB/s':>10s} {'RMSE ones':>11s} {'ones/llama':>10s}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "f32.gguf"
        write_f32_gguf(src, tensors)
        for qtype in args.types.split(","):
            qtype = qtype.strip().upper()
            t0 = time.perf_counter()
            ours = {name: quant.quantize(t, qtype, n_threads=args.threads) for name, t in tensors.items()}
            ours_s = time.perf_counter() - t0
            nbytes = sum(q.nbytes for q in ours.values())
            theirs, llama_s = llama_quantize(src, Path(tmp) / "out.gguf", qtype, args.threads)
            se_ours = se_theirs = se_gguf = 0.0
            gtype = gguf.GGMLQuantizationType[qtype]
            for name, t in tensors.items():
                x = t.astype(np.float64)
                se_ours += float(np.sum((quant.dequantize(ours[name], qtype, t.shape) - x) ** 2))
                se_theirs += float(np.sum((theirs[name].reshape(t.shape) - x) ** 2))
                try:
                    g = gguf.quants.dequantize(gguf.quants.quantize(t, gtype), gtype)
                    se_gguf += float(np.sum((g.reshape(t.shape) - x) ** 2))
                except NotImplementedError:
                    se_gguf = float("nan")
            r_ours = np.sqrt(se_ours / n_weights)
            r_theirs = np.sqrt(se_theirs / n_weights)
            r_ones, ones_ratio = "—", "—"
            if qtype not in ("F32", "F16", "BF16", "Q8_0"):
                se_ones = 0.0
                for t in tensors.values():
                    ones = np.ones(t.shape[1], dtype=np.float32)
                    q1 = quant.quantize(t, qtype, imatrix=ones, n_threads=args.threads)
                    se_ones += float(
                        np.sum((quant.dequantize(q1, qtype, t.shape) - t.astype(np.float64)) ** 2)
                    )
                r_ones = f"{np.sqrt(se_ones / n_weights):.4e}"
                ones_ratio = f"{np.sqrt(se_ones / n_weights) / r_theirs:.4f}"
            r_gguf = "—" if np.isnan(se_gguf) else f"{np.sqrt(se_gguf / n_weights):.4e}"
            ratio = r_ours / r_theirs if r_theirs > 0 else float("nan")
            print(
                f"{qtype:7s} {nbytes * 8 / n_weights:6.3f} {r_ours:11.4e} {r_gguf:>12s} {r_theirs:11.4e} "
                f"{ratio:7.4f} {mb / ours_s:9.1f} {mb / llama_s:10.1f} {r_ones:>11s} {ones_ratio:>10s}",
                flush=True,
            )


if __name__ == "__main__":
    main()
