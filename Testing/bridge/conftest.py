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
    """A small chest CT (HU, int16): soft-tissue body ellipse, air outside, two ellipsoid lungs near -860 HU
    with a denser emphysema-free rim and a few low-attenuation (-980 HU) holes in the upper left lung."""
    from drasclr.image import CTImage

    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx, dtype=np.float32)
    nz, ny, nx = shape_zyx
    cz, cy, cx = (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2
    ct = np.full(shape_zyx, -1000.0, dtype=np.float32)
    body = ((x - cx) / (0.46 * nx)) ** 2 + ((y - cy) / (0.36 * ny)) ** 2 <= 1.0
    ct[body] = 40.0
    for side in (-1, 1):  # array x: -1 right lung (patient right is low x in LPS), +1 left lung
        lung = (((x - cx - side * 0.2 * nx) / (0.15 * nx)) ** 2 + ((y - cy) / (0.24 * ny)) ** 2
                + ((z - cz) / (0.42 * nz)) ** 2) <= 1.0
        ct[lung] = -860.0
    holes = (rng.random(shape_zyx) < 0.02) & (ct < -800) & (z > cz) & (x > cx)
    ct[holes] = -980.0
    ct += rng.normal(0.0, 15.0, shape_zyx).astype(np.float32)
    direction = np.eye(3) if direction is None else direction
    return CTImage(ct.round().astype(np.int16), spacing, (-144.0, -150.0, -90.0), direction)
