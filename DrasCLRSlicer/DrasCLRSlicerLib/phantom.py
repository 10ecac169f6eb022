"""A small synthetic chest CT for the module's self-test, the "Load demo CT" fallback and the bridge tests."""

from __future__ import annotations

import numpy as np

from drasclr.core.image import CTImage


def chest_phantom(shape_zyx=(64, 96, 96), spacing=(3.0, 3.0, 3.0), direction=None, seed: int = 0) -> CTImage:
    """A chest CT in HU (int16): soft-tissue body ellipse in air, two ellipsoid lungs near -860 HU (about
    1 litre each at the default size) and scattered -980 HU holes in the upper half of the high-x lung.

    Array ``(Z, Y, X)``; origin ``(-144, -150, -90)`` mm LPS; ``direction`` identity unless given.
    """
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx, dtype=np.float32)
    nz, ny, nx = shape_zyx
    cz, cy, cx = (nz - 1) / 2, (ny - 1) / 2, (nx - 1) / 2
    ct = np.full(shape_zyx, -1000.0, dtype=np.float32)
    body = ((x - cx) / (0.46 * nx)) ** 2 + ((y - cy) / (0.36 * ny)) ** 2 <= 1.0
    ct[body] = 40.0
    for side in (-1, 1):
        lung = (((x - cx - side * 0.2 * nx) / (0.15 * nx)) ** 2 + ((y - cy) / (0.24 * ny)) ** 2
                + ((z - cz) / (0.42 * nz)) ** 2) <= 1.0
        ct[lung] = -860.0
    holes = (rng.random(shape_zyx) < 0.02) & (ct < -800) & (z > cz) & (x > cx)
    ct[holes] = -980.0
    ct += rng.normal(0.0, 15.0, shape_zyx).astype(np.float32)
    direction = np.eye(3) if direction is None else direction
    return CTImage(ct.round().astype(np.int16), spacing, (-144.0, -150.0, -90.0), direction)
