"""``drasclr analyze INPUT -o OUT [--model M] [--device auto|cpu|cuda] [--lobes LOBES] [--regions lobes|zones]``.

INPUT is one CT (NIfTI/NRRD/MHA file, or a DICOM folder searched recursively for its largest series), or, for
batch mode, a folder holding CT files or a ``.txt`` list of paths: each case goes to ``OUT/<case>/``; finished
cases are skipped (resumable); under ``torchrun`` the cases are sharded across processes (rank r takes cases
r, r + W, ...).

Output folders: an existing non-empty ``OUT`` is refused unless ``--overwrite`` (then replaced as a whole); a
batch ``OUT`` that holds only finished case folders (and our summaries) is resumed. Batch exit codes: 0 all cases
done, 3 some failed (``OUT/failed_cases.csv``: case, input, reason; failed cases leave no folder), 2 none could be
analysed (nothing written).
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
    p.add_argument("--lobes", default=None, help="lobe labelmap file or TotalSegmentator folder (always wins); "
                                                  "otherwise lobes are estimated (atlas + fissures)")
    p.add_argument("--regions", default="lobes", choices=["lobes", "zones"],
                   help="statistics per lobe (default) or per zone (thirds of each lung, 11-16)")
    p.add_argument("--lobes-from", default=None, choices=["lungmask", "totalsegmentator"],
                   help="lobes from this tool when it is installed with its weights (instead of the estimate)")
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
    p.add_argument("--density-veto", action=argparse.BooleanOptionalAction, default=None,
                   help="turn emphysema called in normal-density lung (under 15 %% of the lung within 20 mm below "
                        "-950 HU) normal (default: as the model card says; docs/demo_model.md)")
    p.add_argument("--harmonize", default="auto", choices=["auto", "off"],
                   help="acquisition harmonization: auto brings a sharp-kernel or noisy scan to the training noise "
                        "look before the model, and adds harmonized_* densitometry columns; off only measures "
                        "(default auto; docs/acquisition.md)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a scan whose voxel size is outside the model's validated range (default: analyze "
                        "it and flag the subtype map)")
    p.add_argument("--quiet", action="store_true", help="do not print the per-region table")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty output folder (batch: re-analyse and replace every case)")
    p.add_argument("--allow-uneven-slices", action="store_true",
                   help="accept a DICOM series with missing slices or uneven spacing: resample it to its median step")
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


def _resumable(folder: Path) -> bool:
    """A batch output folder holding only finished case folders (``stats.json``) and our failure summaries."""
    from ..outputs import is_bookkeeping

    for p in folder.iterdir():
        if is_bookkeeping(p.name):
            continue
        if p.is_dir() and (p / "stats.json").is_file():
            continue
        if p.is_file() and p.name.startswith("failed_cases") and p.suffix == ".csv":
            continue
        return False
    return True


def run(args) -> int:
    from ..errors import InputError
    from ..validate import check_range

    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    check_range(args.batch_size, "--batch-size", lo=1, hi=65536)
    if args.lobes and not Path(args.lobes).exists():
        raise InputError(f"lobe file not found: {args.lobes}")
    from ..lobes.source import check_region_options

    check_region_options(args.regions, args.lobes_from)
    cases = _cases(src)
    if cases is None:
        return _run_one(args, src)
    if args.lobes:
        raise InputError("--lobes applies to one CT; batch mode estimates each case's lobes (or --lobes-from a "
                         "tool, or --regions zones)")
    return _run_batch(args, cases)


def _load_model(args, device) -> dict:
    """The model keyword arguments of ``analyze_file``; logged only after the inputs were validated."""
    from ..device import describe_device

    kwargs = dict(model=None, device=device, model_card=None, batch_size=args.batch_size, tta=args.tta,
                  model_dir=None, regions=args.regions, lobes_from=args.lobes_from,
                  hu_calibration=args.hu_calibration, strict=args.strict, density_veto=args.density_veto,
                  harmonize=args.harmonize)
    if args.no_model:
        return kwargs
    if _reference(args):
        from ..reference.store import load_reference

        model, card, folder = load_reference(args.model)
        log.info("model %s (reference local-histogram kNN, CPU)", card.get("version"))
        return {**kwargs, "model": model, "model_card": card, "model_dir": folder}
    from ..dense.store import load_segmenter
    from ..versions import DEMO_MODEL

    if args.model is None and not DEMO_MODEL.exists():
        log.warning("bundled demo model not found (build it with `make demo-model`): densitometry only")
        return kwargs
    model, card, folder = load_segmenter(args.model, device)
    log.info("model %s on %s", card.get("version", card.get("name")), describe_device(device))
    return {**kwargs, "model": model, "model_card": card, "model_dir": folder}


def _check_resolution(args, ct) -> None:
    """``--strict``: refuse a scan outside the subtype model card's validated voxel sizes before the model is
    loaded (drasclr.guard; batch cases are checked one by one inside ``analyze``)."""
    if not args.strict or args.no_model or _reference(args):
        return
    from ..guard import require_resolution
    from ..model import read_card
    from ..versions import resolve_model

    path = resolve_model(args.model)
    if path.exists():  # a missing model is reported by the loader
        require_resolution(ct, read_card(path))


def _reference(args) -> bool:
    """The reference classifier (``--model cip-lh``) was asked for: it also reads single slices."""
    from ..reference.store import is_reference_model

    return not args.no_model and is_reference_model(args.model)


def _run_one(args, src: Path) -> int:
    from ..analyze import analyze_file
    from ..device import pick_device
    from ..io import read_ct
    from ..outputs import claimed_output
    from ..stats import format_table

    device = pick_device(args.device)
    with claimed_output(args.output, overwrite=args.overwrite):
        # every check on the inputs before the model is loaded: a bad input gives one error line, nothing else
        t0 = time.perf_counter()
        ct = read_ct(src, series_uid=args.series, allow_uneven=args.allow_uneven_slices,
                     single_slice=_reference(args))
        read_s = time.perf_counter() - t0
        if args.lobes:
            from ..regions import read_lobes

            read_lobes(args.lobes, ct, args.lobes_convention)
        _check_resolution(args, ct)
        result = analyze_file(src, args.output, lobes_path=args.lobes, lobes_convention=args.lobes_convention,
                              ct=ct, read_seconds=read_s, **_load_model(args, device))
    if not args.quiet:
        print(format_table(result.rows))
    for w in result.warnings:
        log.warning("warning: %s", w["message"])
    print(f"wrote {args.output}")
    return 0


def _run_batch(args, cases: list[Path]) -> int:
    import csv

    from ..analyze import analyze_file
    from ..device import pick_device
    from ..errors import InputError
    from ..io import read_ct
    from ..outputs import check_output_location, claimed_output
    from ..progress import progress

    device = pick_device(args.device)
    out = Path(args.output)
    check_output_location(out, overwrite=args.overwrite, resumable=_resumable)
    created = not out.exists()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    names = case_names(cases)
    mine = list(zip(cases, names))[rank::world]
    kwargs = _load_model(args, device)
    failed: list[tuple[str, str, str]] = []
    for path, name in progress(mine, desc=f"analyze (rank {rank}/{world})" if world > 1 else "analyze"):
        target = out / name
        if (target / "stats.json").exists() and not args.overwrite:
            continue  # done in an earlier run
        try:
            with claimed_output(target, overwrite=args.overwrite, what="case folder"):
                t0 = time.perf_counter()
                ct = read_ct(path, series_uid=args.series, allow_uneven=args.allow_uneven_slices,
                             single_slice=_reference(args))
                analyze_file(path, target, ct=ct, read_seconds=time.perf_counter() - t0, **kwargs)
        except InputError as exc:
            failed.append((name, str(path), " ".join(str(exc).split())))
            log.warning("skipped %s: %s", name, failed[-1][2])
        except (MemoryError, RuntimeError, ValueError, OSError) as exc:  # one bad case never stops a cohort
            failed.append((name, str(path), f"internal error {type(exc).__name__}: {' '.join(str(exc).split())}"))
            log.warning("failed %s: %s", name, failed[-1][2], exc_info=args.verbose)
    done = len(mine) - len(failed)
    summary = out / ("failed_cases.csv" if world == 1 else f"failed_cases_rank{rank}.csv")
    if failed and done == 0 and (created or not out.exists() or not any(out.iterdir())):
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        name, _, reason = failed[0]
        raise InputError(f"none of the {len(mine)} cases could be analysed (first: {name}: {reason})")
    print(f"analyzed {done}/{len(mine)} cases into {out}" + (f" (rank {rank})" if world > 1 else ""))
    if not failed:
        summary.unlink(missing_ok=True)  # an earlier run's failures are resolved
        return 0
    tmp = summary.with_name(f".{summary.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "input", "reason"])
        w.writerows(failed)
    os.replace(tmp, summary)
    print(f"{len(failed)} case(s) failed; see {summary}")
    return 3
