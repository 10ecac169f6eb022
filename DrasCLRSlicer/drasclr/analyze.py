"""``drasclr analyze``: one CT in, subtype map + regions + per-region numbers out (on the input's own grid).

Stages: lung mask -> regions (``--lobes`` file, else estimated lobes, or zones 11–16 on request; see
:mod:`drasclr.lobes.source`) -> atlas registration (anatomical locations) -> dense subtype prediction -> voxel
uncertainty and review queue -> patient embedding -> statistics -> files. ``analyze`` works on images
in memory (the Slicer module calls it); ``analyze_file`` reads and writes files (the CLI).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .calibration import calibrate_and_segment
from .errors import InputError
from .guard import check_resolution, require_resolution
from .image import CTImage
from .io import read_ct, write_image
from .lobes.source import Regions, choose_regions
from .lungs import segment_lung_slices
from .outputs import staged_dir
from .regions import lungs_as_regions, read_lobes
from .stats import COLUMNS, UNCERTAINTY_COLUMN, region_stats, write_csv, write_json

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Everything one analysis produces, on the CT's grid."""

    ct: CTImage
    lungs: CTImage
    regions: CTImage
    region_kind: str  # "lobes" or "zones"
    rows: list[dict]
    subtypes: CTImage | None = None
    embedding: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model_card: dict | None = None
    model_dir: Path | None = None  # the folder the model was loaded from (recorded in stats.json)
    device: str = "cpu"
    tta: bool = False  # mirrored test-time augmentation was used
    calibration: dict | None = None  # drasclr.calibration: air/blood measured, offset applied
    resolution: dict | None = None  # drasclr.guard: voxel size vs the model's validated range (with a model)
    # {"code", "message"}: regions ("regions"), HU calibration and resolution guard (docs/calibration.md)
    warnings: list[dict] = field(default_factory=list)
    uncertainty: CTImage | None = None  # uint8 0..100 (drasclr.dense.uncertainty), with a model
    uncertainty_kind: str | None = None
    review: object | None = None  # drasclr.review.ReviewQueue, with a model
    region_source: str = "zones"  # file, atlas+fissures, lungmask, totalsegmentator or zones
    density_veto: dict | None = None  # drasclr.dense.density: the rule applied and the voxels it turned normal
    harmonization: dict | None = None  # drasclr.harmonize: noise/sharpness measured, what was done


@contextlib.contextmanager
def _stage(timings: dict, name: str):
    """Record the wall time of a ``with`` block as ``timings[name + "_s"]``."""
    t0 = time.perf_counter()
    yield
    timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)


