#!/usr/bin/env bash
# Everything a session on the GPU machine does, one script with subcommands.
# The machine has no network: python3 with torch (CUDA), numpy, pybind11, cmake,
# ninja, pytest, scikit-image and nvcc; run from the repository tree (nothing is
# installed: src/ goes on PYTHONPATH).
#
#   OUT=/some/dir bash scripts/gpu_session.sh check
#       CUDA backend check (whole run stays under ~6 minutes, GPU_CHECK_BUDGET=340 s):
#         1. nvidia-smi, tool versions
#         2. standalone harness (cpp/cuda/standalone_test.cu, nvcc) vs a naive CPU
#            reference (--quick first; the full run with C++-side timings last, if time is left)
#         3. the extension with CUDA via CMake -> src/msrnet_napari/_core*.so
#         4. pytest tests/test_cuda.py (+ tests/test_engine.py when present)
#         5. benchmarks/bench_cuda.py (markdown table; JSON next to the log)
#       Each step runs even if an earlier one failed; everything is teed to
#       $OUT/gpu_check.log, a summary of step exit codes ends it.
#       GPU_CHECK_BEFORE_BENCH: a command that must finish before the benchmark.
#
#   OUT=/some/dir bash scripts/gpu_session.sh train SECONDS      (e.g. 330)
#       Train MSR-net within a wall-time budget on data/pack.npz
#       (scripts/make_data_pack.py); never imports the compiled engine. Writes
#       $OUT/best.pt, $OUT/last.pt, $OUT/train_log.txt (3 files, ~1 MB). Falls
#       back to a tiny CPU configuration when CUDA is unavailable (smoke test).
#       Environment: PACK (data/pack.npz), PYTHON (python3), LR (1e-3), CROP (64),
#       BATCH (64), AMP (none|bf16), RESUME_FROM (a last.pt to continue from:
#       copied to $OUT and trained further with --resume), EXTRA (more args).
#
#   OUT=/some/dir bash scripts/gpu_session.sh [all] [TRAIN_SECONDS]   (default 210)
#       Both in one machine call: training in the background (extra trainer
#       args in $TRAIN_EXTRA) while `check` builds and tests; the benchmark waits
#       for the training to end so the GPU timings are not shared with it.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/gpu_session.sh"

cmd_check() {
    set +e
    set -o pipefail

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
}

cmd_train() {
    set -uo pipefail
    cd "$ROOT" || exit 1
    BUDGET="${1:-330}"
    OUT="${OUT:?set OUT to the output directory}"
    mkdir -p "$OUT"
    LOG="$OUT/train_log.txt"
    PY="${PYTHON:-python3}"
    PACK="${PACK:-data/pack.npz}"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    T0=$(date +%s)

    {
      echo "== gpu_session.sh train budget=${BUDGET}s $(date -u +%FT%TZ) host=$(hostname)"
      command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
      "$PY" -c "import sys, torch, numpy, skimage; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'numpy', numpy.__version__, 'skimage', skimage.__version__); open(sys.argv[1], 'w').write(str(int(torch.cuda.is_available())))" "$OUT/.has_cuda"
      ls -l "$PACK"
    } 2>&1 | tee "$LOG"
    HAS_CUDA=$(cat "$OUT/.has_cuda" 2>/dev/null || echo 0)
    rm -f "$OUT/.has_cuda"

    if [ ! -f "$PACK" ]; then echo "ERROR: $PACK missing" | tee -a "$LOG"; exit 2; fi

    # time already spent (imports above) + margin for exit/copy-back
    SPENT=$(( $(date +%s) - T0 ))
    LIMIT=$(( BUDGET - SPENT - 8 ))
    if [ "$LIMIT" -lt 10 ]; then LIMIT=10; fi

    if [ "$HAS_CUDA" = "1" ]; then
      ARGS=(--device cuda --batch "${BATCH:-64}" --crop "${CROP:-64}" --lr "${LR:-1e-3}"
            --schedule cosine --warmup 300 --min-lr-frac 0.02 --clip-grad 1.0
            --amp "${AMP:-none}" --val-size 512 --val-every 0 --val-every-s 75 --log-every 200
            --steps 1000000)
    else
      echo "WARNING: CUDA not available - CPU smoke-test configuration" | tee -a "$LOG"
      ARGS=(--device cpu --threads 2 --batch 8 --crop 48 --lr "${LR:-1e-3}" --schedule cosine
            --warmup 20 --clip-grad 1.0 --val-size 96 --val-every 0 --val-every-s 30
            --log-every 5 --steps 1000000)
    fi
    if [ -n "${RESUME_FROM:-}" ]; then
      cp "$RESUME_FROM" "$OUT/last.pt" && ARGS+=(--resume)
    fi

    echo "== msrnet-train time limit ${LIMIT}s: ${ARGS[*]} ${EXTRA:-}" | tee -a "$LOG"
    # shellcheck disable=SC2086
    "$PY" -m msrnet_napari.training.train --pack "$PACK" --out "$OUT" --time-limit "$LIMIT" --seed 0 \
      "${ARGS[@]}" ${EXTRA:-} 2>&1 | tee -a "$LOG"
    RC=${PIPESTATUS[0]}
    rm -f "$OUT"/*.tmp
    echo "== exit code $RC, wall $(( $(date +%s) - T0 ))s; files:" | tee -a "$LOG"
    ls -l "$OUT" | tee -a "$LOG"
    exit "$RC"
}

cmd_all() {
    set -u
    cd "$ROOT" || exit 1
    local train_budget="${1:-210}"
    : "${OUT:?set OUT}"
    rm -f /tmp/msrnet_train_done
    ( EXTRA="${TRAIN_EXTRA:-}" OUT="$OUT" bash "$SELF" train "$train_budget" >/dev/null 2>&1
      touch /tmp/msrnet_train_done ) &
    GPU_CHECK_BEFORE_BENCH='while [ ! -f /tmp/msrnet_train_done ]; do sleep 2; done' \
      OUT="$OUT" bash "$SELF" check
    wait
    tail -5 "$OUT/train_log.txt"
}

case "${1:-all}" in
    check) shift; cmd_check "$@" ;;
    train) shift; cmd_train "$@" ;;
    all) shift; cmd_all "$@" ;;
    [0-9]*) cmd_all "$@" ;;   # the old form: gpu_session.sh TRAIN_SECONDS
    -h|--help|help) sed -n '2,/^ROOT=/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *) echo "usage: OUT=dir $0 check | train SECONDS | [all] [TRAIN_SECONDS]" >&2; exit 2 ;;
esac
