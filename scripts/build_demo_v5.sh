#!/usr/bin/env bash
# Build the bundled demo model demo-v5 (docs/demo_model.md), reproducibly (seeds fixed) and resumably:
#   version-2 phantom cohorts (realistic HRCT emphysema) + a real CT pseudo-labelled by the reference classifier
#   -> fine-tuning from demo-v4 (itself rebuilt by scripts/build_demo_v4.sh) -> held-out evaluation.
# Usage: scripts/build_demo_v5.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model-v5 (ignored by git; keep it: it holds the cohorts and the checkpoints),
# MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-v5 (refused if it exists: models are never overwritten).
#
# Long on 2 CPU cores (hours; docs/demo_model.md has the measured times), so every step resumes:
# - phantom cohorts are written in chunks of 4 cases, each chunk all-or-nothing; finished chunks are kept;
# - training checkpoints every 200 steps into MODEL_DIR.checkpoints; rerunning this script continues from there;
# - PAUSE_MINUTES=N stops training cleanly after N minutes (exit 75), e.g. at the end of a working session.
# On a GPU: DEVICE=cuda (and raise STEPS).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v5} MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-v5}
STEPS=${STEPS:-6000} PARENT=${PARENT:-DrasCLRSlicer/drasclr/data/models/demo-v4}
# shellcheck source=scripts/demo_model_lib.sh
source scripts/demo_model_lib.sh

# --- training cohorts: version-2 phantoms, 40 cases (10 chunks of 4; about 30 % healthy in the a-chunks) ---------
chunk() {  # chunk NAME SEED OPTIONS...
  local name=$1 seed=$2
  shift 2
  [ -d "$WORK/$name" ] || $DRASCLR phantom -o "$WORK/$name" --n 4 --seed "$seed" --generator 2 --workers 1 "$@"
}
for i in 0 1 2 3 4 5; do chunk "v2_a$i" $((5101 + i)); done
for i in 0 1 2 3; do chunk "v2_b$i" $((5111 + i)) --healthy-fraction 0; done

# --- real texture: LIDC-IDRI-0001 pseudo-labelled by cip-lh where confident and density-consistent --------------
# (only this real CT: the Lung-PET-CT-Dx scans are the specificity/kernel test cases, the COPDGene scan is 4 mm)
if [ ! -d "$WORK/real/real_lidc_idri_0001" ] && [ -f "$REAL/lidc_idri_0001.nii.gz" ]; then
  $PY -m drasclr.dense.pseudo "$REAL/lidc_idri_0001.nii.gz" -o "$WORK/real" \
    --min-confidence 0.8 --sample-weight 4
fi

# --- one training folder of links --------------------------------------------------------------------------------
TRAIN="$WORK/train_v5"
link_cases "$TRAIN" "$WORK"/v2_[ab]*/case_* "$WORK"/real/real_*

# --- fine-tuning from demo-v4 (resumable; PAUSE_MINUTES pauses with exit 75) --------------------------------------
finetune_from "$PARENT" "$TRAIN" "$MODEL" 5e-4
# density consistency (drasclr/dense/density.py): emphysema called in normal-density lung is turned normal by
# analyze; the same rule and threshold as the pseudo-labels above, written into the card before any evaluation
$PY scripts/record_evaluation.py "$MODEL" --density-veto 0.15

# --- held-out evaluation: 16 version-2 cases never trained on, never used for model selection --------------------
for i in 0 1; do chunk "test_a$i" $((5201 + i)); done
for i in 0 1; do chunk "test_b$i" $((5301 + i)) --healthy-fraction 0 --subtypes cle,pse,ple; done
TEST="$WORK/test_v5"
link_cases "$TEST" "$WORK"/test_*/case_*
test_list "$TEST"
[ -d "$WORK/test_v5-pred" ] || $DRASCLR analyze "$WORK/test_v5.txt" -o "$WORK/test_v5-pred" --model "$MODEL"
[ -d "$WORK/test_v5-eval" ] || $DRASCLR evaluate --pred "$WORK/test_v5-pred" --truth "$TEST" -o "$WORK/test_v5-eval"
[ -f "$WORK/real_scans/summary.json" ] || $PY bench/bench_real_scans.py \
  --models "$PARENT" "$MODEL" -o "$WORK/real_scans" --real "$REAL"
# the held-out figures go into the card (metrics.held_out, metrics.real_scans)
$PY scripts/record_evaluation.py "$MODEL" --phantoms "$WORK/test_v5-eval/metrics.json" \
  --phantom-cases "seeds 5201-5202: 8 cases, 4 healthy; seeds 5301-5302: 8 cases with CLE, PSE and PLE together" \
  --real "$WORK/real_scans/summary.json"
