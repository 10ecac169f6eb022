"""The stages one ``drasclr analyze`` run will go through, named for people, with their cost model; and
:func:`track_analysis`, which reports them (:mod:`drasclr.core.stages`) around ``analyze_file`` (the command line)
or ``analyze`` + ``write_analysis`` (the Logic's in-process path).

The plan mirrors what :func:`drasclr.analysis.analyze.analyze` runs for the settings and model: lung mask,
harmonization, atlas registration (subtype model), regions, subtype map (any model), labels (with the density rule)
and voxel uncertainty, review queue, patient embedding (subtype model), statistics, then writing the files and the
report. A stage the plan did not foresee is still reported (the count grows).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from ..core.image import CTImage
from ..core.settings import AnalysisSettings
from ..core.stages import Stage, StageEvent, StageTracker, tracking

# default cost (seconds, seconds per unit: million voxels, or litre of lung for the model's patch stages) on a
# 2-core CPU with the demo model, fitted to the demo CT (2.3 M voxels, 2.7 l of lung), lidc_idri_0001 (512 x 512 x 133,
# 34.9 M voxels, 3.7 l) and a 96 x 96 x 48 synthetic chest (1.6 l); this machine's own runs scale them
# (drasclr.core.stages.History)
DEFAULTS: dict[str, tuple[float, float]] = {
    "lung_mask": (1.1, 0.05),
    "harmonize": (0.05, 0.1),
    "registration": (1.8, 0.01),
    "regions": (4.0, 0.07),  # estimated lobes (atlas + fissures)
    "regions_simple": (0.1, 0.1),  # zones, or a lobe file
    "subtypes": (1.0, 1.6),  # per litre, without TTA (selective mirrored TTA: TTA_COST times)
    "subtypes_reference": (1.0, 5.0),
    "uncertainty": (0.13, 0.08),  # labels, the density rule and the voxel uncertainty
    "review": (0.05, 0.011),
    "embedding": (1.9, 0.0),
    "stats": (0.0, 0.03),
    "writing": (0.3, 0.015),
}
TTA_COST = 1.35  # the mirrored pass runs on the unsure patches only: 215 of 633 on lidc_idri_0001
LUNG_UNITS = {"subtypes", "embedding"}  # the model reads patches over the lungs, at its own spacing
MODEL_STAGES = {"subtypes", "uncertainty", "review", "embedding"}


def _names(settings: AnalysisSettings, lobes_given: bool, thin: bool) -> dict[str, str]:
    regions = "Lungs" if thin and not lobes_given else ("Zones" if settings.regions == "zones" and not lobes_given
                                                          else "Lobes")
    return {"lung_mask": "Lung mask", "harmonize": "Harmonization", "registration": "Atlas registration",
            "regions": regions, "subtypes": "Subtype map", "uncertainty": "Labels and uncertainty",
            "review": "Review queue", "embedding": "Patient embedding", "stats": "Statistics",
            "writing": "Writing report"}


def plan(ct: CTImage, settings: AnalysisSettings, model=None, lobes_given: bool = False) -> list[Stage]:
    """The stages ``analyze`` will run on ``ct`` with ``model`` (a :class:`~.loaded_model.LoadedModel` or None)."""
    reference = model is not None and model.reference
    dense = model is not None and not reference
    thin = ct.array.shape[ct.superior_axis()[0]] < 3
    keys = ["lung_mask", "harmonize", *(["registration"] if dense else []), "regions"]
    if model is not None:
        keys.append("subtypes")
    if dense:
        keys += ["uncertainty", "review", *(["embedding"] if settings.embedding else [])]
    keys += ["stats", "writing"]
    names = _names(settings, lobes_given, thin)
    return [_stage(k, names[k], settings, model, lobes_given) for k in keys]


def _stage(key: str, name: str, settings: AnalysisSettings, model, lobes_given: bool) -> Stage:
    """One stage with the variant its time depends on (no input names: model, device, options only)."""
    default = DEFAULTS[key]
    variant = ""
    if key in MODEL_STAGES and model is not None:
        card = model.card or {}
        tta = bool(settings.tta) and not model.reference
        variant = f"{card.get('name', 'model')}-{card.get('version', '')}:{_device(model)}:{'tta' if tta else 'plain'}"
        if key == "subtypes" and model.reference:
            default = DEFAULTS["subtypes_reference"]
        elif key == "subtypes" and tta:
            default = (default[0] * TTA_COST, default[1] * TTA_COST)
        if _device(model) != "cpu":
            default = (default[0], default[1] / 10)
    elif key == "regions":
        variant = "file" if lobes_given else (settings.lobes_from or settings.regions)
        if variant in ("file", "zones"):
            default = DEFAULTS["regions_simple"]
    elif key == "harmonize":
        variant = str(settings.harmonize)
    kind = f"{key}|{variant}" if variant else key
    return Stage(key, name, "lung_ml" if key in LUNG_UNITS else "voxels", kind, default)


def _device(model) -> str:
    return str(getattr(model.device, "type", model.device))


@contextlib.contextmanager
def track_analysis(ct: CTImage, settings: AnalysisSettings | None = None, model=None, lobes_given: bool = False,
                   sink: Callable[[StageEvent], None] | None = None,
                   started: float | None = None) -> Iterator[StageTracker]:
    """Report the stages of one analysis of ``ct`` run inside the ``with`` block (``sink``: default one stderr line
    each; ``started``: ``time.perf_counter()`` when the run began, so that reading counts as elapsed)."""
    settings = settings or AnalysisSettings()
    tracker = StageTracker(plan(ct, settings, model, lobes_given), ct.array.size, ct.voxel_volume_ml, sink=sink,
                           started=time.perf_counter() if started is None else started)
    with tracking(tracker):
        yield tracker
