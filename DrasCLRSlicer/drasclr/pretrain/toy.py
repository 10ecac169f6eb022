"""A toy cohort for tests and smoke runs: small synthetic chests written like the phantom cohort.

``write_toy_cohort(out, n)`` -> ``out/case_000/{ct,regions,subtypes}.nii.gz``; 1 mm voxels, (Z, Y, X) =
(80, 72, 96): body at 40 HU, two ellipsoid lungs at about -850 HU (regions 1 right, 2 left) and, in every other
case, centrilobular-like holes (subtype 2) in the upper halves or panlobular-like low density (subtype 4) in the
lower halves. Seconds to write; not a realistic CT (use ``drasclr phantom`` for that).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.image import CTImage
from ..core.io import write_image

SHAPE = (80, 72, 96)


def toy_case(rng: np.random.Generator, disease: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ct int16, regions uint8, subtypes uint8)`` arrays of shape SHAPE; disease: none | cle | ple."""
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    ct = np.full(SHAPE, -1000.0)
    body = ((y - 36) / 34.0) ** 2 + ((x - 48) / 46.0) ** 2 <= 1
    ct[np.broadcast_to(body, SHAPE)] = 40.0
    regions = np.zeros(SHAPE, np.uint8)
    jitter = rng.uniform(-2, 2, 3)
    for label, cx in ((1, 28), (2, 68)):
        lung = (((z - 40 - jitter[0]) / 32.0) ** 2 + ((y - 36 - jitter[1]) / 22.0) ** 2
                + ((x - cx - jitter[2]) / 18.0) ** 2) <= 1
        regions[lung] = label
    lung = regions > 0
    ct[lung] = -850.0
    subtypes = np.where(lung, 1, 0).astype(np.uint8)
    if disease == "cle":
        for _ in range(60):
            c = rng.integers([8, 14, 10], [40, 58, 86])
            r = rng.uniform(1.5, 3.5)
            hole = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r * r
            hole &= lung
            ct[hole] = -990.0
            subtypes[hole] = 2
    elif disease == "ple":
        low = lung & (z >= 44)
        ct[low] = -955.0
        subtypes[low] = 4
    ct += rng.normal(0, 20, SHAPE)
    return np.clip(ct, -1024, 3000).astype(np.int16), regions, subtypes


def write_toy_cohort(out: str | os.PathLike, n: int = 6, seed: int = 0) -> Path:
    out = Path(out)
    rng = np.random.default_rng(seed)
    kinds = ["none", "cle", "ple"]
    for i in range(n):
        ct, regions, subtypes = toy_case(rng, kinds[i % 3])
        case = out / f"case_{i:03d}"
        case.mkdir(parents=True, exist_ok=True)
        geom = {"spacing": (1.0, 1.0, 1.0), "origin": (-48.0, -36.0, -40.0)}
        write_image(CTImage(ct, **geom), case / "ct.nii.gz")
        write_image(CTImage(regions, **geom), case / "regions.nii.gz")
        write_image(CTImage(subtypes, **geom), case / "subtypes.nii.gz")
    return out
