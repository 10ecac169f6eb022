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
# PAUSE_MINUTES=N pauses cleanly (exit 75); nothing is done once MODEL holds its weights
finetune_from() {
  local parent=$1 train=$2 model=$3 lr=$4 resume="" pause=""
  [ -f "$model/model.safetensors" ] && return 0
  [ -f "$model.checkpoints/latest" ] && resume=--resume
  [ -n "${PAUSE_MINUTES:-}" ] && pause="--pause-after-minutes $PAUSE_MINUTES"
  # shellcheck disable=SC2086
  $DRASCLR finetune cohort --data "$train" --from "$parent" -o "$model" --name demo --steps "$STEPS" \
    --batch-size 8 --lr "$lr" --encoder-lr-scale 1.0 --freeze all --val-fraction 0.15 --seed 0 --patience 0 \
    --save-every 200 --device "$DEVICE" $resume $pause
}

# test_list TEST: the held-out cases' CT files, one a line, into TEST.txt
test_list() {
  ls -d "$1"/*/ | sed 's:/$::; s:$:/ct.nii.gz:' > "$1.txt"
}
