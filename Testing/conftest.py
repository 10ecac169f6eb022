"""Shared fixtures: real CT location (../shared/data/real beside the checkout), a small synthetic chest CT."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Testing"))
REAL_DIR = Path(os.environ.get("DRASCLR_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
REAL_CTS = ["lidc_idri_0001", "lungpetctdx_A0001_5mm_kernelB", "lungpetctdx_A0001_5mm_kernelL",
            "lungpetctdx_A0002_8mm_B40f"]


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    if not (REAL_DIR / "lidc_idri_0001.nii.gz").exists():
        pytest.skip(f"real CTs not found in {REAL_DIR}")
    return REAL_DIR


def real_ct_path(name: str) -> Path:
    path = REAL_DIR / f"{name}.nii.gz"
    if not path.exists():
        pytest.skip(f"real CT {name} not found in {REAL_DIR}")
    return path
