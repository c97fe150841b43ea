"""The C engine refuses bad calls and bad files with a clear error naming the file, key or tensor.

Token ids out of range, context overflow, non-grok architectures, missing or misshapen tensors, unsupported
weight types, bad options; a refused call changes nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from engine_gguf import write_grok_gguf

import edge
from edge._native import EdgeArgumentError, EdgeFormatError, EdgeRangeError, EdgeUnsupportedError


def test_bad_calls_raise_clear_errors(converted):
    path = converted("q8_0")
    with edge.Model(path, n_ctx=16, n_threads=1) as model:
        with pytest.raises(EdgeRangeError, match="token id 512 at index 1 is out of range"):
            model.eval([5, 512])
        with pytest.raises(EdgeRangeError, match="token id -3"):
            model.eval([-3])
        with pytest.raises(EdgeRangeError, match="token id"):
            model.eval([2**40])
        # the same checks on numpy ids and on lists too long for the pure-Python check
        with pytest.raises(EdgeRangeError, match="token id 512 at index 1 is out of range"):
            model.eval(np.array([5, 512]))
        with pytest.raises(EdgeRangeError, match="token id 4294967301 at index 20 is out of range"):
            model.eval([5] * 20 + [2**32 + 5])
        with pytest.raises(EdgeArgumentError, match="integer ids"):
            model.eval([True])
        assert model.n_past == 0  # a rejected call changes nothing
        model.eval(list(range(5, 15)))
        with pytest.raises(
            EdgeRangeError, match="context overflow: 10 cached \\+ 7 new tokens exceed n_ctx 16"
        ):
            model.eval(list(range(5, 12)))
        assert model.n_past == 10
        with pytest.raises(EdgeArgumentError):
            model.eval([])
        with pytest.raises(EdgeRangeError):
            model.truncate(11)
        with pytest.raises(EdgeRangeError, match="exceeds the context"):
            model.generate(list(range(5, 25)), max_tokens=1, temperature=0)
    with pytest.raises(ValueError, match="closed"):
        model.eval([5])


def test_non_grok_architecture_is_refused(tiny_reference, tmp_path):
    params, config = tiny_reference
    path = tmp_path / "llama.gguf"
    write_grok_gguf(path, params, config.key_size, "F32", arch="llama")
    with pytest.raises(EdgeUnsupportedError, match="architecture 'llama' is not grok") as info:
        edge.Model(path)
    assert str(path) in str(info.value)


def test_missing_tensor_is_named(tiny_reference, tmp_path):
    params, config = tiny_reference
    path = tmp_path / "missing.gguf"
    write_grok_gguf(path, params, config.key_size, "F32", omit_tensors=["blk.10.ffn_up_exps.weight"])
    with pytest.raises(EdgeFormatError, match="tensor 'blk.10.ffn_up_exps.weight' is missing") as info:
        edge.Model(path)
    assert str(path) in str(info.value)


def test_shape_that_contradicts_the_metadata_is_named(tiny_reference, tmp_path, monkeypatch):
    import gguf

    params, config = tiny_reference
    path = tmp_path / "kv4.gguf"
    original = gguf.GGUFWriter.add_head_count_kv
    monkeypatch.setattr(
        gguf.GGUFWriter, "add_head_count_kv", lambda self, n: original(self, 4)
    )  # file says 4
    write_grok_gguf(path, params, config.key_size, "F32")  # tensors have 2 KV heads
    with pytest.raises(EdgeFormatError, match=r"tensor 'blk.0.attn_k.weight' has shape \[256, 128, 1, 1\]"):
        edge.Model(path)


def test_unsupported_weight_type_is_refused_at_load(tiny_reference, tmp_path, monkeypatch):
    import gguf

    params, config = tiny_reference
    path = tmp_path / "i8.gguf"
    original = gguf.GGUFWriter.add_tensor

    def add_tensor(self, name, tensor, *args, **kwargs):  # blk.2.attn_q as I8 (an integer tensor)
        if name == "blk.2.attn_q.weight":
            return original(
                self, name, np.zeros(tensor.shape, np.int8), raw_dtype=gguf.GGMLQuantizationType.I8
            )
        return original(self, name, tensor, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", add_tensor)
    write_grok_gguf(path, params, config.key_size, "F32")
    with pytest.raises(EdgeUnsupportedError, match="tensor 'blk.2.attn_q.weight' has type I8"):
        edge.Model(path)


def test_missing_file_and_bad_options(converted, tmp_path):
    with pytest.raises(FileNotFoundError):
        edge.Model(tmp_path / "nope.gguf")
    with pytest.raises(EdgeArgumentError, match="kv_type"):
        edge.Model(converted("f32"), kv_type="q4_0")
    not_gguf = tmp_path / "junk.gguf"
    not_gguf.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(edge.EdgeError):
        edge.Model(not_gguf)
