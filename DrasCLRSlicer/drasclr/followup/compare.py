"""Compare scans of one patient over time: :func:`compare` (in memory) and :func:`compare_files` (the CLI).

Every scan is a :class:`TimePoint` (its CT as analysed, regions, subtype map). The first is the baseline. Each
later scan is registered to the baseline (:mod:`.register`); the baseline's regions are carried onto it (later lung
voxels the carried lobes miss take the nearest lobe), so every time point is measured in the same lobes
(:mod:`.measure`); its subtype map is resampled onto the baseline grid for the change map (:mod:`.changemap`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .. import __version__
from ..analysis.analyze import analyze_file
from ..analysis.stats import nan_to_none, write_csv
from ..anatomy.hu_calibration import apply_offset
from ..core import labels
from ..core.errors import InputError
from ..core.image import CTImage
from ..core.io import read_ct, read_image, write_image
from . import changemap, measure
from .register import LungRegistration, register_lungs
from .report import write_change_report

log = logging.getLogger(__name__)
EMPHYSEMA_HU = -950.0  # the voxel rule without a subtype map (volume-adjusted)
ANALYSIS_FILES = ("regions.nii.gz",)


@dataclass
class TimePoint:
    name: str
    ct: CTImage  # as analysed (HU calibration applied)
    regions: CTImage
    subtypes: CTImage | None = None
    source: str = ""
    folder: Path | None = None

    @property
    def lung(self) -> np.ndarray:
        return self.regions.array > 0


@dataclass
class Comparison:
    timepoints: list[TimePoint]
    rows: list[dict]  # measure.COLUMNS, every scan x region
    change_maps: list[CTImage]  # one per later scan, baseline grid
    registration: list[dict]  # quality per later scan
    carried: list[CTImage] = field(default_factory=list)  # baseline regions on each later scan's grid
    on_baseline: list[CTImage] = field(default_factory=list)  # each later CT resampled onto the baseline grid
    labels_on_baseline: list[np.ndarray] = field(default_factory=list)  # its emphysema labels there


def _carry(reg: LungRegistration, base: TimePoint, later: TimePoint) -> CTImage:
    """The baseline's regions on the later grid, inside the later lung; missed lung voxels take the nearest."""
    carried = reg.to_later(base.regions, later.ct, label=True).array.copy()
    lung = later.lung
    carried[~lung] = 0
    missing = lung & (carried == 0)
    if missing.any() and carried.any():
        idx = ndi.distance_transform_edt(carried == 0, sampling=later.ct.spacing_zyx, return_distances=False,
                                         return_indices=True)
        carried[missing] = carried[tuple(i[missing] for i in idx)]
    return later.ct.with_array(carried.astype(np.uint8))


def _emphysema_labels(tp: TimePoint, ct: CTImage, ratio: float) -> np.ndarray:
    """Subtype labels, or without a subtype map 2 (emphysema) where the volume-adjusted HU < -950, else 1."""
    if tp.subtypes is not None:
        return tp.subtypes.array
    adj = (ct.array.astype(np.float32) + 1000.0) * np.float32(ratio) - 1000.0
    return np.where(adj < EMPHYSEMA_HU, labels.CLE, labels.NORMAL).astype(np.uint8)


def _landmark_error(reg: LungRegistration, pairs: np.ndarray | None) -> dict:
    if pairs is None:
        return {}
    pairs = np.asarray(pairs, float).reshape(-1, 6)
    err = np.linalg.norm(reg.map_points(pairs[:, :3]) - pairs[:, 3:], axis=1)
    before = np.linalg.norm(pairs[:, :3] - pairs[:, 3:], axis=1)
    return {"landmarks": len(pairs), "landmark_error_mm": float(err.mean()), "landmark_error_max_mm": float(err.max()),
            "landmark_distance_before_mm": float(before.mean())}


def compare(timepoints: list[TimePoint], landmarks: list | None = None, deformable: bool = True,
            progress=None) -> Comparison:
    """Measure every time point in the baseline's regions and map the change (``landmarks``: per later scan an
    ``(N, 6)`` array of baseline/later LPS point pairs, or None)."""
    if len(timepoints) < 2:
        raise InputError("compare needs at least two scans")
    base = timepoints[0]
    base_rows = measure.scan_rows(base.ct, base.regions, base.subtypes)
    base_vol = {r["region"]: r["volume_ml"] for r in base_rows}
    rows = [{"scan": 0, "name": base.name, **r} for r in measure.with_deltas(base_rows, base_rows)]
    comp = Comparison(timepoints, [], [], [])
    base_emph = _emphysema_labels(base, base.ct, 1.0)
    for k, tp in enumerate(timepoints[1:], start=1):
        if progress:
            progress(f"registering scan {k} to the baseline")
        reg = register_lungs(base.ct, base.lung, tp.ct, tp.lung, deformable=deformable)
        carried = _carry(reg, base, tp)
        later_rows = measure.with_deltas(measure.scan_rows(tp.ct, carried, tp.subtypes, base_vol), base_rows)
        on_base = reg.to_baseline(tp.ct, base.ct, default=-1000.0)
        lung_on_base = reg.to_baseline(tp.regions, base.ct, label=True).array > 0
        whole = next(r for r in later_rows if r["region"] == "whole_lung")
        later_sub = tp.subtypes if tp.subtypes is not None else None
        if later_sub is not None:
            emph_on_base = reg.to_baseline(later_sub, base.ct, label=True).array
        else:
            emph_on_base = _emphysema_labels(tp, on_base, whole["volume_ratio"])
        change = changemap.change_labels(base_emph, emph_on_base, base.lung)
        measure.with_change_volumes(later_rows, change, base.regions.array, base.ct.voxel_volume_ml)
        rows += [{"scan": k, "name": tp.name, **r} for r in later_rows]
        comp.change_maps.append(base.ct.with_array(change))
        comp.carried.append(carried)
        comp.on_baseline.append(on_base)
        comp.labels_on_baseline.append(emph_on_base)
        comp.registration.append({"scan": k, "name": tp.name, "method": "affine+bspline" if deformable else "affine",
                                  "lung_dice": changemap.dice(lung_on_base, base.lung),
                                  "seconds": round(reg.seconds, 2), "cpu_seconds": round(reg.cpu_seconds, 2),
                                  **_landmark_error(reg, _nth(landmarks, k - 1))})
    for r in rows:
        if r["scan"] == 0:
            r.update({c: math.nan for c in measure.CHANGE_ML})
    comp.rows = rows
    return comp


