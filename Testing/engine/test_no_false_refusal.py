"""No false refusals: every guard that refuses input (file and geometry checks, HU sanity, the resolution guard,
lung masking with its plausibility checks — abdomen gas, size, position — and the HU calibration) accepts every
real chest CT and real single slices cut at the apex, middle and base of each (10 %, 50 % and 90 % of the lungs'
cranio-caudal extent). The hostile-input tests (test_hostile_inputs.py) keep what is not a chest CT refused.
Skipped cleanly without ../shared/data/real."""

from __future__ import annotations

import numpy as np
import pytest

from drasclr.anatomy import hu_calibration as C
from drasclr.anatomy.lungs import segment_lung_slices, segment_lungs
from drasclr.checks.resolution import check_resolution
from drasclr.core.input_files import check_image_file
from drasclr.core.io import check_hounsfield, read_ct, write_image
from realdata import REAL_CTS, real_ct_path

ALL_REAL = REAL_CTS + ["copdgene_10002K_ct64"]
LEVELS = {"apex_or_base_10pct": 0.1, "middle": 0.5, "base_or_apex_90pct": 0.9}


@pytest.fixture(scope="module", params=ALL_REAL)
def real(request):
    """(name, CT, its lung mask found by the guards' own masking) — the volume must pass every guard."""
    path = real_ct_path(request.param)
    check_image_file(path)
    ct = read_ct(path)
    check_hounsfield(ct, request.param)
    check_resolution(ct, None)  # flags, never refuses without --strict
    used, lungs, cal = C.calibrate_and_segment(ct, "auto")
    assert not cal.corrected, cal.warnings  # all five real scanners read air within ±9 HU of -1000
    assert (lungs.array > 0).sum() * ct.voxel_volume_ml > 1000
    return request.param, ct, lungs


@pytest.mark.real
def test_real_volume_passes_every_guard(real):
    name, ct, lungs = real
    assert set(np.unique(lungs.array)) >= {0, 1, 2}, name  # both lungs found


@pytest.mark.real
@pytest.mark.parametrize("level", LEVELS)
def test_real_single_slice_passes_every_guard(real, level, tmp_path):
    """A slice written as its own file and read as `--model cip-lh` reads it: never refused, lungs found."""
    name, ct, lungs = real
    z = np.flatnonzero(lungs.array.any(axis=(1, 2)))
    k = int(round(z.min() + LEVELS[level] * (z.max() - z.min())))
    path = write_image(ct.crop((k, 0, 0), (k + 1, *ct.array.shape[1:])), tmp_path / "slice.nii.gz")
    check_image_file(path)
    one = read_ct(path, single_slice=True)
    check_hounsfield(one, "slice")
    used, mask, cal = C.calibrate_and_segment(one, "auto", segment=segment_lung_slices)
    assert not cal.corrected and mask.array.any(), (name, level)
    found = (mask.array > 0).sum()
    truth = (lungs.array[k] > 0).sum()
    assert 0.5 * truth <= found <= 1.5 * truth, (name, level, found, truth)  # the section, not a gas pocket


@pytest.mark.real
def test_a_real_slice_without_lung_is_still_refused(real):
    """What relaxes the guard for one slice must not let anything through: a real slice beyond the lungs (neck
    or upper abdomen, no lung in it) is refused, alone and as a 3-slice volume."""
    name, ct, lungs = real
    z = np.flatnonzero(lungs.array.any(axis=(1, 2)))
    below = [k for k in range(ct.array.shape[0]) if k not in set(z.tolist())]
    if not below:
        pytest.skip(f"{name}: every slice holds lung")
    one = ct.crop((below[0], 0, 0), (below[0] + 1, *ct.array.shape[1:]))
    from drasclr.core.errors import InputError

    with pytest.raises(InputError):
        segment_lung_slices(one)
    with pytest.raises(InputError):
        segment_lungs(ct.crop((below[0], 0, 0), (below[0] + 3, *ct.array.shape[1:])))
