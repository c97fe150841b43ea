"""The CUDA backend's device operations (native/src/cuda/cuda_ops.h) on chipStar, against float64 references.

No GPU is needed: tests/support/cuda_ops_driver.cu and every native/src/cuda/*.cu are compiled with
chipStar's cucc (../shared/chipstar: clang to SPIR-V, run through OpenCL on this CPU) into one shared
library, cached per source hash under build/cuda-ops-<hash>/. In it the ops keep default visibility, so
they are called directly on device memory that the driver allocates (cffi ABI mode). Skips with the reason
when chipStar is absent.

What is compared, and the tolerances (u = 2^-24, float32's unit roundoff):

- matmul: every weight type, decode (n_tok 1) and prompt (n_tok 2..9, 17), against the CPU engine's scalar
  kernels (edge.kernels.matmul, isa="scalar") with tests/test_cuda_kernels.py's bound
  4 (n_terms + 16) u Σ|w||x| (the activations are quantized the same way, only the float order differs),
  and against float64 W·x within test_kernels.py's reference_bound (the int8 activation rounding) plus that;
  the prompt form against the decode form bit for bit (each lane sums its blocks in the same order for
  every token of a tile), row strides wider than a row, y_scale.
- embed: bit for bit against the CPU's dequantizer (edge.quant.dequantize, what grok.c's embedding calls)
  times the scale in float32, and within 2u of the float64 gguf-py dequantization times the scale.
- rmsnorm / rmsnorm_add: against float64 scale·x/sqrt(mean(x²)+eps) (and x + that): the device rounds r
  to float (u), x·r (u), scale·(x·r) (u), the add (u); the double sum of squares adds ~n·2^-53. Bound:
  4u|ref| (+ 1u |x + ref| for the add).
- rope: against float64 rotation with the float32 cos/sin given: two roundings of products and one of the
  sum: 3u (|a c| + |b s|) per element.
- kv_store: bit for bit against numpy encodings written from kv_cache.c (F32 as is, F16 round to nearest
  even, Q8_0 d = amax/127 as f16, q = round half away from zero of x·(1/d)).
- attention: against float64 attention over the dequantized cache (the spec: s = q·k·mult, cap·tanh(s/cap),
  [PAD] keys masked when a key 0..pos is not [PAD], else uniform over the causal keys, softmax, Σ p v).
  Each score has float32 error e_s ≤ (hd + 2) u Σ|q_j k_j| |mult| + 4u|s| (dot product; the multiply,
  the divide and tanh (≤ 4 ulp on OpenCL), the cap product); the softmax then moves each p_t by at most
  p_t (e^{2 e_s} - 1) plus (n_keys + 4) u p_t for exp, the sum and the normalization, and the output sum
  adds (n_keys + 1) u Σ p|v|. Bound: (2 (e^{2 max e_s} - 1) + 2 (n_keys + 5) u) Σ_t p_t |v_t| (factor 2:
  the first-order terms above are bounds of each side's own error, both sides are compared).
- router: softmax within (n_expert + 4) u of float64 and top-k selection exact (exact ties by construction
  go to the lower index; random logits have gaps well above the rounding); gates are the selected
  probabilities themselves.
- gelu_mul: against float64 0.5x(1+tanh(√(2/π)(x+0.044715x³)))·u: the argument carries 5u relative error,
  tanh ≤ 4 ulp (OpenCL's bound), then three products and one sum: |Δ| ≤ |u|·(0.5|x|·((1-t²)·5u|a| + 5u|t|)
  + 4u|g|) + 2^-149.
- gather exact; scatter_add_gated bit for bit against float32 numpy (dst + gate·src, both rounded, unfused).

Shapes: uneven rows and tails (rows not a multiple of the 4-row thread block, fewer and more blocks than a
warp has lanes), n_tok 1..9, odd positions, GQA groups of 1, 2 and 4, [PAD] none / some / leading (queries
that see only [PAD]), n_ctx 8192 for the long-context scores. A deliberately broken kernel fails here (see
the commit message that adds this file).

Runtime (2 shared cores, load ~9): 58 tests in 91 s with the library rebuilt, 76 s of it chipStar compiling
matvec.cu's module for the CPU at its first launch (chipStar caches compiled modules in ~/.cache/chipStar,
so a rerun of unchanged sources takes a few seconds).
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from native_build import BUILD_ROOT, ROOT, c_compiler
from test_kernels import dequantize, random_weights, reference_bound

from edge.kernels import matmul
from edge.quant import dequantize as edge_dequantize

CHIPSTAR = Path(os.environ.get("EDGE_CHIPSTAR_ROOT", "/opt/chipstar"))
NATIVE = ROOT / "native"
U = 2.0**-24
EDGE_OK, EDGE_ERR_INVALID_ARG, EDGE_ERR_UNSUPPORTED = 0, 1, 5
CUDA_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_XS]
KV_TYPES = {"F32": 0, "F16": 1, "Q8_0": 8}

CDEF = """
void *drv_malloc(size_t n);
int drv_free(void *p);
int drv_h2d(void *dst, const void *src, size_t n);
int drv_d2h(void *dst, const void *src, size_t n);
int drv_sync(void);
const char *edge_last_error(void);
size_t edge_cu_matmul_scratch_bytes(int type, int64_t n_cols, int64_t n_tok);
int edge_cu_matmul(void *stream, int type, const void *w, size_t row_stride, int64_t n_rows,
                   int64_t n_cols, const float *x, int64_t n_tok, float *y, float y_scale, void *scratch,
                   size_t scratch_bytes);
