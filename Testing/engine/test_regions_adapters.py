"""Optional adapters: skip cleanly when lungmask / TotalSegmentator are absent; refuse clearly when called."""

from __future__ import annotations

import pytest

from drasclr.adapters import is_installed, lungmask_adapter, totalseg_adapter
from drasclr.errors import InputError
from drasclr.image import CTImage


def test_absent_packages_give_a_clear_error():
    import numpy as np

    ct = CTImage(np.zeros((4, 8, 8), np.int16))
    if not lungmask_adapter.available():
        with pytest.raises(InputError, match="lungmask is not installed"):
            lungmask_adapter.segment(ct)
    if not totalseg_adapter.available():
        with pytest.raises(InputError, match="TotalSegmentator is not installed"):
            totalseg_adapter.segment_lobes(ct)
    assert is_installed("numpy") and not is_installed("surely_not_a_module_xyz")


@pytest.mark.slow
@pytest.mark.skipif(not lungmask_adapter.available(), reason="lungmask not installed")
def test_lungmask_on_real_ct():
    from drasclr.io import read_ct
    from realdata import real_ct_path

    ct = read_ct(real_ct_path("lungpetctdx_A0002_8mm_B40f"))
    try:
        lungs = lungmask_adapter.segment(ct)
    except Exception as exc:  # weights not cached: never download in tests
        pytest.skip(f"lungmask weights unavailable offline: {exc}")
    assert set(lungs.array.ravel().tolist()) >= {0, 1, 2}


@pytest.mark.slow
@pytest.mark.skipif(not totalseg_adapter.available(), reason="TotalSegmentator not installed")
def test_totalsegmentator_on_real_ct():
    from drasclr.io import read_ct
    from realdata import real_ct_path

    ct = read_ct(real_ct_path("lungpetctdx_A0002_8mm_B40f"))
    try:
        lobes = totalseg_adapter.segment_lobes(ct)
    except Exception as exc:
        pytest.skip(f"TotalSegmentator weights unavailable offline: {exc}")
    assert set(lobes.array.ravel().tolist()) <= {0, 1, 2, 3, 4, 5}
