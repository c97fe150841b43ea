"""Run by tests/test_embedding.py in a Python whose libedge is the ASan + UBSan build (LD_PRELOAD'ed
runtime): one Model shared by 4 threads x 5 greedy generations, interleaved streams, and close() while
another thread generates. Exits non-zero on a wrong result; the sanitizers abort on a memory error.

    python tests/support/sharing_under_asan.py MODEL.gguf
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import edge

PROMPTS = [
    "The answer to life the universe and everything is of course",
    "hello world the model",
    "print the value of the expert router",
    "python code returns a number",
]


def shared_by_threads(path: str) -> None:
    jobs = [(t, i, f"{PROMPTS[t]} {'layer ' * i}") for t in range(4) for i in range(5)]
    with edge.Model(path, n_ctx=256, n_threads=2) as m:
        want = {(t, i): m.generate(p, max_tokens=8, temperature=0) for t, i, p in jobs}

        def worker(t: int) -> dict[tuple[int, int], str]:
            return {(t, i): m.generate(p, max_tokens=8, temperature=0) for tt, i, p in jobs if tt == t}

        got: dict[tuple[int, int], str] = {}
        with ThreadPoolExecutor(4) as pool:
            for part in pool.map(worker, range(4)):
                got.update(part)
    assert got == want, "threads changed the results"
    assert len(set(want.values())) > 1, "the prompts lead to one text: a mix-up would not show"


def interleaved_streams(path: str) -> None:
    with edge.Model(path, n_ctx=256, n_threads=1) as m:
        alone = [m.generate(p, max_tokens=12, temperature=0) for p in PROMPTS[:3]]
        streams = [iter(m.stream(p, max_tokens=12, temperature=0)) for p in PROMPTS[:3]]
        texts = ["", "", ""]
        live = [True, True, True]
        while any(live):
            for k, s in enumerate(streams):
                if live[k]:
                    try:
                        texts[k] += next(s)
                    except StopIteration:
                        live[k] = False
    assert texts == alone, (texts, alone)


def close_while_generating(path: str) -> None:
    for delay in (0.0, 0.02, 0.1):
        m = edge.Model(path, n_ctx=512, n_threads=2)
        outcome: list[str] = []

        def run(model: edge.Model = m, out: list[str] = outcome) -> None:
            try:
                model.generate("layer " * 200, max_tokens=64, temperature=0)
                out.append("finished")
            except ValueError as err:  # the model was closed under the call: a clear error
                assert "closed" in str(err), err
                out.append("closed")

        t = threading.Thread(target=run)
        t.start()
        time.sleep(delay)
        m.close()
        t.join(60)
        assert not t.is_alive() and outcome, outcome


def main() -> int:
    path = sys.argv[1]
    with open("/proc/self/maps") as maps:
        loaded = maps.read()
    assert "libasan" in loaded, "the ASan runtime is not loaded"
    assert str(edge._native._library_path()) in loaded, "libedge is not the one EDGE_LIBRARY names"
    print(f"libedge: {edge._native._library_path()}")
    shared_by_threads(path)
    interleaved_streams(path)
    close_while_generating(path)
    print("ok: shared by threads, interleaved streams, close while generating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