int edge_cu_matmul_supports(int type);
int edge_cu_rmsnorm(void *stream, float *out, float *x, const float *scale, int64_t n_rows, int64_t n,
                    double eps, int add);
int edge_cu_rmsnorm_add(void *stream, float *x, const float *src, const float *scale, int64_t n_rows,
                        int64_t n, double eps);
int edge_cu_embed(void *stream, int type, const void *table, size_t row_stride, const int32_t *tokens,
                  int64_t n, int64_t n_embd, float scale, float *x);
int edge_cu_rope(void *stream, float *v, int64_t n_tok, int64_t n_heads, int64_t head_dim, const float *cos_,
                 const float *sin_);
int edge_cu_kv_store(void *stream, int kv_type, uint8_t *dst, size_t row_bytes, const float *src,
                     int64_t n_tok, int64_t row_elems);
size_t edge_cu_attention_scratch_bytes(int64_t n_tok, int64_t n_head, int64_t n_ctx);
int edge_cu_attention(void *stream, int kv_type, const uint8_t *k, const uint8_t *v, size_t row_bytes,
                      const uint8_t *is_pad, const float *q, int64_t n_tok, int64_t n_past, int64_t n_head,
                      int64_t n_head_kv, int64_t head_dim, float mult, float cap, float *out, void *scratch,
                      size_t scratch_bytes);
int edge_cu_router_topk(void *stream, float *logits, int64_t n, int64_t n_expert, int64_t k, int32_t *sel,
                        float *gate);
int edge_cu_gelu_mul(void *stream, float *h, const float *u, int64_t n);
int edge_cu_gather_rows(void *stream, float *dst, const float *src, const int32_t *rows, int64_t m,
                        int64_t d);
int edge_cu_scatter_add_gated(void *stream, float *dst, const float *src, const int32_t *rows,
                              const float *gate, int64_t m, int64_t d);
"""


def _sources() -> tuple[list[Path], list[Path]]:
    cu = sorted((NATIVE / "src" / "cuda").glob("*.cu")) + [ROOT / "tests" / "support" / "cuda_ops_driver.cu"]
    c = [NATIVE / "src" / "core" / "status.c", NATIVE / "src" / "core" / "types.c"]
    return cu, c


def build_ops_library() -> Path:
    """libcuda_ops.so: the ops and the driver compiled by cucc, cached under build/ by the sources' hash."""
    cu, c = _sources()
    digest = hashlib.sha256()
    headers = sorted((NATIVE / "src" / "cuda").glob("*.h*")) + sorted((NATIVE / "src" / "core").glob("*.h"))
    for path in [*cu, *c, *headers, NATIVE / "include" / "edge.h"]:
        digest.update(path.name.encode() + path.read_bytes())
    out = BUILD_ROOT / f"cuda-ops-{digest.hexdigest()[:16]}"
    lib = out / "libcuda_ops.so"
    if lib.exists():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    inc = [f"-I{NATIVE / 'include'}", f"-I{NATIVE / 'src' / 'core'}", f"-I{NATIVE / 'src'}"]
    cucc = str(CHIPSTAR / "bin" / "cucc")
    jobs = [
        [
            cucc,
            "-O2",
            "-std=c++17",
            "-Xcompiler",
            "-fPIC",
            *inc,
            "-c",
            str(s),
            "-o",
            str(out / (s.stem + ".o")),
        ]
        for s in cu
    ]
    jobs += [
        [
            c_compiler(),
            "-std=c11",
            "-O2",
            "-fPIC",
            "-D_GNU_SOURCE",
            *inc,
            "-c",
            str(s),
            "-o",
            str(out / (s.stem + ".c.o")),
        ]
        for s in c
    ]

    def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for done in pool.map(run, jobs):
            assert done.returncode == 0, (done.args, done.stdout[-3000:], done.stderr[-3000:])
    objs = sorted(str(p) for p in out.glob("*.o"))
    tmp = out / "libcuda_ops.so.tmp"
    link = [
        c_compiler().replace("gcc", "g++") if "gcc" in c_compiler() else "g++",
        "-shared",
        *objs,
        "-o",
        str(tmp),
    ]
    link += [f"-L{CHIPSTAR / 'lib'}", "-lCHIP", "-locml_host_math_funcs", f"-Wl,-rpath,{CHIPSTAR / 'lib'}"]
    done = run(link)
    assert done.returncode == 0, done.stdout + done.stderr
    tmp.rename(lib)
    return lib


class Dev:
    """The ops library and device memory: arrays up and down, calls checked."""

    def __init__(self, ffi: Any, lib: Any) -> None:
        self.ffi, self.lib = ffi, lib
        self.live: list[Any] = []

    def up(self, a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a)
        p = self.lib.drv_malloc(max(a.nbytes, 1))
        assert p != self.ffi.NULL, "drv_malloc failed"
        self.live.append(p)
        if a.nbytes:
            assert self.lib.drv_h2d(p, self.ffi.from_buffer(a), a.nbytes) == 0
        return p

    def zeros(self, nbytes: int) -> Any:
        return self.up(np.zeros(max(nbytes, 1), dtype=np.uint8))

    def down(self, p: Any, dtype: Any, count: int) -> np.ndarray:
        out = np.empty(count, dtype=dtype)
        assert self.lib.drv_sync() == 0, "a kernel failed"
        assert self.lib.drv_d2h(self.ffi.from_buffer(out), p, out.nbytes) == 0
        return out

    def ok(self, status: int) -> None:
        assert status == EDGE_OK, self.error()

    def error(self) -> str:
        return str(self.ffi.string(self.lib.edge_last_error()).decode())

    def free_all(self) -> None:
        for p in self.live:
            self.lib.drv_free(p)
        self.live.clear()


