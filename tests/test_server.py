"""`grok-edge serve` answers the official openai client, rejects malformed HTTP, and holds under load.

`grok-edge serve` on 127.0.0.1 (a port the server picks), driven by the official ``openai`` client
unchanged but for base_url, by raw HTTP for malformed requests, and by a small load test (a smaller
version of bench/serve_load.py's). Model: the tiny converted file (Q8_0) with its trained tokenizer."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the server extra (fastapi, uvicorn) is not installed")
openai = pytest.importorskip("openai", reason="the openai client is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

import edge  # noqa: E402
from edge.openai_format import chat_prompt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from serve_helper import running_server  # noqa: E402
from serve_load import load_test  # noqa: E402

KEY = "test-key-123"
N_CTX = 192


@pytest.fixture(scope="module")
def model_path(converted) -> Path:
    return converted("q8_0")


@pytest.fixture(scope="module")
def server(model_path):
    args = [
        "--parallel",
        "3",
        "-c",
        str(N_CTX),
        "-t",
        "2",
        "--api-key",
        KEY,
        "--queue",
        "32",
        "--timeout",
        "120",
    ]
    with running_server(model_path, *args) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY)


@pytest.fixture(scope="module")
def model_id(model_path) -> str:
    return model_path.stem


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from edge.llama import load_tokenizer

    return load_tokenizer(str(model_path))


@pytest.fixture(scope="module")
def greedy(model_path):
    """prompt -> edge.Model's greedy text (the server's temperature 0 must give the same)."""
    cache: dict[tuple[str, int, tuple[str, ...]], str] = {}
    model = edge.Model(model_path, n_ctx=N_CTX, n_threads=2)

    def get(prompt: str, n: int, stop: tuple[str, ...] = ()) -> str:
        if (prompt, n, stop) not in cache:
            cache[(prompt, n, stop)] = model.generate(prompt, max_tokens=n, temperature=0.0, stop=list(stop))
        return cache[(prompt, n, stop)]

    yield get
    model.close()


def http(server: str, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(
        base_url=server, timeout=60, headers={"Authorization": f"Bearer {key}"} if key else {}
    )


# ------------------------------------------------------------------------------------- openai client


def test_models(client, model_id):
    assert [m.id for m in client.models.list().data] == [model_id]


def test_completion_and_stream_equal_the_engine_greedy(client, model_id, greedy, tokenizer):
    prompt = "The quick brown fox"
    r = client.completions.create(model=model_id, prompt=prompt, max_tokens=12, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text == greedy(prompt, 12)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(tokenizer.encode(prompt))
    chunks = list(
        client.completions.create(
            model=model_id,
            prompt=prompt,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == r.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_chat_and_stream(client, model_id, greedy):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
    r = client.chat.completions.create(model=model_id, messages=messages, max_tokens=16, temperature=0)
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    expect = greedy(chat_prompt(messages), 16, ("\nUser:", "\nSystem:")).lstrip()
    assert r.choices[0].message.content == expect
    stream = client.chat.completions.create(
        model=model_id, messages=messages, max_tokens=16, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expect
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_sampling_parameters(client, model_id, greedy):
    kw = {"model": model_id, "prompt": "Once upon a time", "max_tokens": 10}
    a = client.completions.create(temperature=1.0, top_p=0.9, seed=7, **kw).choices[0].text
    b = client.completions.create(temperature=1.0, top_p=0.9, seed=7, **kw).choices[0].text
    assert a == b  # the seed fixes the draw
    # stop: cut before the stop string, which is never returned
    full = greedy("Once upon a time", 10)
    stop = full.strip().split(" ")[1] if len(full.strip().split(" ")) > 1 else None
    if stop:
        r = client.completions.create(temperature=0, stop=[stop], **kw)
        assert stop not in r.choices[0].text and r.choices[0].finish_reason == "stop"
        assert full.startswith(r.choices[0].text)
    # logprobs: the token's and the top alternatives'
    first = client.completions.create(temperature=0, logprobs=2, **{**kw, "max_tokens": 1})
    lp = first.choices[0].logprobs
    assert len(lp.tokens) == 1 and len(lp.top_logprobs[0]) == 2 and lp.token_logprobs[0] <= 0
    # penalties are accepted in OpenAI's range
    r = client.completions.create(temperature=0, presence_penalty=1.5, frequency_penalty=-0.5, **kw)
    assert r.choices[0].text is not None


def test_logit_bias_bans_the_greedy_token(server, model_id, model_path):
    llm = edge.Llama(str(model_path), n_ctx=64)
    first = llm("Hello there", max_tokens=1, temperature=0.0)
    prompt_ids = llm.tokenize(b"Hello there", add_bos=False)
    with edge.Model(model_path, n_ctx=64) as m:
        greedy_id = m.generate_tokens(prompt_ids, 1, temperature=0.0)[0]
    with http(server) as c:
        body = {"model": model_id, "prompt": "Hello there", "max_tokens": 1, "temperature": 0, "logprobs": 1}
        plain = c.post("/v1/completions", json=body).json()
        banned = c.post("/v1/completions", json={**body, "logit_bias": {str(greedy_id): -100}}).json()
    assert plain["choices"][0]["text"] == first["choices"][0]["text"]
    assert banned["choices"][0]["text"] != plain["choices"][0]["text"]


# ------------------------------------------------------------------------------------- errors


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert {"type", "param", "code"} <= set(body["error"])
    return body["error"]


def test_malformed_requests_get_openai_shaped_4xx_and_the_server_keeps_serving(server, model_id):
    ok = {"model": model_id, "prompt": "Hi", "max_tokens": 2}
    with http(server) as c:
        r = c.post("/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert "JSON" in _error(r, 400)["message"]
        _error(c.post("/v1/completions", json={**ok, "max_tokens": "many"}), 400)  # wrong type
        _error(c.post("/v1/completions", json={**ok, "temperature": [1]}), 400)
        _error(c.post("/v1/completions", json={"model": model_id}), 400)  # missing prompt
        _error(c.post("/v1/chat/completions", json={"model": model_id}), 400)  # missing messages
        _error(c.post("/v1/chat/completions", json={"model": model_id, "messages": []}), 400)
        _error(c.post("/v1/chat/completions", json={"model": model_id, "messages": [{"role": "robot"}]}), 400)
        e = _error(c.post("/v1/completions", json={**ok, "max_tokens": 10**9}), 400)  # huge max_tokens
        assert e["code"] == "context_length_exceeded"
        e = _error(c.post("/v1/completions", json={**ok, "prompt": "word " * (2 * N_CTX)}), 400)
        assert e["code"] == "context_length_exceeded"
        e = _error(c.post("/v1/completions", json={**ok, "model": "gpt-4"}), 404)  # unknown model
        assert e["code"] == "model_not_found"
        _error(c.post("/v1/completions", json={**ok, "logit_bias": {"abc": 1}}), 400)
        _error(c.post("/v1/completions", json={**ok, "logit_bias": {"5": 1000}}), 400)
        _error(c.post("/v1/completions", json={**ok, "prompt": [10**9]}), 400)
        _error(c.post("/v1/completions", json={**ok, "n": 3}), 400)
        _error(c.post("/v1/completions", json={**ok, "stop": ["a", "b", "c", "d", "e"]}), 400)
        _error(c.get("/v1/nothing"), 404)
        _error(c.get("/v1/completions"), 405)
    for key in ("wrong", None):
        with http(server, key) as c:
            e = _error(c.post("/v1/completions", json=ok), 401)
            assert e["code"] == "invalid_api_key"
            _error(c.get("/v1/models"), 401)
    with http(server) as c:  # still serving
        assert c.post("/v1/completions", json=ok).status_code == 200
        assert c.get("/health").json()["status"] == "ok"


def test_metrics_are_prometheus_text(server):
    with http(server) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    names = {line.split("{")[0].split(" ")[0] for line in r.text.splitlines() if line and line[0] != "#"}
    for n in (
        "grok_edge_requests_total",
        "grok_edge_completion_tokens_total",
        "grok_edge_tokens_per_second",
        "grok_edge_queue_depth",
        "grok_edge_slots_busy",
        "grok_edge_prompt_tokens_total",
    ):
        assert n in names, n


def test_queue_full_is_429_with_retry_after(model_path, model_id, tokenizer):
    eos = tokenizer.eos_id
    # one slot, a queue of one: of four simultaneous long requests at least two are refused
    args = ["--parallel", "1", "--queue", "1", "-c", "96", "-t", "1"]
    with running_server(model_path, *args) as url:

        async def go() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as c:
                body = {"model": model_id, "prompt": "Go", "max_tokens": 60, "temperature": 0}
                body["logit_bias"] = {str(eos): -100}  # all 60 tokens: the first request holds the slot
                return await asyncio.gather(*[c.post("/v1/completions", json=body) for _ in range(4)])

        rs = asyncio.run(go())
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 1 and codes.count(429) >= 2, codes
    for r in rs:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["type"] == "rate_limit_exceeded"


# ------------------------------------------------------------------------------------- load


def test_load_with_disconnects_no_5xx_and_every_slot_free(server, model_id, greedy, tokenizer):
    # 4 clients x 6 requests (bench/serve_load.py runs 8 x 20): completions and chat, streamed and not,
    # some leaving mid-stream; 3 slots, so requests join running batches between steps
    r = asyncio.run(
        load_test(server, model_id, clients=4, requests=6, max_tokens=12, api_key=KEY, eos=tokenizer.eos_id)
    )
    print(f"load: p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, {r['tokens'] / r['wall']:.1f} tok/s aggregate")
    assert all(s < 500 for s in r["statuses"]), r["statuses"]
    assert r["statuses"].count(200) == len(r["statuses"])
    assert r["disconnected"] >= 2
    assert r["health"]["slots_busy"] == 0 and r["health"]["queue_depth"] == 0
    cancelled = [
        ln for ln in r["metrics"].splitlines() if ln.startswith("grok_edge_generations_cancelled_total")
    ]
    assert cancelled and float(cancelled[0].split()[-1]) >= 1  # the disconnects cancelled their generations
    assert r["tokens"] > 0
    # after the load: the same request still gives the engine's greedy text (no slot left dirty)
    with http(server) as c:
        body = {"model": model_id, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}
        assert c.post("/v1/completions", json=body).json()["choices"][0]["text"] == greedy(body["prompt"], 12)


def _metric(server: str, name: str) -> float:
    with http(server) as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_prompt_sharing_a_cached_prefix_evaluates_only_the_rest(server, model_id, tokenizer, greedy):
    prompt = "In the beginning was a long and winding road that led"
    body = {"model": model_id, "prompt": prompt, "max_tokens": 3, "temperature": 0}
    with http(server) as c:
        c.post("/v1/completions", json=body).raise_for_status()
        reused, evaluated = (_metric(server, f"grok_edge_prompt_tokens{s}_total") for s in ("_reused", ""))
        longer = prompt + " to the sea"
        r = c.post("/v1/completions", json={**body, "prompt": longer, "max_tokens": 6})
    assert r.json()["choices"][0]["text"] == greedy(longer, 6)  # reuse changes nothing in the output
    n_prefix = len(tokenizer.encode(prompt))
    assert _metric(server, "grok_edge_prompt_tokens_reused_total") - reused >= n_prefix - 1
    assert (
        _metric(server, "grok_edge_prompt_tokens_total") - evaluated
        <= len(tokenizer.encode(longer)) - n_prefix + 1
    )


def test_request_timeout_is_an_openai_shaped_error(model_path, model_id, tokenizer):
    # 250 tokens (EOS banned) cannot finish in 0.1 s: the scheduler ends the request at its deadline
    args = ["--parallel", "1", "-c", "256", "-t", "1", "--timeout", "0.1"]
    with running_server(model_path, *args) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = {"model": model_id, "prompt": "Go", "max_tokens": 250, "temperature": 0}
        r = c.post("/v1/completions", json={**body, "logit_bias": {str(tokenizer.eos_id): -100}})
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        assert r.json()["error"]["type"] == "server_error"
        assert c.get("/health").json()["slots_busy"] == 0


class _ScriptedScheduler:
    """A scheduler stand-in that answers every request with a fixed list of (kind, value) events."""

    class _Tokenizer:
        bos_id, eos_id = 1, 2

        def encode(self, text: str) -> list[int]:
            return [3 + ord(c) % 50 for c in text]

        def decode(self, ids: list[int]) -> str:
            return "".join(chr(97 + i % 26) for i in ids)

    class _Context:
        n_ctx, n_vocab, n_seq = 4096, 512, 1

    def __init__(self, events: list[tuple[str, object]]) -> None:
        self.tokenizer, self.bc, self.events = self._Tokenizer(), self._Context(), events

    def submit(self, job) -> None:
        for kind, value in self.events:
            job.emit(kind, value)


def _sse(events: list[tuple[str, object]], path: str, body: dict) -> list[dict | str]:
    from edge.server.app import create_app

    async def post() -> bytes:
        app = create_app(_ScriptedScheduler(events), "m")  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.post(path, json={"model": "m", "stream": True, **body})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            return r.content

    frames = asyncio.run(post()).decode().split("\n\n")
    assert frames[-1] == "" and all(f.startswith("data: ") for f in frames[:-1])
    return [f[6:] if f == "data: [DONE]" else json.loads(f[6:]) for f in frames[:-1]]


def test_completion_and_chat_streams_share_one_sse_sequence():
    """Both endpoints stream through one function (first chunk, pieces, final chunk with finish_reason and
    logprobs, usage, [DONE]), each in its own chunk format; chat drops the reply's leading white space."""
    from types import SimpleNamespace

    from edge.generation import TokenLogprob

    gen = SimpleNamespace(  # what the app reads of an edge.generation.Generation
        prompt_ids=[5, 6, 7],
        completion_ids=[8, 9],
        finish_reason="length",
        logprobs=[TokenLogprob(8, " Hi", -0.25, {" Hi": -0.25}), TokenLogprob(9, "!", -1.5, {"!": -1.5})],
    )
    events: list[tuple[str, object]] = [("text", " \n"), ("text", " Hi"), ("text", "!"), ("done", gen)]
    usage = {"include_usage": True}
    done = _sse(
        events, "/v1/completions", {"prompt": "Go", "echo": True, "logprobs": 1, "stream_options": usage}
    )
    texts = [c["choices"][0]["text"] for c in done[:-2]]
    assert texts == ["Go", " \n", " Hi", "!", ""]
    assert done[-3]["choices"][0]["finish_reason"] == "length"
    assert done[-3]["choices"][0]["logprobs"]["tokens"] == [" Hi", "!"]
    assert done[-2]["choices"] == [] and done[-2]["usage"]["total_tokens"] == 5 and done[-1] == "[DONE]"
    chat = _sse(events, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Go"}]})
    assert [c["object"] for c in chat[:-1]] == ["chat.completion.chunk"] * 4
    assert [c["choices"][0]["delta"] for c in chat[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"content": "!"},
        {},
    ]
    assert chat[-2]["choices"][0]["finish_reason"] == "length" and chat[-1] == "[DONE]"
    failed = _sse([("text", "a"), ("error", "the request timed out")], "/v1/completions", {"prompt": "Go"})
    assert failed[-2] == {
        "error": {"message": "the request timed out", "type": "server_error", "param": None, "code": None}
    }
