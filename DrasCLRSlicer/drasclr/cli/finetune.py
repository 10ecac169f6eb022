"""``drasclr finetune cohort|corrections``: train the subtype model on labels, or on an annotator's corrections.

    drasclr finetune cohort --data PHANTOMS -o models/demo-v1 [--encoder PRETRAINED] [--label-slices 5]
    drasclr finetune corrections CT PREDICTION CORRECTED [--model M] [-o ROOT] [--max-seconds 30] [--reviewed MASK]
    drasclr finetune calibrate --data PHANTOMS --model models/demo-v1 -o models/demo-v2

``cohort`` runs in one process or under torchrun (DDP: each rank prepares and samples its share of the training
cases, ``--batch-size`` is per rank, rank 0 validates, calibrates and writes the model):

    torchrun --nproc_per_node 8 -m drasclr finetune cohort --data PHANTOMS -o models/m --from models/demo-v4

``cohort`` ends by fitting per-class decision weights on its whole validation volumes (``--no-calibrate`` skips
it); ``calibrate`` does only that, for an existing model, into a new model folder.

A model is never overwritten: ``cohort`` refuses an existing ``-o``; ``corrections`` writes ``<name>-v<N+1>``.

Long runs are resumable: ``cohort`` writes its whole training state to ``OUTPUT.checkpoints`` every
``--save-every`` steps; after an interruption (or a planned ``--pause-after-minutes`` stop, exit 75) the same
command with ``--resume`` continues where it was (same steps, schedule, best state and random streams).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

log = logging.getLogger(__name__)
PAUSED = 75  # EX_TEMPFAIL: training paused at a checkpoint, to be continued with --resume


def add_parser(sub):
    p = sub.add_parser("finetune", help="train the subtype model from labels or from corrections")
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True, parser_class=type(p))
    c = modes.add_parser("cohort", help="supervised or few-shot training on a labelled cohort")
    c.add_argument("--data", required=True, help="folder of case folders with ct.nii.gz + subtypes.nii.gz")
    c.add_argument("-o", "--output", required=True, help="new model folder (e.g. models/demo-v1); never overwritten")
    init = c.add_mutually_exclusive_group()
    init.add_argument("--encoder", help="pretrained encoder (.safetensors from `drasclr pretrain`, any --method)")
    init.add_argument("--from", dest="from_model", help="continue from an existing subtype model")
    few = c.add_mutually_exclusive_group()
    few.add_argument("--label-slices", type=int, help="few-shot: only this many axial slices per case are labelled")
    few.add_argument("--label-fraction", type=float, help="few-shot: labelled blocks cover this fraction of the lung")
    c.add_argument("--freeze", choices=["head", "last", "all"], default="all",
                   help="train the decoder only, decoder + last encoder stages, or all (encoder at lr/10)")
    c.add_argument("--steps", type=int, default=1500)
    c.add_argument("--batch-size", type=int, default=8, help="patches per step per process (under torchrun: per rank)")
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--encoder-lr-scale", type=float, default=None,
                   help="with --freeze all: encoder rate = lr x this (default 0.1 for a pretrained encoder, 1 else)")
    c.add_argument("--val-fraction", type=float, default=0.2, help="cases held out for validation/early stopping")
    c.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    c.add_argument("--patience", type=int, default=6,
                   help="early stopping: validations without improvement (second half only); 0 turns it off")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--name", default=None, help="model name in the card (default: the folder name)")
    c.add_argument("--no-calibrate", action="store_true",
                   help="skip fitting the per-class decision weights on the whole validation volumes")
    c.add_argument("--no-amp", action="store_true", help="full precision on CUDA (default: bf16 autocast)")
    c.add_argument("--loss-weights", default=None, metavar="W0,W1,W2,W3,W4",
                   help="cross-entropy weight per class (outside, normal, CLE, PSE, PLE; default 1,1,3,3,3)")
    c.add_argument("--no-mirror", action="store_true",
                   help="no left-right mirror augmentation (default: half the patches, location mirrored too)")
    c.add_argument("--full-res-kernel", type=int, choices=[1, 3], default=None,
                   help="kernel of the decoder's full-resolution stage: 3 (default for a new model) or 1 (pointwise: "
                        "about a third less inference time); with --from 3 -> 1 converts the parent's stage "
                        "(default: the parent's)")
    c.add_argument("--distill-from", default=None, metavar="MODEL",
                   help="a teacher model: learn its voxel probabilities too (knowledge distillation)")
    c.add_argument("--distill-weight", type=float, default=1.0,
                   help="with --distill-from: loss = (1-w) x labels + w x teacher (default 1: copy the teacher; its "
                        "decision weights and density rule are then kept when --no-calibrate is given)")
    c.add_argument("--harmonize", choices=["off", "auto"], default="off",
                   help="auto: train on every case harmonized as `analyze` harmonizes a scan (the look the model "
                        "is shown at inference; docs/acquisition.md); off (default): the CTs as stored")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty -o folder that holds no model (a model is never replaced)")
    c.add_argument("--checkpoint-dir", default=None,
                   help="resumable training state (default: OUTPUT.checkpoints beside the model folder; removed "
                        "once the model is written)")
    c.add_argument("--save-every", type=int, default=200, help="checkpoint every N steps (0: only at a pause)")
    c.add_argument("--resume", action="store_true",
                   help="continue an interrupted or paused run from its newest checkpoint (same data and options)")
    c.add_argument("--pause-after-minutes", type=float, default=None,
                   help="write a checkpoint and stop after this many minutes of this process (exit 75; rerun with "
                        "--resume): a long CPU run spread over several sessions")
    c.set_defaults(run=checked(run_cohort))
    k = modes.add_parser("calibrate", help="fit per-class decision weights of a model on whole labelled volumes")
    k.add_argument("--data", required=True, help="folder of case folders with ct.nii.gz + subtypes.nii.gz")
    k.add_argument("--model", required=True, help="the subtype model to calibrate (left untouched)")
    k.add_argument("-o", "--output", required=True, help="new model folder with the weights in its card")
    k.add_argument("--cases", nargs="+", default=None,
                   help="case folder names to use (default: the model's validation cases when all are in --data, "
                        "else every case)")
    k.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    k.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty -o folder that holds no model (a model is never replaced)")
    k.set_defaults(run=checked(run_calibrate))
    r = modes.add_parser("corrections", help="fine-tune from a corrected labelmap (new model version)")
    r.add_argument("ct", help="the CT")
    r.add_argument("prediction", help="the model's subtypes.nii.gz for this CT")
    r.add_argument("corrected", help="the corrected subtype labelmap (same grid, values 0-4)")
    r.add_argument("--model", default=None, help="the model that made the prediction (default: bundled demo)")
    r.add_argument("-o", "--output-root", default=None, help="folder for the new version (default: beside the model)")
    r.add_argument("--max-seconds", type=float, default=30.0, help="training time bound (default 30 s)")
    r.add_argument("--reviewed", default=None, metavar="MASK",
                   help="mask of the voxels the annotator reviewed (non-zero; e.g. the review units visited): their "
                        "labels count as confirmed, accepted or corrected")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    r.set_defaults(run=checked(run_corrections))


def checked(run):
    """``run`` after the argument checks of its mode (and, for a new model folder, its location and lock)."""
    import functools

    @functools.wraps(run)
    def wrapper(args) -> int:
        check_arguments(args)
        if args.mode == "corrections":
            return run(args)
        with _new_model_folder(args):
            return run(args)
    return wrapper


def check_arguments(args) -> None:
    """Numeric options in range, input folders present: refused before any model is built or case read."""
    from ..core.errors import InputError
    from ..core.input_files import check_range
    from ..core.versions import resolve_model

    if args.mode == "cohort":
        check_range(args.steps, "--steps", lo=1, hi=10_000_000)
        check_range(args.batch_size, "--batch-size", lo=1, hi=65536)
        check_range(args.lr, "--lr", lo=0, hi=10, lo_open=True)
        check_range(args.encoder_lr_scale, "--encoder-lr-scale", lo=0, hi=100)
        check_range(args.val_fraction, "--val-fraction", lo=0, hi=1, hi_open=True)
        check_range(args.max_minutes, "--max-minutes", lo=0, lo_open=True)
        check_range(args.patience, "--patience", lo=0)
        check_range(args.seed, "--seed", lo=0)
        check_range(args.label_slices, "--label-slices", lo=1)
        check_range(args.label_fraction, "--label-fraction", lo=0, hi=1, lo_open=True)
        check_range(args.save_every, "--save-every", lo=0)
        check_range(args.pause_after_minutes, "--pause-after-minutes", lo=0, lo_open=True)
        check_range(args.distill_weight, "--distill-weight", lo=0, hi=1, lo_open=True)
    if args.mode == "corrections":
        check_range(args.max_seconds, "--max-seconds", lo=0, hi=86400, lo_open=True)
        for name in ("ct", "prediction", "corrected"):
            if not Path(getattr(args, name)).exists():
                raise InputError(f"{name} not found: {getattr(args, name)}")
    else:
        if not Path(args.data).is_dir():
            raise InputError(f"data folder not found: {args.data}")
        for name in ("encoder", "from_model", "model", "distill_from"):
            value = getattr(args, name, None)
            if value and not resolve_model(value).exists():
                raise InputError(f"model not found: {value}")


@contextlib.contextmanager
def _new_model_folder(args):
    """Check ``-o`` up front: a folder holding a model is never replaced; another non-empty folder needs
    ``--overwrite`` (it is set aside, removed when the new model is written and restored when the run fails); the
    folder is locked for the run (rank 0 only)."""
    from ..core.errors import InputError
    from ..core.outputs import claimed_output, set_aside

    out = Path(args.output)
    if int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    if out.is_dir() and (any(out.glob("*.safetensors")) or (out / "model.json").exists()):
        raise InputError(f"model folder {out} exists already; models are never overwritten (choose a new -o)")
    with claimed_output(out, overwrite=args.overwrite, what="model folder"), set_aside(out):
        yield


def run_cohort(args) -> int:
    from ..core.device import pick_device
    from ..core.errors import InputError
    from ..dense.checkpoint import TrainingPaused
    from ..dense.cohort import find_cases
    from ..dense.recipe import CohortRecipe, train_cohort
    from ..dense.store import lineage, load_segmenter

    out = Path(args.output)
    if out.exists():
        raise InputError(f"model folder {out} exists already; models are never overwritten (choose a new -o)")
    if args.label_fraction is not None and not 0 < args.label_fraction <= 1:
        raise InputError("--label-fraction must be in (0, 1]")
    if args.label_slices is not None and args.label_slices < 1:
        raise InputError("--label-slices must be at least 1")
    recipe = CohortRecipe(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, freeze=args.freeze, val_fraction=args.val_fraction,
        encoder_lr_scale=args.encoder_lr_scale if args.encoder_lr_scale is not None
        else (0.1 if (args.encoder or args.from_model) else 1.0),
        max_seconds=args.max_minutes * 60 if args.max_minutes else None, patience=args.patience, seed=args.seed,
        label_slices=args.label_slices, label_fraction=args.label_fraction, amp=not args.no_amp,
        mirror=not args.no_mirror, loss_weights=_loss_weights(args.loss_weights), calibrate=not args.no_calibrate,
        save_every=args.save_every,
        pause_after_seconds=args.pause_after_minutes * 60 if args.pause_after_minutes else None,
        distill=args.distill_weight if args.distill_from else 0.0, harmonize=args.harmonize)
    checkpoints = _checkpoint_folder(args, out)
    parent, enc_card, parent_card = {}, {}, {}
    if args.from_model:
        model, parent_card, parent_dir = load_segmenter(args.from_model)
        parent = lineage(parent_card, parent_dir)
        model = _with_full_res_kernel(model, args.full_res_kernel)
    else:
        model, enc_card = _new_segmenter(args)
    card = {"name": args.name or out.name, "version": out.name,
            "training": {"encoder_method": enc_card.get("method", "drasclr") if args.encoder else None,
                         "encoder_init": Path(args.encoder).name if args.encoder else
                         ("from " + Path(args.from_model).name if args.from_model else "random")},
            "validated_spacing_mm": _validated_spacing(find_cases(args.data), parent_card), **parent}
    teacher = None
    if args.distill_from:
        teacher, teacher_card, teacher_dir = load_segmenter(args.distill_from)
        card["training"]["distilled_from"] = lineage(teacher_card, teacher_dir)["parent"]
        if args.distill_weight == 1 and teacher_card.get("validated_spacing_mm"):
            # a copy of the teacher is validated where the teacher is (the cohort only chose the patches)
            card["validated_spacing_mm"] = {**teacher_card["validated_spacing_mm"],
                                            "source": f"the teacher's ({teacher_dir.name}; a distilled copy)"}
        if args.no_calibrate and args.distill_weight == 1 and teacher_card.get("inference"):
            # a copy of the teacher decides as the teacher does: its decision weights and density rule
            card["inference"] = {**teacher_card["inference"], "inherited_from": teacher_dir.name}
    try:
        res = train_cohort(model, args.data, out, recipe, pick_device(args.device), card, checkpoints=checkpoints,
                           resume=args.resume, teacher=teacher)
    except TrainingPaused as p:
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"info: paused at step {p.step} of {p.steps}; checkpoint {p.checkpoint}; run the same command "
                  f"with --resume to continue", file=sys.stderr)
        return PAUSED
    if res.is_main:
        if checkpoints is not None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # the model is written: its training state is spent
        print(json.dumps({"model": str(out), "steps": res.steps, "val_macro_dice": res.best_val,
                          "world_size": res.world_size}))
    return 0


def _checkpoint_folder(args, out: Path) -> Path | None:
    """Where the resumable state goes (None: not kept); refuses a resume with nothing to resume and a fresh start
    over an earlier run's checkpoints (which it would silently discard)."""
    from ..core.errors import InputError
    from ..model.train_state import find_latest

    folder = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.name + ".checkpoints")
    found = find_latest(folder) is not None
    if args.resume and not found:
        raise InputError(f"nothing to resume: no checkpoint in {folder}")
    if not args.resume and found:
        raise InputError(f"{folder} holds the checkpoints of an earlier run: continue it with --resume, or remove "
                         f"that folder to start over")
    if not args.save_every and not args.pause_after_minutes and not args.resume:
        return None
    return folder


