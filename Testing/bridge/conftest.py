"""Fixtures for the MRML bridge tests: real MRML from the slicer-core wheel (no Slicer application)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "DrasCLRSlicer"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install .[bridge])")

REAL_CT_NAME = "lungpetctdx_A0002_8mm_B40f.nii.gz"


@pytest.fixture
def scene():
    """A fresh MRML scene with the segmentations logic registered (and set as ``slicer.mrmlScene``)."""
    from DrasCLRSlicerLib.logic import ensure_scene_logics

    s = slicer.vtkMRMLScene()
    ensure_scene_logics(s)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = s
    yield s
    slicer.mrmlScene = previous
    s.Clear(True)


@pytest.fixture(scope="session")
def real_ct_path(request):
    try:
        folder = Path(request.getfixturevalue("real_ct_dir"))
    except pytest.FixtureLookupError:
        folder = Path(__file__).resolve().parents[2].parent / "shared/data/real"
    path = folder / REAL_CT_NAME
    if not path.exists():
        pytest.skip(f"real CT {REAL_CT_NAME} not found in {folder}")
    return path
