"""The native quantizers (edge.quant) against gguf-py and llama.cpp.

Witnesses: gguf-py's numpy dequantizers decode our bytes (independent code for every layout),
gguf-py's numpy quantizers (the types that have one) and llama.cpp's own quantizer
(llama_model_quantize through llama-cpp-python) on the same tensors.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import gguf
import numpy as np
import pytest
from edge.convert.recipe import LLAMA_PURE_FTYPES
from ggml_witness import ggml_base_library

from edge import quant
from edge._native import EdgeArgumentError, EdgeError, EdgeUnsupportedError, ffi, lib

QTYPES = quant.QUANT_TYPES
# Types whose quantizer ggml defines exactly (round to nearest) and gguf-py reimplements in numpy.
GGUF_NUMPY_EXACT = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
# Types for which llama.cpp uses an imatrix (quantize_*_impl paths).
IMATRIX_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
# llama_model_quantize's ftype for each target (with params.pure every 2-D tensor gets that type).
LLAMA_FTYPE = LLAMA_PURE_FTYPES


def hard_rows(n_cols: int = 512, seed: int = 0) -> np.ndarray:
    """Heavy-tailed rows with the cases that break quantizers: zeros, constants, huge and tiny
    magnitudes, a lone outlier, all-negative and all-positive rows."""
    rng = np.random.default_rng(seed)
    rows = [rng.standard_t(3, size=n_cols) * s for s in (0.02, 0.5, 1.0, 3e-3)]
    rows.append(np.zeros(n_cols))
    rows.append(np.full(n_cols, 0.25))
    rows.append(np.full(n_cols, -1.5))
    rows.append(rng.standard_t(4, size=n_cols) * 2e3)  # huge, still inside fp16's range after scaling
    rows.append(rng.standard_t(4, size=n_cols) * 1e-6)  # tiny: fp16 scales go subnormal
    rows.append(rng.standard_t(4, size=n_cols) * 1e-9)  # below fp16: scales round to zero
    outlier = rng.normal(size=n_cols) * 0.01
    outlier[7] = 5.0
    rows.append(outlier)
    rows.append(np.abs(rng.normal(size=n_cols)) + 1.0)
    rows.append(-np.abs(rng.normal(size=n_cols)) - 0.5)
    sparse = rng.normal(size=n_cols) * (rng.random(n_cols) < 0.1)
    rows.append(sparse)
    # per-channel scale variation, as in real weight matrices
    rows.extend(rng.standard_t(5, size=(6, n_cols)) * rng.uniform(0.001, 0.1, size=(6, 1)))
    return np.asarray(rows, dtype=np.float32)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return hard_rows()


# ------------------------------------------------------------------------------------ byte layout


@pytest.mark.parametrize("qtype", QTYPES)
def test_gguf_py_decodes_our_bytes_exactly(data: np.ndarray, qtype: str) -> None:
    """gguf-py's numpy dequantizer and ours agree bit for bit on our bytes: both compute in float32
    with ggml's operation order (fp16 scale * sub-scale, times level, minus min), so no tolerance
    (the quantizer sources disable FMA contraction, so this holds on FMA ISAs too)."""
    q = quant.quantize(data, qtype)
    assert q.dtype == np.uint8 and q.shape == (data.shape[0], quant.row_bytes(qtype, data.shape[1]))
    ours = quant.dequantize(q, qtype, data.shape)
    theirs = gguf.quants.dequantize(q, gguf.GGMLQuantizationType[qtype]).reshape(data.shape)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    # and the decoded tensor is a quantization of the input: zero rows stay zero, error bounded
    assert np.all(ours[4] == 0)
    assert np.all(np.isfinite(ours))


@pytest.mark.parametrize("qtype", GGUF_NUMPY_EXACT)
def test_bytes_identical_to_gguf_py_quantizer(data: np.ndarray, qtype: str) -> None:
    ours = quant.quantize(data, qtype)
    theirs = gguf.quants.quantize(data, gguf.GGMLQuantizationType[qtype])
    np.testing.assert_array_equal(ours, theirs.view(np.uint8).reshape(ours.shape))


def test_float_targets_are_plain_conversions(data: np.ndarray) -> None:
    np.testing.assert_array_equal(quant.quantize(data, "F32").view(np.float32), data)
    np.testing.assert_array_equal(quant.quantize(data, "F16").view(np.float16), data.astype(np.float16))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    np.testing.assert_array_equal(
        quant.quantize(data, "BF16").view(np.uint16), data.astype(ml_dtypes.bfloat16).view(np.uint16)
    )


# ------------------------------------------------------------------------------------ llama.cpp


def _llama_quantize(tensors: dict[str, np.ndarray], qtype: str, tmp: Path) -> dict[str, np.ndarray]:
    """Quantize `tensors` with llama.cpp (pure: every 2-D tensor to qtype), return the raw bytes of the
    tensors that came out as qtype, keyed by name."""
    llama_cpp = pytest.importorskip("llama_cpp")
    src = tmp / "f32.gguf"
    if not src.exists():
        w = gguf.GGUFWriter(str(src), "llama")
        w.add_context_length(256)
        w.add_embedding_length(256)
        w.add_block_count(1)
        w.add_feed_forward_length(1024)
        w.add_head_count(2)
        w.add_head_count_kv(2)
        w.add_layer_norm_rms_eps(1e-5)
        for name, t in tensors.items():
            w.add_tensor(name, t)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    dst = tmp / f"{qtype}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE[qtype]
    params.pure = True
    params.nthread = 1
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0
    out = {}
    for t in gguf.GGUFReader(str(dst)).tensors:
        if t.tensor_type.name == qtype:
            out[t.name] = np.array(t.data).view(np.uint8).reshape(tensors[t.name].shape[0], -1)
    return out


@pytest.fixture(scope="module")
def llama_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    down = rng.standard_t(3, size=(128, 1024)) * rng.uniform(0.002, 0.05, size=(128, 1))
    up = rng.standard_t(5, size=(256, 256)) * rng.uniform(0.002, 0.05, size=(1, 256))
    down[5] = 0.0
    down[6, 100] = 3.0  # an outlier channel
    return {"blk.0.ffn_down.weight": down.astype(np.float32), "blk.0.ffn_up.weight": up.astype(np.float32)}


@pytest.mark.parametrize("qtype", QTYPES)
def test_quality_at_least_llama_cpp(
    llama_tensors: dict[str, np.ndarray], qtype: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Same tensors through llama.cpp's quantizer and ours: our RMSE <= llama.cpp's * 1.001.
    The margin is float noise only: both run the same searches in float32, but summation order or
    fused multiply-adds in llama.cpp's build may flip a near-tie between two candidate scales."""
    tmp = tmp_path_factory.getbasetemp() / "llama_quant"
    tmp.mkdir(exist_ok=True)
    theirs_bytes = _llama_quantize(llama_tensors, qtype, tmp)
    assert theirs_bytes, f"llama.cpp kept no tensor as {qtype}"
    gtype = gguf.GGMLQuantizationType[qtype]
    for name, qb in theirs_bytes.items():
        x = llama_tensors[name]
        ours_bytes = quant.quantize(x, qtype, n_threads=2)
        assert ours_bytes.shape == qb.shape
        theirs = gguf.quants.dequantize(qb, gtype).reshape(x.shape)
        ours = quant.dequantize(ours_bytes, qtype, x.shape)
        e_ours, e_theirs = rmse(ours, x), rmse(theirs, x)
        assert e_ours <= e_theirs * 1.001 + 1e-12, (name, e_ours, e_theirs)
        if not qtype.startswith("IQ4"):
            # Same algorithm, same float32 arithmetic: the bytes themselves agree (allow a few rows of
            # near-ties for a differently compiled llama.cpp). IQ4_* pick their final indices against
            # the stored fp16 scale where ggml uses the unrounded one, so their bytes may differ.
            same_rows = np.mean(np.all(ours_bytes == qb, axis=1))
            assert same_rows >= 0.95, (name, same_rows)


