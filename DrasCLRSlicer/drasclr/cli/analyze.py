"""``drasclr analyze INPUT -o OUT [--model M] [--device auto|cpu|cuda] [--lobes LOBES]``.

INPUT is one CT (NIfTI/NRRD/MHA file, or a DICOM folder searched recursively for its largest series), or, for
batch mode, a folder holding CT files or a ``.txt`` list of paths: each case goes to ``OUT/<case>/``; finished
cases are skipped (resumable); under ``torchrun`` the cases are sharded across processes (rank r takes cases
r, r + W, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser("analyze", help="emphysema subtypes and per-region numbers for one CT or a cohort",
                       description="Analyze chest CT: a NIfTI/NRRD/MHA file or DICOM series folder, or (batch) a "
                                   "folder of CTs or a .txt list of paths.")
    p.add_argument("input", help="CT file, DICOM series folder, folder of CTs, or .txt list")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default=None, help="model folder or .safetensors (default: the bundled demo model), or "
                                                 "cip-lh: the reference classifier trained on real expert labels "
                                                 "(also reads single axial slices and sparse series)")
    p.add_argument("--no-model", action="store_true", help="densitometry only: no subtype map, no embedding")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--lobes", default=None, help="lobe labelmap file or TotalSegmentator folder; zones otherwise")
    p.add_argument("--lobes-convention", default="auto", choices=["auto", "ltrc", "totalseg", "cip"],
                   help="label convention of --lobes (default: detect)")
    p.add_argument("--series", default=None, help="DICOM SeriesInstanceUID when the folder holds several")
    p.add_argument("--batch-size", type=int, default=None, help="patches per forward pass (default: from memory)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="test-time augmentation: also predict mirrored left-right and average (default; --no-tta about "
                        "halves the subtype step, a little less accurate)")
    p.add_argument("--hu-calibration", default="auto", choices=["auto", "air", "none"],
                   help="scanner HU calibration from outside (or tracheal) air: auto corrects an offset beyond "
                        "±20 HU, air always corrects, none only measures (default auto; see docs/calibration.md)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a scan whose voxel size is outside the model's validated range (default: analyze "
                        "it and flag the subtype map)")
    p.add_argument("--quiet", action="store_true", help="do not print the per-region table")
    p.set_defaults(run=run)


def _cases(src: Path) -> list[Path] | None:
    """The cases of a batch input, or None for a single CT."""
    from ..errors import InputError
    from ..io import find_images, is_dicom_folder

    if src.is_file() and src.suffix.lower() == ".txt":
        # relative paths are relative to the list's own folder (so a list travels with its cohort)
        paths = [src.parent / line.strip() for line in src.read_text().splitlines() if line.strip()
                 and not line.startswith("#")]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise InputError(f"{len(missing)} listed inputs not found, e.g. {missing[0]}")
        return paths
    if src.is_dir() and not is_dicom_folder(src):
        files = [p for p in find_images(src) if p.is_file()]
        return files or None  # a folder without image files is read as one DICOM study (largest series)
    return None


def case_names(paths: list[Path]) -> list[str]:
    """Output folder names: file stems, or parent folder names when stems repeat (``case_000/ct.nii.gz``)."""
    from ..io import image_stem

    stems = [image_stem(p) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    parents = [p.parent.name if p.is_file() else p.name for p in paths]
    if len(set(parents)) == len(parents):
        return parents
    from ..errors import InputError

    raise InputError("batch inputs have repeated names; give each case its own file or folder name")


def run(args) -> int:
    from ..analyze import analyze_file
    from ..device import describe_device, pick_device
    from ..errors import InputError
    from ..progress import progress
    from ..stats import format_table

    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if args.lobes and not Path(args.lobes).exists():
        raise InputError(f"lobe file not found: {args.lobes}")
    from ..reference.store import is_reference_model, load_reference

    device = pick_device(args.device)
    cases = _cases(src)
    reference = not args.no_model and is_reference_model(args.model)
    ct = read_s = None
    if cases is None:  # validate the one input before loading any model (bad input -> one error line)
        from ..io import read_ct

        t0 = time.perf_counter()
        ct = read_ct(src, series_uid=args.series, single_slice=reference)
        read_s = time.perf_counter() - t0
    model = card = folder = None
    if reference:
        model, card, folder = load_reference(args.model)
        log.info("model %s (reference local-histogram kNN, CPU)", card.get("version"))
    elif not args.no_model:
        from ..dense.store import load_segmenter
        from ..versions import DEMO_MODEL

        if args.model is None and not DEMO_MODEL.exists():
            log.warning("bundled demo model not found (build it with `make demo-model`): densitometry only")
        else:
            model, card, folder = load_segmenter(args.model, device)
            if args.strict and ct is not None:
                from ..guard import require_resolution

                require_resolution(ct, card)  # refused before any work (batch cases are checked one by one)
            log.info("model %s on %s", card.get("version", card.get("name")), describe_device(device))
    kwargs = dict(model=model, device=device, model_card=card, batch_size=args.batch_size, tta=args.tta,
                  model_dir=folder, hu_calibration=args.hu_calibration, strict=args.strict)
    if cases is None:
        result = analyze_file(src, args.output, lobes_path=args.lobes, lobes_convention=args.lobes_convention,
                              ct=ct, read_seconds=read_s, **kwargs)
        if not args.quiet:
            print(format_table(result.rows))
        for w in result.warnings:
            log.warning("warning: %s", w["message"])
        print(f"wrote {args.output}")
        return 0
    if args.lobes:
        raise InputError("--lobes applies to one CT; batch mode uses zones (or run cases one by one)")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    names = case_names(cases)
    mine = list(zip(cases, names))[rank::world]
    out = Path(args.output)
    failed = []
    for path, name in progress(mine, desc=f"analyze (rank {rank}/{world})" if world > 1 else "analyze"):
        target = out / name
        if (target / "stats.json").exists():
            continue  # done in an earlier run
        try:
            analyze_file(path, target, **kwargs)
        except InputError as exc:
            failed.append(f"{name}: {exc}")
            log.warning("skipped %s: %s", name, exc)
    print(f"analyzed {len(mine) - len(failed)}/{len(mine)} cases into {out}" + (f" (rank {rank})" if world > 1 else ""))
    if failed:
        (out / f"failed_rank{rank}.txt").write_text("\n".join(failed) + "\n")
        return 1
    return 0
