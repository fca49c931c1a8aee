#!/usr/bin/env bash
# Train MSR-net on the GPU machine within a wall-time budget.
#
#   OUT=/some/dir bash scripts/gpu_train.sh SECONDS        (e.g. 330)
#
# Expects: repo tree with data/pack.npz (scripts/make_data_pack.py), python3 with
# torch (CUDA), numpy, scikit-image, Pillow. No network, no install: runs from
# src/ via PYTHONPATH; never imports the compiled engine (msrnet_napari._core).
# Writes $OUT/best.pt, $OUT/last.pt, $OUT/train_log.txt (3 files, ~1 MB).
# Falls back to a tiny CPU configuration when CUDA is unavailable (smoke test).
#
# Environment overrides: PACK (data/pack.npz), PYTHON (python3), LR (1e-3),
# CROP (64), BATCH (64), AMP (none|bf16), RESUME_FROM (a last.pt to continue
# from: copied to $OUT and trained further with --resume), EXTRA (more args).
set -uo pipefail
cd "$(dirname "$0")/.."
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
  echo "== gpu_train.sh budget=${BUDGET}s $(date -u +%FT%TZ) host=$(hostname)"
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
