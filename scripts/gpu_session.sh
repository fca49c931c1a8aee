#!/usr/bin/env bash
# One GPU machine call doing both device jobs of this project:
#   - train MSR-net (scripts/gpu_train.sh, budget $1 s, extra trainer args in $TRAIN_EXTRA)
#     -> $OUT/best.pt, $OUT/last.pt, $OUT/train_log.txt
#   - CUDA backend: build, parity tests, benchmark (scripts/gpu_check.sh)
#     -> $OUT/gpu_check.log, $OUT/bench_cuda.json
# The build and the parity tests overlap the training; the benchmark waits for
# the training to end so the GPU timings are not shared with it.
set -u
cd "$(dirname "$0")/.."
TRAIN_BUDGET="${1:-210}"
: "${OUT:?set OUT}"
rm -f /tmp/msrnet_train_done
( EXTRA="${TRAIN_EXTRA:-}" OUT="$OUT" bash scripts/gpu_train.sh "$TRAIN_BUDGET" >/dev/null 2>&1
  touch /tmp/msrnet_train_done ) &
GPU_CHECK_BEFORE_BENCH='while [ ! -f /tmp/msrnet_train_done ]; do sleep 2; done' \
  OUT="$OUT" bash scripts/gpu_check.sh
wait
tail -5 "$OUT/train_log.txt"
