"""Volume cache for the whole-volume pretext tasks (VoCo, volume fusion): every case's lung region at 1 mm, once.

Layout of a cache folder::

    index.json        {"format": "drasclr-volume-cache", "version": 1, "subjects": [...], "shapes": [...],
                       "lung_box": [[lo_z, lo_y, lo_x, hi_z, hi_y, hi_x], ...], "margin_mm": 8.0}
    ct_000.npy        (Z, Y, X) int16 HU of case 0, cropped to its lung box + margin (memory-mapped when read)
    lung_points_000.npy (P, 3) int32 up to 4096 lung voxels (z, y, x) of case 0, to centre crops on the lung

Crops are cut with :func:`drasclr.pretrain.data.cut_patch` (padded with -1024 HU outside the volume). A crop's
location code is its centre's position in the case's lung bounding box scaled to [-1, 1] per axis (z, y, x): a
cheap stand-in for the atlas location of the patch cache (same axes and range; no registration).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.outputs import staged_dir
from ..core.progress import progress
from .data import Case, IndexedCache, _load_case, cut_patch, read_index

VOLUME_FORMAT = "drasclr-volume-cache"
VOLUME_VERSION = 1
LUNG_POINTS = 4096


def build_volume_cache(cases: list[Case], out: str | os.PathLike, margin_mm: float = 8.0, seed: int = 0) -> Path:
    """Write every case's 1 mm lung region into a new cache folder ``out`` (all-or-nothing).

    ``InputError`` for unreadable cases or cases without lungs (nothing is written then).
    """
    if not cases:
        raise InputError("no cases to cache")
    out = Path(out)
    rng = np.random.default_rng(seed)
    shapes, boxes = [], []
    margin = int(np.ceil(margin_mm))
    with staged_dir(out) as tmp:
        for i, case in enumerate(progress(cases, desc="volume cache")):
            ct1, lungs, _ = _load_case(case)
            idx = np.argwhere(lungs.array > 0)
            lo = np.maximum(idx.min(0) - margin, 0)
            hi = np.minimum(idx.max(0) + 1 + margin, lungs.array.shape)
            sl = tuple(slice(a, b) for a, b in zip(lo, hi))
            vol = np.clip(ct1.array[sl], -32768, 32767).astype(np.int16)
            np.save(tmp / f"ct_{i:03d}.npy", vol)
            pts = idx - lo
            pick = rng.choice(len(pts), min(len(pts), LUNG_POINTS), replace=False)
            np.save(tmp / f"lung_points_{i:03d}.npy", pts[np.sort(pick)].astype(np.int32))
            shapes.append(list(vol.shape))
            boxes.append([int(v) for v in (*(idx.min(0) - lo), *(idx.max(0) + 1 - lo))])
        index = {"format": VOLUME_FORMAT, "version": VOLUME_VERSION, "subjects": [c.name for c in cases],
                 "sources": [str(c.ct) for c in cases], "shapes": shapes, "lung_box": boxes,
                 "margin_mm": margin_mm, "spacing_mm": 1.0, "n_subjects": len(cases)}
        (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def is_volume_cache(folder: str | os.PathLike) -> bool:
    p = Path(folder) / "index.json"
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("format") == VOLUME_FORMAT
    except (OSError, ValueError):
        return False


class VolumeCache(IndexedCache):
    """A built volume cache; volumes are opened memory-mapped and lazily (safe to hand to DataLoader workers)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.index = read_index(self.folder, "volume cache", VOLUME_FORMAT, VOLUME_VERSION)
        self._vols: dict[int, np.ndarray] = {}
        self._pts: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_vols": {}, "_pts": {}}


    def volume(self, i: int) -> np.ndarray:
        """``(Z, Y, X)`` int16 HU, memory-mapped."""
        if i not in self._vols:
            self._vols[i] = np.load(self.folder / f"ct_{i:03d}.npy", mmap_mode="r")
        return self._vols[i]

    def lung_points(self, i: int) -> np.ndarray:
        if i not in self._pts:
            self._pts[i] = np.load(self.folder / f"lung_points_{i:03d}.npy")
        return self._pts[i]

    def location(self, i: int, centre_zyx) -> np.ndarray:
        """Crop centre(s) ``(..., 3)`` (voxel z, y, x) -> position in the lung box scaled to [-1, 1], float32."""
        box = np.asarray(self.index["lung_box"][i], np.float64)
        lo, hi = box[:3], box[3:]
        return (2.0 * (np.asarray(centre_zyx, np.float64) - lo) / np.maximum(hi - lo, 1.0) - 1.0).astype(np.float32)

    def lung_centred_corner(self, i: int, size, rng: np.random.Generator) -> np.ndarray:
        """Corner (z, y, x) of a box of ``size`` (int or 3 ints) centred on a random lung voxel of case ``i``."""
        pts = self.lung_points(i)
        centre = pts[rng.integers(len(pts))]
        return centre - np.asarray(size, int) // 2

    def crop(self, i: int, corner, size: int) -> np.ndarray:
        """The ``size``^3 HU block of case ``i`` at ``corner``, padded with -1024 outside."""
        return cut_patch(self.volume(i), corner, size)
