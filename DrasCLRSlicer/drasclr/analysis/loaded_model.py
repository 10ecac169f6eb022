"""The model an analysis runs, chosen from :class:`~drasclr.core.settings.AnalysisSettings` in one place.

``load_for_analysis(settings)`` is what every shell calls: the reference classifier for ``cip-lh``, else the
subtype model named by ``settings.model`` or the default one (:func:`drasclr.core.versions.default_model`: the bundled
demo model or ``$DRASCLR_MODEL``), or None for densitometry only. A default model that is absent is reported
once as a warning and the analysis runs densitometry only; a model that was asked for and is absent is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import AnalysisSettings
from ..core.versions import default_model

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A loaded model with its card and folder (``reference``: the local-histogram classifier, CPU only)."""

    net: object
    card: dict
    folder: Path
    device: object  # torch.device for a subtype model, "cpu" for the reference classifier
    reference: bool = False


def wants_reference(settings: AnalysisSettings) -> bool:
    """The reference classifier was asked for (``--model cip-lh`` or its folder): it also reads single slices."""
    from ..reference.store import is_reference_model

    return settings.use_model and is_reference_model(settings.model)


def load_for_analysis(settings: AnalysisSettings) -> LoadedModel | None:
    """The model ``settings`` ask for, on its device; None for densitometry only (``use_model`` False, or no
    default model installed)."""
    if not settings.use_model:
        return None
    if wants_reference(settings):
        from ..reference.store import load_reference

        net, card, folder = load_reference(settings.model)
        log.info("model %s (reference local-histogram kNN, CPU)", card.get("version"))
        return LoadedModel(net, card, folder, "cpu", reference=True)
    if settings.model is None and not default_model().exists():
        log.warning("default model %s not found (build it with `make demo-model`): densitometry only",
                    default_model())
        return None
    from ..core.device import describe_device, pick_device
    from ..dense.store import load_segmenter

    device = pick_device(settings.device)
    net, card, folder = load_segmenter(settings.model, device)
    log.info("model %s on %s", card.get("version", card.get("name")), describe_device(device))
    return LoadedModel(net, card, folder, device)