def _validated_spacing(cases: list, parent_card: dict) -> dict:
    """The voxel sizes this model was trained and validated on (its cohort's, with its parent's): the resolution
    guard of ``analyze`` flags scans outside them (drasclr.checks.resolution)."""
    from ..checks.resolution import merge_ranges, spacing_of_file, spacing_range

    cohort = spacing_range([spacing_of_file(c / "ct.nii.gz") for c in cases], "training and validation cohort")
    parent = parent_card.get("validated_spacing_mm")
    return merge_ranges(parent, cohort, "training and validation cohort" + (" and the parent model's" if parent
                                                                            else ""))


def _loss_weights(text: str | None) -> tuple[float, ...]:
    from ..core import labels
    from ..core.errors import InputError
    from ..dense.train import CLASS_WEIGHTS

    if text is None:
        return CLASS_WEIGHTS
    try:
        w = tuple(float(v) for v in text.split(","))
    except ValueError:
        w = ()
    if len(w) != labels.NUM_CLASSES or min(w) <= 0:
        raise InputError(f"--loss-weights needs {labels.NUM_CLASSES} positive numbers (outside, normal, CLE, PSE, "
                         f"PLE), got {text!r}")
    return w


def _with_full_res_kernel(model, kernel: int | None):
    """The parent ``model`` with the asked full-resolution kernel: as it is, or its 3³ stage made pointwise."""
    from ..core.errors import InputError
    from ..dense.segmenter import pointwise_full_res

    if kernel is None or kernel == model.full_res_kernel:
        return model
    if kernel == 3:
        raise InputError("--full-res-kernel 3: the parent's full-resolution stage is pointwise; a 3x3x3 stage "
                         "cannot be made from it (start from a 3x3x3 model)")
    return pointwise_full_res(model)


