"""The phantom generator's clinical acquisition option (drasclr.research.phantom.acquisition): the default keeps its
bytes;
a clinical case keeps its anatomy and disease and gains a real lung kernel's noise, a stronger supine gradient and
denser vessels; the options are validated."""

import hashlib

import numpy as np
import pytest

from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.research.phantom import PhantomOptions, generate_case
from drasclr.research.phantom.acquisition import draw

SMALL = dict(size=(96, 96, None), spacing=3.0, generator="3")
# generate_case(3, 1, SMALL) before the clinical option existed (commit c08fbf5): sha256 of ct + subtypes bytes
V3_SMALL = "7596a4323f91e2c5f800b5558eada9b275867119d812477a6169220716bb6017"


def test_default_generator_output_unchanged():
    case = generate_case(3, 1, PhantomOptions(**SMALL))
    assert hashlib.sha256(case.ct.array.tobytes() + case.subtypes.array.tobytes()).hexdigest() == V3_SMALL
    assert "acquisition" not in case.meta["options"] and "acquisition" not in case.meta["protocol"]


def _normal_lung(case):
    return case.ct.array[case.subtypes.array == labels.NORMAL].astype(np.float32)


def test_clinical_lung_kernel_noise_gradient_and_vessels():
    opts = dict(SMALL, thickness=2.0, healthy_fraction=1.0)
    std = generate_case(5, 0, PhantomOptions(**opts, noise=5.0))
    cli = generate_case(5, 0, PhantomOptions(**opts, noise=5.0, acquisition="clinical", kernel="soft"))
    assert cli.meta["protocol"]["acquisition"]["kernel"] == "soft" and cli.meta["options"]["acquisition"] == "clinical"
    assert np.array_equal(std.regions.array, cli.regions.array)  # the same anatomy
    acq = draw(5, 0, "soft", 5.0)
    # denser vessels (radii 0.75-0.95 of version 1 instead of 0.6): more lung above -500 HU
    share = [float((c.ct.array[c.regions.array > 0] > -500).mean()) for c in (std, cli)]
    assert share[1] > 1.3 * share[0]
    # the supine gradient: posterior normal lung denser than anterior by about the drawn amount
    sub = cli.subtypes.array == labels.NORMAL
    y = np.nonzero(sub)[1]
    lo, hi = np.percentile(y, [15, 85])
    v = cli.ct.array[sub].astype(np.float32)
    grad = float(np.median(v[y >= hi]) - np.median(v[y <= lo]))
    assert 0.4 * acq.gravity_hu < grad < 1.6 * acq.gravity_hu + 15
    # the lung kernel at its drawn (real) noise: many normal-lung voxels below -950 HU, as a real L kernel gives
    lung_k = generate_case(5, 0, PhantomOptions(**opts, acquisition="clinical", kernel="lung"))
    assert lung_k.meta["protocol"]["noise_hu"] >= 35
    assert (_normal_lung(lung_k) < -950).mean() > 0.05 > (_normal_lung(std) < -950).mean()


def test_clinical_draws_are_reproducible_and_cover_the_protocols():
    a = generate_case(8, 2, PhantomOptions(**SMALL, acquisition="clinical"))
    b = generate_case(8, 2, PhantomOptions(**SMALL, acquisition="clinical"))
    assert np.array_equal(a.ct.array, b.ct.array) and a.meta == b.meta
    draws = [draw(11, i) for i in range(200)]
    assert {d.kernel for d in draws} == {"soft", "sharp", "lung"}
    t = [d.thickness for d in draws]
    assert min(t) < 0.7 and max(t) == 5.0
    assert any(d.low_dose for d in draws) and not all(d.low_dose for d in draws)


def test_clinical_options_are_validated():
    with pytest.raises(InputError, match="generator"):
        PhantomOptions(generator="1", acquisition="clinical").validate()
    with pytest.raises(InputError, match="kernel"):
        PhantomOptions(kernel="lung").validate()
    with pytest.raises(InputError, match="acquisition"):
        PhantomOptions(acquisition="fancy").validate()


def test_a_scan_without_emphysema_becomes_an_all_normal_training_case(tmp_path):
    from drasclr.dense.pseudo import is_pseudo, normal_case, write_pseudo_case
    from synthetic import synthetic_chest

    ct, truth = synthetic_chest()
    case = normal_case(ct, sample_weight=2.0)
    sub = case.subtypes.array
    assert set(np.unique(sub)) == {0, labels.NORMAL}
    assert ((sub > 0) == (truth > 0)).mean() > 0.97  # the lung mask, all of it normal
    folder = write_pseudo_case(case, tmp_path / "real_x", "x.nii.gz")
    assert is_pseudo(folder) and case.meta["sample_weight"] == 2.0  # pseudo cases never validate or calibrate
