"""``drasclr analyze``: one CT in, subtype map + regions + per-region numbers out (on the input's own grid).

Stages: HU calibration and lung mask -> atlas registration (anatomical locations; with a subtype model) ->
regions (a lobe file, else lobes from a tool or estimated, zones 11-16 on request, the two lungs for single
slices; see :mod:`drasclr.anatomy.lobes.source`) -> subtype map (dense model, or the reference classifier slice by
slice) and the card's density rule -> voxel uncertainty and review queue -> patient embedding -> statistics ->
files. What runs is said by one :class:`~drasclr.core.settings.AnalysisSettings`. ``analyze`` works on images in
memory (tests, scripts, the Slicer Logic's in-process path); ``analyze_file`` reads and writes files (the command
line, and through it both shells' child processes); ``write_analysis`` writes an ``Analysis`` as that folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..acquisition.harmonize import Harmonization, for_analysis
from ..acquisition.harmonize import describe as describe_harmonization
from ..anatomy.hu_calibration import apply_offset, calibrate_and_segment, describe
from ..anatomy.lobes.source import Regions, choose_regions
from ..anatomy.lungs import segment_lung_slices
from ..anatomy.regions import lungs_as_regions, read_lobes
from ..anatomy.registration import register_to_atlas
from ..checks.resolution import check_resolution, require_resolution
from ..core.errors import InputError
from ..core.image import CTImage
from ..core.io import read_ct, write_image
from ..core.outputs import staged_dir
from ..core.settings import AnalysisSettings
from ..core.stages import note_grid, reported
from ..core.threads import beside
from . import thin_slices
from .loaded_model import LoadedModel
from .stats import (
    COLUMNS,
    HARMONIZED_COLUMNS,
    UNCERTAINTY_COLUMN,
    UNCORRECTED_COLUMNS,
    region_stats,
    with_densitometry_of,
    with_uncorrected,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    """Everything one analysis produces, on the CT's grid."""

    ct: CTImage
    lungs: CTImage
    regions: CTImage
    region_kind: str  # "lobes", "zones" or "lungs" (single slices)
    rows: list[dict]
    subtypes: CTImage | None = None
    embedding: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    model_card: dict | None = None
    model_dir: Path | None = None  # the folder the model was loaded from (recorded in stats.json)
    device: str = "cpu"
    tta: bool = False  # mirrored test-time augmentation was used
    calibration: dict | None = None  # drasclr.anatomy.hu_calibration: air/blood measured, offset applied
    resolution: dict | None = None  # drasclr.checks.resolution: voxel size vs the model's validated range
    # {"code", "message"}: regions ("regions"), HU calibration and resolution guard (docs/calibration.md)
    warnings: list[dict] = field(default_factory=list)
    uncertainty: CTImage | None = None  # uint8 0..100 (drasclr.dense.uncertainty), with a model
    uncertainty_kind: str | None = None
    review: object | None = None  # drasclr.analysis.review.ReviewQueue, with a model
    region_source: str = "zones"  # file, atlas+fissures, lungmask, totalsegmentator or zones
    density_veto: dict | None = None  # drasclr.dense.density: the rule applied and the voxels it turned normal
    settings: dict | None = None  # AnalysisSettings.to_json(): what was asked for
    harmonization: dict | None = None  # drasclr.acquisition.harmonize: noise/sharpness measured, what was done
    analysis_grid: dict | None = None  # drasclr.analysis.thin_slices: the slab grid, or auto's native choice


@contextlib.contextmanager
def _stage(timings: dict, name: str):
    """Record the wall time of a ``with`` block as ``timings[name + "_s"]``."""
    t0 = time.perf_counter()
    with reported(name):  # the stage's name and the time left, to the shells (drasclr.core.stages)
        yield
    timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)


