"""Quantization quality on the shipped tiny Grok model: held-out perplexity and KL divergence to F32.

For every converter preset and every single quant type (all quantizable tensors of that type, the
rest F32: norms and routers stay F32 as in every recipe) this script makes a GGUF two ways:
  - ours:      grok-edge's converter (edge.convert, native quantizers) from the release checkpoint;
  - llama.cpp: ``llama_model_quantize`` (llama-cpp-python) from OUR F32 GGUF of the same checkpoint,
               with the matching ftype (``pure`` for the single types, its own recipe for presets);
then evaluates all of them with the same engine on the same held-out tokens (non-overlapping windows
of the training context, every position scored) and prints
    ppl  = exp(mean next-token NLL)      KL = mean over positions of KL(p_F32 || p_quant)  (nats)
plus the unigram perplexity of the same tokens (add-one smoothed counts of the training text, same
tokenizer) as the floor a model must beat.

    python bench/quality.py [--windows 16] [--engine edge|llama] [--out DIR]

The held-out text is every 40th chapter of the King James Bible (never seen in training); see
tools/train_tiny.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from edge.convert.recipe import FILE_TYPES, LLAMA_PURE_FTYPES

# single quant types (llama.cpp's ftype whose `pure` quantization gives that type: LLAMA_PURE_FTYPES)
SINGLE_TYPES = (
    "F16",
    "BF16",
    "Q8_0",
    "Q6_K",
    "Q5_K",
    "Q5_0",
    "Q4_K",
    "Q4_0",
    "IQ4_NL",
    "IQ4_XS",
    "Q3_K",
    "Q2_K",
)
# converter presets, each compared with llama.cpp's ftype of the same name (its own per-tensor recipe)
PRESETS = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "iq4_xs", "q3_k_m", "q2_k")
NOT_QUANTIZED_CLASSES = ("norm", "ffn_gate_inp")  # F32 in every recipe, ours and llama.cpp's


# ---------------------------------------------------------------------------------------- data


def shipped_dir() -> Path:
    from edge.commands.demo import data_dir

    return data_dir()


def heldout_tokens(n_windows: int, window: int) -> np.ndarray:
    """[n_windows, window] token ids of the held-out text (shipped tokenizer, no BOS, like runners.py)."""
    import sentencepiece as spm

    d = shipped_dir()
    sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    ids = np.asarray(sp.encode((d / "heldout.txt").read_text()), dtype=np.int32)
    n = min(n_windows, len(ids) // window)
    if n < 1:
        raise ValueError(f"held-out text has {len(ids)} tokens, fewer than one window of {window}")
    return ids[: n * window].reshape(n, window)


def unigram_perplexity(windows: np.ndarray) -> float:
    """Perplexity of the scored held-out tokens under add-one smoothed training-text unigram counts."""
    from edge.commands.demo import model_info

    counts = np.asarray(model_info()["train_unigram_counts"], dtype=np.float64)
    logp = np.log((counts + 1.0) / (counts.sum() + counts.size))
    targets = windows[:, 1:].reshape(-1)
    return float(np.exp(-logp[targets].mean()))


# -------------------------------------------------------------------------------------- makers


def make_ours(out_dir: Path, *, preset: str | None = None, qtype: str | None = None) -> Path:
    """Our converter on the shipped checkpoint: a preset, or one type for every quantizable class."""
    from edge.convert.mapping import TENSOR_CLASSES

    from edge.commands.demo import convert_preset

    if qtype is not None:
        overrides = {c: qtype for c in TENSOR_CLASSES if c not in NOT_QUANTIZED_CLASSES}
        return convert_preset("f32", out_dir, overrides=overrides, name=f"ours-type-{qtype.lower()}")
    assert preset is not None
    return convert_preset(preset, out_dir, name=f"ours-preset-{preset}")


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def make_llama(f32_gguf: Path, out_dir: Path, ftype: int, *, pure: bool, name: str) -> Path:
    """llama.cpp's quantizer (llama_model_quantize) on our F32 GGUF."""
    import llama_cpp

    out = out_dir / f"tiny-grok-llama-{name}.gguf"
    if out.exists() and out.stat().st_mtime >= f32_gguf.stat().st_mtime:
        return out
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = pure
    params.nthread = 2
    with _quiet_stderr():  # llama.cpp logs every tensor to fd 2
        rc = llama_cpp.llama_model_quantize(str(f32_gguf).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({f32_gguf} -> {out}, ftype {ftype}) failed: {rc}")
    return out


# ------------------------------------------------------------------------------------- engines

LogitsFn = Callable[[np.ndarray], np.ndarray]  # [T] ids -> [T, vocab] float32 logits


def edge_logits(path: Path, window: int) -> tuple[LogitsFn, Callable[[], None]]:
    from edge.model import Model

    m = Model(path, n_ctx=window, n_batch=window)
    return (lambda ids: np.array(m.logits(ids.tolist()), dtype=np.float32)), m.close


def llama_logits(path: Path, window: int) -> tuple[LogitsFn, Callable[[], None]]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=window, n_batch=window, logits_all=True, n_threads=2, verbose=False
    )

    def run(ids: np.ndarray) -> np.ndarray:
        llm.reset()
        llm.eval(ids.tolist())
        return np.array(llm.scores[: len(ids)], dtype=np.float32)

    return run, llm.close


ENGINES = {"edge": edge_logits, "llama": llama_logits}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class Score:
    ppl: float
    kl: float
    size_mib: float
    seconds: float


