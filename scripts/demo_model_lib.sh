# Shared steps of the demo-model builds (scripts/build_demo_model.sh, scripts/build_demo_v5.sh); sourced, not run,
# from the checkout's root after WORK, MODEL, STEPS and PARENT are set. Environment: PY, REAL, DEVICE.
PY=${PY:-$PWD/.venv/bin/python}
export PYTHONPATH="$PWD/DrasCLRSlicer${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's engine
DRASCLR="$PY -m drasclr"
REAL=${REAL:-../shared/data/real}
DEVICE=${DEVICE:-cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one thread: on a shared 2-core machine faster than two fighting
mkdir -p "$WORK"

# link_cases DEST PATTERN...: one folder DEST of links to the case folders matched by the patterns (each link named
# <chunk>_<case>, or the folder's own name for a real case), made all-or-nothing and kept once made
link_cases() {
  local dest=$1 c
  shift
  [ -d "$dest" ] && return 0
  mkdir -p "$dest.tmp"
  for c in "$@"; do
    [ -d "$c" ] || continue
    case $(basename "$c") in
      case_*) ln -s "$(realpath "$c")" "$dest.tmp/$(basename "$(dirname "$c")")_$(basename "$c")" ;;
      *) ln -s "$(realpath "$c")" "$dest.tmp/$(basename "$c")" ;;
    esac
  done
  mv "$dest.tmp" "$dest"
}

# finetune_from PARENT TRAIN MODEL LR: fine-tune PARENT on TRAIN into MODEL, resuming from MODEL.checkpoints;
# PAUSE_MINUTES=N pauses cleanly (exit 75); HARMONIZE=auto trains on the harmonized cases; nothing is done once MODEL
# holds its weights
finetune_from() {
  local parent=$1 train=$2 model=$3 lr=$4 resume="" pause=""
  [ -f "$model/model.safetensors" ] && return 0
  [ -f "$model.checkpoints/latest" ] && resume=--resume
  [ -n "${PAUSE_MINUTES:-}" ] && pause="--pause-after-minutes $PAUSE_MINUTES"
  # shellcheck disable=SC2086
  $DRASCLR finetune cohort --data "$train" --from "$parent" -o "$model" --name demo --steps "$STEPS" \
    --batch-size 8 --lr "$lr" --encoder-lr-scale 1.0 --freeze all --val-fraction 0.15 --seed 0 --patience 0 \
    --save-every 200 --device "$DEVICE" --harmonize "${HARMONIZE:-off}" $resume $pause
}

# test_list TEST: the held-out cases' CT files, one a line, into TEST.txt
test_list() {
  ls -d "$1"/*/ | sed 's:/$::; s:$:/ct.nii.gz:' > "$1.txt"
}

# chunk NAME SEED OPTIONS...: 4 phantoms of generator GEN (default 3) into WORK/NAME (all-or-nothing, kept once made)
chunk() {
  local name=$1 seed=$2
  shift 2
  [ -d "$WORK/$name" ] || $DRASCLR phantom -o "$WORK/$name" --n 4 --seed "$seed" --generator "${GEN:-3}" \
    --workers 1 "$@"
}

# v6_cohort: the demo-v6 training cohort in WORK/train_v6 (links): version-3 phantoms with the clinical acquisition,
# 32 cases (8 chunks of 4), LIDC-IDRI-0001 pseudo-labelled by cip-lh (as for demo-v5) and Lung-PET-CT-Dx A0002
# (8 mm, read as without visible emphysema) labelled all normal. The A0001 kernel pair is NOT in it (the kernel test).
v6_cohort() {
  local i
  for i in 0 1 2 3 4; do chunk "v3c_a$i" $((6101 + i)) --acquisition clinical; done
  for i in 0 1 2; do chunk "v3c_b$i" $((6111 + i)) --acquisition clinical --healthy-fraction 0; done
  mkdir -p "$WORK/real"
  if [ ! -d "$WORK/real/real_lidc_idri_0001" ] && [ -f "$REAL/lidc_idri_0001.nii.gz" ]; then
    $PY -m drasclr.dense.pseudo "$REAL/lidc_idri_0001.nii.gz" -o "$WORK/real" --min-confidence 0.8 --sample-weight 4
  fi
  if [ ! -d "$WORK/real/real_lungpetctdx_A0002_8mm_B40f" ] && [ -f "$REAL/lungpetctdx_A0002_8mm_B40f.nii.gz" ]; then
    $PY -m drasclr.dense.pseudo "$REAL/lungpetctdx_A0002_8mm_B40f.nii.gz" -o "$WORK/real" --all-normal \
      --sample-weight 2
  fi
  link_cases "$WORK/train_v6" "$WORK"/v3c_[ab]*/case_* "$WORK"/real/real_*
}

