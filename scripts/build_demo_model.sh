#!/usr/bin/env bash
# Build the candidate demo model demo-v6 (docs/acquisition.md, issue 26), reproducibly (seeds fixed) and
# resumably: demo-v5 (shipped; its own recipe: scripts/build_demo_v5.sh) fine-tuned on version-3 phantoms with
# the clinical acquisition variety (--acquisition clinical: soft / sharp / lung kernels with their noise
# texture, low dose, 0.6-5 mm slices, the supine gradient, denser vessels) + LIDC-IDRI-0001 pseudo-labelled by
# cip-lh (as for demo-v5) + Lung-PET-CT-Dx A0002 (8 mm, read as without visible emphysema) labelled all normal.
# The A0001 kernel pair is NOT trained on: it is the kernel test (bench/bench_acquisition.py).
# Usage: scripts/build_demo_model.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model-v6 (ignored by git; keep it: it holds the cohorts and the checkpoints),
# MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-v6 (refused if it exists: models are never overwritten).
# Environment: PY (python with drasclr's dependencies; default .venv/bin/python), REAL, STEPS, DEVICE, PARENT.
#
# Long on 2 CPU cores (hours), so every step resumes:
# - phantom cohorts are written in chunks of 4 cases, each chunk all-or-nothing; finished chunks are kept;
# - training checkpoints every 200 steps into MODEL_DIR.checkpoints; rerunning this script continues from there;
# - PAUSE_MINUTES=N stops training cleanly after N minutes (exit 75), e.g. at the end of a working session.
# On a GPU: DEVICE=cuda (and raise STEPS).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v6} MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-v6}
STEPS=${STEPS:-4000} PARENT=${PARENT:-DrasCLRSlicer/drasclr/data/models/demo-v5}
# shellcheck source=scripts/demo_model_lib.sh
source scripts/demo_model_lib.sh
echo "info: demo-v6 build $(date -u +%FT%TZ) work=$WORK model=$MODEL steps=$STEPS" >&2

# --- training cohorts: version-3 clinical phantoms + the two real CTs (scripts/demo_model_lib.sh) -----------------
v6_cohort
TRAIN="$WORK/train_v6"

# --- fine-tuning from demo-v5 (resumable; PAUSE_MINUTES pauses with exit 75) --------------------------------------
finetune_from "$PARENT" "$TRAIN" "$MODEL" 3e-4
# the density-consistency rule of demo-v5 (drasclr/dense/density.py), written into the card before any evaluation
$PY scripts/record_evaluation.py "$MODEL" --density-veto 0.15

# --- held-out evaluation: 16 version-3 clinical-acquisition cases + 4 standard ones, never trained on ------------
for i in 0 1; do chunk "test_a$i" $((6201 + i)) --acquisition clinical; done
for i in 0 1; do chunk "test_b$i" $((6301 + i)) --acquisition clinical --healthy-fraction 0 --subtypes cle,pse,ple; done
chunk test_s0 6401
TEST="$WORK/test_v6"
link_cases "$TEST" "$WORK"/test_*/case_*
test_list "$TEST"
for m in "$PARENT" "$MODEL"; do
  n=$(basename "$m")
  [ -d "$WORK/test_v6-pred-$n" ] || $DRASCLR analyze "$WORK/test_v6.txt" -o "$WORK/test_v6-pred-$n" --model "$m"
  [ -d "$WORK/test_v6-eval-$n" ] || $DRASCLR evaluate --pred "$WORK/test_v6-pred-$n" --truth "$TEST" \
    -o "$WORK/test_v6-eval-$n"
done
[ -f "$WORK/real_scans/summary.json" ] || $PY bench/bench_real_scans.py \
  --models "$PARENT" "$MODEL" -o "$WORK/real_scans" --real "$REAL"
# the held-out figures go into the card (metrics.held_out, metrics.real_scans)
$PY scripts/record_evaluation.py "$MODEL" --phantoms "$WORK/test_v6-eval-$(basename "$MODEL")/metrics.json" \
  --phantom-cases "v3 clinical seeds 6201-6202: 8 cases with healthy; 6301-6302: 8 cases with CLE, PSE and PLE; v3 standard seed 6401: 4 cases" \
  --real "$WORK/real_scans/summary.json"
echo "info: demo-v6 build done $(date -u +%FT%TZ)" >&2