def _ggml_quantize_chunk(qtype: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """llama.cpp's own ggml_quantize_chunk (libggml-base, shipped with llama-cpp-python), which takes an
    imatrix directly (llama_model_quantize only takes one through a C++ map)."""
    ggml = ggml_base_library()
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    ggml.ggml_quantize_chunk.argtypes += [ctypes.c_int64] * 3 + [ctypes.c_void_p]
    ggml.ggml_quantize_init.argtypes = [ctypes.c_int]
    tid = quant.type_id(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros((x.shape[0], quant.row_bytes(qtype, x.shape[1])), dtype=np.uint8)
    ggml.ggml_quantize_init(tid)
    im_ptr = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32).ctypes.data
    n = ggml.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, x.shape[0], x.shape[1], im_ptr)
    assert n == out.nbytes
    return out


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_same_bytes_as_ggml_quantize_chunk(data: np.ndarray, qtype: str, with_imatrix: bool) -> None:
    """Against ggml's quantizer directly, imatrix included, on the hard rows. Same algorithms, so the
    same bytes (K-quants, legacy, floats); IQ4_* may differ only where our final indices (fitted to the
    stored scale) lower the error: their (imatrix-)weighted RMSE must be <= ggml's * 1.0001."""
    rng = np.random.default_rng(2)
    im = np.exp(rng.normal(scale=1.5, size=data.shape[1])).astype(np.float32) if with_imatrix else None
    ours = quant.quantize(data, qtype, imatrix=im)
    theirs = _ggml_quantize_chunk(qtype, data, im)
    if not qtype.startswith("IQ4"):
        np.testing.assert_array_equal(ours, theirs)
        return
    w = im if im is not None else 1.0
    for r in range(data.shape[0]):  # row by row: the rows' magnitudes differ by 1e12
        x = data[r : r + 1].astype(np.float64)
        e_ours = np.sqrt(np.mean(w * (quant.dequantize(ours[r], qtype, x.shape) - x) ** 2))
        e_theirs = np.sqrt(np.mean(w * (quant.dequantize(theirs[r], qtype, x.shape) - x) ** 2))
        assert e_ours <= e_theirs * 1.0001, (r, e_ours, e_theirs)


