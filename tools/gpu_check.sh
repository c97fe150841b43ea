#!/usr/bin/env bash
# gpu_check.sh — the CUDA backend on a real GPU, in one command (a session lent a GPU: run it from the
# repository root; total under 8 minutes on one H100):
#
#   1. builds libedge for this GPU (EDGE_CUDA=ON, CMAKE_CUDA_ARCHITECTURES=native), twice: the __dp4a build
#      and the portable twin (EDGE_CUDA_PORTABLE=ON, what chipStar runs);
#   2. the CUDA tests on each: tests/test_cuda_kernels.py (every kernel x type against the CPU's scalar
#      kernels) and tests/test_cuda_backend.py (whole-model logits against the CPU engine, hybrid runs);
#   3. compute-sanitizer memcheck, racecheck and synccheck on a small driver run (tests/support/cuda_backend_driver.py:
#      all-GPU and hybrid, prompt and decode, on bench/offload_gpu.py's --smoke file);
#   4. bench/offload_gpu.py: decode and prompt tok/s with every weight in VRAM, with the dense part + 25 % of
#      the experts, and CPU-only (plus llama.cpp --n-cpu-moe where LLAMA_BENCH names a CUDA llama-bench).
#
# Everything is written under $OUT (or ./gpu_check_out): one log per step, summary.txt, bench.json.
# Prerequisites (no internet needed): nvcc and compute-sanitizer (CUDA toolkit) on PATH or in
# /usr/local/cuda/bin, cmake (>= 3.21) and a C compiler, and a Python with the test dependencies: the
# repository's .venv (carry it to the machine; `pip install -e ".[test]"` made it) or PYTHON=/path/to/python.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
step() { # step NAME TIMEOUT CMD...: run, log to $OUT/NAME.log, record the status and time
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$(printf '%-28s rc=%-3s %4ds' "$name" "$rc" $((SECONDS - t0)))"
  return $rc
}

note "gpu_check $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,compute_cap --format=csv > "$OUT/nvidia-smi.csv" 2>&1
note "device: $(tail -n +2 "$OUT/nvidia-smi.csv" | head -1)"
command -v nvcc > /dev/null || { note "nvcc not found: install the CUDA toolkit"; exit 1; }
"$PY" -c "import numpy, cffi, gguf, pytest" 2> /dev/null || { note "$PY lacks numpy/cffi/gguf/pytest (carry .venv)"; exit 1; }
NPROC=$(nproc)

build() { # build DIR EXTRA_DEFINES...
  local dir=$1
  shift
  cmake -S . -B "$dir" -DEDGE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native -DCMAKE_BUILD_TYPE=Release "$@" &&
    cmake --build "$dir" --target edge -j "$NPROC"
}
step build-dp4a 240 build build/gpu-check-dp4a || { note "build failed: see $OUT/build-dp4a.log"; exit 1; }
step build-portable 240 build build/gpu-check-portable -DEDGE_CUDA_PORTABLE=ON || note "portable build failed"
LIB_DP4A=$(find build/gpu-check-dp4a -name libedge.so | head -1)
LIB_PORT=$(find build/gpu-check-portable -name libedge.so | head -1)
export EDGE_HEADER="$PWD/native/include/edge.h"

for flavour in dp4a portable; do
  lib=$LIB_DP4A
  [ "$flavour" = portable ] && lib=$LIB_PORT
  [ -n "$lib" ] || continue
  # test_cuda_kernels: the "installed" library is this build (EDGE_LIBRARY), its device runs the kernels
  step "kernels-$flavour" 240 env EDGE_LIBRARY="$lib" "$PY" -m pytest -q -x tests/test_cuda_kernels.py -k "installed or ptxas"
  step "backend-$flavour" 300 env EDGE_LIBRARY="$lib" EDGE_CUDA_TEST_LIBRARY="$lib" "$PY" -m pytest -q tests/test_cuda_backend.py
done

# compute-sanitizer on a small driver run (the bench's --smoke file: 2 layers, d 256, 8 experts)
SMOKE_DIR="$OUT/smoke"
mkdir -p "$SMOKE_DIR"
EDGE_LIBRARY="$LIB_DP4A" "$PY" bench/offload_gpu.py --smoke --workdir "$SMOKE_DIR" --out "$SMOKE_DIR/bench.json" \
  > "$OUT/smoke-bench.log" 2>&1
SMOKE_FILE=$(ls "$SMOKE_DIR"/*.gguf 2> /dev/null | head -1)
if [ -n "$SMOKE_FILE" ] && command -v compute-sanitizer > /dev/null; then
  cat > "$SMOKE_DIR/spec.json" << EOF
{"runs": [
 {"name": "all", "model": "$SMOKE_FILE", "device": "cuda", "kv_type": "f16", "n_batch": 4,
  "prompt": [5, 0, 9, 17, 33, 2, 8], "decode": [4, 0, 6]},
 {"name": "hybrid", "model": "$SMOKE_FILE", "device": "cuda", "kv_type": "q8_0", "n_batch": 4, "gpu_slots": 3,
  "prompt": [5, 0, 9, 17, 33, 2, 8], "decode": [4, 0, 6]},
 {"name": "stream", "model": "$SMOKE_FILE", "device": "cuda", "kv_type": "f16", "n_batch": 4, "gpu_slots": 3,
  "hybrid": "stream", "prompt": [5, 0, 9, 17, 33, 2, 8], "decode": [4, 0, 6]}
]}
EOF
  for tool in memcheck racecheck synccheck; do
    step "sanitizer-$tool" 150 env EDGE_LIBRARY="$LIB_DP4A" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      "$PY" tests/support/cuda_backend_driver.py "$SMOKE_DIR/spec.json" "$SMOKE_DIR/$tool"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer-$tool.log" | tail -2 | sed 's/^/    /' | tee -a "$SUMMARY"
  done
else
  note "compute-sanitizer or the smoke file missing: sanitizer steps skipped"
fi

# the offload bench: 8 layers of the medium Grok shape (~3.6 GB of Q8_0), 3 alternating rounds
step bench 240 env EDGE_LIBRARY="$LIB_DP4A" "$PY" bench/offload_gpu.py --layers 8 --prompt 128 --decode 32 \
  --rounds 3 --workdir "${BENCH_DIR:-/tmp/grok-edge-offload-gpu}" --out "$OUT/bench.json"
grep -E "tok/s|llama.cpp|hybrid-25:" "$OUT/bench.log" | sed 's/^/    /' | tee -a "$SUMMARY"
note "total ${SECONDS}s; logs in $OUT"