def analyze(ct: CTImage, lobes: CTImage | None = None, model=None, device="cpu", model_card: dict | None = None,
            batch_size: int | None = None, tta: bool = True, model_dir: str | Path | None = None,
            regions: str = "lobes", lobes_from: str | None = None, hu_calibration: str = "auto",
            strict: bool = False, density_veto: bool | None = None, harmonize: str = "auto") -> Analysis:
    """Run the analysis on a CT in memory. ``model``: a loaded ``SubtypeSegmenter`` or the reference classifier
    (``drasclr.reference``: slice by slice, no registration, no embedding; reads single slices too) (None:
    densitometry only); ``tta``: also predict every patch mirrored left-right and average (default; about twice
    the subtype time); ``regions``: ``lobes`` (``lobes`` if given, else from ``lobes_from`` — ``lungmask`` or
    ``totalsegmentator`` when installed — else estimated) or ``zones``; a given ``lobes`` labelmap always wins;
    ``hu_calibration``: auto | air | none (drasclr.calibration; the corrected CT is what everything after sees);
    ``strict``: refuse (``InputError``) a scan whose voxels are outside the DrasCLR model card's validated range
    instead of flagging its subtype map (drasclr.guard); ``density_veto``: turn emphysema called in normal-density
    lung normal (drasclr.dense.density) — None: as the model card says, False: never, True: always;
    ``harmonize``: auto | off (drasclr.harmonize: the model and the ``harmonized_*`` densitometry see the scan
    brought to the training noise look; the contract densitometry columns stay on the calibrated scan)."""
    timings: dict[str, float] = {}
    stage = functools.partial(_stage, timings)
    reference = is_reference(model)
    thin = ct.array.shape[ct.superior_axis()[0]] < 3  # a single slice (or two): no cranio-caudal extent
    if thin and model is not None and not reference:
        raise InputError(f"the image has {ct.array.shape[ct.superior_axis()[0]]} slice(s): the 3-D subtype model "
                         "needs a volume (single slices: --model cip-lh)")
    resolution = None
    if model is not None and not reference:
        resolution = (require_resolution if strict else check_resolution)(ct, model_card)
    with stage("lung_mask"):
        # segment_lungs, or slice by slice for fewer than 3 slices; on the HU-corrected scan
        ct, lungs, calibration = calibrate_and_segment(ct, hu_calibration, segment=segment_lung_slices)
    from .harmonize import for_analysis

    with stage("harmonize"):
        ct_seen, harmonized = for_analysis(ct, lungs, harmonize, reference)
    transform = None
    if model is not None and not reference:  # one atlas registration for the model's locations and the lobes
        from .registration import register_to_atlas

        with stage("registration"):
            transform = register_to_atlas(lungs)
    with stage("regions"):
        if thin and lobes is None:  # no cranio-caudal extent (lobes, thirds): the two lungs
            chosen = Regions(lungs_as_regions(lungs), "lungs", "lungs")
        else:
            chosen = choose_regions(ct, lungs, lobes, regions, lobes_from, device=str(device), affine=transform)
    regions_image, kind = chosen.image, chosen.kind
    subtypes = embedding = uncertainty = review = kind_u = veto_info = None
    if reference:
        from .reference.predict import predict_subtypes

        with stage("subtypes"):
            subtypes = predict_subtypes(ct_seen, lungs, model)
    elif model is not None:
        import torch

        from .dense import predict
        from .dense.infer import card_class_weights, patient_embedding
        from .dense.locate import locator_for

        device = torch.device(device)
        locator, _ = locator_for(lungs, transform)
        with stage("subtypes"):
            pred = predict(ct_seen, lungs, model, device, locator=locator, tta=tta, batch_size=batch_size,
                           class_weights=card_class_weights(model_card))
            subtypes = pred.subtypes
        from .dense.density import DensityVeto

        veto = DensityVeto.for_analysis(density_veto, model_card)
        if veto is not None:
            with stage("density"):
                subtypes, veto_info = veto.apply(subtypes, ct_seen)
        with stage("uncertainty"):
            from .dense.uncertainty import DEFAULT_KIND, voxel_uncertainty
            from .review import build_queue

            kind_u = DEFAULT_KIND if (tta or DEFAULT_KIND != "disagreement") else "entropy"
            voxel_u = voxel_uncertainty(pred.probabilities, ct_seen, lungs, subtypes, kind=kind_u)
            uncertainty = voxel_u.image()
            review = build_queue(regions_image, subtypes, voxel_u.expected_errors(), voxel_u.full())
            del voxel_u
        with stage("embedding"):
            embedding = patient_embedding(model, pred.probabilities.grid, transform, device, batch_size)
        del pred
    with stage("stats"):
        rows = region_stats(ct, regions_image, subtypes)
        if harmonized.applied:  # the harmonized_* columns: the densitometry of the harmonized scan
            from .harmonize import add_harmonized

            rows = add_harmonized(rows, ct_seen, regions_image)
        if kind == "lungs":
            rows = [r for r in rows if r["region"] in ("left_lung", "right_lung", "whole_lung")]
        if uncertainty is not None:
            from .dense.uncertainty import region_mean_uncertainty

            rows = region_mean_uncertainty(uncertainty, regions_image, rows)
    return Analysis(ct=ct, lungs=lungs, regions=regions_image, region_kind=kind, rows=rows, subtypes=subtypes,
                    embedding=embedding, timings=timings, model_card=model_card,
                    model_dir=Path(model_dir) if model_dir is not None else None, device=str(device),
                    tta=bool(tta and model is not None and not reference), uncertainty=uncertainty,
                    uncertainty_kind=kind_u, review=review, region_source=chosen.source, density_veto=veto_info,
                    harmonization=harmonized.to_json(),
                    calibration=calibration.to_json(), resolution=None if resolution is None else resolution.to_json(),
                    warnings=[{"code": "regions", "message": w} for w in chosen.warnings] + calibration.warnings
                    + ([resolution.warning()] if resolution and not resolution.in_range else []))


