"""Regions: zones 11-16 by thirds of volume; lobe files in LTRC, TotalSegmentator (file or folder) and CIP
conventions, resampled to the CT grid; unknown values and non-overlapping files refused (also via the CLI)."""

from __future__ import annotations

import numpy as np
import pytest

from cli_runner import assert_refused, run_cli
from drasclr.anatomy.atlas.shape import canonical_lobes, lungs_from_lobes, synthetic_ct
from drasclr.anatomy.regions import detect_lobe_convention, lobes_to_ltrc, lung_side_masks, read_lobes, zones_from_lungs
from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage, resample_to
from drasclr.core.io import read_image, write_image


@pytest.fixture(scope="module")
def lobes() -> CTImage:
    return canonical_lobes(4.0)


def test_zones_are_thirds_of_each_lung(lobes):
    lungs = lobes.with_array(lungs_from_lobes(lobes.array))
    zones = zones_from_lungs(lungs).array
    assert set(np.unique(zones)) == {0, *labels.ZONES}
    for lung, zs in ((labels.LEFT_LUNG, labels.LEFT_ZONES), (labels.RIGHT_LUNG, labels.RIGHT_ZONES)):
        total = (lungs.array == lung).sum()
        for z in zs:
            assert abs((zones == z).sum() / total - 1 / 3) < 0.05
        # upper zone lies above the lower zone (z index increases superiorly here)
        zc = [np.argwhere(zones == z)[:, 0].mean() for z in zs]
        assert zc[0] > zc[1] > zc[2]
    masks = lung_side_masks(zones)
    assert (masks["whole_lung"] == (lungs.array > 0)).all()


def test_detect_conventions():
    assert detect_lobe_convention({0, 1, 2, 3, 4, 5}) == "ltrc"
    assert detect_lobe_convention({4, 5, 6, 7, 8}) == "cip"
    assert detect_lobe_convention({0, 7 + 512, 8 + 512, 4 + 256}) == "cip"  # region + 256 * type
    assert detect_lobe_convention({10, 11, 12, 13, 14, 51, 90}) == "totalseg"  # other organs too
    with pytest.raises(InputError, match=r"unknown label values \[6, 99\]"):
        detect_lobe_convention({1, 2, 6, 99})


def test_ltrc_same_grid_is_identity(lobes, tmp_path):
    write_image(lobes, tmp_path / "lobes.nii.gz")
    got = read_lobes(tmp_path / "lobes.nii.gz", lobes)
    assert got.same_grid(lobes) and (got.array == lobes.array).all()


def test_totalseg_multilabel_and_cip_map_to_ltrc(lobes, tmp_path):
    ts = np.zeros_like(lobes.array, dtype=np.uint8)
    for src, dst in {10: 1, 11: 2, 12: 3, 13: 4, 14: 5}.items():
        ts[lobes.array == dst] = src
    ts[:3] = 51  # another organ of the total task: ignored
    write_image(lobes.with_array(ts), tmp_path / "total.nii.gz")
    got = read_lobes(tmp_path / "total.nii.gz", lobes)
    assert (got.array[3:] == lobes.array[3:]).all() and not got.array[:3].any()

    cip = np.zeros(lobes.array.shape, np.uint16)
    for src, dst in {7: 1, 8: 2, 4: 3, 5: 4, 6: 5}.items():
        cip[lobes.array == dst] = src
    cip[(lobes.array == 3) & (np.arange(lobes.array.shape[2]) % 2 == 0)] += 2 * 256  # chest type AIRWAY
    write_image(lobes.with_array(cip), tmp_path / "cip.nrrd")
    got = read_lobes(tmp_path / "cip.nrrd", lobes)
    assert (got.array == lobes.array).all()
    assert (lobes_to_ltrc(cip, "cip") == lobes.array).all()


