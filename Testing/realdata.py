"""Where the real CT fixtures are (../shared/data/real beside the checkout, or $DRASCLR_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_DIR = Path(os.environ.get("DRASCLR_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
REAL_CTS = ["lidc_idri_0001", "lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL",
            "lungpetctdx_A0002_8mm_B40f"]


def real_ct_path(name: str) -> Path:
    path = REAL_DIR / f"{name}.nii.gz"
    if not path.exists():
        pytest.skip(f"real CT {name} not found in {REAL_DIR}")
    return path
