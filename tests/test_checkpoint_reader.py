"""The release-format reader and writer: file order, pickle contents, dequantization, hostile input."""

from __future__ import annotations

import pickle
import pickletools
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from edge.convert.layout import GROK1_SHAPE, Kind, leaf_specs, module_paths
from edge.convert.release import (
    dequantize,
    open_checkpoint,
    quantize_release,
    write_checkpoint,
)
from edge.convert.safe_pickle import (
    BF16,
    CheckpointFormatError,
    QuantizedWeight8bit,
    read_leaf,
    write_leaf,
)

BF = ml_dtypes.bfloat16


def test_release_file_order_is_sorted_module_paths() -> None:
    paths = module_paths(64)
    assert len(paths) == 770  # the release's 770 files
    assert paths[:3] == [
        "language_model/in_out_embed",
        "language_model/rms_norm",
        "transformer/decoder_layer_0/moe/linear",
    ]
    layer_order = [p.split("/")[1] for p in paths[2::12]]
    assert layer_order[:5] == [
        "decoder_layer_0",
        "decoder_layer_1",
        "decoder_layer_10",
        "decoder_layer_11",
        "decoder_layer_12",
    ]
    assert layer_order.index("decoder_layer_2") == 12  # after 0, 1, 10..19
    # within a layer: moe/linear, moe/linear_1, moe/linear_v, key, linear (Wo), query, value, norms, router
    first = [p.split("/", 2)[2] for p in paths[2:14]]
    assert first == [
        "moe/linear",
        "moe/linear_1",
        "moe/linear_v",
        "multi_head_attention/key",
        "multi_head_attention/linear",
        "multi_head_attention/query",
        "multi_head_attention/value",
        "rms_norm",
        "rms_norm_1",
        "rms_norm_2",
        "rms_norm_3",
        "router",
    ]


def test_grok1_layout_shapes_and_scale_layouts() -> None:
    specs = {s.path: s for s in leaf_specs(GROK1_SHAPE)}
    assert specs["language_model/in_out_embed"].shape == (131072, 6144)
    w1 = specs["transformer/decoder_layer_0/moe/linear"]
    assert (w1.shape, w1.scales_shape) == ((8, 6144, 32768), (8, 1, 32768))
    w2 = specs["transformer/decoder_layer_0/moe/linear_1"]
    assert (w2.shape, w2.scales_shape) == ((8, 32768, 6144), (8, 8, 6144))
    wo = specs["transformer/decoder_layer_0/multi_head_attention/linear"]
    assert (wo.shape, wo.scales_shape) == ((6144, 6144), (8, 6144))
    wk = specs["transformer/decoder_layer_0/multi_head_attention/key"]
    assert (wk.shape, wk.scales_shape) == ((6144, 1024), (1, 1024))
    assert specs["transformer/decoder_layer_0/router"].kind is Kind.FLOAT