def analyze(ct: CTImage, lobes: CTImage | None = None, model: LoadedModel | None = None,
            settings: AnalysisSettings | None = None) -> Analysis:
    """Run the analysis on a CT in memory, as ``settings`` say (:class:`~drasclr.core.settings.AnalysisSettings`; the
    defaults of ``drasclr analyze``). ``model``: from :func:`~.loaded_model.load_for_analysis`: a subtype
    model, or the reference classifier (slice by slice, no registration, no embedding; reads single slices too);
    None: densitometry only. A given ``lobes`` labelmap always wins over ``settings.regions``/``lobes_from``. The
    HU-corrected CT (drasclr.anatomy.hu_calibration) is what every stage after the lung mask sees."""
    settings = settings or AnalysisSettings()
    timings: dict[str, float] = {}
    stage = functools.partial(_stage, timings)
    reference = model is not None and model.reference
    dense = model is not None and not reference
    card = model.card if model is not None else None
    thin = ct.array.shape[ct.superior_axis()[0]] < 3  # a single slice (or two): no cranio-caudal extent
    if thin and dense:
        raise InputError(f"the image has {ct.array.shape[ct.superior_axis()[0]]} slice(s): the 3-D subtype model "
                         "needs a volume (single slices: --model cip-lh)")
    raw = ct  # as read: its densitometry is written beside the corrected one when HU are corrected
    slabs, grid = (None, None) if thin or reference else thin_slices.decide(ct, settings.thin_slices)
    given = lobes  # a lobe file on the CT's grid: the native regions come from it, not from its slab copy
    if slabs is not None:  # sub-millimetre slices: every stage up to the stats on slabs of about 2 mm
        ct = slabs.down(ct)
        note_grid(ct)  # the stage estimates follow the slab grid
        lobes = None if lobes is None else slabs.pick(lobes)
    resolution = (require_resolution if settings.strict else check_resolution)(ct, card) if dense else None
    with stage("lung_mask"):
        # segment_lungs, or slice by slice for fewer than 3 slices; on the HU-corrected scan
        ct, lungs, calibration = calibrate_and_segment(ct, settings.hu_calibration, segment=segment_lung_slices)
    with stage("harmonize"):  # what the model (and the harmonized_* densitometry) sees; the contract numbers: ct
        seen, harmonized = for_analysis(ct, lungs, settings.harmonize, reference)
    transform = None
    if dense:  # one atlas registration for the model's locations and the lobes
        with stage("registration"):
            transform = register_to_atlas(lungs)
    with stage("regions"):
        if thin and lobes is None:  # no cranio-caudal extent (lobes, thirds): the two lungs
            chosen = Regions(lungs_as_regions(lungs), "lungs", "lungs")
        else:
            device = str(model.device) if dense else "cpu"
            chosen = choose_regions(ct, lungs, lobes, settings.regions, settings.lobes_from, device=device,
                                    affine=transform)
    result = Analysis(ct=ct, lungs=lungs, regions=chosen.image, region_kind=chosen.kind, rows=[], timings=timings,
                      model_card=card, model_dir=model.folder if model is not None else None,
                      device=str(model.device) if model is not None else "cpu",
                      tta=bool(settings.tta and dense), region_source=chosen.source,
                      calibration=calibration.to_json(), settings=settings.to_json(),
                      harmonization=harmonized.to_json(),
                      analysis_grid=grid,
                      resolution=None if resolution is None else resolution.to_json(),
                      warnings=[{"code": "regions", "message": w} for w in chosen.warnings] + calibration.warnings
                      + ([resolution.warning()] if resolution and not resolution.in_range else []))
    if reference:
        from ..reference.predict import predict_subtypes as predict_reference  # scikit-learn: only here

        with stage("subtypes"):
            result.subtypes = predict_reference(seen, lungs, model.net)
    elif dense:
        _dense_subtypes(result, seen, model, settings, transform, stage, harmonized)
    with stage("stats"):
        analysed_regions = result.regions
        if slabs is not None:  # the maps back on the native slices, the contract densitometry measured there
            _to_native(result, slabs, apply_offset(raw, calibration.applied_hu or 0.0), given)
        result.rows = _region_rows(result)
        if calibration.corrected:
            result.rows = with_uncorrected(result.rows, raw, result.regions)
        if harmonized.applied:
            result.rows = with_densitometry_of(result.rows, seen, analysed_regions, "harmonized")
    return result


