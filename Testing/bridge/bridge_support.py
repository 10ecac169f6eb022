"""Test data for the bridge tests (a module with a unique name: conftest modules are not importable by name
when several test folders have one)."""

from __future__ import annotations

import numpy as np


def oblique_direction() -> np.ndarray:
    """A proper rotation (det +1) about a tilted axis: no axis-aligned shortcut can pass the tests."""
    import SimpleITK as sitk

    t = sitk.VersorTransform((0.3, -0.5, 0.8), 0.4)
    return np.array(t.GetMatrix()).reshape(3, 3)


def synthetic_chest(shape_zyx=(64, 96, 96), spacing=(3.0, 3.0, 3.0), direction=None, seed: int = 0):
    """The module's chest phantom (``DrasCLRSlicerLib.phantom``): ~96 x 96 x 64 at 3 mm, two ellipsoid lungs."""
    from DrasCLRSlicerLib.phantom import chest_phantom

    return chest_phantom(shape_zyx, spacing, direction, seed)