# v7_cohort: the demo-v7 (and demo-v8) training cohort in WORK/train_v7 (links): the demo-v6 cohort, 8 of demo-v5's
# own version-2 training phantoms (seeds 5101, 5111: the look demo-v5 was trained for) and 4 standard version-3
# ones (seed 7101)
v7_cohort() {
  v6_cohort
  GEN=2 chunk v2_a0 5101
  GEN=2 chunk v2_b0 5111 --healthy-fraction 0
  chunk v3s_a0 7101
  link_cases "$WORK/train_v7" "$WORK"/v3c_[ab]*/case_* "$WORK"/v2_[ab]0/case_* "$WORK"/v3s_a0/case_* "$WORK"/real/real_*
}

# rule_evaluation MODEL...: each model's maps without the density rule (--no-density-veto) on the held-out phantoms
# of session 13 (version-3 clinical seed 8643, version 3 at 0.625 mm seed 8631, version 2 at 0.625 mm seed 8632; 4
# cases with CLE, PSE and PLE each) and on the real CTs (what is called on each), and the rule applied offline at
# every threshold (bench/bench_density_rule.py): WORK/<set>-<model>-rule.json, WORK/real-<model>-rule.json
rule_evaluation() {
  local set m out
  chunk held_c3_8643 8643 --acquisition clinical --healthy-fraction 0 --subtypes cle,pse,ple
  chunk held_v3_8631 8631 --thickness 0.625 --healthy-fraction 0 --subtypes cle,pse,ple
  GEN=2 chunk held_v2_8632 8632 --thickness 0.625 --healthy-fraction 0 --subtypes cle,pse,ple
  for set in held_c3_8643 held_v3_8631 held_v2_8632; do
    test_list "$WORK/$set"
    for m in "$@"; do
      out="$WORK/$set-$(basename "$m")"
      [ -d "$out-pred" ] || $DRASCLR analyze "$WORK/$set.txt" -o "$out-pred" --model "$m" --no-density-veto --quiet
      # shellcheck disable=SC2046
      [ -f "$out-rule.json" ] || $PY bench/bench_density_rule.py -o "$out-rule.json" \
        $(for c in "$WORK/$set"/case_*; do echo "$c/ct.nii.gz:$out-pred/$(basename "$c"):$c"; done)
    done
  done
  # the CTs, not the lung-mask file beside one; absolute, as a list's paths are read from its folder
  ls "$(realpath "$REAL")"/*.nii.gz | grep -v "_lungs\." > "$WORK/real_scans.txt"
  for m in "$@"; do
    out="$WORK/real-$(basename "$m")"
    [ -d "$out-pred" ] || $DRASCLR analyze "$WORK/real_scans.txt" -o "$out-pred" --model "$m" --no-density-veto --quiet
    # shellcheck disable=SC2046
    [ -f "$out-rule.json" ] || $PY bench/bench_density_rule.py -o "$out-rule.json" \
      $(while read -r c; do n=$(basename "$c"); echo "$c:$out-pred/${n%%.*}"; done < "$WORK/real_scans.txt")
  done
}