def _to_native(result: Analysis, slabs: thin_slices.Slabs, ct: CTImage, given: CTImage | None) -> None:
    """``result``'s slab-grid maps on the native grid of ``ct`` (the native CT, HU-corrected as the slabs were);
    ``given``: the lobe file on that grid (its own boundaries, within the lungs)."""
    result.ct, result.analysis_grid = ct, slabs.to_json()
    result.lungs, result.regions = slabs.up(result.lungs), slabs.up(result.regions)
    if given is not None:
        result.regions = ct.with_array(np.where(result.lungs.array > 0, given.array, 0).astype(np.uint8))
    result.subtypes, result.uncertainty = slabs.up(result.subtypes), slabs.up(result.uncertainty)
    if result.review is not None:
        q = result.review
        result.review = dataclasses.replace(q, units=slabs.up_units(q.units, q.labels), labels=slabs.up(q.labels))


def _dense_subtypes(result: Analysis, seen: CTImage, model: LoadedModel, settings: AnalysisSettings, transform,
                    stage, harmonized: Harmonization | None = None) -> None:
    """The subtype model's stages on ``seen`` (the harmonized scan): subtype map (and the card's density rule,
    counted on ``harmonized.counted`` where there is one: the scan harmonized by the bands alone when thin slices
    were averaged),
    voxel uncertainty and review queue, patient embedding (when asked for); filled into ``result`` (torch is
    imported here: densitometry and the reference classifier run without it)."""
    import torch

    from ..dense import predict
    from ..dense.density import DensityVeto
    from ..dense.infer import card_class_weights, patient_embedding
    from ..dense.locate import locator_for
    from ..dense.uncertainty import DEFAULT_KIND, map_to_ct
    from .review import build_queue

    ct, lungs = seen, result.lungs
    device = torch.device(model.device)
    locator, _ = locator_for(lungs, transform)
    kind = DEFAULT_KIND if (settings.tta or DEFAULT_KIND != "disagreement") else "entropy"
    with stage("subtypes"):
        pred = predict(ct, lungs, model.net, device, locator=locator, tta=settings.tta,
                       batch_size=settings.batch_size, labels=False, disagreement=kind == "disagreement")
    veto = DensityVeto.for_analysis(settings.density_veto, model.card)
    counted = harmonized.counted if veto is not None and harmonized is not None else None
    with stage("uncertainty"):  # labels (and the card's density rule) and the voxel uncertainty in one pass
        result.subtypes, voxel_u, result.density_veto = map_to_ct(
            pred.probabilities, ct, lungs, card_class_weights(model.card), veto, kind, counted=counted)
        result.uncertainty, result.uncertainty_kind = voxel_u.image(), kind
        grid = pred.probabilities.grid  # the 1 mm lung box the embedding reads; the probabilities go now
        del pred
    with stage("review"):
        errors, box, lo = voxel_u.expected_errors_in_box(), voxel_u.box, voxel_u.lo
        del voxel_u  # its measures are in result.uncertainty now
        result.review = build_queue(result.regions, result.subtypes, errors, result.uncertainty.array[box], origin=lo)
        del errors
    if settings.embedding:
        with stage("embedding"):
            result.embedding = patient_embedding(model.net, grid, transform, device, settings.batch_size)


def _region_rows(result: Analysis) -> list[dict]:
    rows = region_stats(result.ct, result.regions, result.subtypes)
    if result.region_kind == "lungs":
        rows = [r for r in rows if r["region"] in ("left_lung", "right_lung", "whole_lung")]
    if result.uncertainty is not None:
        from ..dense.uncertainty import region_mean_uncertainty

        rows = region_mean_uncertainty(result.uncertainty, result.regions, rows)
    return rows


