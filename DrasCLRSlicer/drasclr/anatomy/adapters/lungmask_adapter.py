"""lungmask (JoHof/lungmask, Apache-2.0) as a lung or lobe segmenter, when the user has it installed.

``lungmask`` downloads its model weights on first use into its own cache; run it once yourself (online) before
using this adapter offline. Its lung labels (R231: 1 right, 2 left) and lobe labels (LTRCLobes: 1 left upper …
5 right lower) are already our numbering.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import InputError
from ...core.image import CTImage
from . import is_installed


def available() -> bool:
    return is_installed("lungmask")


def segment(ct: CTImage, model: str = "R231", force_cpu: bool = True) -> CTImage:
    """Run lungmask on ``ct``: ``model="R231"`` → lungs (1 right, 2 left); ``"LTRCLobes"`` → lobes 1..5."""
    if not available():
        raise InputError("lungmask is not installed (pip install lungmask; it fetches its weights on first use)")
    from lungmask import LMInferer  # noqa: PLC0415 - optional dependency

    inferer = LMInferer(modelname=model, force_cpu=force_cpu)
    out = inferer.apply(ct.to_sitk())  # numpy (Z, Y, X) on the input grid
    return ct.with_array(np.asarray(out, dtype=np.uint8))
