"""edge.Llama runs llama-cpp-python's documented examples and returns what they promise.

edge.Llama: llama-cpp-python's documented usage examples, unchanged but for the model path, and the
shapes and values of what they return (greedy text equal to edge.Model's, streams equal to the whole).

The examples (llama-cpp-python's README, "High-level API" and "Chat Completion"):
1. ``Llama(model_path=...)`` then ``llm("Q: Name the planets in the solar system? A: ", max_tokens=32,
   stop=["Q:", "\\n"], echo=True)``;
2. ``Llama(model_path=..., n_gpu_layers=-1, seed=1337, n_ctx=2048)`` (GPU arguments accepted, unused);
3. ``llm.create_chat_completion(messages=[{"role": "system", ...}, {"role": "user", ...}])`` with
   ``chat_format="llama-2"`` given at construction (accepted; Grok-1 uses its plain format);
4. streaming: ``for output in llm(prompt, stream=True): print(output["choices"][0]["text"], end="")``;
5. ``llm.tokenize(b"Hello, world!")`` / ``llm.detokenize(tokens)``, ``llm.n_ctx()``, ``llm.token_eos()``.
"""

from __future__ import annotations

import pytest

import edge
from edge import Llama
from edge.openai_format import chat_prompt


@pytest.fixture(scope="module")
def model_path(converted) -> str:
    return str(converted("q8_0"))


def test_example_high_level_completion(model_path, capsys):
    llm = Llama(model_path=model_path)
    output = llm("Q: Name the planets in the solar system? A: ", max_tokens=32, stop=["Q:", "\n"], echo=True)
    print(output)
    assert output["object"] == "text_completion" and output["id"].startswith("cmpl-")
    choice = output["choices"][0]
    assert choice["text"].startswith("Q: Name the planets in the solar system? A: ")  # echo
    assert choice["finish_reason"] in ("stop", "length") and choice["index"] == 0
    assert "\n" not in choice["text"] and "Q:" not in choice["text"][3:]
    u = output["usage"]
    prompt = b"Q: Name the planets in the solar system? A: "
    assert u["prompt_tokens"] == len(llm.tokenize(prompt, add_bos=False))
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["completion_tokens"] <= 32
    assert "text_completion" in capsys.readouterr().out


def test_example_constructor_arguments_and_small_methods(model_path):
    llm = Llama(model_path=model_path, n_gpu_layers=-1, seed=1337, n_ctx=2048)
    assert llm.n_ctx() == 2048
    assert llm.token_eos() == 2 and llm.token_bos() == 1
    tokens = llm.tokenize(b"Hello, world!")
    assert tokens[0] == llm.token_bos() and len(tokens) > 2
    assert llm.detokenize(tokens[1:]) == b" Hello, world!"  # pieces joined, as llama-cpp-python
    with pytest.raises(TypeError):
        llm.tokenize("text")  # type: ignore[arg-type]


def test_greedy_completion_equals_edge_model(model_path):
    prompt = "The quick brown fox"
    llm = Llama(model_path=model_path, n_ctx=256)
    out = llm(prompt, max_tokens=12, temperature=0.0)
    with edge.Model(model_path, n_ctx=256) as m:
        expect = m.generate(prompt, max_tokens=12, temperature=0.0)
    assert out["choices"][0]["text"] == expect
    # the second call reuses the cached prompt and gives the same text
    assert llm(prompt, max_tokens=12, temperature=0.0)["choices"][0]["text"] == expect


def test_example_streaming_equals_the_whole(model_path, capsys):
    llm = Llama(model_path=model_path, n_ctx=256)
    prompt = "Once upon a time"
    whole = llm(prompt, max_tokens=16, temperature=0.0)
    chunks = list(llm(prompt, max_tokens=16, temperature=0.0, stream=True))
    for output in chunks:
        print(output["choices"][0]["text"], end="")
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert capsys.readouterr().out == whole["choices"][0]["text"]


def test_example_chat_completion(model_path):
    llm = Llama(model_path=model_path, chat_format="llama-2")
    messages = [
        {"role": "system", "content": "You are an assistant who perfectly describes images."},
        {"role": "user", "content": "Describe this image in detail please."},
    ]
    out = llm.create_chat_completion(messages=messages, max_tokens=16, temperature=0.0)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    msg = out["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert "\nUser:" not in msg["content"] and msg["content"] == msg["content"].lstrip()
    # the plain transcript prompt, continued greedily, is the reply
    prompt = chat_prompt(messages)
    assert prompt == (
        "System: You are an assistant who perfectly describes images.\n\n"
        "User: Describe this image in detail please.\n\nAssistant:"
    )
    raw = llm(prompt, max_tokens=16, temperature=0.0, stop=["\nUser:", "\nSystem:"])
    assert msg["content"] == raw["choices"][0]["text"].lstrip()
    assert out["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"]
    stream = list(llm.create_chat_completion(messages=messages, max_tokens=16, temperature=0.0, stream=True))
    assert stream[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in stream)
    assert text == msg["content"]
    assert stream[-1]["choices"][0]["finish_reason"] == out["choices"][0]["finish_reason"]
    assert all(c["object"] == "chat.completion.chunk" for c in stream)


def test_logprobs_and_errors(model_path):
    llm = Llama(model_path=model_path, n_ctx=32)
    out = llm("Hello", max_tokens=4, temperature=0.0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    n = out["usage"]["completion_tokens"]
    assert len(lp["tokens"]) >= n and all(len(t) == 3 for t in lp["top_logprobs"])
    for tok_lp, top in zip(lp["token_logprobs"], lp["top_logprobs"], strict=True):
        assert tok_lp <= 0.0 and abs(tok_lp - max(top.values())) < 1e-9  # greedy: the best is drawn
    with pytest.raises(ValueError, match="exceed context window"):
        llm("word " * 100)
    with pytest.raises(ValueError, match="suffix"):
        llm("Hello", suffix="x")
