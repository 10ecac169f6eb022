"""Regions for statistics: built-in cranio-caudal zones (11–16) or a supplied lobe labelmap (1–5).

Lobe files (``read_lobes``) are accepted in three conventions and converted to LTRC numbering
(1 left upper, 2 left lower, 3 right upper, 4 right middle, 5 right lower):

- ``ltrc``: lungmask ``LTRCLobes`` output, values 1–5 (our numbering already).
- ``totalseg``: TotalSegmentator v2 ``total`` task, either its multi-label file (10 lung_upper_lobe_left,
  11 lung_lower_lobe_left, 12 lung_upper_lobe_right, 13 lung_middle_lobe_right, 14 lung_lower_lobe_right;
  its other structures, values 1–117, are ignored) or a folder of its separate masks
  ``lung_upper_lobe_left.nii.gz`` … ``lung_lower_lobe_right.nii.gz``.
- ``cip``: Chest Imaging Platform label maps, value = chest type × 256 + chest region; the region (low byte)
  is used: 4 RIGHTSUPERIORLOBE, 5 RIGHTMIDDLELOBE, 6 RIGHTINFERIORLOBE, 7 LEFTSUPERIORLOBE, 8 LEFTINFERIORLOBE
  (acil-bwh/ChestImagingPlatform, Resources/ChestConventions.xml, ``<ChestRegions>``).

``convention="auto"`` detects which from the values (see :func:`detect_lobe_convention`). A file on another
grid is resampled onto the CT's grid with nearest neighbour; one that does not overlap the CT, or that holds
values of no convention, is refused with an :class:`~drasclr.core.errors.InputError` naming the problem.

Zone definition: each lung separately is cut into thirds of its *volume* along the cranio-caudal (S–I) axis.
Voxels are ordered by their physical S coordinate; the upper zone holds the most superior third of the lung's
voxels, the lower zone the most inferior third. Cuts fall between whole slices when slices are thick, so
each zone holds one third of the lung volume up to one slice.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core import labels
from ..core.errors import InputError
from ..core.image import CTImage, bounding_box, resample_to
from ..core.io import IMAGE_SUFFIXES, read_image

log = logging.getLogger(__name__)

# source value -> LTRC lobe value, per convention
LOBE_CONVENTIONS: dict[str, dict[int, int]] = {
    "ltrc": {1: 1, 2: 2, 3: 3, 4: 4, 5: 5},
    "totalseg": {10: 1, 11: 2, 12: 3, 13: 4, 14: 5},
    "cip": {7: 1, 8: 2, 4: 3, 5: 4, 6: 5},
}
TOTALSEG_FILES = {"lung_upper_lobe_left": 1, "lung_lower_lobe_left": 2, "lung_upper_lobe_right": 3,
                  "lung_middle_lobe_right": 4, "lung_lower_lobe_right": 5}
TOTALSEG_MAX_VALUE = 117  # TotalSegmentator v2 "total" task: classes 1..117


def zones_from_lungs(lungs: CTImage) -> CTImage:
    """Zone labelmap (11–16, uint8) from a lung labelmap (1 right, 2 left) on the same grid."""
    sup_axis, sign = lungs.superior_axis()
    out = np.zeros(lungs.array.shape, np.uint8)
    for lung, (upper, middle, lower) in ((labels.LEFT_LUNG, labels.LEFT_ZONES),
                                        (labels.RIGHT_LUNG, labels.RIGHT_ZONES)):
        mask = lungs.array == lung
        if not mask.any():
            continue
        other = tuple(a for a in range(3) if a != sup_axis)
        per_slice = mask.sum(axis=other)  # voxels per slice along the S-I axis, index order
        order = np.arange(per_slice.size)[::-sign]  # from the most superior slice down
        cum = np.cumsum(per_slice[order]) / per_slice.sum()
        zone_of_slice = np.empty(per_slice.size, np.uint8)
        # a slice belongs to the third that contains the middle of its voxels
        mid = cum - per_slice[order] / (2 * per_slice.sum())
        zone_of_slice[order] = np.where(mid < 1 / 3, upper, np.where(mid < 2 / 3, middle, lower))
        shape = [1, 1, 1]
        shape[sup_axis] = -1
        out[mask] = np.broadcast_to(zone_of_slice.reshape(shape), mask.shape)[mask]
    return lungs.with_array(out)


def lungs_as_regions(lungs: CTImage) -> CTImage:
    """Regions of an image too thin for zones (a single slice has no cranio-caudal thirds): the whole left lung
    12 and the whole right lung 15 (the middle-zone values), so left/right/whole-lung rows still follow."""
    out = np.zeros(lungs.array.shape, np.uint8)
    out[lungs.array == labels.LEFT_LUNG] = labels.LEFT_ZONES[1]
    out[lungs.array == labels.RIGHT_LUNG] = labels.RIGHT_ZONES[1]
    return lungs.with_array(out)


def lung_side_masks(regions: np.ndarray) -> dict[str, np.ndarray]:
    """Masks ``left_lung`` / ``right_lung`` / ``whole_lung`` from a lobe or zone labelmap."""
    left = np.isin(regions, labels.LEFT_LOBES + labels.LEFT_ZONES)
    right = np.isin(regions, labels.RIGHT_LOBES + labels.RIGHT_ZONES)
    return {"left_lung": left, "right_lung": right, "whole_lung": left | right}


def _region_sets(present: list[int]) -> dict[str, list[int]]:
    """Region name -> the label values summed for it: each lobe/zone present, then the two lungs and both."""
    sets = {labels.REGION_NAMES[v]: [v] for v in present}
    left = [v for v in present if v in labels.LEFT_LOBES + labels.LEFT_ZONES]
    right = [v for v in present if v in labels.RIGHT_LOBES + labels.RIGHT_ZONES]
    return {**sets, "left_lung": left, "right_lung": right, "whole_lung": left + right}


def region_histograms(regions: np.ndarray, *images: np.ndarray, offsets=None) -> list[dict[str, tuple]]:
    """For each of ``images``: per region (as :func:`drasclr.analysis.stats.region_stats` orders them),
    ``(lowest value, counts per value from it)`` of an integer image over the region, or ``(values, None)`` for a
    float image. Each region's mask is made once for all the images, over the regions' box. ``offsets``: per image,
    the lowest value to count from (None: the image's minimum over the box)."""
    offsets = offsets or [None] * len(images)
    outer = bounding_box(regions)  # the labelled part first (fast), the regions' own boxes inside it
    found = [None] * max(labels.REGION_NAMES) if outer is None else [
        None if f is None else tuple(slice(a.start + o.start, a.stop + o.start) for a, o in zip(f, outer))
        for f in ndimage.find_objects(regions[outer], max_label=max(labels.REGION_NAMES))]
    present = [v for v in sorted(labels.REGION_NAMES) if found[v - 1] is not None]
    sets = _region_sets(present)
    if not present:
        return [{name: (0, np.zeros(1, np.int64)) if np.issubdtype(im.dtype, np.integer)
                 else (np.zeros(0, np.float32), None) for name in sets} for im in images]
    box = tuple(slice(min(found[v - 1][i].start for v in present), max(found[v - 1][i].stop for v in present))
                for i in range(3))
    crops = [im[box] for im in images]
    integer = [np.issubdtype(im.dtype, np.integer) for im in images]
    lows = [(int(c.min()) if o is None else o) if i else 0 for c, o, i in zip(crops, offsets, integer)]
    sizes = [int(c.max()) - lo + 1 if i else 0 for c, lo, i in zip(crops, lows, integer)]
    per: list[dict[int, np.ndarray]] = [{} for _ in images]
    for v in present:
        own = found[v - 1]  # each region over its own box: a lobe's box is a fraction of the lungs'
        mask = regions[own] == v
        for k, (im, lo, size) in enumerate(zip(images, lows, sizes)):
            values = im[own][mask]
            per[k][v] = np.bincount(values.astype(np.int64) - lo, minlength=size) if integer[k] else values
    out = []
    for k in range(len(images)):
        if integer[k]:
            out.append({name: (lows[k], sum((per[k][v] for v in vals), np.zeros(sizes[k], np.int64)))
                        for name, vals in sets.items()})
        else:
            out.append({name: (np.concatenate([per[k][v] for v in vals]) if vals else np.zeros(0, np.float32),
                               None) for name, vals in sets.items()})
    return out


# --- lobe files ----------------------------------------------------------------------------------------------
def detect_lobe_convention(values: set[int]) -> str:
    """``ltrc``, ``totalseg`` or ``cip`` from the non-zero values of a lobe labelmap.

    Rules, in order: all values in 1–5 → ``ltrc`` (lungmask); all in 4–8, or any value above 255 with low
    bytes in 4–8 → ``cip``; at least two of 10–14 and all values in 1–117 → ``totalseg``. Otherwise
    :class:`InputError` naming the values that fit no convention.
    """
    values = {int(v) for v in values} - {0}
    if not values:
        raise InputError("lobe labelmap is empty (only 0)")
    if values <= set(LOBE_CONVENTIONS["ltrc"]):
        return "ltrc"
    cip = set(LOBE_CONVENTIONS["cip"])
    if values <= cip or (max(values) > 255 and {v & 0xFF for v in values} - {0} <= cip):
        return "cip"
    if len(values & set(LOBE_CONVENTIONS["totalseg"])) >= 2 and max(values) <= TOTALSEG_MAX_VALUE:
        return "totalseg"
    unknown = sorted(values - set(LOBE_CONVENTIONS["ltrc"]))
    raise InputError(f"lobe labelmap has unknown label values {unknown[:20]}; expected lungmask LTRC lobes 1-5, "
                     "TotalSegmentator lobes 10-14, or CIP chest regions 4-8 (pass the convention explicitly "
                     "if the file uses one of them)")


def lobes_to_ltrc(array: np.ndarray, convention: str) -> np.ndarray:
    """Map a lobe labelmap ``(Z, Y, X)`` of the given convention to LTRC values 1–5 (uint8)."""
    if convention not in LOBE_CONVENTIONS:
        raise InputError(f"unknown lobe convention {convention!r}; expected one of "
                         f"{', '.join(['auto', *LOBE_CONVENTIONS])}")
    src = np.asarray(array)
    if convention == "cip":
        src = src.astype(np.int64) & 0xFF
    table = LOBE_CONVENTIONS[convention]
    values = {int(v) for v in np.unique(src)} - {0}
    unknown = sorted(values - set(table))
    if convention == "totalseg":
        unknown = [v for v in unknown if not 0 < v <= TOTALSEG_MAX_VALUE]  # other organs are simply ignored
    if unknown:
        raise InputError(f"lobe labelmap has unknown label values {unknown[:20]} for the {convention} convention "
                         f"(expected {sorted(table)})")
    lut = np.zeros(int(src.max()) + 1 if src.size else 1, np.uint8)
    for k, v in table.items():
        if k < lut.size:
            lut[k] = v
    return lut[src.astype(np.int64)]


def read_lobes(path: str | os.PathLike, ct: CTImage, convention: str = "auto") -> CTImage:
    """A lobe labelmap in LTRC numbering (uint8, 1–5) on ``ct``'s grid, from a file or a TotalSegmentator folder.

    ``convention``: ``auto`` (detect), ``ltrc``, ``totalseg`` or ``cip``. Nearest-neighbour resampling when the
    file's grid differs; :class:`InputError` when the file does not overlap the CT or holds unknown values.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"lobe file not found: {path}")
    if path.is_dir():
        return _read_totalseg_folder(path, ct)
    return _on_ct_grid(ltrc_lobes(read_image(path), convention, f"lobe file {path.name}"), ct, path.name)


def ltrc_lobes(src: CTImage, convention: str = "auto", what: str = "lobe labelmap") -> CTImage:
    """A lobe labelmap of any supported convention (``auto``: detected from its values) in LTRC numbering
    (uint8, 1–5) on its own grid. The one conversion every lobe input goes through (CLI files, Slicer nodes)."""
    if convention == "auto":
        convention = detect_lobe_convention({int(v) for v in np.unique(src.array)})
        log.debug("%s: %s convention", what, convention)
    lobes = src.with_array(lobes_to_ltrc(src.array, convention))
    if not lobes.array.any():
        raise InputError(f"{what} holds no lobe labels of the {convention} convention")
    return lobes


def check_ltrc_lobes(lobes: CTImage, ct: CTImage) -> None:
    """Refuse a lobe labelmap that is not on ``ct``'s grid or holds values other than LTRC 1–5
    (convert other conventions with :func:`ltrc_lobes` first)."""
    if not lobes.same_grid(ct):
        raise InputError("lobe labelmap is not on the CT's grid (resample it onto the CT first)")
    values = {int(v) for v in np.unique(lobes.array)} - {0}
    extra = sorted(values - set(labels.LOBES))
    if extra:
        raise InputError(f"lobe labelmap holds values {extra[:20]} outside the LTRC lobes 1-5 (convert it with "
                         "drasclr.anatomy.regions.ltrc_lobes, which reads TotalSegmentator and CIP values too)")


def _read_totalseg_folder(folder: Path, ct: CTImage) -> CTImage:
    found = {}
    for name, value in TOTALSEG_FILES.items():
        for suffix in IMAGE_SUFFIXES:
            if (folder / f"{name}{suffix}").exists():
                found[value] = folder / f"{name}{suffix}"
                break
    if not found:
        images = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
        if len(images) == 1:
            return read_lobes(images[0], ct)
        raise InputError(f"lobe folder {folder} holds none of TotalSegmentator's lobe masks "
                         f"({', '.join(n + '.nii.gz' for n in TOTALSEG_FILES)})")
    out = np.zeros(ct.array.shape, np.uint8)
    for value, p in sorted(found.items()):
        mask = read_image(p)
        mask = mask.with_array((mask.array > 0).astype(np.uint8) * np.uint8(value))
        on_ct = _on_ct_grid(mask, ct, p.name, allow_empty=True)
        out[(on_ct.array > 0) & (out == 0)] = value
    if not out.any():
        raise InputError(f"the lobe masks in {folder} do not overlap the CT")
    return ct.with_array(out)


def _on_ct_grid(lobes: CTImage, ct: CTImage, name: str, allow_empty: bool = False) -> CTImage:
    """Resample (nearest neighbour) onto the CT's grid; refuse a file that does not overlap the CT."""
    if not lobes.same_grid(ct):
        if not _boxes_overlap(lobes, ct) and not allow_empty:
            raise InputError(f"lobe file {name} does not overlap the CT (its physical extent lies elsewhere: "
                             "wrong file or wrong geometry?)")
        lobes = resample_to(lobes, ct)
    if not lobes.array.any() and not allow_empty:
        raise InputError(f"lobe file {name} does not overlap the CT: no lobe voxel falls on the CT's grid")
    return ct.with_array(lobes.array.astype(np.uint8))


def _boxes_overlap(a: CTImage, b: CTImage) -> bool:
    def box(img):
        corners = np.array([[i, j, k] for i in (0, img.shape_xyz[0] - 1) for j in (0, img.shape_xyz[1] - 1)
                            for k in (0, img.shape_xyz[2] - 1)], float)
        p = img.index_to_lps(corners)
        return p.min(axis=0), p.max(axis=0)
    (alo, ahi), (blo, bhi) = box(a), box(b)
    return bool(np.all(alo <= bhi) and np.all(blo <= ahi))
