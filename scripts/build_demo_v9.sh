#!/usr/bin/env bash
# Build the candidate demo model demo-v9 (issue 26): demo-v8 with demo-v5's look weighted up. demo-v8 (harmonized
# training, scripts/build_demo_v8.sh) gained 0.031 macro Dice on held-out clinical version-3 phantoms but lost 0.013
# on both thin standard-kernel sets, as demo-v7 lost 0.010 on demo-v5's look: 8 of its 46 cases were version 2.
# demo-v9 adds 8 more version-2 phantoms (seeds 5102, 5112; generated like demo-v5's own), 16 of 54, and is
# otherwise demo-v8: demo-v5 fine-tuned at lr 1e-4 on the harmonized cases, evaluated the same way.
# Usage: scripts/build_demo_v9.sh [WORK_DIR] [MODEL_DIR]  (defaults: build/demo-model-v6, build/models/demo-v9)
# Resumable like the other builds (chunks of 4 cases, checkpoints every 200 steps; PAUSE_MINUTES=N pauses, exit 75).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v6} MODEL=${2:-build/models/demo-v9}
STEPS=${STEPS:-4000} PARENT=${PARENT:-DrasCLRSlicer/drasclr/data/models/demo-v5}
# shellcheck source=scripts/demo_model_lib.sh
source scripts/demo_model_lib.sh
echo "info: demo-v9 build $(date -u +%FT%TZ) work=$WORK model=$MODEL steps=$STEPS" >&2

v7_cohort
GEN=2 chunk v2_a1 5102
GEN=2 chunk v2_b1 5112 --healthy-fraction 0
link_cases "$WORK/train_v9" "$WORK"/train_v7/* "$WORK"/v2_[ab]1/case_*

HARMONIZE=auto finetune_from "$PARENT" "$WORK/train_v9" "$MODEL" 1e-4
$PY scripts/record_evaluation.py "$MODEL" --density-veto 0.15  # demo-v5's density rule, before any evaluation
rule_evaluation "$PARENT" "$MODEL"
echo "info: demo-v9 build done $(date -u +%FT%TZ)" >&2
