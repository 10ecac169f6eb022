#!/usr/bin/env bash
# Build demo-light-v1 (issue 28): demo-v5 with a pointwise full-resolution decoder stage (about a third less
# inference time), distilled from demo-v5 itself so it keeps demo-v5's answers: the converted start (each 3x3x3
# kernel of that stage summed over space) learns demo-v5's voxel probabilities on the same augmented patches
# (finetune cohort --distill-from, weight 1: the labels only choose the patches and score validation), decoder
# only (the encoder and its BatchNorm statistics stay demo-v5's), and keeps demo-v5's decision weights and
# density rule. The patches come from the demo-v6 cohort (version-3 phantoms with the clinical acquisition
# variety + the two real CTs; made here if missing, the same seeds as scripts/build_demo_model.sh). Then demo-v5's
# held-out set is predicted by both models and the real CTs are read, into the card (scripts/record_evaluation.py).
# Usage: scripts/build_light_model.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model-v6 (the cohorts), MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-light-v1
# (refused if it exists). Resumable like the other builds (checkpoints every 200 steps; PAUSE_MINUTES=N).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v6} MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-light-v1}
STEPS=${STEPS:-3000} PARENT=${PARENT:-DrasCLRSlicer/drasclr/data/models/demo-v5}
# shellcheck source=scripts/demo_model_lib.sh
source scripts/demo_model_lib.sh
echo "info: demo-light build $(date -u +%FT%TZ) work=$WORK model=$MODEL steps=$STEPS" >&2
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

# --- held-out evaluation: demo-v5's own held-out set (16 version-2 cases, never trained on by either model) ------
v2_test() {  # v2_test NAME SEED OPTIONS...
  local name=$1 seed=$2
  shift 2
  [ -d "$WORK/$name" ] || $DRASCLR phantom -o "$WORK/$name" --n 4 --seed "$seed" --generator 2 --workers 1 "$@"
}
v2_test test_v2_a0 5201
v2_test test_v2_a1 5202
v2_test test_v2_b0 5301 --healthy-fraction 0 --subtypes cle,pse,ple
v2_test test_v2_b1 5302 --healthy-fraction 0 --subtypes cle,pse,ple
TEST="$WORK/test_light"
link_cases "$TEST" "$WORK"/test_v2_*/case_*
test_list "$TEST"
for m in "$PARENT" "$MODEL"; do
  n=$(basename "$m")
  [ -d "$WORK/test_light-pred-$n" ] || $DRASCLR analyze "$WORK/test_light.txt" -o "$WORK/test_light-pred-$n" \
    --model "$m" --regions zones
  [ -d "$WORK/test_light-eval-$n" ] || $DRASCLR evaluate --pred "$WORK/test_light-pred-$n" --truth "$TEST" \
    -o "$WORK/test_light-eval-$n"
done
[ -f "$WORK/real_scans_light/summary.json" ] || $PY bench/bench_real_scans.py --models "$PARENT" "$MODEL" \
  -o "$WORK/real_scans_light" --real "$REAL"
$PY scripts/record_evaluation.py "$MODEL" --phantoms "$WORK/test_light-eval-$(basename "$MODEL")/metrics.json" \
  --phantom-cases "demo-v5's held-out set: seeds 5201-5202 (8 cases with healthy), 5301-5302 (8 cases with CLE, PSE and PLE)" \
  --real "$WORK/real_scans_light/summary.json"
echo "info: demo-light build done $(date -u +%FT%TZ)" >&2
