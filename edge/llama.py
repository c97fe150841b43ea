"""`edge.Llama`: llama-cpp-python's ``Llama`` API over grok-edge, so an app switches with one import.

    from edge import Llama                     # instead of: from llama_cpp import Llama
    llm = Llama(model_path="grok-1-Q4_K_M.gguf", n_ctx=2048)
    out = llm("Q: Name the planets in the solar system. A: ", max_tokens=32, stop=["Q:", "\\n"], echo=True)
    print(out["choices"][0]["text"])
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], stream=True): ...

The methods and return shapes that make sense for Grok-1 on CPU: ``__call__`` / ``create_completion``
(OpenAI-shaped dicts, or an iterator of chunks with ``stream=True``), ``create_chat_completion`` (the
plain transcript format of edge.openai_format: Grok-1 is a base model), ``tokenize`` / ``detokenize`` on
bytes, ``n_ctx()``, ``n_vocab()``, ``token_eos()``, ``token_bos()``, ``reset()``. Arguments llama.cpp has and
grok-edge does not use (``n_gpu_layers``, ``use_mmap``, ``chat_format``, ...) are accepted and ignored, as
llama-cpp-python ignores the ones a build lacks; ``suffix`` and ``n > 1`` are refused.

Which to use: ``edge.Model`` is the native, typed API (token-level eval, logits, state save/load, stats);
``edge.Llama`` is for code written against llama-cpp-python; ``edge.BatchContext`` evaluates several
sequences in one pass (what ``grok-edge serve`` uses). Thread-safety: none of them may be used from two
threads at once; give each thread its own object (one context each), or hold a lock around every call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge import openai_format as fmt
from edge.batch import BatchContext
from edge.generation import Generation, GenerationParams


def load_tokenizer(path: str) -> Any:
    """The GGUF's tokenizer (tokenizer.ggml.* keys); ValueError when the file has none."""
    from edge.gguf import GGUFFile
    from edge.tokenizer import Tokenizer

    with GGUFFile(path) as g:
        if "tokenizer.ggml.tokens" not in g.metadata:
            raise ValueError(f"{path}: the GGUF has no tokenizer (tokenizer.ggml.* keys)")
        return Tokenizer.from_gguf(g)


