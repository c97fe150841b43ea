"""Runs edge.Model on one libedge (EDGE_LIBRARY: the chipStar build, or an nvcc build on a GPU) for
tests/test_cuda_backend.py and tools/gpu_check.sh: every run of a JSON spec, its logits saved to an .npz and
its expert statistics and device placement to a JSON file.

    python tests/cuda_backend_driver.py SPEC.json OUT_DIR

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
import sys
from pathlib import Path

import numpy as np

STAT_FIELDS = ("vram_hits", "vram_misses", "experts_gpu", "experts_cpu", "vram_loads", "tokens")


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
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
            rows = [m.eval(run["prompt"], all_logits=True)]
            if run.get("state_roundtrip"):
                state = m.save_state()
                m.eval(run["decode"][:1])  # moves the cache on, then back
                m.load_state(state)
            for t in run.get("decode", []):
                rows.append(m.eval([t])[None, :])
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