def _new_segmenter(args):
    """A segmenter with a random decoder (the same start for every --encoder) and a pretrained or random encoder."""
    import torch

    from ..core.errors import InputError
    from ..dense.segmenter import SubtypeSegmenter

    torch.manual_seed(args.seed)
    enc, enc_card = load_pretrained_encoder(args.encoder) if args.encoder else (None, {})
    model = SubtypeSegmenter(encoder_arch=enc.architecture if enc is not None else "DrasCLREncoder",
                             full_res_kernel=args.full_res_kernel or 3)
    if enc is not None:
        if enc.config() != model.encoder.config():
            raise InputError(f"{args.encoder}: encoder config {enc.config()} does not fit the segmenter")
        model.encoder.load_state_dict(enc.state_dict())
    return model, enc_card


def run_calibrate(args) -> int:
    from ..core.device import pick_device
    from ..core.errors import InputError
    from ..core.progress import progress
    from ..dense.calibrate import calibrate_cases
    from ..dense.cohort import find_cases, load_case
    from ..dense.locate import locator_for
    from ..dense.store import lineage, load_segmenter, save_segmenter

    out = Path(args.output)
    if out.exists():
        raise InputError(f"model folder {out} exists already; models are never overwritten (choose a new -o)")
    model, card, folder = load_segmenter(args.model)
    cases = {c.name: c for c in find_cases(args.data)}
    names = args.cases or (card.get("training") or {}).get("val_cases", [])
    if not names or not set(names) <= set(cases):
        if args.cases:
            raise InputError(f"cases not in {args.data}: {sorted(set(names) - set(cases))}")
        names = sorted(cases)
    device = pick_device(args.device)
    raw = []
    for n in progress(names, desc="calibration cases"):
        ct, sub, lungs = load_case(cases[n])
        raw.append((ct, sub, lungs, locator_for(lungs)[0]))
    cal = calibrate_cases(model, raw, device)
    new = {k: v for k, v in card.items() if k not in ("sha256", "inference", "version")}
    new.update({"version": out.name, "inference": cal.card(names), **lineage(card, folder)})
    new.setdefault("metrics", {})["val_volume_macro_dice_disease"] = cal.macro_after
    save_segmenter(model, out, new)
    print(json.dumps({"model": str(out), "class_weights": cal.weights, "macro_dice_before": cal.macro_before,
                      "macro_dice_after": cal.macro_after}))
    return 0