@pytest.fixture(scope="module")
def ops_lib() -> Any:
    if not (CHIPSTAR / "bin" / "cucc").exists():
        pytest.skip(
            f"{CHIPSTAR}/bin/cucc is absent: no chipStar (bash ../shared/chipstar/setup.sh) to run the ops"
        )
    lib_path = build_ops_library()
    os.environ.setdefault("OCL_ICD_VENDORS", str(CHIPSTAR / "icd"))
    os.environ.setdefault("CHIP_BE", "opencl")
    os.environ.setdefault("CHIP_DEVICE_TYPE", "cpu")
    os.environ.setdefault("CHIP_LOGLEVEL", "err")
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(lib_path))


@pytest.fixture
def dev(ops_lib: Any) -> Any:
    d = Dev(*ops_lib)
    yield d
    d.free_all()


def fptr(d: Dev, p: Any) -> Any:
    return d.ffi.cast("float *", p)


# ---- matmul


def run_matmul(
    d: Dev,
    qtype: T,
    raw: np.ndarray,
    stride: int,
    n_rows: int,
    n_cols: int,
    x: np.ndarray,
    y_scale: float = 1.0,
) -> np.ndarray:
    n_tok = x.shape[0]
    w = d.up(raw)
    xs = d.up(x.astype(np.float32))
    y = d.up(np.full(n_tok * n_rows, np.nan, dtype=np.float32))
    nbytes = d.lib.edge_cu_matmul_scratch_bytes(int(qtype), n_cols, n_tok)
    scratch = d.zeros(nbytes) if nbytes else d.ffi.NULL
    d.ok(
        d.lib.edge_cu_matmul(
            d.ffi.NULL,
            int(qtype),
            w,
            stride,
            n_rows,
            n_cols,
            fptr(d, xs),
            n_tok,
            fptr(d, y),
            y_scale,
            scratch,
            nbytes,
        )
    )
    return d.down(y, np.float32, n_tok * n_rows).reshape(n_tok, n_rows)


def matmul_shapes(qtype: T) -> list[tuple[int, int]]:
    if qtype in (T.F32, T.F16, T.BF16):
        return [(1, 5), (7, 97), (33, 1003)]
    blk = 32 if qtype == T.Q8_0 else 256
    return [(1, blk), (7, 3 * blk), (33, 8 * blk), (5, 37 * blk)]


@pytest.mark.parametrize("qtype", CUDA_TYPES, ids=lambda t: t.name)
def test_matmul_decode_and_prompt_match_the_scalar_kernels(dev: Dev, qtype: T) -> None:
    rng = np.random.default_rng(int(qtype) + 2190)
    assert dev.lib.edge_cu_matmul_supports(int(qtype)) == 1
    for (n_rows, n_cols), n_tok in zip(matmul_shapes(qtype), [9, 3, 17, 2], strict=False):
        raw = random_weights(qtype, n_rows, n_cols, rng)
        w = dequantize(qtype, raw, n_rows, n_cols)
        x = (rng.standard_t(3, size=(n_tok, n_cols)) * np.exp(rng.normal(0, 1))).astype(np.float32)
        if n_cols >= 512:
            x[0, 256:512] = 0.0  # an all-zero activation block (the quantizers' amax == 0 path)
        # rows further apart than a row's bytes (the stride is honoured), and the plain layout
        pad = 64 if n_rows > 1 else 0
        padded = np.zeros((n_rows, raw.shape[1] + pad), dtype=np.uint8)
        padded[:, : raw.shape[1]] = raw
        y = run_matmul(dev, qtype, padded, padded.shape[1], n_rows, n_cols, x)
        y_ref = matmul(raw, qtype, n_rows, n_cols, x, isa="scalar").astype(np.float64)
        n_terms = n_cols if qtype in (T.F32, T.F16, T.BF16) else n_cols // 16
        tol = 4 * (n_terms + 16) * U * (np.abs(x).astype(np.float64) @ np.abs(w).T)
        diff = np.abs(y - y_ref)
        # and against float64 W·x from the spec (the activation quantization's bound of test_kernels.py)
        exact = x.astype(np.float64) @ w.T
        assert np.all(np.abs(y - exact) <= reference_bound(qtype, raw, w, x) + tol), qtype.name
        assert np.all(diff <= tol), (
            f"{qtype.name} {n_rows}x{n_cols} n_tok {n_tok}: diff/tol {(diff / tol).max():.3g}"
        )
        # every token alone through the decode kernel: the same bits as in the prompt tile
        for t in range(n_tok):
            one = run_matmul(dev, qtype, raw, raw.shape[1], n_rows, n_cols, x[t : t + 1])
            np.testing.assert_array_equal(one[0], y[t], err_msg=f"{qtype.name} token {t} of {n_tok}")
        dev.free_all()


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q8_0, T.F16], ids=lambda t: t.name)
def test_matmul_every_token_count_and_y_scale(dev: Dev, qtype: T) -> None:
    rng = np.random.default_rng(7 + int(qtype))
    n_rows, n_cols = 13, (96 if qtype == T.Q8_0 else 512)
    raw = random_weights(qtype, n_rows, n_cols, rng)
    x = rng.standard_normal((9, n_cols)).astype(np.float32)
    decode = np.stack(
        [run_matmul(dev, qtype, raw, raw.shape[1], n_rows, n_cols, x[t : t + 1])[0] for t in range(9)]
    )
    for n_tok in range(2, 10):
        y = run_matmul(dev, qtype, raw, raw.shape[1], n_rows, n_cols, x[:n_tok])
        np.testing.assert_array_equal(y, decode[:n_tok], err_msg=f"n_tok {n_tok}")
    scaled = run_matmul(dev, qtype, raw, raw.shape[1], n_rows, n_cols, x[:3], y_scale=0.375)
    np.testing.assert_array_equal(scaled, (decode[:3] * np.float32(0.375)).astype(np.float32))