# ------------------------------------------------------------------------------------ imatrix


@pytest.mark.parametrize("qtype", IMATRIX_TYPES)
def test_imatrix_lowers_the_weighted_error(qtype: str) -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_t(4, size=(32, 512)) * 0.02).astype(np.float32)
    imatrix = np.exp(rng.normal(scale=2.0, size=512)).astype(np.float32)  # importance spread over ~e^8

    def weighted(q: np.ndarray) -> float:
        d = quant.dequantize(q, qtype, x.shape) - x
        return float(np.sqrt(np.mean(imatrix * d.astype(np.float64) ** 2)))

    with_im = quant.quantize(x, qtype, imatrix=imatrix)
    without = quant.quantize(x, qtype)
    assert weighted(with_im) < 0.97 * weighted(without)
    # still a valid encoding, decoded identically by gguf-py
    theirs = gguf.quants.dequantize(with_im, gguf.GGMLQuantizationType[qtype]).reshape(x.shape)
    np.testing.assert_array_equal(quant.dequantize(with_im, qtype, x.shape), theirs)


@pytest.mark.parametrize(
    ("qtype", "n_blocks"), [("Q4_0", 5), ("Q5_0", 5), ("Q4_1", 9), ("Q5_1", 9), ("IQ4_NL", 5)]
)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_batched_search_equals_the_one_block_search(qtype: str, n_blocks: int, with_imatrix: bool) -> None:
    """These types search 4 or 8 blocks at once in vector lanes and the leftover blocks one at a time.
    The last block of the row repeats the first (same data, same imatrix, same row statistics), so the
    batched and the single-block search must give it identical bytes."""
    rng = np.random.default_rng(11)
    x = (rng.standard_t(3, size=(6, 32 * n_blocks)) * 0.05).astype(np.float32)
    x[:, -32:] = x[:, :32]
    im = None
    if with_imatrix:
        im = np.exp(rng.normal(size=32 * n_blocks)).astype(np.float32)
        im[-32:] = im[:32]
    q = quant.quantize(x, qtype, imatrix=im)
    block_bytes = q.shape[1] // n_blocks
    np.testing.assert_array_equal(q[:, :block_bytes], q[:, -block_bytes:])


# ------------------------------------------------------------------------------------ threads


@pytest.mark.parametrize("qtype", QTYPES)
def test_thread_count_does_not_change_bytes(data: np.ndarray, qtype: str) -> None:
    one = quant.quantize(data, qtype, n_threads=1)
    np.testing.assert_array_equal(one, quant.quantize(data, qtype, n_threads=2))
    np.testing.assert_array_equal(one, quant.quantize(data, qtype, n_threads=7))
    np.testing.assert_array_equal(one, quant.quantize(data, qtype, n_threads=0))
    if qtype in IMATRIX_TYPES:
        im = np.linspace(0.1, 3.0, data.shape[1], dtype=np.float32)
        np.testing.assert_array_equal(
            quant.quantize(data, qtype, im, n_threads=1), quant.quantize(data, qtype, im, n_threads=2)
        )


