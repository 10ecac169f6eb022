"""Fixtures for the MRML bridge tests: real MRML from the slicer-core wheel (no Slicer application)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
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
        default = Path(__file__).resolve().parents[2].parent / "shared/data/real"
        folder = Path(os.environ.get("DRASCLR_REAL_DIR") or default)
    path = folder / REAL_CT_NAME
    if not path.exists():
        pytest.skip(f"real CT {REAL_CT_NAME} not found in {folder}")
    return path


def oblique_direction() -> np.ndarray:
    """A proper rotation (det +1) about a tilted axis: no axis-aligned shortcut can pass the tests."""
    import SimpleITK as sitk

    t = sitk.VersorTransform((0.3, -0.5, 0.8), 0.4)
    return np.array(t.GetMatrix()).reshape(3, 3)


def synthetic_chest(shape_zyx=(64, 96, 96), spacing=(3.0, 3.0, 3.0), direction=None, seed: int = 0):
    """The module's chest phantom (``DrasCLRSlicerLib.phantom``): ~96 x 96 x 64 at 3 mm, two ellipsoid lungs."""
    from DrasCLRSlicerLib.phantom import chest_phantom

    return chest_phantom(shape_zyx, spacing, direction, seed)
