"""The HTTP API (FastAPI): OpenAI's /v1/models, /v1/completions, /v1/chat/completions (JSON or SSE
chunks), plus /health and /metrics (Prometheus text). Every error is a 4xx/5xx JSON body in OpenAI's
shape: {"error": {"message", "type", "param", "code"}}. With an API key, every request must carry
``Authorization: Bearer KEY`` (401 otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import openai_format as fmt
from edge.generation import Generation, GenerationParams
from edge.server.scheduler import Job, QueueFull, Scheduler


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # llama.cpp server extensions
    top_k: int = Field(40, ge=0)
    min_p: float = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(1.0, gt=0.0)


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


def create_app(
    scheduler: Scheduler,
    model_id: str,
    api_key: str | None = None,
    timeout_s: float = 600.0,
) -> FastAPI:
    app = FastAPI(title="grok-edge", docs_url=None, redoc_url=None, openapi_url=None)
    tok = scheduler.tokenizer
    n_ctx, n_vocab = scheduler.bc.n_ctx, scheduler.bc.n_vocab
    responses: Counter[tuple[str, int]] = Counter()
    started = time.time()

    @app.middleware("http")
    async def auth_and_count(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if api_key is not None:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), api_key.encode()
            ):
                responses[(path, 401)] += 1
                return JSONResponse(
                    error_body(
                        "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
                    ),
                    status_code=401,
                )
        response = await call_next(request)
        responses[(path if path in _PATHS else "other", response.status_code)] += 1
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.type, exc.param, exc.code),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request: " + str(first.get("msg", ""))
        else:
            message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(
            error_body(message, "invalid_request_error", ".".join(loc) or None), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(
                str(exc.detail), "invalid_request_error", code=None if exc.status_code != 404 else "not_found"
            ),
            status_code=exc.status_code,
        )

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {exc}", "server_error"), status_code=500)

    def model_card() -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": int(started), "owned_by": "grok-edge"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        if name != model_id:
            raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return model_card()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_id,
            "slots_total": scheduler.bc.n_seq,
            "slots_busy": scheduler.slots_busy(),
            "queue_depth": scheduler.queue_depth(),
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        st = scheduler.stats
        lines = [
            "# HELP grok_edge_requests_total HTTP responses by path and status code.",
            "# TYPE grok_edge_requests_total counter",
        ]
        for (path, code), count in sorted(responses.items()):
            lines.append(f'grok_edge_requests_total{{path="{path}",code="{code}"}} {count}')
        for name, kind, value, help_ in [
            ("prompt_tokens_total", "counter", st.prompt_tokens, "Prompt tokens evaluated."),
            (
                "prompt_tokens_reused_total",
                "counter",
                st.prompt_tokens_reused,
                "Prompt tokens found in a slot's cache.",
            ),
            ("completion_tokens_total", "counter", st.completion_tokens, "Tokens generated."),
            (
                "generations_finished_total",
                "counter",
                st.requests_done,
                "Generations that ran to completion.",
            ),
            (
                "generations_cancelled_total",
                "counter",
                st.requests_cancelled,
                "Generations ended by a client gone.",
            ),
            (
                "generations_timed_out_total",
                "counter",
                st.requests_timed_out,
                "Generations past the timeout.",
            ),
            ("batch_steps_total", "counter", st.steps, "Batched forward passes."),
            (
                "tokens_per_second",
                "gauge",
                round(scheduler.tokens_per_second(), 3),
                "Tokens generated/s, last 10 s.",
            ),
            ("queue_depth", "gauge", scheduler.queue_depth(), "Requests waiting for a slot."),
            ("slots_busy", "gauge", scheduler.slots_busy(), "Slots running a request."),
            ("slots_total", "gauge", scheduler.bc.n_seq, "Slots (--parallel)."),
        ]:
            lines += [
                f"# HELP grok_edge_{name} {help_}",
                f"# TYPE grok_edge_{name} {kind}",
                f"grok_edge_{name} {value}",
            ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    # -- completions ---------------------------------------------------------------------------------

    def check_model(name: str) -> None:
        if name != model_id:
            raise ApiError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")

    def params_of(
        req: _Common, max_tokens: int | None, prompt_len: int, logprobs: int | None
    ) -> GenerationParams:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "stop: at most 4 sequences", param="stop")
        bias: dict[int, float] = {}
        for key, value in (req.logit_bias or {}).items():
            if not key.lstrip("-").isdigit() or not 0 <= int(key) < n_vocab:
                raise ApiError(
                    400, f"logit_bias: {key!r} is not a token id of this model", param="logit_bias"
                )
            if not -100.0 <= value <= 100.0:
                raise ApiError(400, f"logit_bias[{key}]: {value} is outside -100..100", param="logit_bias")
            bias[int(key)] = value
        if prompt_len > n_ctx:
            raise ApiError(
                400,
                f"This model's maximum context length is {n_ctx} tokens, "
                f"however your prompt has {prompt_len} tokens.",
                param="prompt",
                code="context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > 0 and prompt_len + max_tokens > n_ctx:
            raise ApiError(
                400,
                f"This model's maximum context length is {n_ctx} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
                f"{max_tokens} for the completion).",
                param="max_tokens",
                code="context_length_exceeded",
            )
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_k=req.top_k,
            top_p=req.top_p,
            min_p=req.min_p,
            repeat_penalty=req.repeat_penalty,
            frequency_penalty=req.frequency_penalty,
            presence_penalty=req.presence_penalty,
            logit_bias=bias,
            seed=req.seed,
            stop=stops,
            logprobs=logprobs,
        )

    def submit(ids: list[int], params: GenerationParams) -> tuple[Job, asyncio.Queue[tuple[str, Any]]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def emit(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown)
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        job = Job(ids, params, emit, time.monotonic() + timeout_s)
        try:
            scheduler.submit(job)
        except QueueFull as exc:
            raise ApiError(
                429,
                f"The server is busy: {exc}. Retry later.",
                "rate_limit_exceeded",
                headers={"Retry-After": "1"},
            ) from exc
        return job, queue

    async def collect(
        request: Request, job: Job, queue: asyncio.Queue[tuple[str, Any]]
    ) -> tuple[str, Generation]:
        """Wait for a whole generation; cancel it when the client goes away."""
        parts: list[str] = []
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        job.cancel()
                        raise ApiError(499, "client closed the request") from None
                    continue
                if kind == "text":
                    parts.append(value)
                elif kind == "done":
                    return "".join(parts), value
                else:
                    raise ApiError(504 if "timed out" in value else 500, value, "server_error")
        finally:
            job.cancel()  # no-op once done; stops the work if this handler was cancelled

    def sse(obj: Any) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

    async def events(job: Job, queue: asyncio.Queue[tuple[str, Any]]) -> AsyncIterator[tuple[str, Any]]:
        try:
            while True:
                kind, value = await queue.get()
                yield kind, value
                if kind != "text":
                    return
        finally:
            job.cancel()  # the client went away (the response task was cancelled) or the stream ended

    def stream_response(
        job: Job,
        queue: asyncio.Queue[tuple[str, Any]],
        chunk: fmt.ChunkBuilder,
        logprobs: Callable[[Generation], dict[str, Any]] | None,
        include_usage: bool,
        first: dict[str, Any] | None = None,
        strip_start: bool = False,
    ) -> StreamingResponse:
        """The SSE response of a streamed request: ``first`` (if any), a chunk per text piece (with
        ``strip_start``, the leading white space of the text dropped), the final chunk with the finish
        reason (and ``logprobs`` of the generation, when asked), the usage chunk (``include_usage``),
        an error body if the generation failed, then ``[DONE]``. ``chunk`` builds each chunk's format."""

        async def body() -> AsyncIterator[bytes]:
            if first is not None:
                yield sse(first)
            started = not strip_start
            async for kind, value in events(job, queue):
                if kind == "text":
                    if not started:
                        value = value.lstrip()
                        started = bool(value)
                    if value:
                        yield sse(chunk(value, None, None))
                elif kind == "done":
                    lp = logprobs(value) if logprobs is not None else None
                    yield sse(chunk(None, value.finish_reason, lp))
                    if include_usage:
                        yield sse({**chunk(None, None, None), "choices": [], "usage": fmt.usage(value)})
                else:
                    yield sse(error_body(value, "server_error"))
            yield b"data: [DONE]\n\n"

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request) -> Any:
        check_model(req.model)
        if req.suffix is not None:
            raise ApiError(400, "suffix is not supported by this model", param="suffix")
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise ApiError(400, "prompt: one prompt per request (a list of one string)", param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = tok.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
            if any(not 0 <= t < n_vocab for t in ids):
                raise ApiError(400, f"prompt: token ids must be in 0..{n_vocab - 1}", param="prompt")
        if not ids:
            ids = [int(tok.bos_id)]
        params = params_of(req, req.max_tokens, len(ids), req.logprobs)
        head = (prompt if isinstance(prompt, str) else tok.decode(ids)) if req.echo else ""
        job, queue = submit(ids, params)
        rid = fmt.new_id("cmpl")
        if not req.stream:
            text, gen = await collect(request, job, queue)
            lp = fmt.completion_logprobs(gen) if req.logprobs is not None else None
            return fmt.completion(rid, model_id, head + text, gen, lp)
        chunk = fmt.completion_chunks(rid, model_id)
        return stream_response(
            job,
            queue,
            chunk,
            fmt.completion_logprobs if req.logprobs is not None else None,
            bool((req.stream_options or {}).get("include_usage")),
            first=chunk(head, None, None) if head else None,
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request) -> Any:
        check_model(req.model)
        try:
            prompt = fmt.chat_prompt([m.model_dump() for m in req.messages])
        except ValueError as exc:
            raise ApiError(400, str(exc), param="messages") from exc
        ids = tok.encode(prompt)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        logprobs = int(req.top_logprobs or 0) if req.logprobs else None
        params = params_of(req, max_tokens, len(ids), logprobs)
        params.stop = params.stop + fmt.CHAT_STOPS
        job, queue = submit(ids, params)
        rid = fmt.new_id("chatcmpl")
        if not req.stream:
            text, gen = await collect(request, job, queue)
            lp = fmt.chat_logprobs(gen) if logprobs is not None else None
            return fmt.chat_completion(rid, model_id, text.lstrip(), gen, lp)
        return stream_response(
            job,
            queue,
            fmt.chat_chunks(rid, model_id),
            fmt.chat_logprobs if logprobs is not None else None,
            bool((req.stream_options or {}).get("include_usage")),
            first=fmt.chat_chunk(rid, model_id, {"role": "assistant", "content": ""}, None),
            strip_start=True,
        )

    return app


_PATHS = {"/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/metrics"}
