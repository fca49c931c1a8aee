#!/usr/bin/env bash
# Reproduce the bundled default weights' final stage (CPU, about 75 minutes on 2 cores).
#
#   bash scripts/train_default.sh [SECONDS]          (default 4500; writes runs/cpu3/)
#
# Stage 1 (GPU, scripts/gpu_session.sh train, `runs/gpu2` in the model card) is taken from git
# history: the default weights of commit 0c698d9 are byte-identical to its best.pt. Stage 2
# (this script) keeps that network's f2 features, restarts it as the identity on the
# exposure-normalised input (--identity-start) and trains it with exposure normalisation in
# linear light, the gain of each crop taken from its whole darkened image. The weights of
# every validation (every 15 minutes) are kept and the shipped model is their average
# (stochastic weight averaging): runs/cpu3/swa.pt.
# Needs: the package with the [train] extra (torch), data/pack.npz (made here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_LIMIT="${1:-4500}"
PY="${PYTHON:-python3}"
if [ ! -f data/pack.npz ]; then
  [ -f data/splits.json ] || bash scripts/get_training_images.sh
  "$PY" scripts/make_data_pack.py
fi
mkdir -p runs/cpu3
git show 0c698d9:src/msrnet_napari/weights/msrnet_default.pt > runs/stage1_gpu2_best.pt
"$PY" -m msrnet_napari.training.train --pack data/pack.npz --out runs/cpu3 \
  --init runs/stage1_gpu2_best.pt --identity-start \
  --exposure-space linear --exposure-target 0.215 --gain-from image --degrade sensor \
  --batch 64 --crop 48 --lr 5e-4 --schedule cosine --warmup 100 --min-lr-frac 0.05 \
  --clip-grad 1.0 --time-limit "$SECONDS_LIMIT" --val-every 100000 --val-every-s 900 \
  --val-size 256 --log-every 20 --threads 2 --seed 3 --keep-val-checkpoints \
  2>&1 | tee runs/cpu3/train_log.txt
# shellcheck disable=SC2046
"$PY" scripts/average_checkpoints.py runs/cpu3/swa.pt $(ls runs/cpu3/val_step*.pt | sort -V) \
  --val-pack data/pack.npz
