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

import logging
import os
import time
from pathlib import Path

from ..analysis.loaded_model import wants_reference
from ..core.settings import AnalysisSettings
from ..core.settings import add_arguments as add_settings_arguments

log = logging.getLogger(__name__)


def add_parser(sub):
    p = sub.add_parser("analyze", help="emphysema subtypes and per-region numbers for one CT or a cohort",
                       description="Analyze chest CT: a NIfTI/NRRD/MHA file or DICOM series folder, or (batch) a "
                                   "folder of CTs or a .txt list of paths.")
    p.add_argument("input", help="CT file, DICOM series folder, folder of CTs, .txt list, or a DICOMweb server "
                                 "dicomweb[s]://HOST:PORT/PREFIX (with --study, --series)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--lobes", default=None, help="lobe labelmap file or TotalSegmentator folder (always wins); "
                                                  "otherwise lobes are estimated (atlas + fissures)")
    add_settings_arguments(p)
    p.add_argument("--quiet", action="store_true", help="do not print the per-region table")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing non-empty output folder (batch: re-analyse and replace every case)")
    p.add_argument("--dicom", action="store_true",
                   help="also write OUT/dicom/: DICOM SEG of the subtypes and regions and a TID 1500 SR of the "
                        "numbers, referencing the source series (DICOM input only; docs/dicom.md)")
    p.add_argument("--study", default=None, help="StudyInstanceUID of a dicomweb:// input (with --series)")
    p.add_argument("--push", action="store_true",
                   help="dicomweb:// input: store the DICOM SEGs and SR back into the study (STOW-RS; implies "
                        "--dicom)")
    p.set_defaults(run=run)


def _cases(src: Path) -> list[Path] | None:
    """The cases of a batch input, or None for a single CT."""
    from ..core.errors import InputError
    from ..core.io import find_images, is_dicom_folder

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
    from ..core.io import image_stem

    stems = [image_stem(p) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    parents = [p.parent.name if p.is_file() else p.name for p in paths]
    if len(set(parents)) == len(parents):
        return parents
    from ..core.errors import InputError

    raise InputError("batch inputs have repeated names; give each case its own file or folder name")


def _resumable(folder: Path) -> bool:
    """A batch output folder holding only finished case folders (``stats.json``) and our failure summaries."""
    from ..core.outputs import is_bookkeeping

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
    from ..anatomy.lobes.source import check_region_options
    from ..core.errors import InputError
    from ..dicom.web import is_dicomweb

    settings = AnalysisSettings.from_args(args)
    if is_dicomweb(args.input):  # a PACS: retrieve the series, analyze it, optionally store the results back
        from ..dicom.web import analyze_remote

        return analyze_remote(args, lambda a, folder: _run_one(a, folder, settings))
    if args.push or args.study:
        raise InputError("--push and --study apply to a dicomweb:// input")

    src = Path(args.input)
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if args.lobes and not Path(args.lobes).exists():
        raise InputError(f"lobe file not found: {args.lobes}")
    check_region_options(settings.regions, settings.lobes_from)
    cases = _cases(src)
    if args.dicom and cases is not None:
        raise InputError("--dicom applies to one DICOM series, not a batch")
    if cases is None:
        return _run_one(args, src, settings)
    if args.lobes:
        raise InputError("--lobes applies to one CT; batch mode estimates each case's lobes (or --lobes-from a "
                         "tool, or --regions zones)")
    return _run_batch(args, cases, settings)


def _check_resolution(settings: AnalysisSettings, ct) -> None:
    """``--strict``: refuse a scan outside the subtype model card's validated voxel sizes before the model is
    loaded (drasclr.checks.resolution; batch cases are checked one by one inside ``analyze``)."""
    if not settings.strict or not settings.use_model or wants_reference(settings):
        return
    from ..checks.resolution import require_resolution
    from ..core.versions import resolve_model
    from ..model import read_card

    path = resolve_model(settings.model)
    if path.exists():  # a missing model is reported by the loader
        require_resolution(ct, read_card(path))


def _read(src: Path, settings: AnalysisSettings):
    """The CT and the seconds its reading took."""
    from ..core.io import read_ct

    t0 = time.perf_counter()
    ct = read_ct(src, series_uid=settings.series, allow_uneven=settings.allow_uneven_slices,
                 single_slice=wants_reference(settings))
    return ct, time.perf_counter() - t0


def _run_one(args, src: Path, settings: AnalysisSettings) -> int:
    from ..analysis.analyze import analyze_file
    from ..analysis.loaded_model import load_for_analysis
    from ..analysis.stage_plan import track_analysis
    from ..analysis.stats import format_table
    from ..core.outputs import claimed_output

    started = time.perf_counter()
    with claimed_output(args.output, overwrite=args.overwrite):
        # every check on the inputs before the model is loaded: a bad input gives one error line, nothing else
        ct, read_s = _read(src, settings)
        if args.lobes:
            from ..anatomy.regions import read_lobes

            read_lobes(args.lobes, ct, settings.lobes_convention)
        _check_resolution(settings, ct)
        extra = _dicom_writer(args, src, ct)
        model = load_for_analysis(settings)
        with track_analysis(ct, settings, model, lobes_given=bool(args.lobes), started=started):  # stage lines
            result = analyze_file(src, args.output, settings, model, lobes_path=args.lobes, ct=ct,
                                  read_seconds=read_s, extra=extra)
    if not args.quiet:
        print(format_table(result.rows))
    for w in result.warnings:
        log.warning("warning: %s", w["message"])
    _log_corrections(result.calibration, result.harmonization)
    print(f"wrote {args.output}")
    return 0


def _log_corrections(calibration: dict | None, harmonization: dict | None = None) -> None:
    """``info:`` lines on an applied HU correction (offset and its references) and on what harmonization did."""
    from ..acquisition.harmonize import describe as harmonized
    from ..anatomy.hu_calibration import describe

    for line in (describe(calibration), harmonized(harmonization)):
        if line:
            log.info("info: %s", line)


def _dicom_writer(args, src: Path, ct):
    """``--dicom``: the source slices are matched to the grid now (a bad input fails before the model runs); the
    returned function writes ``dicom/`` into the staging folder."""
    if not args.dicom:
        return None
    from ..dicom import require_packages, write_dicom

    require_packages()
    from ..dicom.source import source_slices

    source = source_slices(src, ct, args.series)
    return lambda folder, result: write_dicom(result, source, Path(folder) / "dicom")


def _run_batch(args, cases: list[Path], settings: AnalysisSettings) -> int:
    import csv

    from ..analysis.analyze import analyze_file
    from ..analysis.loaded_model import load_for_analysis
    from ..core.errors import InputError
    from ..core.outputs import check_output_location, claimed_output
    from ..core.progress import progress

    out = Path(args.output)
    check_output_location(out, overwrite=args.overwrite, resumable=_resumable)
    created = not out.exists()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    names = case_names(cases)
    mine = list(zip(cases, names))[rank::world]
    model = load_for_analysis(settings)
    failed: list[tuple[str, str, str]] = []
    for path, name in progress(mine, desc=f"analyze (rank {rank}/{world})" if world > 1 else "analyze"):
        target = out / name
        if (target / "stats.json").exists() and not args.overwrite:
            continue  # done in an earlier run
        try:
            with claimed_output(target, overwrite=args.overwrite, what="case folder"):
                ct, read_s = _read(path, settings)
                res = analyze_file(path, target, settings, model, ct=ct, read_seconds=read_s)
            _log_corrections(res.calibration, res.harmonization)
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
