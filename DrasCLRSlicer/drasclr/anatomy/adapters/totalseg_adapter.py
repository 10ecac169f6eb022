"""TotalSegmentator (wasserth/TotalSegmentator, Apache-2.0; weights under their own licence) for lung lobes, when
the user has it installed with its weights (``totalseg_download_weights -t total`` once, online).

Runs the ``total`` task restricted to the five lung lobes (``roi_subset``) and converts its output to LTRC lobes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...core.errors import InputError
from ...core.image import CTImage
from ...core.io import write_image
from ..regions import TOTALSEG_FILES, read_lobes
from . import is_installed


def available() -> bool:
    return is_installed("totalsegmentator")


def segment_lobes(ct: CTImage, fast: bool = True, device: str = "cpu") -> CTImage:
    """LTRC lobe labelmap (1..5, uint8) on ``ct``'s grid from TotalSegmentator's lobe masks."""
    if not available():
        raise InputError("TotalSegmentator is not installed (pip install TotalSegmentator, then "
                         "totalseg_download_weights -t total)")
    from totalsegmentator.python_api import totalsegmentator  # noqa: PLC0415 - optional dependency

    with tempfile.TemporaryDirectory() as tmp:
        src = write_image(ct, Path(tmp) / "ct.nii.gz")
        out = Path(tmp) / "seg"
        totalsegmentator(str(src), str(out), fast=fast, roi_subset=list(TOTALSEG_FILES), device=device, quiet=True)
        return read_lobes(out, ct, convention="totalseg")