def _nth(items: list | None, i: int):
    return items[i] if items and i < len(items) else None


# --- files --------------------------------------------------------------------------------------------------
def is_analysis_folder(path: Path) -> bool:
    """An analysis folder (``drasclr analyze``/``compare`` output, or a phantom case) that says where its CT is."""
    return path.is_dir() and (path / "regions.nii.gz").is_file() and (
        (path / "source.json").is_file() or (path / "ct.nii.gz").is_file())


def analysis_ct_path(folder: str | Path) -> Path:
    """The CT an analysis folder analysed: its ``source.json`` (written by ``compare``) or its ``ct.nii.gz``."""
    folder = Path(folder)
    if (folder / "source.json").is_file():
        return Path(json.loads((folder / "source.json").read_text())["ct"])
    return folder / "ct.nii.gz"


def load_analysis(folder: Path, name: str | None = None) -> TimePoint:
    """Reuse an analysis folder: its regions and subtypes, and its CT (``source.json`` or ``ct.nii.gz``), with the
    HU correction its ``stats.json`` recorded."""

    source = analysis_ct_path(folder)
    if not source.exists():
        raise InputError(f"{folder}: the CT it analysed is not found ({source})")
    ct = read_ct(source)
    stats = folder / "stats.json"
    if stats.is_file():
        cal = json.loads(stats.read_text()).get("calibration") or {}
        ct = apply_offset(ct, float(cal.get("applied_hu") or 0.0))

    regions = read_image(folder / "regions.nii.gz")
    subtypes = read_image(folder / "subtypes.nii.gz") if (folder / "subtypes.nii.gz").is_file() else None
    for what, img in (("regions", regions), ("subtypes", subtypes)):
        if img is not None and img.array.shape != ct.array.shape:
            raise InputError(f"{folder}: {what}.nii.gz is not on the grid of its CT {source}")
    return TimePoint(name or folder.name, ct, regions, subtypes, str(source), folder)


def analyze_timepoint(path: Path, out: Path, name: str, settings=None, model=None) -> TimePoint:
    """Analyze one scan (file or DICOM folder) into ``out`` as ``settings`` say (an ``AnalysisSettings``) with
    ``model`` (``drasclr.analysis.loaded_model.load_for_analysis``), and return it as a time point."""

    result = analyze_file(path, out, settings, model)
    (out / "source.json").write_text(json.dumps({"ct": str(Path(path).resolve())}) + "\n")
    return TimePoint(name, result.ct, result.regions, result.subtypes, str(path), out)


def read_landmarks(path: str | Path) -> np.ndarray:
    """A CSV of point pairs: base_x, base_y, base_z, followup_x, followup_y, followup_z (LPS mm; header line)."""
    try:
        a = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"landmarks {path}: {exc}") from None
    if a.shape[1] != 6 or not np.isfinite(a).all():
        raise InputError(f"landmarks {path}: need 6 finite numbers a line (base x y z, follow-up x y z)")
    return a


def write_comparison(comp: Comparison, out: Path, info: dict, report: bool = True) -> None:
    """change.csv, change.json, change_map.nii.gz (baseline vs the last scan; ``change_map_scan_K.nii.gz`` for
    each later scan when there are several) and report.html into ``out`` (an existing staging folder)."""
    write_csv([{**r, "scan": str(r["scan"])} for r in comp.rows], out / "change.csv", measure.COLUMNS)
    scans = [{"scan": k, "name": tp.name, "source": tp.source} for k, tp in enumerate(comp.timepoints)]
    doc = {"drasclr_version": __version__, "scans": scans, "columns": measure.COLUMNS,
           "change_map": {"file": "change_map.nii.gz", "labels": changemap.NAMES},
           "registration": comp.registration, **info, "rows": comp.rows}
    (out / "change.json").write_text(json.dumps(nan_to_none(doc), indent=1, default=float) + "\n")
    write_image(comp.change_maps[-1], out / "change_map.nii.gz", dtype=np.uint8)
    if len(comp.change_maps) > 1:
        for k, cm in enumerate(comp.change_maps, start=1):
            write_image(cm, out / f"change_map_scan_{k}.nii.gz", dtype=np.uint8)
    if report:

        write_change_report(out, comp)
