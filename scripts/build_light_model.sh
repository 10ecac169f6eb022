#!/usr/bin/env bash
# Build demo-v5-light (issue 28): demo-v5 with a pointwise full-resolution decoder stage (about a third less
# inference time), distilled from demo-v5 itself so it keeps demo-v5's answers: the converted start (each 3x3x3
# kernel of that stage summed over space) learns demo-v5's voxel probabilities on the same augmented patches
# (finetune cohort --distill-from, weight 1: the labels only choose the patches and score validation), decoder
# only (the encoder and its BatchNorm statistics stay demo-v5's), and keeps demo-v5's decision weights and
# density rule. The patches come from the demo-v6 cohort (version-3 phantoms with the clinical acquisition
# variety + the two real CTs; made here if missing, the same seeds as scripts/build_demo_model.sh).
# Usage: scripts/build_light_model.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model-v6 (the cohorts), MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-v5-light
# (refused if it exists). Resumable like the other builds (checkpoints every 200 steps; PAUSE_MINUTES=N).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v6} MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-v5-light}
STEPS=${STEPS:-3000} PARENT=${PARENT:-DrasCLRSlicer/drasclr/data/models/demo-v5}
# shellcheck source=scripts/demo_model_lib.sh
source scripts/demo_model_lib.sh
echo "info: demo-v5-light build $(date -u +%FT%TZ) work=$WORK model=$MODEL steps=$STEPS" >&2
v6_cohort  # the demo-v6 build's cohort (the same seeds; kept once made): where demo-v5's answers are learnt
TRAIN="$WORK/train_v6"
if [ ! -f "$MODEL/model.safetensors" ]; then
  resume="" pause=""
  [ -f "$MODEL.checkpoints/latest" ] && resume=--resume
  [ -n "${PAUSE_MINUTES:-}" ] && pause="--pause-after-minutes $PAUSE_MINUTES"
  # shellcheck disable=SC2086
  $DRASCLR finetune cohort --data "$TRAIN" --from "$PARENT" --full-res-kernel 1 --distill-from "$PARENT" \
    --distill-weight 1 --no-calibrate -o "$MODEL" --name demo-light --steps "$STEPS" --batch-size 8 --lr 1e-3 \
    --freeze head --val-fraction 0.15 --seed 0 --patience 0 --save-every 200 --device "$DEVICE" $resume $pause
fi
echo "info: demo-v5-light build done $(date -u +%FT%TZ)" >&2