def score_file(
    path: Path, windows: np.ndarray, engine: str, reference: list[np.ndarray] | None
) -> tuple[Score, list[np.ndarray]]:
    """Perplexity, mean KL(reference || this) over all positions, and this file's log-probs."""
    t0 = time.perf_counter()
    fn, close = ENGINES[engine](path, windows.shape[1])
    try:
        logps = [log_softmax(fn(w))[:-1] for w in windows]  # position t predicts token t+1
    finally:
        close()
    nll = np.concatenate([-lp[np.arange(len(lp)), w[1:]] for lp, w in zip(logps, windows, strict=True)])
    kl = 0.0
    if reference is not None:
        kl = float(
            np.mean(
                np.concatenate(
                    [(np.exp(r) * (r - lp)).sum(-1) for r, lp in zip(reference, logps, strict=True)]
                )
            )
        )
    score = Score(float(np.exp(nll.mean())), kl, path.stat().st_size / 2**20, time.perf_counter() - t0)
    return score, logps


# ---------------------------------------------------------------------------------------- main


@dataclass
class Results:
    engine: str
    n_tokens: int
    unigram_ppl: float
    f32: Score
    types: dict[str, dict[str, Score]]  # type -> {"ours": Score, "llama.cpp": Score}
    presets: dict[str, dict[str, Score]]


def measure(
    out_dir: Path,
    n_windows: int,
    engine: str,
    types: Iterable[str] = tuple(SINGLE_TYPES),
    presets: Iterable[str] = tuple(PRESETS),
    with_llama: bool = True,
    progress: Callable[[str], None] = lambda s: None,
) -> Results:
    from edge.commands.demo import model_info

    window = int(model_info()["context_length"])
    windows = heldout_tokens(n_windows, window)
    f32_path = make_ours(out_dir, preset="f32")
    f32, ref = score_file(f32_path, windows, engine, None)
    progress(f"f32: ppl {f32.ppl:.3f}")
    res = Results(engine, int(windows[:, 1:].size), unigram_perplexity(windows), f32, {}, {})
    for qtype in types:
        row = {"ours": score_file(make_ours(out_dir, qtype=qtype), windows, engine, ref)[0]}
        if with_llama:
            lp = make_llama(
                f32_path, out_dir, LLAMA_PURE_FTYPES[qtype], pure=True, name=f"type-{qtype.lower()}"
            )
            row["llama.cpp"] = score_file(lp, windows, engine, ref)[0]
        res.types[qtype] = row
        progress(f"{qtype}: " + ", ".join(f"{k} KL {v.kl:.5f}" for k, v in row.items()))
    for preset in presets:
        row = {"ours": score_file(make_ours(out_dir, preset=preset), windows, engine, ref)[0]}
        if with_llama:
            lp = make_llama(f32_path, out_dir, FILE_TYPES[preset], pure=False, name=f"preset-{preset}")
            row["llama.cpp"] = score_file(lp, windows, engine, ref)[0]
        res.presets[preset] = row
        progress(f"{preset}: " + ", ".join(f"{k} KL {v.kl:.5f}" for k, v in row.items()))
    return res


def table(res: Results) -> str:
    lines = [
        f"held-out tokens scored: {res.n_tokens} (engine: {res.engine})",
        f"unigram perplexity (add-one, training counts): {res.unigram_ppl:.2f}",
        f"F32 model perplexity: {res.f32.ppl:.3f}  (unigram / F32 = {res.unigram_ppl / res.f32.ppl:.1f}x)"
        f"  size {res.f32.size_mib:.2f} MiB",
        "",
        f"{'quant':<10}{'kind':<8}{'ours MiB':>10}{'ours ppl':>10}{'ours KL':>11}"
        f"{'llama MiB':>11}{'llama ppl':>11}{'llama KL':>11}",
    ]
    for kind, rows in (("type", res.types), ("preset", res.presets)):
        for name, row in rows.items():
            o = row["ours"]
            line = f"{name:<10}{kind:<8}{o.size_mib:>10.2f}{o.ppl:>10.3f}{o.kl:>11.5f}"
            if "llama.cpp" in row:
                ll = row["llama.cpp"]
                line += f"{ll.size_mib:>11.2f}{ll.ppl:>11.3f}{ll.kl:>11.5f}"
            lines.append(line)
    return "\n".join(lines)


def main() -> int:
    from edge.commands.demo import default_cache_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=16, help="held-out windows of the training context")
    ap.add_argument(
        "--engine", choices=sorted(ENGINES), default="edge", help="engine that computes the logits"
    )
    ap.add_argument("--out", type=Path, default=default_cache_dir().parent / "quality")
    ap.add_argument("--types", default=",".join(SINGLE_TYPES), help="comma-separated single types")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp's quantizer")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    types = [t for t in args.types.split(",") if t]
    presets = [p for p in args.presets.split(",") if p]
    for t in types:
        if t not in SINGLE_TYPES:
            ap.error(f"unknown type {t} (known: {', '.join(SINGLE_TYPES)})")
    for p in presets:
        if p not in PRESETS:
            ap.error(f"unknown preset {p} (known: {', '.join(PRESETS)})")
    res = measure(
        args.out,
        args.windows,
        args.engine,
        types,
        presets,
        not args.no_llama,
        progress=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(table(res))
    if args.json:

        def plain(x: object) -> object:
            return x.__dict__ if isinstance(x, Score) else str(x)

        args.json.write_text(json.dumps(res.__dict__, default=plain, indent=2))
    ok = math.isfinite(res.f32.ppl)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