def test_matmul_rejects_what_it_cannot_do(dev: Dev) -> None:
    lib, ffi = dev.lib, dev.ffi
    w, x, y = dev.zeros(4096), fptr(dev, dev.zeros(4096)), fptr(dev, dev.zeros(4096))
    scratch = dev.zeros(4096)
    assert lib.edge_cu_matmul_supports(int(T.Q4_0)) == 0
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.Q4_0), w, 18, 1, 32, x, 1, y, 1.0, scratch, 4096)
        == EDGE_ERR_UNSUPPORTED
    )
    assert "edge_cu_matmul" in dev.error() and "no CUDA kernel" in dev.error()
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.Q4_K), w, 144, 1, 200, x, 1, y, 1.0, scratch, 4096)
        == EDGE_ERR_INVALID_ARG
    )
    assert "not a multiple" in dev.error()
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.Q4_K), w, 100, 1, 256, x, 1, y, 1.0, scratch, 4096)
        == EDGE_ERR_INVALID_ARG
    )
    assert "row_stride" in dev.error()
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.Q4_K), w, 144, 1, 256, x, 4, y, 1.0, scratch, 10)
        == EDGE_ERR_INVALID_ARG
    )
    assert "scratch" in dev.error()
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.F32), ffi.NULL, 16, 1, 4, x, 1, y, 1.0, ffi.NULL, 0)
        == EDGE_ERR_INVALID_ARG
    )
    assert (
        lib.edge_cu_matmul(ffi.NULL, int(T.F32), w, 16, 1, 4, x, 0, y, 1.0, ffi.NULL, 0)
        == EDGE_ERR_INVALID_ARG
    )
    assert lib.edge_cu_matmul_scratch_bytes(int(T.F32), 64, 3) == 0
    assert lib.edge_cu_matmul_scratch_bytes(int(T.Q8_0), 64, 3) == 3 * (64 + 2 * 4)
    assert lib.edge_cu_matmul_scratch_bytes(int(T.Q6_K), 512, 3) == 3 * 2 * 292


# ---- norms, embedding, rope