class _OfficialUnpickler(pickle.Unpickler):
    """How the official loader reads a file (pickle.load with __main__.QuantizedWeight8bit registered),
    with numpy 1.x's module name mapped to numpy 2's."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("__main__", "QuantizedWeight8bit"):
            return QuantizedWeight8bit
        if module == "numpy.core.multiarray":
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def test_synthetic_files_are_what_the_official_loader_reads(tiny_ckpt: Path) -> None:
    ckpt = open_checkpoint(tiny_ckpt, 64)
    assert ckpt.shape.n_layers == 11
    globals_seen: set[str] = set()
    for spec in ckpt.specs:
        data = ckpt.path_of(spec).read_bytes()
        ops = list(pickletools.genops(data))
        assert ops[0][0].name == "PROTO" and ops[0][1] == 4
        strings = [arg for op, arg, _ in ops if op.name == "SHORT_BINUNICODE"]
        globals_seen |= {
            s for s in strings if s in ("numpy.core.multiarray", "__main__", "ml_dtypes", "numpy")
        }
        official = _OfficialUnpickler(__import__("io").BytesIO(data)).load()
        ours = ckpt.read(spec)
        if spec.kind is Kind.FLOAT:
            assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
            np.testing.assert_array_equal(ours, official)
        else:
            assert isinstance(official, QuantizedWeight8bit)
            assert official.weight.dtype == np.int8 and official.scales.dtype == BF16
            np.testing.assert_array_equal(ours.weight, official.weight)
            np.testing.assert_array_equal(ours.scales, official.scales)
            assert ours.scales.shape == spec.scales_shape
    assert globals_seen == {"numpy.core.multiarray", "__main__", "ml_dtypes", "numpy"}
    # large payloads are raw BINBYTES (not protocol-5 buffers)
    big = [op.name for op, _, _ in pickletools.genops(ckpt.path_of(ckpt.specs[2]).read_bytes())]
    assert "BINBYTES" in big and "BYTEARRAY8" not in big and "NEXT_BUFFER" not in big


def test_reader_is_zero_copy_over_a_memory_map(tiny_ckpt: Path) -> None:
    ckpt = open_checkpoint(tiny_ckpt, 64)
    leaf = ckpt.read(ckpt.specs[2])
    assert isinstance(leaf, QuantizedWeight8bit)
    assert not leaf.weight.flags.owndata and not leaf.weight.flags.writeable


def test_dequantize_is_the_exact_int8_times_bf16_product() -> None:
    # The official code writes weight.astype(bf16) * scales, which XLA keeps in float32: the exact
    # product (8 x 8 significant bits fit float32's 24). Expected values: float64 products, the
    # row-parallel scales repeated over 8 input blocks (not the converter's reshape).
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(2, 64, 24), dtype=np.int8)
    s_col = (rng.random((2, 1, 24)) + 0.01).astype(BF)
    s_row = (rng.random((2, 8, 24)) + 0.01).astype(BF)
    exact_col = w.astype(np.float64) * s_col.astype(np.float64)
    exact_row = w.astype(np.float64) * np.repeat(s_row.astype(np.float64), 8, axis=1)
    for s, exact in ((s_col, exact_col), (s_row, exact_row)):
        got = dequantize(QuantizedWeight8bit(w, s))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, exact)
        # and most of these products are not bf16 values: rounding them would fail the line above
        assert np.mean(exact.astype(BF).astype(np.float64) != exact) > 0.5


def test_cpython_pickles_of_numpy2_and_protocol3_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass
    class QW:  # registered as __main__.QuantizedWeight8bit, like the official loader does
        weight: np.ndarray
        scales: np.ndarray

    QW.__name__ = QW.__qualname__ = "QuantizedWeight8bit"
    QW.__module__ = "__main__"
    monkeypatch.setattr(sys.modules["__main__"], "QuantizedWeight8bit", QW, raising=False)
    w = np.arange(-64, 64, dtype=np.int8).reshape(16, 8)
    s = np.linspace(0.5, 2, 8, dtype=np.float32).astype(BF).reshape(1, 8)
    for proto in (3, 4):
        f = tmp_path / f"p{proto}"
        f.write_bytes(pickle.dumps(QW(w, s), protocol=proto))
        leaf = read_leaf(f)
        assert isinstance(leaf, QuantizedWeight8bit)
        np.testing.assert_array_equal(leaf.weight, w)
        np.testing.assert_array_equal(leaf.scales, s)
    f = tmp_path / "plain"
    f.write_bytes(pickle.dumps(np.ones((3, 5), np.float32), protocol=4))
    np.testing.assert_array_equal(read_leaf(f), np.ones((3, 5), np.float32))


def _hostile_global(module: bytes, name: bytes) -> bytes:
    return b"\x80\x04c" + module + b"\n" + name + b"\n" + b"X\x02\x00\x00\x00id\x85R."


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        (_hostile_global(b"os", b"system"), "os.system"),
        (_hostile_global(b"builtins", b"eval"), "builtins.eval"),
        (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93X\x02\x00\x00\x00id\x85R.", "os.system"),
        (b"\x80\x04\x8c\x08__main__\x8c\x05Other\x93)\x81.", "__main__.Other"),
        (b"\x80\x04\x8c\x05numpy\x8c\x04load\x93.", "numpy.load"),
    ],
)
def test_pickles_referencing_other_callables_are_refused(tmp_path: Path, payload: bytes, names: str) -> None:
    f = tmp_path / "tensor00000_000"
    f.write_bytes(payload)
    with pytest.raises(CheckpointFormatError) as err:
        read_leaf(f)
    msg = str(err.value)
    assert str(f) in msg and names in msg and "\n" not in msg


def test_truncated_and_garbage_pickles_are_clean_errors(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = (tiny_ckpt / "tensor00002_000").read_bytes()
    for n in (1, 10, 100, len(src) // 2, len(src) - 1):
        f = tmp_path / f"cut{n}"
        f.write_bytes(src[:n])
        with pytest.raises(CheckpointFormatError, match=str(f)):
            read_leaf(f)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(struct.pack("<Q", 0xDEADBEEF) * 8)
    with pytest.raises(CheckpointFormatError, match=str(garbage)):
        read_leaf(garbage)


def test_write_checkpoint_from_float_params(tmp_path: Path) -> None:
    """The train helper's entry point: float arrays keyed by module path, official shapes."""
    from edge.convert.synthetic import PRESETS

    shape = PRESETS["tiny"]
    rng = np.random.default_rng(3)
    params = {s.path: rng.standard_normal(s.shape).astype(np.float32) * 0.05 for s in leaf_specs(shape)}
    written = write_checkpoint(tmp_path, params, key_size=64)
    assert written == shape
    ckpt = open_checkpoint(tmp_path, 64)
    for spec, leaf in ckpt.leaves():
        got = dequantize(leaf)
        if spec.kind is Kind.FLOAT:
            np.testing.assert_array_equal(got, params[spec.path])
        else:
            # int8 with per-channel (per input block) scales: error <= half a step, the step being the
            # bf16 scale (within 2^-8 of amax / 127), plus float32 rounding; the products are exact
            step = np.abs(params[spec.path]).max() / 127
            assert np.abs(got - params[spec.path]).max() <= 0.51 * step
    with pytest.raises(ValueError, match="missing"):
        write_checkpoint(
            tmp_path / "bad", {k: v for k, v in params.items() if "router" not in k}, key_size=64
        )


