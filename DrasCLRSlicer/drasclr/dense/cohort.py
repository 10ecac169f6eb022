"""Labelled cohorts for training: case folders holding ``ct.nii.gz`` and ``subtypes.nii.gz`` (the phantom
layout; ``regions.nii.gz`` optional), and the few-shot label masks (a few slices or blocks per case)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.image import CTImage
from ..core.io import read_ct, read_image


def find_cases(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder not found: {folder}")
    cases = sorted(p for p in folder.iterdir() if (p / "ct.nii.gz").exists() and (p / "subtypes.nii.gz").exists())
    if not cases:
        raise InputError(f"no labelled cases in {folder} (expected sub-folders with ct.nii.gz and subtypes.nii.gz)")
    return cases


def load_case(folder: Path) -> tuple[CTImage, CTImage, CTImage]:
    """``(ct, subtypes, lungs)``; the lung mask is where the subtype map is non-zero."""
    ct = read_ct(folder / "ct.nii.gz")
    sub = read_image(folder / "subtypes.nii.gz")
    if not sub.same_grid(ct, tol=1e-3):
        raise InputError(f"{folder.name}: subtypes.nii.gz is not on the CT's grid")
    sub = sub.with_array(sub.array.astype(np.uint8))
    return ct, sub, sub.with_array((sub.array > 0).astype(np.uint8))


def disease_burden(folder: Path) -> float:
    """Fraction of a case's voxels that are emphysema (for the stratified split; reads only the labels)."""
    sub = read_image(Path(folder) / "subtypes.nii.gz").array
    return float(((sub > 1) & (sub < 5)).mean())  # 255: an unlabelled lung voxel of a pseudo-labelled case


def label_mask(lungs: CTImage, rng: np.random.Generator, slices: int | None = None,
               fraction: float | None = None, block_mm: float = 24.0) -> np.ndarray | None:
    """Which voxels count as labelled in a few-shot setting (None: all).

    ``slices``: that many axial slices through the lung, evenly spaced (an annotator's usual sparse labels).
    ``fraction``: random cubic blocks of ``block_mm`` inside the lung until about that fraction of the lung
    volume is labelled.
    """
    lung = lungs.array > 0
    if slices:
        axis, _ = lungs.superior_axis()
        present = np.flatnonzero(lung.any(axis=tuple(a for a in range(3) if a != axis)))
        pick = present[np.linspace(0, len(present) - 1, slices + 2)[1:-1].round().astype(int)]
        mask = np.zeros_like(lung)
        index = [slice(None)] * 3
        index[axis] = pick
        mask[tuple(index)] = True
        return mask & lung
    if fraction is not None and fraction < 1.0:
        size = np.maximum(1, np.round(block_mm / np.asarray(lungs.spacing_zyx)).astype(int))
        mask = np.zeros_like(lung)
        coords = np.argwhere(lung)
        target = fraction * lung.sum()
        while (mask & lung).sum() < target:
            c = coords[rng.integers(len(coords))] - size // 2
            lo = np.maximum(c, 0)
            mask[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]] = True
        return mask & lung
    return None


def stratified_split(burden: list[float], fraction: float, seed: int = 0) -> list[int]:
    """Indices of about ``fraction`` of the cases for validation, spread evenly over the disease ``burden``
    ranking (so validation sees mild and severe cases, not only healthy ones). Deterministic for a seed."""
    n = len(burden)
    k = int(round(fraction * n)) if n > 1 else 0
    if k == 0:
        return []
    order = np.argsort(np.asarray(burden), kind="stable")
    offset = np.random.default_rng(seed).uniform(0, 1)
    picks = ((np.arange(k) + offset) * n / k).astype(int).clip(0, n - 1)
    return sorted(int(order[p]) for p in picks)