def rms_ref(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    r = 1.0 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    return scale.astype(np.float64) * x64 * r


@pytest.mark.parametrize("n", [1, 5, 255, 257, 2048, 6144])
def test_rmsnorm_and_its_residual_form(dev: Dev, n: int) -> None:
    rng = np.random.default_rng(n)
    n_rows, eps = 3, 1e-5
    x = (rng.standard_t(3, size=(n_rows, n)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
    scale = rng.normal(1.0, 0.5, size=n).astype(np.float32)
    ref = rms_ref(x, scale, eps)
    xs, sc, out = dev.up(x), dev.up(scale), dev.zeros(x.nbytes)
    dev.ok(
        dev.lib.edge_cu_rmsnorm(dev.ffi.NULL, fptr(dev, out), fptr(dev, xs), fptr(dev, sc), n_rows, n, eps, 0)
    )
    got = dev.down(out, np.float32, x.size).reshape(x.shape)
    assert np.all(np.abs(got - ref) <= 4 * U * np.abs(ref)), np.max(np.abs(got - ref) / np.abs(ref))
    # in place (out == x)
    dev.ok(
        dev.lib.edge_cu_rmsnorm(dev.ffi.NULL, fptr(dev, xs), fptr(dev, xs), fptr(dev, sc), n_rows, n, eps, 0)
    )
    np.testing.assert_array_equal(dev.down(xs, np.float32, x.size).reshape(x.shape), got)
    # add != 0: x += rms(x) (out ignored)
    xs = dev.up(x)
    dev.ok(
        dev.lib.edge_cu_rmsnorm(dev.ffi.NULL, dev.ffi.NULL, fptr(dev, xs), fptr(dev, sc), n_rows, n, eps, 1)
    )
    added = dev.down(xs, np.float32, x.size).reshape(x.shape)
    want = x.astype(np.float64) + ref
    assert np.all(np.abs(added - want) <= 4 * U * np.abs(ref) + U * np.abs(want))
    # x += rms(src): the residual after a sublayer
    resid = rng.standard_normal((n_rows, n)).astype(np.float32)
    rs, src = dev.up(resid), dev.up(x)
    dev.ok(
        dev.lib.edge_cu_rmsnorm_add(
            dev.ffi.NULL, fptr(dev, rs), fptr(dev, src), fptr(dev, sc), n_rows, n, eps
        )
    )
    got = dev.down(rs, np.float32, x.size).reshape(x.shape)
    want = resid.astype(np.float64) + ref
    assert np.all(np.abs(got - want) <= 4 * U * np.abs(ref) + U * np.abs(want))
    # src must be another array than x (the residual and the sublayer's output)
    assert dev.lib.edge_cu_rmsnorm_add(
        dev.ffi.NULL, fptr(dev, rs), fptr(dev, rs), fptr(dev, sc), 1, n, eps
    ) == (EDGE_ERR_INVALID_ARG)
    assert "edge_cu_rmsnorm_add" in dev.error()


@pytest.mark.parametrize("qtype", CUDA_TYPES, ids=lambda t: t.name)
def test_embed_dequantizes_rows_as_the_cpu(dev: Dev, qtype: T) -> None:
    rng = np.random.default_rng(300 + int(qtype))
    n_vocab = 11
    n_embd = 96 if qtype == T.Q8_0 else (512 if qtype not in (T.F32, T.F16, T.BF16) else 37)
    raw = random_weights(qtype, n_vocab, n_embd, rng)
    tokens = np.array([3, 0, 10, 3, 7], dtype=np.int32)
    scale = np.float32(78.38367176906169)
    table, toks, x = dev.up(raw), dev.up(tokens), dev.zeros(len(tokens) * n_embd * 4)
    dev.ok(
        dev.lib.edge_cu_embed(
            dev.ffi.NULL,
            int(qtype),
            table,
            raw.shape[1],
            dev.ffi.cast("int32_t *", toks),
            len(tokens),
            n_embd,
            float(scale),
            fptr(dev, x),
        )
    )
    got = dev.down(x, np.float32, len(tokens) * n_embd).reshape(len(tokens), n_embd)
    cpu = edge_dequantize(raw[tokens], int(qtype), (len(tokens), n_embd)) * scale
    np.testing.assert_array_equal(got, cpu.astype(np.float32))
    ref = dequantize(qtype, raw, n_vocab, n_embd)[tokens] * float(scale)
    assert np.all(np.abs(got - ref) <= 2 * U * np.abs(ref))
    assert dev.lib.edge_cu_embed(dev.ffi.NULL, int(T.Q4_0), table, 18, toks, 1, 32, 1.0, fptr(dev, x)) == (
        EDGE_ERR_UNSUPPORTED
    )
    assert "edge_cu_embed" in dev.error()


def test_rope_rotates_half(dev: Dev) -> None:
    rng = np.random.default_rng(5)
    n_tok, n_heads, hd = 5, 3, 10
    v = rng.standard_normal((n_tok, n_heads, hd)).astype(np.float32)
    pos = np.array([0, 1, 7, 8191, 33])[:, None].astype(np.float64)
    theta = pos * 10000.0 ** (-2.0 * np.arange(hd // 2) / hd)
    cos_, sin_ = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
    vs = dev.up(v)
    dev.ok(
        dev.lib.edge_cu_rope(
            dev.ffi.NULL, fptr(dev, vs), n_tok, n_heads, hd, fptr(dev, dev.up(cos_)), fptr(dev, dev.up(sin_))
        )
    )
    got = dev.down(vs, np.float32, v.size).reshape(v.shape)
    a, b = v[..., : hd // 2].astype(np.float64), v[..., hd // 2 :].astype(np.float64)
    c, s = cos_[:, None, :].astype(np.float64), sin_[:, None, :].astype(np.float64)
    want = np.concatenate([a * c - b * s, b * c + a * s], axis=-1)
    bound = 3 * U * np.concatenate([np.abs(a * c) + np.abs(b * s), np.abs(b * c) + np.abs(a * s)], axis=-1)
    assert np.all(np.abs(got - want) <= bound)
    assert dev.lib.edge_cu_rope(dev.ffi.NULL, fptr(dev, vs), 1, 1, 7, fptr(dev, vs), fptr(dev, vs)) == (
        EDGE_ERR_INVALID_ARG
    )


# ---- KV cache, attention


def f16_bits(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond f16's range: inf, as edge_f32_to_f16 gives
        return x.astype(np.float32).astype(np.float16).view(np.uint8)


def encode_kv(kv: str, rows: np.ndarray) -> np.ndarray:
    """kv_cache.c's edge_kv_cache_store of each row of float32 `rows`: [n, row_bytes] uint8."""
    rows = rows.astype(np.float32)
    if kv == "F32":
        return rows.view(np.uint8).reshape(len(rows), -1)
    if kv == "F16":
        return f16_bits(rows).reshape(len(rows), -1)
    blocks = rows.reshape(len(rows), -1, 32)
    amax = np.abs(blocks).max(axis=-1)
    d = (amax / np.float32(127.0)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    v = (blocks * inv[..., None]).astype(np.float32).astype(np.float64)
    q = (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int8)  # roundf: half away from zero
    out = np.concatenate([f16_bits(d)[..., None].reshape(*d.shape, 2), q.view(np.uint8)], axis=-1)
    return out.reshape(len(rows), -1)


def decode_kv(kv: str, enc: np.ndarray, row_elems: int) -> np.ndarray:
    if kv == "F32":
        return enc.view(np.float32).astype(np.float64).reshape(len(enc), row_elems)
    if kv == "F16":
        return enc.view(np.float16).astype(np.float64).reshape(len(enc), row_elems)
    blocks = enc.reshape(len(enc), -1, 34)
    d = blocks[..., :2].copy().view(np.float16).astype(np.float64)
    q = blocks[..., 2:].copy().view(np.int8).astype(np.float64)
    return (d * q).reshape(len(enc), row_elems)


@pytest.mark.parametrize("kv", KV_TYPES)
def test_kv_store_encodes_as_the_cpu(dev: Dev, kv: str) -> None:
    rng = np.random.default_rng(11)
    n_tok, row_elems = 5, 96
    src = (rng.standard_t(3, size=(n_tok, row_elems)) * 10.0 ** rng.uniform(-6, 3, size=(n_tok, 1))).astype(
        np.float32
    )
    src[1, :32] = 0.0  # an all-zero block
    src[2, 5] = 70000.0  # overflows f16
    src[3, 7] = 3e-8  # an f16 subnormal
    want = encode_kv(kv, src)
    row_bytes = want.shape[1] + 8  # rows further apart than their bytes
    cache = dev.up(np.full(row_bytes * (n_tok + 2), 0xAB, dtype=np.uint8))
    first = 1  # appended after row 0
    dst = dev.ffi.cast("uint8_t *", cache) + first * row_bytes
    dev.ok(
        dev.lib.edge_cu_kv_store(
            dev.ffi.NULL, KV_TYPES[kv], dst, row_bytes, fptr(dev, dev.up(src)), n_tok, row_elems
        )
    )
    got = dev.down(cache, np.uint8, row_bytes * (n_tok + 2)).reshape(n_tok + 2, row_bytes)
    np.testing.assert_array_equal(got[first : first + n_tok, : want.shape[1]], want)
    assert np.all(got[0] == 0xAB) and np.all(got[first + n_tok :] == 0xAB)
    assert np.all(got[first : first + n_tok, want.shape[1] :] == 0xAB)
    assert (
        dev.lib.edge_cu_kv_store(dev.ffi.NULL, 2, dst, row_bytes, fptr(dev, cache), 1, 32)
        == EDGE_ERR_UNSUPPORTED
    )
    assert "edge_cu_kv_store" in dev.error()


def attention_ref(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    is_pad: np.ndarray,
    n_past: int,
    n_head_kv: int,
    mult: float,
    cap: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 attention from the spec; returns (out, Σ_t p_t |v_t| per output element)."""
    n_tok, n_head, hd = q.shape
    group = n_head // n_head_kv
    out = np.zeros((n_tok, n_head, hd))
    mass = np.zeros((n_tok, n_head, hd))
    emax = np.zeros((n_tok, n_head))
    for i in range(n_tok):
        pos = n_past + i
        mask = not bool(np.all(is_pad[: pos + 1]))
        for h in range(n_head):
            g = h // group
            kk = k[: pos + 1, g * hd : (g + 1) * hd]
            vv = v[: pos + 1, g * hd : (g + 1) * hd]
            dots = kk @ q[i, h].astype(np.float64)
            s = dots * mult
            if cap > 0:
                s = cap * np.tanh(s / cap)
            keep = ~(is_pad[: pos + 1].astype(bool)) if mask else np.ones(pos + 1, dtype=bool)
            s = np.where(keep, s, -np.inf)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[i, h] = p @ vv
            mass[i, h] = p @ np.abs(vv)
            e_s = (hd + 2) * U * (np.abs(kk) @ np.abs(q[i, h].astype(np.float64))) * abs(
                mult
            ) + 4 * U * np.abs(s)
            emax[i, h] = np.max(np.where(keep, e_s, 0.0))
    tol = (2 * np.expm1(2 * emax)[..., None] + 2 * (n_past + n_tok + 5) * U) * mass
    return out, tol


def run_attention(
    dev: Dev,
    kv: str,
    q: np.ndarray,
    keys: np.ndarray,
    vals: np.ndarray,
    is_pad: np.ndarray,
    n_past: int,
    n_head_kv: int,
    mult: float,
    cap: float,
) -> np.ndarray:
    n_tok, n_head, hd = q.shape
    n_keys = n_past + n_tok
    kenc, venc = encode_kv(kv, keys[:n_keys]), encode_kv(kv, vals[:n_keys])
    row_bytes = kenc.shape[1]
    kd, vd = dev.up(kenc), dev.up(venc)
    nbytes = dev.lib.edge_cu_attention_scratch_bytes(n_tok, n_head, n_keys)
    scratch = dev.zeros(nbytes)
    out = dev.up(np.full(q.size, np.nan, dtype=np.float32))
    u8 = "uint8_t *"
    dev.ok(
        dev.lib.edge_cu_attention(
            dev.ffi.NULL,
            KV_TYPES[kv],
            dev.ffi.cast(u8, kd),
            dev.ffi.cast(u8, vd),
            row_bytes,
            dev.ffi.cast(u8, dev.up(is_pad.astype(np.uint8))),
            fptr(dev, dev.up(q)),
            n_tok,
            n_past,
            n_head,
            n_head_kv,
            hd,
            mult,
            cap,
            fptr(dev, out),
            scratch,
            nbytes,
        )
    )
    return dev.down(out, np.float32, q.size).reshape(q.shape)


PAD_CASES = ["none", "some", "leading"]


@pytest.mark.parametrize("kv", KV_TYPES)
@pytest.mark.parametrize("n_tok", [1, 7])
@pytest.mark.parametrize("pads", PAD_CASES)
def test_attention_against_float64(dev: Dev, kv: str, n_tok: int, pads: str) -> None:
    rng = np.random.default_rng(hash((kv, n_tok, pads)) % 2**32)
    n_past = 13 if n_tok == 1 else 4
    n_keys = n_past + n_tok
    for n_head, n_head_kv in [(4, 4), (4, 2), (8, 2)]:
        hd = 64
        q = rng.standard_normal((n_tok, n_head, hd)).astype(np.float32)
        keys = rng.standard_normal((n_keys, n_head_kv * hd)).astype(np.float32)
        vals = rng.standard_normal((n_keys, n_head_kv * hd)).astype(np.float32)
        is_pad = np.zeros(n_keys, dtype=np.uint8)
        if pads == "some":
            is_pad[[1, 2, n_keys - 2]] = 1
        elif pads == "leading":  # the first queries see only [PAD] keys: uniform over their causal keys
            is_pad[: n_past + 2] = 1
        mult, cap = 0.08838834764831845, 30.0
        got = run_attention(dev, kv, q, keys, vals, is_pad, n_past, n_head_kv, mult, cap)
        kq = decode_kv(kv, encode_kv(kv, keys), n_head_kv * hd)
        vq = decode_kv(kv, encode_kv(kv, vals), n_head_kv * hd)
        want, tol = attention_ref(q, kq, vq, is_pad, n_past, n_head_kv, mult, cap)
        diff = np.abs(got - want)
        assert np.all(diff <= tol), f"{n_head}/{n_head_kv} heads: diff/tol {(diff / tol).max():.3g}"
        dev.free_all()


def test_attention_cap_off_and_large_scores(dev: Dev) -> None:
    rng = np.random.default_rng(3)
    n_tok, n_head, hd, n_past = 3, 2, 32, 5
    q = (rng.standard_normal((n_tok, n_head, hd)) * 4).astype(np.float32)
    keys = (rng.standard_normal((n_past + n_tok, hd)) * 4).astype(np.float32)
    vals = rng.standard_normal((n_past + n_tok, hd)).astype(np.float32)
    is_pad = np.zeros(n_past + n_tok, dtype=np.uint8)
    for cap in (0.0, 30.0):
        got = run_attention(dev, "F32", q, keys, vals, is_pad, n_past, 1, 1.0, cap)
        want, tol = attention_ref(
            q, keys.astype(np.float64), vals.astype(np.float64), is_pad, n_past, 1, 1.0, cap
        )
        assert np.all(np.abs(got - want) <= tol), cap


def test_attention_long_context(dev: Dev) -> None:
    """n_ctx 8192: a decode query at position 8191 and a prompt of 3 ending there."""
    rng = np.random.default_rng(8192)
    n_head, n_head_kv, hd, n_keys = 2, 1, 64, 8192
    keys = rng.standard_normal((n_keys, hd)).astype(np.float32)
    vals = rng.standard_normal((n_keys, hd)).astype(np.float32)
    is_pad = np.zeros(n_keys, dtype=np.uint8)
    is_pad[100:200] = 1
    for n_tok in (1, 3):
        q = (rng.standard_normal((n_tok, n_head, hd)) * 2).astype(np.float32)
        got = run_attention(dev, "F16", q, keys, vals, is_pad, n_keys - n_tok, n_head_kv, 0.125, 30.0)
        kq, vq = decode_kv("F16", encode_kv("F16", keys), hd), decode_kv("F16", encode_kv("F16", vals), hd)
        want, tol = attention_ref(q, kq, vq, is_pad, n_keys - n_tok, n_head_kv, 0.125, 30.0)
        assert np.all(np.abs(got - want) <= tol), n_tok
        dev.free_all()


def test_attention_rejects_bad_arguments(dev: Dev) -> None:
    lib, ffi = dev.lib, dev.ffi
    buf = ffi.cast("uint8_t *", dev.zeros(1 << 16))
    f = ffi.cast("float *", buf)
    call = lib.edge_cu_attention
    assert (
        call(ffi.NULL, 2, buf, buf, 128, buf, f, 1, 0, 2, 1, 64, 1.0, 0.0, f, buf, 1 << 16)
        == EDGE_ERR_UNSUPPORTED
    )
    assert (
        call(ffi.NULL, 1, buf, buf, 128, buf, f, 1, 0, 3, 2, 64, 1.0, 0.0, f, buf, 1 << 16)
        == EDGE_ERR_INVALID_ARG
    )
    assert (
        call(ffi.NULL, 1, buf, buf, 100, buf, f, 1, 0, 2, 1, 64, 1.0, 0.0, f, buf, 1 << 16)
        == EDGE_ERR_INVALID_ARG
    )
    assert "row_bytes" in dev.error()
    assert (
        call(ffi.NULL, 1, buf, buf, 128, buf, f, 4, 100, 2, 1, 64, 1.0, 0.0, f, buf, 16)
        == EDGE_ERR_INVALID_ARG
    )
    assert "scratch" in dev.error() and "edge_cu_attention" in dev.error()
    assert (
        call(ffi.NULL, 8, buf, buf, 34, buf, f, 1, 0, 1, 1, 48, 1.0, 0.0, f, buf, 1 << 16)
        == EDGE_ERR_INVALID_ARG
    )
    assert lib.edge_cu_attention_scratch_bytes(3, 48, 8192) == 3 * 48 * 8192 * 4


# ---- MoE


def test_router_softmax_and_top_k(dev: Dev) -> None:
    rng = np.random.default_rng(21)
    n, n_expert, k = 9, 8, 2
    logits = (rng.standard_normal((n, n_expert)) * 3).astype(np.float32)
    logits[1] = 0.5  # all tied: experts 0 and 1
    logits[2, [3, 6]] = 9.0  # a tie for first place: 3, then 6
    logits[3] = -1.0
    logits[3, [2, 5]] = 4.0
    logits[3, 7] = 5.0  # 7 first, then the tie 2 / 5 goes to 2
    lg = dev.up(logits)
    sel, gate = dev.zeros(n * k * 4), dev.zeros(n * k * 4)
    dev.ok(
        dev.lib.edge_cu_router_topk(
            dev.ffi.NULL, fptr(dev, lg), n, n_expert, k, dev.ffi.cast("int32_t *", sel), fptr(dev, gate)
        )
    )
    p = dev.down(lg, np.float32, n * n_expert).reshape(n, n_expert)
    s = dev.down(sel, np.int32, n * k).reshape(n, k)
    g = dev.down(gate, np.float32, n * k).reshape(n, k)
    l64 = logits.astype(np.float64)
    ref = np.exp(l64 - l64.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    assert np.all(np.abs(p - ref) <= (n_expert + 4) * U * ref)
    want = np.argsort(-ref, axis=1, kind="stable")[:, :k]  # stable: ties to the lower index
    np.testing.assert_array_equal(s, want)
    assert s[1].tolist() == [0, 1] and s[2].tolist() == [3, 6] and s[3].tolist() == [7, 2]
    np.testing.assert_array_equal(g, np.take_along_axis(p, s.astype(np.int64), axis=1))  # not renormalized
    assert (
        dev.lib.edge_cu_router_topk(
            dev.ffi.NULL, fptr(dev, lg), n, n_expert, 9, dev.ffi.cast("int32_t *", sel), fptr(dev, gate)
        )
        == EDGE_ERR_INVALID_ARG
    )
    assert "edge_cu_router_topk" in dev.error()


def test_gelu_mul(dev: Dev) -> None:
    rng = np.random.default_rng(4)
    n = 1001
    h = np.concatenate([rng.standard_normal(n - 7) * 3, [0.0, -0.0, 1e-30, -12.0, 12.0, 40.0, -40.0]]).astype(
        np.float32
    )
    u = rng.standard_normal(n).astype(np.float32)
    hs = dev.up(h)
    dev.ok(dev.lib.edge_cu_gelu_mul(dev.ffi.NULL, fptr(dev, hs), fptr(dev, dev.up(u)), n))
    got = dev.down(hs, np.float32, n)
    x, u64 = h.astype(np.float64), u.astype(np.float64)
    a = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    t = np.tanh(a)
    g = 0.5 * x * (1 + t)
    want = g * u64
    bound = np.abs(u64) * (
        0.5 * np.abs(x) * ((1 - t * t) * 5 * U * np.abs(a) + 5 * U * np.abs(t)) + 4 * U * np.abs(g)
    )
    assert np.all(np.abs(got - want) <= bound + 2.0**-149)


def test_gather_and_gated_scatter_add(dev: Dev) -> None:
    rng = np.random.default_rng(8)
    n, d, m = 6, 37, 4
    src = rng.standard_normal((n, d)).astype(np.float32)
    rows = np.array([4, 0, 5, 2], dtype=np.int32)
    ss, rs, dst = dev.up(src), dev.up(rows), dev.zeros(m * d * 4)
    i32 = dev.ffi.cast("int32_t *", rs)
    dev.ok(dev.lib.edge_cu_gather_rows(dev.ffi.NULL, fptr(dev, dst), fptr(dev, ss), i32, m, d))
    gathered = dev.down(dst, np.float32, m * d).reshape(m, d)
    np.testing.assert_array_equal(gathered, src[rows])
    acc = rng.standard_normal((n, d)).astype(np.float32)
    gate = rng.uniform(0, 1, m).astype(np.float32)
    ad = dev.up(acc)
    y = rng.standard_normal((m, d)).astype(np.float32)
    gd = dev.up(gate)
    dev.ok(
        dev.lib.edge_cu_scatter_add_gated(
            dev.ffi.NULL, fptr(dev, ad), fptr(dev, dev.up(y)), i32, fptr(dev, gd), m, d
        )
    )
    # a second call adding to the same rows: the adds of a token happen in call order
    y2 = rng.standard_normal((m, d)).astype(np.float32)
    dev.ok(
        dev.lib.edge_cu_scatter_add_gated(
            dev.ffi.NULL, fptr(dev, ad), fptr(dev, dev.up(y2)), i32, fptr(dev, gd), m, d
        )
    )
    want = acc.copy()
    for y_ in (y, y2):
        for r in range(m):
            want[rows[r]] = want[rows[r]] + gate[r] * y_[r]  # float32, rounded after each op
    np.testing.assert_array_equal(dev.down(ad, np.float32, n * d).reshape(n, d), want)
    assert (
        dev.lib.edge_cu_gather_rows(dev.ffi.NULL, dev.ffi.NULL, fptr(dev, ss), i32, m, d)
        == EDGE_ERR_INVALID_ARG
    )
    assert "edge_cu_gather_rows" in dev.error()
    assert dev.lib.edge_cu_scatter_add_gated(
        dev.ffi.NULL, fptr(dev, ad), fptr(dev, ss), i32, dev.ffi.NULL, m, d
    ) == (EDGE_ERR_INVALID_ARG)
