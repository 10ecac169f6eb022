"""Where the anatomical locations sit in each subject: pluggable location schemes.

A scheme knows ``L`` locations, each with a normalised code ``locations_normalised`` ``(L, 3)`` in about [-1, 1]
(z, y, x order; the encoder's conditioning input, the same for every subject) and a position in millimetres
``locations_mm`` ``(L, 3)`` (for nearest-neighbour lookups), and maps them into one subject:

    scheme.corners(ct_1mm, lungs_1mm) -> (L, 3) int64 patch corners, (z, y, x) voxel index of ``ct_1mm``

where ``ct_1mm`` is the subject CT resampled to 1 mm isotropic and ``lungs_1mm`` its lung mask on that grid.

- ``AtlasScheme``: the DrasCLR way, the shipped atlas's location grid mapped into the subject through an affine
  lung registration (``drasclr.anatomy.atlas``, ``drasclr.anatomy.registration``, ``drasclr.anatomy.coords``; used
  when present).
- ``BoxGridScheme``: a fallback without registration: a stride-26 grid of 32^3 patches over a reference lung
  (the first subject), kept where a patch is at least ``min_lung`` lung, with positions normalised to the lung
  bounding box; in another subject each location sits at the same relative place in its own lung bounding box.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..anatomy.atlas import PATCH, load_atlas
from ..anatomy.coords import subject_patch_corners
from ..anatomy.registration import register_to_atlas
from ..core.errors import InputError
from ..core.image import CTImage

STRIDE = 26


def lung_bbox(lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` inclusive voxel bounds (z, y, x) of a non-empty mask."""
    idx = np.argwhere(lungs)
    if len(idx) == 0:
        raise InputError("no lungs found (the lung mask is empty)")
    return idx.min(0).astype(float), idx.max(0).astype(float)


class BoxGridScheme:
    """Locations relative to the lung bounding box (see module docstring). Build with ``from_reference``."""

    name = "boxgrid"

    def __init__(self, locations_normalised: np.ndarray, locations_mm: np.ndarray):
        self.locations_normalised = np.asarray(locations_normalised, np.float32)
        self.locations_mm = np.asarray(locations_mm, np.float32)

    @classmethod
    def from_reference(cls, lungs_1mm: CTImage, min_lung: float = 0.1, max_locations: int = 1000,
                       stride: int = STRIDE) -> BoxGridScheme:
        """The grid over a reference lung mask (1 mm). The threshold rises from ``min_lung`` in steps of 0.1
        until at most ``max_locations`` remain (as the reference code does for its atlas)."""
        mask = np.asarray(lungs_1mm.array) > 0
        lo, hi = lung_bbox(mask)
        starts = [np.arange(int(lo[a]), max(int(lo[a]), int(hi[a]) - PATCH + 2), stride) for a in range(3)]
        corners = np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, 3)
        frac = np.array([mask[z:z + PATCH, y:y + PATCH, x:x + PATCH].mean() for z, y, x in corners])
        thr = min_lung
        while (frac >= thr).sum() > max_locations:
            thr += 0.1
        keep = corners[frac >= thr]
        if len(keep) == 0:
            raise InputError("the reference lung is too small for one 32^3 patch location")
        centres = keep + PATCH / 2.0
        norm = (centres - lo) / np.maximum(hi - lo, 1.0) * 2 - 1
        return cls(norm, centres)

    def corners(self, ct_1mm: CTImage, lungs_1mm: CTImage) -> np.ndarray:
        lo, hi = lung_bbox(np.asarray(lungs_1mm.array) > 0)
        centres = lo + (self.locations_normalised + 1) / 2 * np.maximum(hi - lo, 1.0)
        return np.round(centres - PATCH / 2.0).astype(np.int64)

    def to_json(self) -> dict:
        return {"name": self.name}


class AtlasScheme:
    """The shipped atlas's location grid, mapped through an affine lung registration (drasclr.anatomy.atlas)."""

    name = "atlas"

    def __init__(self):
        self.atlas = load_atlas()
        self.locations_normalised = np.asarray(self.atlas.locations_normalised, np.float32)
        self.locations_mm = np.asarray(self.atlas.centres, np.float32)  # atlas grid is 1 mm

    def corners(self, ct_1mm: CTImage, lungs_1mm: CTImage) -> np.ndarray:
        transform = register_to_atlas(lungs_1mm, self.atlas)
        return np.asarray(subject_patch_corners(transform, ct_1mm, PATCH, self.atlas), np.int64)

    def to_json(self) -> dict:
        return {"name": self.name}


def atlas_available() -> bool:
    """True when the anatomy modules (atlas, registration, coords) are installed."""
    return all(importlib.util.find_spec(f"drasclr.{m}") is not None for m in ("atlas", "registration", "coords"))


def nearest_neighbours(locations_mm: np.ndarray, k: int) -> np.ndarray:
    """``(L, k)`` indices of the ``k`` nearest other locations of each location (ties by index)."""
    p = np.asarray(locations_mm, np.float64)
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    k = min(k, len(p) - 1)
    return np.argsort(d, axis=1, kind="stable")[:, :k].astype(np.int64)
