#!/usr/bin/env bash
# One-shot GPU check of the CUDA engine, meant for a GPU machine with no network:
# python3 with torch (CUDA), numpy, pybind11, cmake, ninja, pytest and nvcc.
# Run from the repository root (the package need not be installed):
#     OUT=/some/dir bash scripts/gpu_check.sh
# Steps (each runs even if an earlier one failed; the whole script stays under
# ~6 minutes through a global deadline):
#   1. nvidia-smi, tool versions
#   2. standalone harness (cpp/cuda/standalone_test.cu, nvcc) vs a naive CPU reference
#      (--quick first; the full run with C++-side timings last, if time is left)
#   3. the extension with CUDA via CMake -> src/msrnet_napari/_core*.so
#   4. pytest tests/test_cuda.py (+ tests/test_engine.py when present)
#   5. benchmarks/bench_cuda.py (markdown table; JSON next to the log)
# Everything is teed to $OUT/gpu_check.log; a summary of step exit codes ends it.
set +e
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
WORK="${TMPDIR:-/tmp}/msrnet_gpu_check"
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
BUDGET="${GPU_CHECK_BUDGET:-340}"   # seconds for the whole script
START=$(date +%s)
SUMMARY=()

log() { echo "$@" | tee -a "$LOG"; }

# step NAME MAX_SECONDS command... : runs with timeout min(MAX, time left), logs rc
step() {
    local name="$1" max="$2"
    shift 2
    local now left t rc
    now=$(date +%s)
    left=$(( START + BUDGET - now ))
    t=$max
    (( left < t )) && t=$left
    if (( t < 5 )); then
        log "=== [$name] SKIPPED: out of time budget"
        SUMMARY+=("$name: skipped (time)")
        return 99
    fi
    log ""
    log "=== [$name] (timeout ${t}s, t+$(( now - START ))s) \$ $*"
    timeout --kill-after=5 "$t" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    log "=== [$name] rc=$rc ($(( $(date +%s) - now ))s)"
    SUMMARY+=("$name: rc=$rc")
    return "$rc"
}

# ---- 1. environment --------------------------------------------------------
step nvidia-smi 20 nvidia-smi
NVCC="$(command -v nvcc || true)"
for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-13.0/bin/nvcc /usr/local/bin/nvcc; do
    [[ -z "$NVCC" && -x "$c" ]] && NVCC="$c"
done
if [[ -n "$NVCC" ]]; then
    export CUDACXX="$NVCC"
    export PATH="$(dirname "$NVCC"):$PATH"
fi
ARCH="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
[[ "$ARCH" =~ ^[0-9]+$ ]] || ARCH=90
log "nvcc: ${NVCC:-NOT FOUND}   arch: sm_$ARCH   python: $(command -v "$PY")"
step versions 60 bash -c "'$NVCC' --version | tail -2; cmake --version | head -1; ninja --version; \
  '$PY' -c 'import sys, numpy, pybind11, torch; print(sys.version.split()[0], \"numpy\", numpy.__version__, \
  \"pybind11\", pybind11.__version__, \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \
  \"gpu\", torch.cuda.is_available() and torch.cuda.get_device_name(0))'"

# ---- 2. standalone harness (compiled in the background while CMake builds) ---
HARNESS="$WORK/msrnet_cuda_test"
rm -f "$HARNESS"
( timeout 200 "$NVCC" -std=c++17 -O3 -gencode "arch=compute_$ARCH,code=sm_$ARCH" \
      -I cpp/include -I cpp/cuda cpp/cuda/cuda_engine.cu cpp/cuda/standalone_test.cu \
      -o "$HARNESS" > "$WORK/harness_build.log" 2>&1; echo "rc=$?" >> "$WORK/harness_build.log" ) &
HARNESS_PID=$!

# ---- 3. the extension with CUDA --------------------------------------------
BUILD="$ROOT/build/gpu"
GEN=()
command -v ninja > /dev/null && GEN=(-G Ninja)
PYBIND11_DIR="$("$PY" -m pybind11 --cmakedir 2>/dev/null)"
step cmake-configure 90 cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DMSRNET_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
    -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$PYBIND11_DIR"
step cmake-build 240 cmake --build "$BUILD" -j16
SO="$(ls -t "$BUILD"/_core*.so 2>/dev/null | head -1)"
if [[ -n "$SO" ]]; then
    cp -f "$SO" src/msrnet_napari/ && log "copied $(basename "$SO") into src/msrnet_napari/"
else
    log "!!! no _core*.so was built"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
step import 30 "$PY" -c "from msrnet_napari import _core; print('has_cuda', _core.has_cuda, \
'devices', _core.cuda_device_count(), 'CudaEngine', hasattr(_core, 'CudaEngine'), 'simd', _core.simd_level())"

wait "$HARNESS_PID"
log ""
log "=== [harness-build] $(tail -1 "$WORK/harness_build.log")"
cat "$WORK/harness_build.log" >> "$LOG"
SUMMARY+=("harness-build: $(tail -1 "$WORK/harness_build.log")")
if [[ -x "$HARNESS" ]]; then
    step harness-quick 60 "$HARNESS" --quick   # small parity cases only (seconds)
else
    log "=== [harness] not built"
fi

# ---- 4. tests ----------------------------------------------------------------
TESTS=(tests/test_cuda.py)
[[ -f tests/test_engine.py ]] && TESTS+=(tests/test_engine.py)
step pytest 150 "$PY" -m pytest -q -rs -p no:cacheprovider "${TESTS[@]}"

# ---- 5. benchmark ------------------------------------------------------------
# GPU_CHECK_BEFORE_BENCH: a command that must finish first (e.g. wait for a
# training job sharing the GPU, so timings are not disturbed)
if [[ -n "${GPU_CHECK_BEFORE_BENCH:-}" ]]; then
  step before-bench 400 bash -c "$GPU_CHECK_BEFORE_BENCH"
fi
step bench 200 "$PY" benchmarks/bench_cuda.py --json "$OUT/bench_cuda.json"

# ---- 6. harness again: default-config parity at 257x511 + C++-side timings ----
[[ -x "$HARNESS" ]] && step harness-full 120 "$HARNESS"

log ""
log "=== summary (total $(( $(date +%s) - START ))s)"
for s in "${SUMMARY[@]}"; do log "  $s"; done
exit 0
