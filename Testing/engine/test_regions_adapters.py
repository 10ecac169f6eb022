"""Optional adapters: skip cleanly when lungmask / TotalSegmentator are absent; refuse clearly when called; when
present, their lobes must be real lobes of this CT (all five, inside the lungs, on the right sides)."""

from __future__ import annotations

import numpy as np
import pytest

from drasclr.anatomy.adapters import is_installed, lungmask_adapter, totalseg_adapter
from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage


def test_absent_packages_give_a_clear_error():
    ct = CTImage(np.zeros((4, 8, 8), np.int16))
    if not lungmask_adapter.available():
        with pytest.raises(InputError, match="lungmask is not installed"):
            lungmask_adapter.segment(ct)
    if not totalseg_adapter.available():
        with pytest.raises(InputError, match="TotalSegmentator is not installed"):
            totalseg_adapter.segment_lobes(ct)
    assert is_installed("numpy") and not is_installed("surely_not_a_module_xyz")


def assert_real_lobes(lobes: CTImage, ct: CTImage) -> None:
    """All five LTRC lobes, on the CT's grid, overlapping our lung mask, left lobes in the left lung."""
    from drasclr.anatomy.lobes.checks import SIDE_OF_LOBE
    from drasclr.anatomy.lungs import segment_lungs

    assert lobes.same_grid(ct) and lobes.array.dtype == np.uint8
    values = set(np.unique(lobes.array).tolist())
    assert values == {0, 1, 2, 3, 4, 5}, values
    lungs = segment_lungs(ct).array
    inside = lobes.array > 0
    dice = 2 * np.sum(inside & (lungs > 0)) / (inside.sum() + (lungs > 0).sum())
    assert dice > 0.9, dice
    for v, side in SIDE_OF_LOBE.items():
        own = lobes.array == v
        assert np.mean(lungs[own & (lungs > 0)] == side) > 0.95, labels.LOBES[v]
    counts = np.bincount(lobes.array.ravel(), minlength=6)[1:6]
    assert np.all(counts / counts.sum() > 0.03), counts


def _real_ct():
    from drasclr.core.io import read_ct
    from realdata import real_ct_path

    return read_ct(real_ct_path("lidc_idri_0001"))


@pytest.mark.slow
@pytest.mark.skipif(not lungmask_adapter.available(), reason="lungmask not installed")
def test_lungmask_on_real_ct():
    ct = _real_ct()
    try:
        lungs = lungmask_adapter.segment(ct)
        lobes = lungmask_adapter.segment(ct, "LTRCLobes")
    except Exception as exc:  # weights not cached: never download in tests
        pytest.skip(f"lungmask weights unavailable offline: {exc}")
    assert set(np.unique(lungs.array).tolist()) == {0, 1, 2}
    # lungmask R231: 1 right lung, at smaller LPS x than the left
    x = lambda v: lungs.index_to_lps(np.argwhere(lungs.array == v)[::101, ::-1])[:, 0].mean()  # noqa: E731
    assert x(labels.RIGHT_LUNG) < x(labels.LEFT_LUNG)
    assert_real_lobes(lobes, ct)


@pytest.mark.slow
@pytest.mark.skipif(not totalseg_adapter.available(), reason="TotalSegmentator not installed")
def test_totalsegmentator_on_real_ct():
    ct = _real_ct()
    try:
        lobes = totalseg_adapter.segment_lobes(ct)
    except Exception as exc:
        pytest.skip(f"TotalSegmentator weights unavailable offline: {exc}")
    assert_real_lobes(lobes, ct)


def test_the_real_lobes_check_can_fail():
    """The check the adapters' tests use refuses an all-zero map and a map with the lungs swapped."""
    from drasclr.anatomy.atlas.shape import canonical_lobes, synthetic_ct

    lobes = canonical_lobes(4.0)
    ct = synthetic_ct(lobes, seed=1)
    assert_real_lobes(lobes, ct)  # the truth passes
    with pytest.raises(AssertionError):
        assert_real_lobes(lobes.with_array(np.zeros_like(lobes.array)), ct)
    swapped = np.choose(lobes.array, [0, 3, 5, 1, 1, 2]).astype(np.uint8)  # left lobes put in the right lung
    with pytest.raises(AssertionError):
        assert_real_lobes(lobes.with_array(swapped), ct)
