"""Runs edge.Model on one libedge (EDGE_LIBRARY: the chipStar build, or an nvcc build on a GPU) for
tests/test_cuda_backend.py and tools/gpu_check.sh: every run of a JSON spec, its logits saved to an .npz and
its expert statistics and device placement to a JSON file.

    python tests/support/cuda_backend_driver.py SPEC.json OUT_DIR

A run: {"name", "model", "device", "kv_type", "isa", "n_batch", "prompt": [ids], "decode": [ids],
"gpu_slots": n (gpu_memory = what the context needs besides experts + n expert slots; absent: all free
memory), "hybrid": "cpu" | "stream" (EDGE_CUDA_HYBRID: every expert missing from VRAM computed on the CPU /
streamed in; absent: the cost model), "state_roundtrip": bool (save the state after the prompt, reload it,
then decode), "gpu_memory": bytes, "expect_error": bool (only create the model: record its error, or the
device it chose)}. Logits: the prompt's rows (one pass of n_batch-token chunks), then each decoded token's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

STAT_FIELDS = ("vram_hits", "vram_misses", "experts_gpu", "experts_cpu", "vram_loads", "tokens")


def eval_here(m: object, tokens: list[int], all_logits: bool) -> np.ndarray:
    """edge_context_eval on this thread, the one that created the context (Model.eval runs long batches on
    a helper thread): the driver stays single-threaded, so a failure points at the backend, not threads."""
    from edge._native import check, ffi, lib

    n_vocab = m.hparams.n_vocab  # type: ignore[attr-defined]
    out = np.empty((len(tokens) if all_logits else 1, n_vocab), dtype=np.float32)
    toks = np.asarray(tokens, dtype=np.int32)
    check(
        lib.edge_context_eval(
            m._ctx,  # type: ignore[attr-defined]
            ffi.cast("const int32_t *", ffi.from_buffer(toks)),
            len(tokens),
            ffi.cast("float *", ffi.from_buffer(out)),
            int(all_logits),
        )
    )
    m._tokens = [*m._tokens, *tokens]  # type: ignore[attr-defined]  # what Model.eval keeps
    return out


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if len(sys.argv) == 3 and len(spec["runs"]) > 1:
        # one child process per run: chipStar's OpenCL CPU runtime has crashed (SIGSEGV in its JIT) when a
        # process had run a CPU context before its first CUDA one; each run alone does not
        logits: dict[str, np.ndarray] = {}
        info: dict[str, dict] = {}
        for i, run in enumerate(spec["runs"]):
            one = out / f"run{i}"
            one.mkdir(exist_ok=True)
            (one / "spec.json").write_text(json.dumps({"runs": [run]}))
            done = subprocess.run([sys.executable, __file__, str(one / "spec.json"), str(one), "one"])
            if done.returncode != 0:
                print(f"run {run['name']} failed ({done.returncode})", file=sys.stderr)
                return 1
            part = np.load(one / "logits.npz")
            logits.update({k: part[k] for k in part.files})
            info.update(json.loads((one / "info.json").read_text()))
        np.savez(out / "logits.npz", **logits)
        (out / "info.json").write_text(json.dumps(info, indent=1))
        return 0
    import edge

    logits: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for run in spec["runs"]:
        kw = {
            "n_ctx": 64,
            "n_threads": 1,
            "kv_type": run.get("kv_type", "f16"),
            "isa": run.get("isa", "auto"),
            "n_batch": run.get("n_batch", 512),
            "device": run.get("device", "cpu"),
        }
        if "gpu_slots" in run:
            with edge.Model(run["model"], **kw) as probe:
                g = probe.gpu_info()
            kw["gpu_memory"] = (
                g["dense_bytes"] + g["kv_bytes"] + g["state_bytes"] + run["gpu_slots"] * g["slot_bytes"]
            )
        if "gpu_memory" in run:
            kw["gpu_memory"] = run["gpu_memory"]
        os.environ.pop("EDGE_CUDA_HYBRID", None)
        if "hybrid" in run:
            os.environ["EDGE_CUDA_HYBRID"] = run["hybrid"]
        if run.get("expect_error"):  # only the creation: its error (or the device it chose)
            try:
                with edge.Model(run["model"], **kw) as m:
                    info[run["name"]] = {"device": m.device}
            except Exception as e:  # noqa: BLE001 - recorded for the test to check
                info[run["name"]] = {"error": type(e).__name__, "message": str(e)}
            continue
        with edge.Model(run["model"], **kw) as m:
            m.reset_cache_stats()
            rows = [eval_here(m, run["prompt"], True)]
            if run.get("state_roundtrip"):
                state = m.save_state()
                eval_here(m, run["decode"][:1], False)  # moves the cache on, then back
                m.load_state(state)
            for t in run.get("decode", []):
                rows.append(eval_here(m, [t], False))
            logits[run["name"]] = np.concatenate(rows).astype(np.float32)
            st = m.cache_stats()
            info[run["name"]] = {
                "device": m.device,
                "gpu": m.gpu_info(),
                "gpu_memory": kw.get("gpu_memory", 0),
                "stats": {
                    f: getattr(st, f)
                    for f in (
                        "vram_hits",
                        "vram_misses",
                        "experts_gpu",
                        "experts_cpu",
                        "vram_loads",
                        "tokens",
                    )
                },
            }
        os.environ.pop("EDGE_CUDA_HYBRID", None)
    info["_gpus"] = edge.system_info()["gpus"]  # type: ignore[assignment]
    np.savez(out / "logits.npz", **logits)
    (out / "info.json").write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
