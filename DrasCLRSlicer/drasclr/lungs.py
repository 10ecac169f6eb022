"""Automatic lung mask (classical, no downloaded weights): labelmap 1 = right lung, 2 = left lung.

Steps: body = largest component above -500 HU, filled slice by slice; lung candidates = air (< -400 HU)
inside the body; the connected airway/lung air is split into the two lungs by eroding until two large parts
appear, then growing them back inside the candidate mask; vessels and nodules are kept by hole filling.
Work is done on a ~2 mm grid and mapped back to the input grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from . import labels
from .errors import InputError
from .image import CTImage

AIR_HU = -400
BODY_HU = -500
MIN_LUNG_ML = 50.0


def _largest(mask: np.ndarray, n: int = 1) -> list[np.ndarray]:
    lab, num = ndi.label(mask)
    if num == 0:
        return []
    sizes = ndi.sum_labels(mask, lab, index=np.arange(1, num + 1))
    order = np.argsort(sizes)[::-1][:n]
    return [lab == (i + 1) for i in order]


def _fill_slices(mask: np.ndarray, axis: int) -> np.ndarray:
    out = np.empty_like(mask)
    for s in range(mask.shape[axis]):
        idx = [slice(None)] * 3
        idx[axis] = s
        out[tuple(idx)] = ndi.binary_fill_holes(mask[tuple(idx)])
    return out


def segment_lungs(ct: CTImage, target_mm: float = 2.0) -> CTImage:
    """Lung labelmap on ``ct``'s grid: 0 outside, 1 right lung, 2 left lung (uint8)."""
    f = [max(1, int(round(target_mm / s))) for s in ct.spacing[::-1]]  # array order z, y, x
    a = ct.array[:: f[0], :: f[1], :: f[2]]
    vox_ml = ct.voxel_volume_ml * float(np.prod(f))
    sup_axis, _ = ct.superior_axis()

    body_parts = _largest(a > BODY_HU)
    if not body_parts:
        raise InputError("no lungs found: no body in the image")
    body = _fill_slices(body_parts[0], sup_axis)
    air = (a < AIR_HU) & (a > -1500) & body
    air = ndi.binary_opening(air, iterations=1)
    parts = [p for p in _largest(air, 3) if p.sum() * vox_ml >= MIN_LUNG_ML]
    if not parts:
        raise InputError("no lungs found: no air-filled region of lung size inside the body")
    lungs = _split_lungs(parts, vox_ml)
    seeds = np.zeros(a.shape, np.uint8)
    for i, part in enumerate(lungs, 1):
        seeds[part] = i
    # fill vessels and nodules slice by slice, then assign left/right by physical position
    filled = np.zeros_like(seeds)
    for i in range(1, len(lungs) + 1):
        filled[_fill_slices(ndi.binary_closing(seeds == i, iterations=2), sup_axis) & (filled == 0)] = i
    out = _name_sides(filled, ct, f, len(lungs))
    full = _upsample(out, f, ct.array.shape)
    return ct.with_array(full)


def _split_lungs(parts: list[np.ndarray], vox_ml: float) -> list[np.ndarray]:
    """Two lungs from the largest air components: when one component holds both, erode until it splits."""
    if len(parts) >= 2 and parts[1].sum() > 0.15 * parts[0].sum():
        return parts[:2]
    big = parts[0]
    eroded = big
    for _ in range(12):
        eroded = ndi.binary_erosion(eroded)
        two = _largest(eroded, 2)
        if len(two) == 2 and two[1].sum() > 0.15 * two[0].sum():
            markers = np.zeros(big.shape, np.int32)
            markers[two[0]] = 1
            markers[two[1]] = 2
            # grow back inside the original component, nearest marker wins
            _, (iz, iy, ix) = ndi.distance_transform_edt(markers == 0, return_indices=True)
            grown = markers[iz, iy, ix] * big
            return [grown == 1, grown == 2]
    return [big]  # one lung only (or inseparable): treated as a single lung


def _name_sides(lungs: np.ndarray, ct: CTImage, f: list[int], n: int) -> np.ndarray:
    """Relabel parts 1..n as right/left lung by their centroid's LPS x (+x is the patient's left)."""
    def lps_x(mask: np.ndarray) -> float:
        zyx = np.argwhere(mask).mean(axis=0) * np.asarray(f)
        return float(ct.index_to_lps(zyx[::-1])[0][0])

    xs = [lps_x(lungs == i) for i in range(1, n + 1)]
    if n == 2:
        left = 1 + int(np.argmax(xs))
    else:  # a single lung: compare with the body centre
        centre_x = float(ct.index_to_lps(np.array(ct.shape_xyz) / 2.0)[0][0])
        left = 1 if xs[0] > centre_x else 0
    return np.where(lungs == left, labels.LEFT_LUNG, np.where(lungs > 0, labels.RIGHT_LUNG, 0)).astype(np.uint8)


def _upsample(lab: np.ndarray, f: list[int], shape: tuple[int, ...]) -> np.ndarray:
    up = lab
    for axis, k in enumerate(f):
        if k > 1:
            up = np.repeat(up, k, axis=axis)
    return np.ascontiguousarray(up[: shape[0], : shape[1], : shape[2]])