def test_totalseg_folder_on_another_grid_is_resampled(lobes, tmp_path):
    ct_grid = canonical_lobes(5.0)  # the "CT" grid: 5 mm
    folder = tmp_path / "ts"
    folder.mkdir()
    names = {1: "lung_upper_lobe_left", 2: "lung_lower_lobe_left", 3: "lung_upper_lobe_right",
             4: "lung_middle_lobe_right", 5: "lung_lower_lobe_right"}
    for v, name in names.items():
        write_image(lobes.with_array((lobes.array == v).astype(np.uint8)), folder / f"{name}.nii.gz")
    got = read_lobes(folder, ct_grid)
    assert got.same_grid(ct_grid)
    want = resample_to(lobes, ct_grid).array
    assert (got.array == want).mean() > 0.999
    assert set(np.unique(got.array)) == {0, 1, 2, 3, 4, 5}


def test_unknown_values_and_no_overlap_are_refused(lobes, tmp_path):
    bad = lobes.array.copy()
    bad[bad == 5] = 42
    write_image(lobes.with_array(bad), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match=r"unknown label values \[42\]"):
        read_lobes(tmp_path / "bad.nii.gz", lobes)
    with pytest.raises(InputError, match="unknown label values"):
        read_lobes(tmp_path / "bad.nii.gz", lobes, convention="ltrc")
    far = CTImage(lobes.array, lobes.spacing, tuple(np.array(lobes.origin) + 2000.0), lobes.direction)
    write_image(far, tmp_path / "far.nii.gz")
    with pytest.raises(InputError, match="does not overlap"):
        read_lobes(tmp_path / "far.nii.gz", lobes)
    with pytest.raises(InputError, match="none of TotalSegmentator"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "a.nii.gz").write_bytes(b"")
        (tmp_path / "empty" / "b.nii.gz").write_bytes(b"")
        read_lobes(tmp_path / "empty", lobes)


# --- through the command line: exit 2, one error line, no output folder ---------------------------------------

@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    d = tmp_path_factory.mktemp("chest")
    lob = canonical_lobes(4.0)
    write_image(synthetic_ct(lob, seed=1, vessels=10), d / "ct.nii.gz")
    write_image(lob, d / "lobes.nii.gz")
    return d, lob


def test_cli_refuses_ct_without_lungs(tmp_path):
    rng = np.random.default_rng(0)
    shape = (30, 96, 96)
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    a = np.full(shape, -1000.0)
    a[((x - 48) / 42.0) ** 2 + ((y - 48) / 32.0) ** 2 < 1] = 40.0  # abdomen: soft tissue only
    a[10:14, 40:44, 40:46] = -1000.0  # a little bowel gas
    write_image(CTImage((a + rng.normal(0, 10, shape)).astype(np.int16), spacing=(3.0, 3.0, 5.0)),
                tmp_path / "abdomen.nii.gz")
    out = tmp_path / "out"
    assert_refused(run_cli("analyze", tmp_path / "abdomen.nii.gz", "-o", out, "--no-model"), out, "no lungs found")


def test_cli_refuses_bad_lobe_files(chest, tmp_path):
    d, lob = chest
    bad = lob.array.copy()
    bad[bad == 4] = 77
    write_image(lob.with_array(bad), tmp_path / "unknown.nii.gz")
    out = tmp_path / "o1"
    assert_refused(run_cli("analyze", d / "ct.nii.gz", "-o", out, "--no-model", "--lobes", tmp_path / "unknown.nii.gz"),
                   out, "unknown label values [77]")
    far = CTImage(lob.array, lob.spacing, tuple(np.array(lob.origin) + 1000.0), lob.direction)
    write_image(far, tmp_path / "far.nii.gz")
    out = tmp_path / "o2"
    assert_refused(run_cli("analyze", d / "ct.nii.gz", "-o", out, "--no-model", "--lobes", tmp_path / "far.nii.gz"),
                   out, "does not overlap")


def test_cli_uses_lobes_when_given(chest, tmp_path):
    d, lob = chest
    proc = run_cli("analyze", d / "ct.nii.gz", "-o", tmp_path / "lobes", "--no-model", "--lobes", d / "lobes.nii.gz",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    regions = read_image(tmp_path / "lobes" / "regions.nii.gz").array
    assert set(np.unique(regions)) == {0, 1, 2, 3, 4, 5}
    # regions are the lobes restricted to the automatic lung mask
    inside = regions > 0
    assert (regions[inside] == lob.array[inside]).all()
    assert inside.sum() > 0.9 * (lob.array > 0).sum()
