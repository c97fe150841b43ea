"""OpenAI-shaped response dicts (as llama-cpp-python returns them), and the plain chat prompt format.

Grok-1 is a base model: it was not tuned on any chat template. Chat requests are turned into a plain
transcript that a base model continues naturally, and generation stops where the model begins the next
user turn::

    System: {system message}        (only when there is one)

    User: {message}

    Assistant: {message}

    User: {message}

    Assistant:

Each message's content is stripped of surrounding whitespace; the stop strings ``"\\nUser:"`` and
``"\\nSystem:"`` are added to the request's own. The assistant's reply is returned without the leading
space the prompt's ``"Assistant:"`` leaves for it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from edge.generation import Generation

CHAT_FORMAT = "grok-plain"
CHAT_STOPS = ["\nUser:", "\nSystem:"]
# A stream's chunk: (a text piece, or None for the empty one; finish_reason; logprobs) -> the chunk.
ChunkBuilder = Callable[[str | None, str | None, dict[str, Any] | None], dict[str, Any]]
_ROLES = {"system": "System", "user": "User", "assistant": "Assistant", "developer": "System"}


def chat_prompt(messages: Sequence[Any]) -> str:
    """The transcript of ``messages`` (dicts with "role" and "content") ending with "Assistant:"."""
    parts: list[str] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be an object with a string 'role'")
        role = _ROLES.get(m["role"])
        if role is None:
            raise ValueError(f"messages[{i}].role {m['role']!r}: use one of {sorted(_ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: the text ones
            texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"messages[{i}].content: only text parts are supported")
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        parts.append(f"{role}: {content.strip()}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(gen: Generation) -> dict[str, int]:
    p, c = len(gen.prompt_ids), len(gen.completion_ids)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion_logprobs(gen: Generation, start: int = 0, text_offset: int = 0) -> dict[str, Any]:
    """The legacy completions ``logprobs`` object for the tokens from ``start`` on."""
    items = gen.logprobs[start:]
    offsets, pos = [], text_offset
    for it in items:
        offsets.append(pos)
        pos += len(it.text)
    return {
        "tokens": [it.text for it in items],
        "token_logprobs": [it.logprob for it in items],
        "top_logprobs": [dict(it.top) for it in items],
        "text_offset": offsets,
    }


def chat_logprobs(gen: Generation, start: int = 0) -> dict[str, Any]:
    """The chat ``logprobs`` object ({"content": [...]}) for the tokens from ``start`` on."""
    content = []
    for it in gen.logprobs[start:]:
        content.append(
            {
                "token": it.text,
                "logprob": it.logprob,
                "bytes": list(it.text.encode("utf-8")),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in it.top.items()
                ],
            }
        )
    return {"content": content}


def completion(
    rid: str, model: str, text: str, gen: Generation, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": gen.finish_reason}],
        "usage": usage(gen),
    }


def completion_chunk(
    rid: str, model: str, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def chat_completion(
    rid: str, model: str, text: str, gen: Generation, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": gen.finish_reason,
            }
        ],
        "usage": usage(gen),
    }


def chat_chunk(
    rid: str,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }


def completion_chunks(rid: str, model: str) -> ChunkBuilder:
    """The chunk builder of a streamed completion (the empty chunk has text "")."""

    def chunk(text: str | None, finish_reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return completion_chunk(rid, model, text or "", finish_reason, logprobs)

    return chunk


def chat_chunks(rid: str, model: str) -> ChunkBuilder:
    """The chunk builder of a streamed chat completion (a piece's delta is {"content": text}, the empty
    chunk's delta {})."""

    def chunk(text: str | None, finish_reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return chat_chunk(rid, model, {} if text is None else {"content": text}, finish_reason, logprobs)

    return chunk
