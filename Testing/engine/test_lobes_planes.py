"""The fissure plane search (drasclr.anatomy.lobes.relabel.fit_plane_offset): a faint tilted sheet far from the atlas's
guess is found, a lung without one keeps the guess, and no candidate may leave a lobe almost empty."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from drasclr.anatomy.lobes.fissures import sheet_evidence

relabel = importlib.import_module("drasclr.anatomy.lobes.relabel")  # the module (the package exports the function too)

SPACING = 1.5
SHAPE = (80, 64, 48)  # (Z superior-first, Y, X) on the 1.5 mm working grid


def _lung(seed: int, sheet: tuple[float, float] | None, hu: float = -780.0):
    """A box of lung (-860 HU, noise 20 HU) with, optionally, a 1.5 mm sheet of ``hu`` at z = c + s * (y - ȳ)."""
    rng = np.random.default_rng(seed)
    ct = -860.0 + 20.0 * rng.standard_normal(SHAPE)
    lung = np.zeros(SHAPE, bool)
    lung[4:-4, 4:-4, 4:-4] = True
    if sheet is not None:
        c, s = sheet
        z = np.arange(SHAPE[0])[:, None, None]
        y = np.arange(SHAPE[1])[None, :, None]
        ct[(np.abs(z - (c + s * (y - (SHAPE[1] - 1) / 2))) < 0.5) & np.ones(SHAPE, bool)] = hu
    ct[~lung] = -1000.0
    return ct.astype(np.float32), lung


def _atlas_guess(c: float, s: float) -> np.ndarray:
    y = np.arange(SHAPE[1])[:, None] - (SHAPE[1] - 1) / 2
    return np.broadcast_to(c + s * y, SHAPE[1:]).astype(np.float32).copy()


def _mean_error(z: np.ndarray, c: float, s: float) -> float:
    return float(np.nanmean(np.abs(z - _atlas_guess(c, s))[4:-4, 4:-4]))


def test_a_faint_sheet_far_from_the_guess_is_found():
    truth = (36.0, 0.9)  # the sheet: 18 voxels (27 mm) below the guess, steeper (0.9 vs 0.55 mm/mm)
    ct, lung = _lung(1, truth)
    ev = sheet_evidence(ct, lung, SPACING)
    guess = _atlas_guess(54.0, 0.55)
    moved, contrast = relabel.fit_plane_offset(ev, lung, guess, 45.0, SPACING)
    assert contrast >= relabel.MIN_CONTRAST
    assert _mean_error(guess, *truth) > 10  # voxels: the guess is far off ...
    assert _mean_error(moved, *truth) < 1.5  # ... the plane found is on the sheet


def test_without_a_sheet_the_guess_is_kept():
    ct, lung = _lung(2, None)
    ev = sheet_evidence(ct, lung, SPACING)
    guess = _atlas_guess(40.0, 0.7)
    moved, contrast = relabel.fit_plane_offset(ev, lung, guess, 45.0, SPACING)
    assert contrast < relabel.MIN_CONTRAST
    np.testing.assert_array_equal(moved, guess)


def test_slopes_outside_the_anatomical_range_are_not_searched():
    """A horizontal sheet is no oblique fissure: with the oblique slopes (0.6-1.2) it is not taken."""
    ct, lung = _lung(3, (40.0, 0.0), hu=-700.0)
    ev = sheet_evidence(ct, lung, SPACING)
    guess = _atlas_guess(40.0, 0.7)
    moved, _ = relabel.fit_plane_offset(ev, lung, guess, 45.0, SPACING, relabel.OBLIQUE_SLOPE)
    assert _mean_error(moved, 40.0, 0.0) > 5
    flat, _ = relabel.fit_plane_offset(ev, lung, _atlas_guess(46.0, 0.1), 45.0, SPACING, relabel.HORIZONTAL_SLOPE)
    assert _mean_error(flat, 40.0, 0.0) < 1.5


@pytest.mark.parametrize("share", [0.1, 0.9])
def test_no_candidate_leaves_a_lobe_almost_empty(share):
    """A strong sheet that would leave one side of the fissure with 10% of the pair's voxels is not taken."""
    inner = SHAPE[0] - 8
    c = 4 + share * inner  # the sheet at that height: below it `share` of the lung
    ct, lung = _lung(4, (c, 0.0), hu=-650.0)
    ev = sheet_evidence(ct, lung, SPACING)
    guess = _atlas_guess(SHAPE[0] / 2, 0.0)
    free, _ = relabel.fit_plane_offset(ev, lung, guess, 60.0, SPACING, relabel.HORIZONTAL_SLOPE)
    assert _mean_error(free, c, 0.0) < 1.5  # found without the volume rule
    assert abs(_share_below(free, lung) - share) < 0.05
    held, _ = relabel.fit_plane_offset(ev, lung, guess, 60.0, SPACING, relabel.HORIZONTAL_SLOPE, pair=lung)
    assert relabel.MIN_SHARE - 0.02 <= _share_below(held, lung) <= 1 - relabel.MIN_SHARE + 0.02  # refused with it


def _share_below(z: np.ndarray, lung: np.ndarray) -> float:
    """The share of the lung at or below the surface ``z(y, x)`` (as relabel splits it)."""
    below = np.arange(SHAPE[0])[:, None, None] <= z[None]
    return float((below & lung).sum() / lung.sum())