def is_reference(model) -> bool:
    """True for the reference classifier (``drasclr.reference``), which needs neither torch nor an atlas."""
    if model is None:
        return False
    from .reference.knn import LocalHistogramKNN

    return isinstance(model, LocalHistogramKNN)


def write_analysis(result: Analysis, out_dir: str | Path, report: bool = True) -> Path:
    """Write the output files of an analysis into ``out_dir`` all-or-nothing."""
    out_dir = Path(out_dir)
    info = {"drasclr_version": __version__, "region_kind": result.region_kind,
            "region_source": result.region_source, "device": result.device,
            "grid": {"size_xyz": list(result.ct.shape_xyz), "spacing_mm": list(result.ct.spacing)},
            "timings_s": result.timings}
    if result.model_card:
        info["model"] = {k: result.model_card.get(k) for k in ("name", "version", "kind", "sha256", "metrics")}
        info["model"]["folder"] = str(result.model_dir.resolve()) if result.model_dir is not None else None
        info["model"]["tta"] = result.tta
    if result.calibration is not None:
        info["calibration"] = result.calibration
    if result.resolution is not None:
        info["resolution"] = result.resolution
    if result.density_veto is not None:
        info["density_veto"] = result.density_veto
    if result.harmonization is not None:
        info["harmonization"] = result.harmonization
    info["warnings"] = result.warnings
    columns = COLUMNS
    if result.uncertainty is not None:
        from .dense.uncertainty import SCALE

        info["uncertainty"] = {"kind": result.uncertainty_kind, "file": "uncertainty.nii.gz",
                               "scale": f"uint8, uncertainty x {SCALE} (0 certain .. {SCALE} most uncertain)"}
        columns = [*COLUMNS, UNCERTAINTY_COLUMN]
    if result.rows and "harmonized_laa950_pct" in result.rows[0]:
        from .harmonize import HARMONIZED_COLUMNS

        columns = [*columns, *HARMONIZED_COLUMNS]
    with staged_dir(out_dir) as tmp:
        write_image(result.regions, tmp / "regions.nii.gz", dtype=np.uint8)
        if result.subtypes is not None:
            write_image(result.subtypes, tmp / "subtypes.nii.gz", dtype=np.uint8)
        if result.embedding is not None:
            np.save(tmp / "embedding.npy", result.embedding)
        if result.uncertainty is not None:
            write_image(result.uncertainty, tmp / "uncertainty.nii.gz", dtype=np.uint8)
        if result.review is not None:
            from .review import write_review

            write_image(result.review.labels, tmp / "review_units.nii.gz", dtype=np.uint16)
            write_review(result.review, tmp / "review.json", {"uncertainty_kind": result.uncertainty_kind})
        write_csv(result.rows, tmp / "stats.csv", columns)
        write_json(result.rows, tmp / "stats.json", info, columns)
        if report:
            from .report import write_report

            write_report(tmp, result.ct, result.subtypes, result.regions, result.rows, info)
    return out_dir


def analyze_file(path: str | Path, out_dir: str | Path, lobes_path: str | Path | None = None,
                 series_uid: str | None = None, model=None, device="cpu", model_card: dict | None = None,
                 lobes_convention: str = "auto", batch_size: int | None = None,
                 ct: CTImage | None = None, tta: bool = True, model_dir: str | Path | None = None,
                 read_seconds: float | None = None, regions: str = "lobes", lobes_from: str | None = None,
                 hu_calibration: str = "auto", strict: bool = False, density_veto: bool | None = None,
                 harmonize: str = "auto") -> Analysis:
    """Read (unless ``ct`` is given: then ``read_seconds`` is the time its reading took), analyze and write one
    case."""
    t0 = time.perf_counter()
    ct = ct if ct is not None else read_ct(path, series_uid=series_uid, single_slice=is_reference(model))
    read_s = read_seconds if read_seconds is not None else time.perf_counter() - t0
    lobes = read_lobes(lobes_path, ct, lobes_convention) if lobes_path else None
    result = analyze(ct, lobes, model=model, device=device, model_card=model_card, batch_size=batch_size, tta=tta,
                     model_dir=model_dir, regions=regions, lobes_from=lobes_from, hu_calibration=hu_calibration,
                     strict=strict, density_veto=density_veto, harmonize=harmonize)
    result.timings = {"read_s": round(read_s, 3), **result.timings}
    write_analysis(result, out_dir)
    return result