def load_pretrained_encoder(path):
    """A pretrained encoder for the segmenter: a DrasCLREncoder or PlainEncoder file from ``drasclr pretrain`` (any
    method). Anything else (a subtype model, a pretext network, another architecture) is an ``InputError``."""
    from ..core.errors import InputError
    from ..dense.segmenter import ENCODERS
    from ..model import load_model, read_card

    card = read_card(path)
    arch = card.get("architecture")
    if arch not in ENCODERS:
        raise InputError(f"{path}: this is a {arch} model, not a pretrained encoder ({' or '.join(ENCODERS)}) as "
                         f"written by `drasclr pretrain` (any --method)")
    if card.get("kind", "drasclr-pretrained-encoder") != "drasclr-pretrained-encoder":
        raise InputError(f"{path}: model kind {card.get('kind')!r} is not a pretrained encoder")
    return load_model(path, expect=arch)


def run_corrections(args) -> int:
    from ..core.device import pick_device
    from ..core.io import read_ct, read_image
    from ..dense.corrections import finetune_from_corrections

    ct = read_ct(args.ct)
    pred, corrected = read_image(args.prediction), read_image(args.corrected)
    reviewed = read_image(args.reviewed) if args.reviewed else None
    res = finetune_from_corrections(args.model, ct, pred, corrected, max_seconds=args.max_seconds,
                                    out_root=args.output_root, device=pick_device(args.device), reviewed=reviewed)
    print(json.dumps({"model": str(res.model_dir), "corrected_voxels": res.corrected_voxels,
                      "reviewed_voxels": res.reviewed_voxels, "outside_lung_voxels": res.outside_lung_voxels,
                      "before": res.before, "after": res.after, "seconds": round(res.seconds, 1)}, indent=2))
    return 0