def write_analysis(result: Analysis, out_dir: str | Path, report: bool = True, extra=None) -> Path:
    """Write the output files of an analysis into ``out_dir`` all-or-nothing; ``extra(folder, result)``, when
    given, writes further files into the staging folder (``--dicom``: drasclr.dicom)."""
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
        info["harmonization"] = {**result.harmonization, "summary": describe_harmonization(result.harmonization)}
    if result.analysis_grid is not None:
        info["analysis_grid"] = result.analysis_grid
    info["warnings"] = result.warnings
    if result.settings is not None:
        info["settings"] = result.settings
    columns = COLUMNS
    if result.uncertainty is not None:
        from ..dense.uncertainty import SCALE

        info["uncertainty"] = {"kind": result.uncertainty_kind, "file": "uncertainty.nii.gz",
                               "scale": f"uint8, uncertainty x {SCALE} (0 certain .. {SCALE} most uncertain)"}
        columns = [*COLUMNS, UNCERTAINTY_COLUMN]
    if (result.calibration or {}).get("corrected"):  # after the contract columns: the scan as read
        info["calibration"] = {**result.calibration, "summary": describe(result.calibration)}
        columns = [*columns, *UNCORRECTED_COLUMNS]
    if result.rows and HARMONIZED_COLUMNS[0] in result.rows[0]:
        columns = [*columns, *HARMONIZED_COLUMNS]
    with staged_dir(out_dir) as tmp:
        # the compressed images (a few hundred MB each to compress on a thin-slice scan) are written on the
        # analysis' other threads while the report is drawn in this one (matplotlib stays in the caller's thread)
        draw = None
        if report:
            from .report import write_report

            def draw():
                write_report(tmp, result.ct, result.subtypes, result.regions, result.rows, info)
        images = [(result.regions, "regions.nii.gz", np.uint8), (result.subtypes, "subtypes.nii.gz", np.uint8),
                  (result.uncertainty, "uncertainty.nii.gz", np.uint8),
                  (None if result.review is None else result.review.labels, "review_units.nii.gz", np.uint16)]
        beside(draw, [lambda im=im, name=name, dtype=dtype: write_image(im, tmp / name, dtype=dtype)
                      for im, name, dtype in images if im is not None])
        if result.embedding is not None:
            np.save(tmp / "embedding.npy", result.embedding)
        if result.review is not None:
            from .review import write_review

            write_review(result.review, tmp / "review.json", {"uncertainty_kind": result.uncertainty_kind})
        write_csv(result.rows, tmp / "stats.csv", columns)
        write_json(result.rows, tmp / "stats.json", info, columns)
        if extra is not None:
            extra(tmp, result)
    return out_dir


def analyze_file(path: str | Path, out_dir: str | Path, settings: AnalysisSettings | None = None,
                 model: LoadedModel | None = None, lobes_path: str | Path | None = None, ct: CTImage | None = None,
                 read_seconds: float | None = None, extra=None) -> Analysis:
    """Read (unless ``ct`` is given: then ``read_seconds`` is the time its reading took), analyze and write one
    case, as ``settings`` say, with ``model`` (:func:`drasclr.analysis.loaded_model.load_for_analysis`)."""
    settings = settings or AnalysisSettings()
    t0 = time.perf_counter()
    if ct is None:
        ct = read_ct(path, series_uid=settings.series, allow_uneven=settings.allow_uneven_slices,
                     single_slice=model is not None and model.reference)
    read_s = read_seconds if read_seconds is not None else time.perf_counter() - t0
    lobes = read_lobes(lobes_path, ct, settings.lobes_convention) if lobes_path else None
    result = analyze(ct, lobes, model=model, settings=settings)
    result.timings = {"read_s": round(read_s, 3), **result.timings}
    write_analysis(result, out_dir, extra=extra)
    return result