def test_shapes_and_out_buffer() -> None:
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    np.testing.assert_array_equal(quant.quantize(x, "Q4_K"), quant.quantize(x[None, :], "Q4_K"))
    experts = np.random.default_rng(5).normal(size=(3, 4, 256)).astype(np.float32)
    flat = quant.quantize(experts.reshape(12, 256), "Q6_K")
    np.testing.assert_array_equal(quant.quantize(experts, "Q6_K"), flat)
    out = np.zeros(flat.nbytes, dtype=np.uint8)
    quant.quantize(experts, "Q6_K", out=out)
    np.testing.assert_array_equal(out, flat.reshape(-1))
    with pytest.raises(EdgeArgumentError, match="out must be"):
        quant.quantize(experts, "Q6_K", out=np.zeros(flat.nbytes - 1, dtype=np.uint8))
    np.testing.assert_array_equal(
        quant.dequantize(flat, "Q6_K", experts.shape),
        quant.dequantize(out, "Q6_K", (12, 256)).reshape(3, 4, 256),
    )


# ------------------------------------------------------------------------------------ names


def test_type_names_and_sizes() -> None:
    assert len(QTYPES) == 15
    for name in QTYPES:
        tid = quant.type_id(name)
        assert quant.type_name(tid) == name
        assert quant.type_id(tid) == tid
        assert quant.type_id(name.lower()) == tid
        block, nbytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name]]
        assert int(gguf.GGMLQuantizationType[name]) == tid
        assert quant.row_bytes(name, 4 * 256) == 4 * 256 // block * nbytes


# ------------------------------------------------------------------------------------ errors


def test_unknown_type_is_an_error() -> None:
    x = np.zeros((1, 256), dtype=np.float32)
    with pytest.raises(EdgeError, match="unknown tensor type name"):
        quant.quantize(x, "Q9_9")
    with pytest.raises(EdgeUnsupportedError, match="unknown tensor type 99"):
        quant.quantize(x, 99)
    with pytest.raises(EdgeUnsupportedError, match="Q8_K.*not a quantization target"):
        quant.quantize(x, "Q8_K")


def test_row_length_must_fit_the_block() -> None:
    with pytest.raises(EdgeArgumentError, match="not a multiple of Q4_K's block size 256"):
        quant.quantize(np.zeros((2, 100), dtype=np.float32), "Q4_K")
    with pytest.raises(EdgeArgumentError, match="not a multiple of Q8_0's block size 32"):
        quant.dequantize(np.zeros(34, dtype=np.uint8), "Q8_0", (33,))
    with pytest.raises(EdgeArgumentError, match="bytes given"):
        quant.dequantize(np.zeros(30, dtype=np.uint8), "Q8_0", (32,))


def test_small_destination_is_an_error() -> None:
    x = np.ones((4, 256), dtype=np.float32)
    dst = np.zeros(4 * 144 - 1, dtype=np.uint8)
    status = lib.edge_quantize(
        quant.type_id("Q4_K"),
        ffi.from_buffer("float[]", x),
        4,
        256,
        ffi.from_buffer("uint8_t[]", dst),
        dst.nbytes,
        ffi.NULL,
        1,
    )
    assert status == lib.EDGE_ERR_INVALID_ARG
    assert "destination holds 575 bytes" in ffi.string(lib.edge_last_error()).decode()
    assert not dst.any()  # nothing written


def test_non_finite_input_and_bad_imatrix_are_errors() -> None:
    x = np.ones((3, 256), dtype=np.float32)
    x[2, 17] = np.nan
    with pytest.raises(EdgeArgumentError, match="row 2 holds inf or NaN"):
        quant.quantize(x, "Q4_K", n_threads=2)
    x[2, 17] = -np.inf
    with pytest.raises(EdgeArgumentError, match="row 2 holds inf or NaN, which IQ4_XS cannot represent"):
        quant.quantize(x, "IQ4_XS")
    x[2, 17] = np.nan
    assert np.isnan(quant.dequantize(quant.quantize(x, "F16"), "F16", x.shape)[2, 17])  # floats convert
    with pytest.raises(EdgeArgumentError, match="imatrix has 10 weights"):
        quant.quantize(x[:2], "Q4_K", imatrix=np.ones(10, dtype=np.float32))
    with pytest.raises(EdgeArgumentError, match=r"imatrix\[3\]"):
        quant.quantize(x[:2], "Q4_K", imatrix=np.where(np.arange(256) == 3, -1.0, 1.0).astype(np.float32))