class Llama:
    """A Grok GGUF model behind llama-cpp-python's ``Llama`` interface (one sequence; not thread-safe)."""

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_threads: int | None = None,
        seed: int | None = None,
        kv_type: str = "f16",
        verbose: bool = True,
        **ignored: Any,
    ) -> None:
        self.model_path = str(model_path)
        if n_ctx <= 0:  # llama-cpp-python: 0 means the model's own context length
            n_ctx = 0
        self._bc = BatchContext(
            self.model_path, n_seq=1, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, kv_type=kv_type
        )
        self.tokenizer_ = load_tokenizer(self.model_path)
        self._seed = seed
        self.verbose = verbose
        self.model_name = Path(self.model_path).name

    # -- llama-cpp-python's small methods ------------------------------------------------------------

    def n_ctx(self) -> int:
        return self._bc.n_ctx

    def n_vocab(self) -> int:
        return self._bc.n_vocab

    def token_eos(self) -> int:
        return int(self.tokenizer_.eos_id)

    def token_bos(self) -> int:
        return int(self.tokenizer_.bos_id)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of UTF-8 ``text`` (BOS first with ``add_bos``, as llama-cpp-python)."""
        if not isinstance(text, bytes | bytearray):
            raise TypeError("tokenize takes bytes (text.encode('utf-8'))")
        return list(self.tokenizer_.encode(bytes(text).decode("utf-8", "replace"), add_bos=add_bos))

    def detokenize(
        self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None, special: bool = False
    ) -> bytes:
        """The bytes of ``tokens`` (pieces joined: a leading space is kept, as llama-cpp-python does)."""
        return b"".join(bytes(self.tokenizer_.token_to_piece(int(t))) for t in tokens)

    def reset(self) -> None:
        self._bc.truncate(0, 0)

    def close(self) -> None:
        self._bc.close()

    def __enter__(self) -> Llama:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generation ----------------------------------------------------------------------------------

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.tokenizer_.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            ids = [int(self.tokenizer_.bos_id)]  # an empty prompt: generate from BOS
        if len(ids) > self.n_ctx():
            raise ValueError(f"Requested tokens ({len(ids)}) exceed context window of {self.n_ctx()}")
        return ids

    def _generate(self, ids: list[int], params: GenerationParams) -> Iterator[tuple[str, Generation]]:
        """Yield (text, generation) per step, the prompt's cached prefix reused."""
        cached = self._bc.tokens(0)
        common = 0
        for a, b in zip(cached, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)
        self._bc.truncate(0, common)
        todo = ids[common:]
        logits: np.ndarray = self._bc.eval([0] * len(todo), todo)[0]
        gen = Generation(self.tokenizer_, ids, params, self.n_ctx())
        while True:
            text = gen.step(logits)
            yield text, gen
            if gen.next_token is None:
                return
            logits = self._bc.eval([0], [gen.next_token])[0]

    def _run(self, ids: list[int], params: GenerationParams) -> tuple[str, Generation]:
        """The whole generation: (text, finished generation)."""
        parts: list[str] = []
        last: Generation | None = None
        for piece, last in self._generate(ids, params):  # noqa: B007 (last: the generation, after the loop)
            parts.append(piece)
        assert last is not None
        return "".join(parts), last

    def _params(self, kw: dict[str, Any], max_tokens: int | None) -> GenerationParams:
        stop = kw.get("stop") or []
        logit_bias = kw.get("logit_bias")
        seed = kw.get("seed")
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=float(kw.get("temperature", 0.8)),
            top_k=int(kw.get("top_k", 40)),
            top_p=float(kw.get("top_p", 0.95)),
            min_p=float(kw.get("min_p", 0.05)),
            repeat_penalty=float(kw.get("repeat_penalty", 1.0)),
            frequency_penalty=float(kw.get("frequency_penalty", 0.0)),
            presence_penalty=float(kw.get("presence_penalty", 0.0)),
            logit_bias={int(k): float(v) for k, v in (logit_bias or {}).items()},
            seed=seed if seed is not None else self._seed,
            stop=[stop] if isinstance(stop, str) else list(stop),
            logprobs=kw.get("logprobs"),
        )

    def create_completion(
        self,
        prompt: str | Sequence[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        stream: bool = False,
        echo: bool = False,
        **kw: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """llama-cpp-python's ``create_completion``: a ``text_completion`` dict, or chunks with ``stream``.
        Parameters: temperature, top_p, top_k, min_p, stop, seed, repeat_penalty, presence_penalty,
        frequency_penalty, logit_bias (token id -> bias), logprobs (int: top alternatives per token)."""
        if suffix is not None:
            raise ValueError("suffix (fill-in-the-middle) is not supported by Grok-1")
        ids = self._prompt_ids(prompt)
        params = self._params(kw, max_tokens)
        rid = fmt.new_id("cmpl")
        head = prompt if isinstance(prompt, str) else self.tokenizer_.decode(ids)
        if stream:
            return self._stream_completion(rid, ids, params, head if echo else "")

        text, gen = self._run(ids, params)
        lp = fmt.completion_logprobs(gen) if params.logprobs is not None else None
        return fmt.completion(rid, self.model_name, (head if echo else "") + text, gen, lp)

    def _stream_completion(
        self, rid: str, ids: list[int], params: GenerationParams, head: str
    ) -> Iterator[dict[str, Any]]:
        if head:
            yield fmt.completion_chunk(rid, self.model_name, head, None)
        offset = 0
        for text, gen in self._generate(ids, params):
            lp = None
            if params.logprobs is not None:
                lp = fmt.completion_logprobs(gen, offset)
                offset = len(gen.logprobs)
            if text or lp:
                yield fmt.completion_chunk(rid, self.model_name, text, None, lp)
            if gen.finish_reason is not None:
                yield fmt.completion_chunk(rid, self.model_name, "", gen.finish_reason)

    def __call__(self, prompt: str | Sequence[int], **kw: Any) -> dict[str, Any] | Iterator[dict[str, Any]]:
        return self.create_completion(prompt, **kw)

    def create_chat_completion(
        self,
        messages: Sequence[dict[str, Any]],
        max_tokens: int | None = None,
        stream: bool = False,
        temperature: float = 0.2,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        **kw: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """llama-cpp-python's ``create_chat_completion`` with the plain transcript prompt
        (edge.openai_format): a ``chat.completion`` dict, or ``chat.completion.chunk``s with ``stream``."""
        ids = self._prompt_ids(fmt.chat_prompt(messages))
        stop = kw.pop("stop", None) or []
        kw["stop"] = ([stop] if isinstance(stop, str) else list(stop)) + fmt.CHAT_STOPS
        kw["temperature"] = temperature
        if logprobs:
            kw["logprobs"] = int(top_logprobs or 0)
        params = self._params(kw, max_tokens)
        rid = fmt.new_id("chatcmpl")
        if stream:
            return self._stream_chat(rid, ids, params)
        text, gen = self._run(ids, params)
        lp = fmt.chat_logprobs(gen) if params.logprobs is not None else None
        return fmt.chat_completion(rid, self.model_name, text.lstrip(), gen, lp)

    def _stream_chat(self, rid: str, ids: list[int], params: GenerationParams) -> Iterator[dict[str, Any]]:
        yield fmt.chat_chunk(rid, self.model_name, {"role": "assistant"}, None)
        started, offset = False, 0
        for text, gen in self._generate(ids, params):
            if not started:
                text = text.lstrip()
                started = bool(text)
            lp = None
            if params.logprobs is not None:
                lp = fmt.chat_logprobs(gen, offset)
                offset = len(gen.logprobs)
            if text:
                yield fmt.chat_chunk(rid, self.model_name, {"content": text}, None, lp)
            if gen.finish_reason is not None:
                yield fmt.chat_chunk(rid, self.model_name, {}, gen.finish_reason)
