"""Load and batching bench for `grok-edge serve`.

    python bench/serve_load.py [--model FILE.gguf] [--clients 8] [--requests 20] [--parallel 4]
                               [--threads 2] [--layers 6] [--workdir /tmp/grok-edge-bench]

Without --model it uses the bench's Grok-shaped file (bench/decode.py's build_files: the ``medium``
synthetic checkpoint, d_model 2048, 8 experts top-2, vocab 131072, --layers layers, Q4_K_M), built once.

1. Batching: one stream alone, then 4 streams at once (EOS banned by logit_bias, so every stream decodes
   --decode tokens), against a server with --parallel 4. Decode tokens/s of one stream, and the aggregate
   of the four over the interval where all four are decoding (each chunk timestamped on arrival); the
   ratio. Alternated --reps times; medians printed. The same at the engine level (edge.BatchContext, no
   HTTP): --decode steps of 1 sequence against steps of 4 sequences.
2. Load: --clients concurrent clients x --requests requests each (completions and chat, streamed and
   not; every 8th request is streamed and disconnects after its first chunk), then checks that no
   response was a 5xx and that every slot is free (/health); prints p50/p95 latency of the completed
   requests and the aggregate generated tokens/s.

The weight bytes bound the batching ratio: 4 streams read the dense weights once a step but select
more experts than one stream does. docs/performance.md holds the current figures and what bounds them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))  # serve_helper


async def _stream_times(client: httpx.AsyncClient, body: dict[str, Any]) -> list[float]:
    """Arrival times of the text chunks of one streamed completion."""
    times: list[float] = []
    async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["text"]:
                times.append(time.perf_counter())
    return times


async def concurrent_decode(url: str, model: str, n: int, decode: int, eos: int) -> float:
    """Aggregate decode tokens/s of ``n`` concurrent streams, over the interval all of them decode."""
    body = {"model": model, "max_tokens": decode, "temperature": 0.0, "logit_bias": {str(eos): -100}}
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        streams = await asyncio.gather(
            *[_stream_times(client, {**body, "prompt": f"Stream {i} says:"}) for i in range(n)]
        )
    start = max(t[0] for t in streams)
    end = min(t[-1] for t in streams)
    tokens = sum(sum(1 for x in t if start < x <= end) for t in streams)
    return tokens / (end - start)


def engine_decode(model: str, n_seq: int, steps: int, threads: int | None) -> tuple[float, float]:
    """Decode tokens/s of ``n_seq`` sequences stepped together through edge.BatchContext: per wall second,
    and per second of the process's CPU time (all threads; what a CPU-starved machine measures)."""
    import numpy as np

    import edge

    with edge.BatchContext(model, n_seq=n_seq, n_ctx=steps + 16, n_threads=threads) as bc:
        seqs = [q for q in range(n_seq) for _ in range(4)]
        logits = bc.eval(seqs, [100 + q + 7 * i for q in range(n_seq) for i in range(4)])
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            logits = bc.eval(list(range(n_seq)), [int(r) for r in np.argmax(logits, axis=1)])
        return n_seq * steps / (time.perf_counter() - t0), n_seq * steps / (time.process_time() - c0)


async def _one_request(
    client: httpx.AsyncClient, model: str, i: int, disconnect: bool, max_tokens: int, eos: int | None
) -> tuple[int, float | None, int]:
    """(status, latency if completed, completion tokens) of request i of a client. A request that
    disconnects asks for 8x max_tokens with EOS banned (when ``eos`` is given), so that it is still
    generating when the server notices the client is gone."""
    chat = i % 2 == 1
    stream = i % 3 != 0 or disconnect
    if chat:
        path = "/v1/chat/completions"
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": f"Tell me about {i}."}],
        }
    else:
        path = "/v1/completions"
        body = {"model": model, "prompt": f"Request {i}: the story begins"}
    body.update(max_tokens=max_tokens, temperature=0.8, seed=i, stream=stream)
    if disconnect:
        body["max_tokens"] = 8 * max_tokens
        if eos is not None:
            body["logit_bias"] = {str(eos): -100}
    if stream:
        body["stream_options"] = {"include_usage": True}
    t0 = time.perf_counter()
    if not stream:
        r = await client.post(path, json=body)
        tokens = r.json().get("usage", {}).get("completion_tokens", 0) if r.status_code == 200 else 0
        return r.status_code, time.perf_counter() - t0, tokens
    tokens = 0
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, None, 0
        async for line in r.aiter_lines():
            if disconnect and line.startswith("data: "):
                return r.status_code, None, 0  # leaves the stream: the connection is closed mid-stream
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return r.status_code, time.perf_counter() - t0, tokens


