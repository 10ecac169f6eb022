#!/usr/bin/env bash
# Rebuild the bundled demo model from scratch, reproducibly (seeds fixed):
#   phantom cohorts -> DrasCLR pretraining -> supervised fine-tuning -> held-out evaluation.
# Usage: scripts/build_demo_model.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model (ignored by git), MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-v1
# (refused if it exists: move the old one away first; models are never overwritten).
# Budget on a 2-core CPU: about 1 h 15 min (see docs/demo_model.md for the measured times). On a GPU add
# --device cuda to pretrain/finetune and raise the step counts.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model}
MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-v1}
DRASCLR=".venv/bin/drasclr"
PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}
FINETUNE_STEPS=${FINETUNE_STEPS:-1200}
FINETUNE_MINUTES=${FINETUNE_MINUTES:-28}
mkdir -p "$WORK"
[ -d "$WORK/train" ] || $DRASCLR phantom -o "$WORK/train" --n 24 --seed 101
[ -d "$WORK/test" ] || $DRASCLR phantom -o "$WORK/test" --n 6 --seed 202
[ -f "$WORK/pretrain/model.safetensors" ] || $DRASCLR pretrain "$WORK/train" -o "$WORK/pretrain" \
  --max-steps "$PRETRAIN_STEPS" --batch-size 16 --queue-size 256 --moco-momentum 0.99 --workers 1 \
  --save-every 50 --log-every 10
$DRASCLR finetune cohort --data "$WORK/train" --encoder "$WORK/pretrain/model.safetensors" -o "$MODEL" \
  --name demo --steps "$FINETUNE_STEPS" --batch-size 8 --lr 1e-3 --encoder-lr-scale 1.0 --freeze all \
  --val-fraction 0.15 --seed 0 --max-minutes "$FINETUNE_MINUTES"
ls -d "$WORK"/test/case_*/ | sed 's:/$::; s:$:/ct.nii.gz:' > "$WORK/test.txt"
$DRASCLR analyze "$WORK/test.txt" -o "$WORK/test-pred" --model "$MODEL"
$DRASCLR evaluate --pred "$WORK/test-pred" --truth "$WORK/test" -o "$WORK/test-eval"
