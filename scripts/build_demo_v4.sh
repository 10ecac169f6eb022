#!/usr/bin/env bash
# Rebuild the bundled demo model from scratch, reproducibly (seeds fixed):
#   phantom cohorts -> DrasCLR pretraining -> supervised fine-tuning (four stages) -> held-out evaluation.
# Usage: scripts/build_demo_v4.sh [WORK_DIR] [MODEL_DIR]
# Defaults: WORK_DIR=build/demo-model (ignored by git), MODEL_DIR=DrasCLRSlicer/drasclr/data/models/demo-v4
# (refused if it exists: move the old one away first; models are never overwritten).
# Budget on a 2-core CPU: about 5 h (see docs/demo_model.md for the measured times). On a GPU add
# --device cuda to pretrain/finetune and raise the step counts.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-build/demo-model-v4}
MODEL=${2:-DrasCLRSlicer/drasclr/data/models/demo-v4}
DRASCLR="$PWD/.venv/bin/drasclr"
PRETRAIN_STEPS=${PRETRAIN_STEPS:-150}
STAGE1_STEPS=${STAGE1_STEPS:-2400}
STAGE2_STEPS=${STAGE2_STEPS:-6000}
STAGE3_STEPS=${STAGE3_STEPS:-6000}
STAGE4_STEPS=${STAGE4_STEPS:-4500}
mkdir -p "$WORK"
# cohorts: 24 training cases (6 healthy), 16 more diseased ones, two held-out seeds
[ -d "$WORK/train" ] || $DRASCLR phantom -o "$WORK/train" --n 24 --seed 101
[ -d "$WORK/train_extra" ] || $DRASCLR phantom -o "$WORK/train_extra" --n 16 --seed 111 --healthy-fraction 0
[ -d "$WORK/test" ] || $DRASCLR phantom -o "$WORK/test" --n 6 --seed 202
[ -d "$WORK/test2" ] || $DRASCLR phantom -o "$WORK/test2" --n 6 --seed 303 --healthy-fraction 0
# stage 3 adds cases rich in what stage 2 confused: all three subtypes together, CLE beside PLE, severe
# confluent CLE alone
[ -d "$WORK/train_more" ] || $DRASCLR phantom -o "$WORK/train_more" --n 12 --seed 404 --healthy-fraction 0 --subtypes cle,pse,ple
[ -d "$WORK/train_cp" ] || $DRASCLR phantom -o "$WORK/train_cp" --n 8 --seed 505 --healthy-fraction 0 --subtypes cle,ple
[ -d "$WORK/train_sc" ] || $DRASCLR phantom -o "$WORK/train_sc" --n 6 --seed 606 --healthy-fraction 0 --subtypes cle --severity 0.95
# stage 4 adds paraseptal emphysema beside centrilobular (PSE was the weakest class, worst beside severe CLE)
[ -d "$WORK/train_ps" ] || $DRASCLR phantom -o "$WORK/train_ps" --n 8 --seed 909 --healthy-fraction 0 --subtypes cle,pse
[ -d "$WORK/train_ps2" ] || $DRASCLR phantom -o "$WORK/train_ps2" --n 4 --seed 910 --healthy-fraction 0 --subtypes cle,pse --severity 0.9
# link_cases DEST PREFIX:COHORT ...: a training set of several cohorts, DEST/PREFIX_case_XXX -> each case
link_cases() {
  local dest=$1 p d
  shift
  [ -d "$dest" ] && return
  mkdir -p "$dest"
  for p in "$@"; do
    for d in "$WORK/${p#*:}"/case_*; do ln -s "$(realpath "$d")" "$dest/${p%%:*}_$(basename "$d")"; done
  done
}
link_cases "$WORK/train_all" a:train b:train_extra
link_cases "$WORK/train_all3" a:train b:train_extra c:train_more d:train_cp e:train_sc
link_cases "$WORK/train_all4" a:train b:train_extra c:train_more d:train_cp e:train_sc f:train_ps g:train_ps2
# self-supervised DrasCLR pretraining on the first cohort
# (an interrupted run continues from its last checkpoint: a run folder is never silently restarted)
[ -f "$WORK/pretrain/model.safetensors" ] || $DRASCLR pretrain "$WORK/train" -o "$WORK/pretrain" \
  $([ -d "$WORK/pretrain/checkpoints" ] && echo --resume) \
  --max-steps "$PRETRAIN_STEPS" --batch-size 16 --queue-size 256 --moco-momentum 0.99 --workers 1 \
  --save-every 50 --log-every 10
# stages 1-3 were trained before mirror augmentation existed (--no-mirror reproduces them); stage 4 mirrors
# stage 1: encoder + decoder on the first cohort (early stopping)
[ -d "$WORK/stage1" ] || $DRASCLR finetune cohort --data "$WORK/train" --encoder "$WORK/pretrain/model.safetensors" \
  -o "$WORK/stage1" --name demo --steps "$STAGE1_STEPS" --batch-size 8 --lr 1e-3 --encoder-lr-scale 1.0 \
  --freeze all --val-fraction 0.2 --seed 0 --max-minutes 25 --no-mirror
# stage 2: continue on both cohorts, patches class-balanced over the cohort, no early stopping (one thread:
# on a shared 2-core machine this is faster than two threads fighting over the cores)
[ -d "$WORK/stage2" ] || OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $DRASCLR finetune cohort --data "$WORK/train_all" \
  --from "$WORK/stage1" -o "$WORK/stage2" --name demo --steps "$STAGE2_STEPS" --batch-size 8 --lr 1e-3 \
  --encoder-lr-scale 1.0 --freeze all --val-fraction 0.15 --seed 0 --max-minutes 95 --patience 0 --no-mirror
# stage 3: continue on all 66 cases at half the rate (a warm restart of the cosine schedule), then calibrate
[ -d "$WORK/stage3" ] || OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $DRASCLR finetune cohort --data "$WORK/train_all3" \
  --from "$WORK/stage2" -o "$WORK/stage3" --name demo --steps "$STAGE3_STEPS" --batch-size 8 --lr 5e-4 \
  --encoder-lr-scale 1.0 --freeze all --val-fraction 0.15 --seed 0 --max-minutes 95 --patience 0 --no-mirror
# stage 4: all 78 cases, left-right mirror augmentation (location mirrored too), another warm restart at 5e-4
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $DRASCLR finetune cohort --data "$WORK/train_all4" --from "$WORK/stage3" \
  -o "$MODEL" --name demo --steps "$STAGE4_STEPS" --batch-size 8 --lr 5e-4 --encoder-lr-scale 1.0 --freeze all \
  --val-fraction 0.15 --seed 0 --max-minutes 95 --patience 0
for t in test test2; do
  ls -d "$WORK/$t"/case_*/ | sed 's:/$::; s:$:/ct.nii.gz:' > "$WORK/$t.txt"
  $DRASCLR analyze "$WORK/$t.txt" -o "$WORK/$t-pred" --model "$MODEL"
  $DRASCLR evaluate --pred "$WORK/$t-pred" --truth "$WORK/$t" -o "$WORK/$t-eval"
done