async def load_test(
    url: str,
    model: str,
    clients: int,
    requests: int,
    max_tokens: int = 16,
    api_key: str | None = None,
    eos: int | None = None,
) -> dict[str, Any]:
    """Run the load; return statuses, latencies, tokens, wall time and the final /health."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    results: list[tuple[int, float | None, int]] = []

    async def client_loop(c: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
            for i in range(requests):
                disconnect = (c * requests + i) % 8 == 7  # every 4th streamed request, roughly
                results.append(
                    await _one_request(client, model, c * requests + i, disconnect, max_tokens, eos)
                )

    t0 = time.perf_counter()
    await asyncio.gather(*[client_loop(c) for c in range(clients)])
    wall = time.perf_counter() - t0
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        health: dict[str, Any] = {}
        for _ in range(100):  # a cancelled request leaves at the scheduler's next step
            health = (await client.get("/health")).json()
            if health["slots_busy"] == 0 and health["queue_depth"] == 0:
                break
            await asyncio.sleep(0.1)
        metrics = (await client.get("/metrics")).text
    lat = sorted(x for _, x, _ in results if x is not None)
    return {
        "statuses": [s for s, _, _ in results],
        "latencies": lat,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p95": lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan"),
        "tokens": sum(t for _, _, t in results),
        "wall": wall,
        "health": health,
        "metrics": metrics,
        "disconnected": sum(1 for s, x, _ in results if s == 200 and x is None),
    }


def main() -> int:
    from serve_helper import running_server

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/grok-edge-bench"))
    ap.add_argument("--tokenizer", type=Path, default=Path("/work/shared/grok-1/tokenizer.model"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--decode", type=int, default=32, help="tokens per stream in the batching measurement")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-load", action="store_true")
    args = ap.parse_args()
    model = args.model
    if model is None:
        from decode import build_files  # bench/decode.py

        model = build_files(args.workdir, ["q4_k_m"], args.layers, args.tokenizer)["q4_k_m"]
    from edge.llama import load_tokenizer

    eos = int(load_tokenizer(str(model)).eos_id)
    model_id = model.stem
    threads = ["-t", str(args.threads)] if args.threads else []

    print(f"engine: {model.name}, decode steps of 1 and of 4 sequences, {args.decode} steps, alternating")
    e1, e4 = [], []
    for _ in range(args.reps):
        e1.append(engine_decode(str(model), 1, args.decode, args.threads))
        e4.append(engine_decode(str(model), 4, args.decode, args.threads))
        print(
            f"  1 seq {e1[-1][0]:.2f} tok/s ({e1[-1][1]:.2f} per CPU s) | 4 seqs {e4[-1][0]:.2f} tok/s "
            f"({e4[-1][1]:.2f} per CPU s) | ratio {e4[-1][0] / e1[-1][0]:.2f} "
            f"(CPU {e4[-1][1] / e1[-1][1]:.2f})",
            flush=True,
        )
    wall = statistics.median(b[0] / a[0] for a, b in zip(e1, e4, strict=True))
    cpu = statistics.median(b[1] / a[1] for a, b in zip(e1, e4, strict=True))
    print(f"engine: ratio median {wall:.2f} (per CPU second {cpu:.2f})")

    ctx = str(max(256, args.decode + 64))
    with running_server(model, "--parallel", str(args.parallel), "-c", ctx, *threads) as url:
        print(f"server: {url}, --parallel {args.parallel}; 1 stream vs 4 concurrent streams, alternating")
        s1, s4 = [], []
        for _ in range(args.reps):
            s1.append(asyncio.run(concurrent_decode(url, model_id, 1, args.decode, eos)))
            s4.append(asyncio.run(concurrent_decode(url, model_id, 4, args.decode, eos)))
            print(
                f"  1 stream {s1[-1]:.2f} tok/s | 4 streams {s4[-1]:.2f} tok/s aggregate | "
                f"ratio {s4[-1] / s1[-1]:.2f}",
                flush=True,
            )
        ratios = [b / a for a, b in zip(s1, s4, strict=True)]
        print(
            f"server median: 1 stream {statistics.median(s1):.2f} tok/s, "
            f"4 streams {statistics.median(s4):.2f} tok/s, "
            f"ratio median {statistics.median(ratios):.2f} (target >= 2)"
        )
        if args.skip_load:
            return 0
        print(f"load: {args.clients} clients x {args.requests} requests, max_tokens {args.max_tokens}")
        r = asyncio.run(load_test(url, model_id, args.clients, args.requests, args.max_tokens, eos=eos))
    codes = {c: r["statuses"].count(c) for c in sorted(set(r["statuses"]))}
    n5xx = sum(v for c, v in codes.items() if c >= 500)
    print(f"  statuses {codes}; disconnected mid-stream {r['disconnected']}; 5xx {n5xx}")
    print(
        f"  latency p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s; {r['tokens']} tokens in {r['wall']:.1f} s: "
        f"{r['tokens'] / r['wall']:.2f} tok/s aggregate"
    )
    print(f"  at the end: slots_busy {r['health']['slots_busy']}, queue_depth {r['health']['queue_depth']}")
    return 1 if n5xx or r["health"]["slots_busy"] else 0


if __name__ == "__main__":
    sys.exit(main())
