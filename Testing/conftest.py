"""Shared fixtures: real CT location (../shared/data/real beside the checkout), helpers on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import REAL_DIR  # noqa: E402


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    if not (REAL_DIR / "lidc_idri_0001.nii.gz").exists():
        pytest.skip(f"real CTs not found in {REAL_DIR}")
    return REAL_DIR
