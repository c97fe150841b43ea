"""Models larger than RAM: grok-edge's expert cache vs llama.cpp (mmap) and grok-edge without a cache,
under the same memory limit, on a Grok-shaped GGUF of more than 4 GB.

    sudo python bench/offload.py [--layers 10] [--threads 2] [--decode 8] [--prompt 16]
                                 [--workdir /tmp/grok-edge-offload]

The file (made once, cached in --workdir): the medium synthetic shape of bench/decode.py (d_model 2048,
16/4 heads, 8 experts of n_ff 8192, top 2, vocab 131072) with --layers layers, Q8_0 matrices of random
quants (F32 norms and routers), written directly with gguf-py: 10 layers are 4.28 GB of experts and
4.6 GB in all. Its routing is close to random (a synthetic model): the worst case for a cache, so the
figures measure I/O, not locality (the demo model's traces show locality: grok-edge simulate).

The memory limit is a cgroup v1 memory controller group (page cache counts against it), created per run
and removed after it (root needed; the script says so and stops otherwise). For each expert cache size
(25 % and 50 % of the expert bytes) the limit is the cache plus the dense weights plus a fixed margin for
the process (--margin, 384 MiB), and three engines run in turn under that same limit, each a fresh child
process starting from a cold page cache (posix_fadvise DONTNEED on the file):

- grok-edge with the expert cache (LFU, prefetch): experts read with O_DIRECT into the cache;
- grok-edge without a cache: the whole file mapped, as llama.cpp;
- llama.cpp (llama-cpp-python, use_mmap).

Each child times a --prompt-token prompt (one batch) and --decode single-token steps, and reports the
bytes its process read from storage (/proc/self/io read_bytes) per decoded token; grok-edge's cache
also reports its own counters (bytes read, misses' bytes). The simulator (edge.expert_sim) replays the
cached run's own trace and predicts its decode tok/s from the storage bandwidth measured here (O_DIRECT
reads of the file, 4 threads) and the decode compute time measured without a limit (file in page cache):
the ratio predicted / measured is printed.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")

D, NQ, NKV, HD, NFF, NE, VOCAB = 2048, 16, 4, 128, 8192, 8, 131072
# the medium shape (bench/decode.py's): make_gguf's default
MEDIUM = {"d": D, "nq": NQ, "nkv": NKV, "hd": HD, "nff": NFF, "ne": NE, "vocab": VOCAB}


# ------------------------------------------------------------------------------------------------ the file


def _q8_0(rng: np.random.Generator, rows: int, cols: int, lead: int = 1) -> np.ndarray:
    """Random Q8_0 bytes of lead x rows x cols weights of std ~ 1/sqrt(cols) (uint8, gguf-py's byte shape)."""
    nb = cols // 32
    out = np.empty((lead, rows, nb, 34), dtype=np.uint8)
    scale = np.float16(1.0 / np.sqrt(cols) / 73.0)  # uniform int8 in [-127, 127] has std ~73
    out[..., 0:2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    out[..., 2:] = rng.integers(0, 256, size=(lead, rows, nb, 32), dtype=np.uint8)
    out[..., 2:][out[..., 2:] == 128] = 129  # no -128
    return out.reshape(lead, rows, nb * 34) if lead > 1 else out.reshape(rows, nb * 34)


def make_gguf(path: Path, n_layer: int, shape: dict[str, int] | None = None, seed: int = 1) -> Path:
    """A Grok-shaped GGUF of `shape` (MEDIUM by default; keys d, nq, nkv, hd, nff, ne, vocab) and n_layer
    layers at `path`, unless it exists (written to a .tmp, then renamed)."""
    import gguf

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    s = shape or MEDIUM
    D, NQ, NKV, HD, NFF, NE, VOCAB = (s[k] for k in ("d", "nq", "nkv", "hd", "nff", "ne", "vocab"))
    w = gguf.GGUFWriter(str(tmp), "grok")
    w.add_context_length(8192)
    w.add_embedding_length(D)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(NFF)
    w.add_head_count(NQ)
    w.add_head_count_kv(NKV)
    w.add_key_length(HD)
    w.add_value_length(HD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_expert_count(NE)
    w.add_expert_used_count(2)
    w.add_rope_freq_base(10000.0)
    tokens = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"tok{i}" for i in range(len(tokens), VOCAB)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types([3, 3, 3, 2] + [6] * 256 + [1] * (VOCAB - 260))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    q8 = gguf.GGMLQuantizationType.Q8_0
    f32 = gguf.GGMLQuantizationType.F32
    # (name, maker) in file order; makers run one at a time while writing (no 4 GB in memory)
    specs: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType, object]] = []

    def mat(name: str, rows: int, cols: int, lead: int = 1) -> None:
        shape = (lead, rows, cols // 32 * 34) if lead > 1 else (rows, cols // 32 * 34)
        specs.append((name, shape, q8, lambda: _q8_0(rng, rows, cols, lead)))

    def vec(name: str, shape: tuple[int, ...], std: float = 0.0) -> None:
        """F32: ones (norm scales), or normal of `std` (routers)."""

        def make() -> np.ndarray:
            if std == 0:
                return np.ones(shape, dtype=np.float32)
            return (std * rng.standard_normal(shape)).astype(np.float32)

        specs.append((name, shape, f32, make))

    mat("token_embd.weight", VOCAB, D)
    vec("output_norm.weight", (D,))
    for la in range(n_layer):
        p = f"blk.{la}."
        vec(p + "attn_norm.weight", (D,))
        mat(p + "attn_q.weight", NQ * HD, D)
        mat(p + "attn_k.weight", NKV * HD, D)
        mat(p + "attn_v.weight", NKV * HD, D)
        mat(p + "attn_output.weight", D, NQ * HD)
        vec(p + "attn_output_norm.weight", (D,))
        vec(p + "ffn_norm.weight", (D,))
        vec(p + "ffn_gate_inp.weight", (NE, D), 1.0 / np.sqrt(D))
        mat(p + "ffn_gate_exps.weight", NFF, D, NE)
        mat(p + "ffn_up_exps.weight", NFF, D, NE)
        mat(p + "ffn_down_exps.weight", D, NFF, NE)
        vec(p + "layer_output_norm.weight", (D,))
    for name, shape, t, _ in specs:
        nbytes = int(np.prod(shape)) * (4 if t == f32 else 1)
        w.add_tensor_info(name, shape, np.dtype(np.float32 if t == f32 else np.uint8), nbytes, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, _, _, make in specs:
        w.write_tensor_data(make())  # type: ignore[operator]
    w.close()
    tmp.rename(path)
    return path


# ------------------------------------------------------------------------------------------------ machine


def drop_file_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_gbps(path: Path, total: int = 1 << 30, block: int = 8 << 20, threads: int = 4) -> float:
    """Storage read bandwidth: O_DIRECT reads of `block` bytes spread over the file, `threads` at a time."""
    size = path.stat().st_size
    offsets = [(i * 7919 * block) % (size - block) // 4096 * 4096 for i in range(total // block)]
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    done = []

    def worker(k: int) -> None:
        buf = mmap.mmap(-1, block)
        n = 0
        for off in offsets[k::threads]:
            n += os.preadv(fd, [buf], off)
        done.append(n)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    sec = time.perf_counter() - t0
    os.close(fd)
    return sum(done) / sec / 1e9


class MemoryLimit:
    """A cgroup v1 memory group with a limit, created on entry and removed on exit."""

    def __init__(self, limit: int) -> None:
        self.path = CGROUP_ROOT / f"grok-edge-offload-{os.getpid()}-{time.monotonic_ns()}"
        self.limit = limit

    def __enter__(self) -> MemoryLimit:
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(self.limit))
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak(self) -> int:
        return int((self.path / "memory.max_usage_in_bytes").read_text())

    def __exit__(self, *exc: object) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)
        print(f"warning: could not remove {self.path}", file=sys.stderr)


def run_child(args: argparse.Namespace, engine: str, limit: MemoryLimit | None, extra: dict) -> dict:
    drop_file_cache(args.file)
    spec = json.dumps(
        {
            "engine": engine,
            "file": str(args.file),
            "threads": args.threads,
            "prompt": args.prompt,
            "decode": args.decode,
            **extra,
        }
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", spec],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
    )
    if limit is not None:
        limit.add(proc.pid)
    out, err = proc.communicate("go\n", timeout=args.timeout)  # the child starts once it is in the group
    if proc.returncode != 0:
        return {
            "engine": engine,
            "error": (err.strip().splitlines() or ["killed"])[-1],
            "rc": proc.returncode,
        }
    res = json.loads(out.strip().splitlines()[-1])
    if limit is not None:
        res["peak_bytes"] = limit.peak()
    return res


# ------------------------------------------------------------------------------------------------ children


def _read_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def child(spec: dict) -> dict:
    sys.stdin.readline()  # wait until the parent has put us in the cgroup
    rng = np.random.default_rng(7)
    prompt = [int(x) for x in rng.integers(300, 20000, spec["prompt"])]
    n_dec = spec["decode"]
    t_load = time.perf_counter()
    res: dict = {"engine": spec["engine"]}
    if spec["engine"] == "llama.cpp":
        import llama_cpp

        llm = llama_cpp.Llama(
            spec["file"], n_ctx=256, n_batch=512, n_threads=spec["threads"], use_mmap=True, verbose=False
        )
        res["load_s"] = time.perf_counter() - t_load
        io0, t0 = _read_bytes(), time.perf_counter()
        llm.eval(prompt)
        res["prompt_s"] = time.perf_counter() - t0
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        io1, t1 = _read_bytes(), time.perf_counter()
        for _ in range(n_dec):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        res["decode_s"] = time.perf_counter() - t1
        io2 = _read_bytes()
    else:
        import edge

        cache = spec.get("cache")
        m = edge.Model(
            spec["file"],
            n_ctx=256,
            n_threads=spec["threads"],
            expert_cache=cache,
            trace_experts=spec.get("trace"),
        )
        res["load_s"] = time.perf_counter() - t_load
        io0, t0 = _read_bytes(), time.perf_counter()
        row = m.eval(prompt)
        res["prompt_s"] = time.perf_counter() - t0
        s_prompt = m.cache_stats()
        io1, t1 = _read_bytes(), time.perf_counter()
        tok = int(np.argmax(row))
        for _ in range(n_dec):
            tok = int(np.argmax(m.eval([tok])))
        res["decode_s"] = time.perf_counter() - t1
        io2 = _read_bytes()
        s = m.cache_stats()
        res["cache"] = {
            "n_slots": s.n_slots,
            "slot_bytes": s.slot_bytes,
            "hit_rate": s.hit_rate,
            "decode_bytes_read": s.bytes_read - s_prompt.bytes_read,
            "decode_misses": s.misses - s_prompt.misses,
            "decode_prefetches": s.prefetches - s_prompt.prefetches,
            "prefetch_accuracy": s.prefetch_accuracy,
            "stall_s": s.stall_seconds,
        }
        m.close()
    res["prompt_read"] = io1 - io0
    res["decode_read"] = io2 - io1
    res["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return res


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--decode", type=int, default=8)
    ap.add_argument("--margin", default="384MiB", help="memory for the process beside weights and cache")
    ap.add_argument("--fractions", default="0.25,0.5", help="expert cache sizes, as shares of the experts")
    ap.add_argument("--workdir", default="/tmp/grok-edge-offload")
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from edge.expert_sim import MachineProfile, Trace, predict_decode_seconds, read_trace, replay
    from edge.placement import sizes_of_gguf
    from edge.sizes import format_size, parse_size

    if os.geteuid() != 0 or not CGROUP_ROOT.is_dir():
        print(f"needs root and a cgroup v1 memory controller at {CGROUP_ROOT}", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    args.file = work / f"grok-shaped-{args.layers}L-q8_0.gguf"
    t0 = time.perf_counter()
    make_gguf(args.file, args.layers)
    sizes = sizes_of_gguf(args.file)
    print(
        f"file {args.file}: {args.file.stat().st_size / 1e9:.2f} GB "
        f"({time.perf_counter() - t0:.0f} s to make or find), experts {sizes.expert_bytes / 1e9:.2f} GB "
        f"in {len(sizes.unit_bytes)} units, dense "
        f"{sizes.dense_bytes / 1e9:.2f} GB; synthetic model (random routing: the worst case for a cache)"
    )
    gbps = disk_gbps(args.file)
    print(f"storage: {gbps:.2f} GB/s (O_DIRECT, 8 MiB reads, 4 threads)")
    # decode compute without a limit: the file read into the page cache first, then timed
    with open(args.file, "rb") as f:
        while f.read(64 << 20):
            pass
    spec = json.dumps(
        {
            "engine": "grok-edge",
            "file": str(args.file),
            "threads": args.threads,
            "prompt": args.prompt,
            "decode": args.decode,
        }
    )
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        input="go\n",
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    free = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    compute = free["decode_s"] / args.decode if free else None
    if free:
        print(
            f"no limit, warm page cache: grok-edge decode {args.decode / free['decode_s']:.2f} tok/s, prompt "
            f"{args.prompt / free['prompt_s']:.1f} tok/s (the compute part of the model below)"
        )
    results = []
    margin = parse_size(args.margin, "--margin")
    for frac in [float(x) for x in args.fractions.split(",")]:
        budget = int(frac * sizes.expert_bytes)
        limit = budget + sizes.dense_bytes + margin
        print(
            f"\n== expert cache {frac:.0%} of the experts ({format_size(budget)}), memory limit "
            f"{format_size(limit)} (cgroup v1, page cache included)"
        )
        print(
            f"{'engine':<24}{'prompt tok/s':>13}{'decode tok/s':>13}{'read/token':>12}{'peak mem':>11}  notes"
        )
        rows = {}
        for engine, extra in (
            ("grok-edge cache", {"cache": budget, "trace": str(work / f"trace-{frac}.jsonl")}),
            ("grok-edge mmap", {}),
            ("llama.cpp", {}),
        ):
            name = "llama.cpp" if engine == "llama.cpp" else "grok-edge"
            with MemoryLimit(limit) as lim:
                r = run_child(args, name, lim, extra)
            r["label"] = engine
            rows[engine] = r
            if "error" in r:
                print(f"{engine:<24} failed: {r['error']} (rc {r['rc']})")
                continue
            note = ""
            if "cache" in r and r["cache"]["n_slots"]:
                c = r["cache"]
                note = (
                    f"cache: {c['n_slots']} slots, hit {c['hit_rate']:.0%}, read/token by the store "
                    f"{format_size(c['decode_bytes_read'] / args.decode)}, stall {c['stall_s']:.1f} s"
                )
            print(
                f"{engine:<24}{args.prompt / r['prompt_s']:>13.2f}{args.decode / r['decode_s']:>13.3f}"
                f"{format_size(r['decode_read'] / args.decode):>12}"
                f"{format_size(r.get('peak_bytes', 0)):>11}  {note}"
            )
        ours, ref = rows["grok-edge cache"], rows["llama.cpp"]
        if "error" not in ours and "error" not in ref:
            print(f"decode grok-edge cache / llama.cpp: {ref['decode_s'] / ours['decode_s']:.2f}x")
            c = ours["cache"]
            miss_bytes = c["decode_bytes_read"]
            print(
                f"bytes read per token (process, storage) / the store's loaded units' bytes: "
                f"{ours['decode_read'] / miss_bytes:.3f}"
                if miss_bytes
                else "no expert read while decoding"
            )
            tr = read_trace(work / f"trace-{frac}.jsonl")
            first = Trace(
                tr.n_layer,
                tr.n_expert,
                tr.n_expert_used,
                tr.unit_bytes,
                tr.batches[:1],
                tr.source,
                tr.batch_tokens[:1],
            )
            a, b = replay(first, c["n_slots"], "lfu", True), replay(tr, c["n_slots"], "lfu", True)
            for f in ("hits", "misses", "prefetches", "loads", "bytes_read", "demand_bytes", "tokens"):
                setattr(b, f, getattr(b, f) - getattr(a, f))
            if compute is not None:
                unit = sizes.expert_bytes / len(sizes.unit_bytes)
                prof = MachineProfile(ram_bytes=limit, disk_gbps=gbps, compute_seconds_per_token=compute)
                pred = predict_decode_seconds(
                    b, sizes.dense_bytes, 2 * sizes.n_layer * unit, sizes.n_layer, prof
                )
                meas = ours["decode_s"] / args.decode
                print(
                    "simulator: replay of this run's trace reads "
                    f"{format_size(b.bytes_read / b.tokens)}/token (measured "
                    f"{format_size(miss_bytes / args.decode)}); predicted decode {1 / pred:.3f} tok/s, "
                    f"measured {1 / meas:.3f}: predicted/measured {meas / pred:.2f}"
                )
        results.append({"fraction": frac, "budget": budget, "limit": limit, "runs": rows})
    if args.json:
        Path(args.json).write_text(
            json.dumps({"disk_gbps": gbps, "free": free, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