def test_quantize_release_scale_blocks() -> None:
    x = np.ones((16, 4), np.float32)
    x[8:] *= 100.0  # the second half of the input dim is 100x larger
    col = quantize_release(x, Kind.COLUMN_PARALLEL)
    row = quantize_release(x, Kind.ROW_PARALLEL)
    assert col.scales.shape == (1, 4) and row.scales.shape == (8, 4)
    assert np.all(row.scales.astype(np.float32)[4:] > 50 * row.scales.astype(np.float32)[:4])
    np.testing.assert_allclose(dequantize(row), x, rtol=1e-2)


def test_writer_handles_all_dtypes_roundtrip(tmp_path: Path) -> None:
    for arr in (
        np.zeros((0, 3), np.float32),
        np.arange(7, dtype=np.float32),
        np.ones((2, 3, 4, 5), np.float32),
    ):
        write_leaf(tmp_path / "x", arr)
        np.testing.assert_array_equal(read_leaf(tmp_path / "x"), arr)


def test_dequantize_transposed_equals_dequantize_then_transpose() -> None:
    from edge.convert.release import dequantize_transposed

    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, size=(96, 40), dtype=np.int8)
    for blocks in (1, 8):
        s = (rng.random((blocks, 40)) + 0.1).astype(BF)
        q = QuantizedWeight8bit(w, s)
        np.testing.assert_array_equal(dequantize_transposed(q), dequantize(q).T)
        part = QuantizedWeight8bit(w[:, 3:17], s[:, 3:17])  # a column chunk, as the converter takes
        np.testing.assert_array_equal(dequantize_transposed(part), dequantize(q).T[3:17])
