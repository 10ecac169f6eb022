"""The one geometry type: exact SimpleITK round trips, index<->LPS mapping, resampling."""

import numpy as np

from drasclr.core.image import CTImage, resample_isotropic, resample_to


def oblique_image():
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    theta = np.deg2rad(20)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    return CTImage(arr, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 20.0, 30.5), direction=direction)


def test_sitk_round_trip_is_exact():
    img = oblique_image()
    back = CTImage.from_sitk(img.to_sitk())
    assert np.array_equal(back.array, img.array)
    assert back.same_grid(img, tol=1e-12)
    assert back.shape_xyz == (7, 6, 5)


def test_index_to_lps_matches_simpleitk():
    img = oblique_image()
    s = img.to_sitk()
    ijk = np.array([[0, 0, 0], [6, 5, 4], [3, 1, 2]])
    ours = img.index_to_lps(ijk)
    ref = np.array([s.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in ijk])
    assert np.allclose(ours, ref, atol=1e-9)
    assert np.allclose(img.lps_to_index(ours), ijk, atol=1e-9)
    assert np.allclose(img.ijk_to_lps[:3, 3], img.origin)


def test_superior_and_left_axes():
    img = CTImage(np.zeros((4, 5, 6)), direction=np.diag([1, 1, -1]))
    assert img.superior_axis() == (0, -1)
    assert img.left_axis() == (2, 1)


def test_resample_isotropic_keeps_extent_and_values():
    arr = np.zeros((10, 20, 20), np.int16)
    arr[3:7, 5:15, 5:15] = 100
    img = CTImage(arr, spacing=(0.5, 0.5, 2.0), origin=(1.0, 2.0, 3.0))
    iso = resample_isotropic(img, 1.0)
    assert iso.spacing == (1.0, 1.0, 1.0)
    assert iso.origin == img.origin
    assert iso.array.shape == (20, 10, 10)
    # a block of 4 slices x 2 mm x 10 voxels x 0.5 mm stays about 8 x 5 x 5 mm
    assert abs(int((iso.array > 50).sum()) - 8 * 5 * 5) <= 60


def test_resample_labelmap_back_to_grid_is_exact_on_same_grid():
    lab = CTImage(np.random.default_rng(0).integers(0, 6, (6, 7, 8)).astype(np.uint8), spacing=(1.5, 1.5, 3))
    back = resample_to(lab, lab)
    assert np.array_equal(back.array, lab.array)
    assert back.array.dtype == np.uint8


def test_bounding_box_is_find_objects_box():
    from scipy import ndimage

    from drasclr.core.image import bounding_box

    rng = np.random.default_rng(0)
    for shape in [(7, 9, 11), (1, 5, 5), (30, 4, 6)]:
        for _ in range(20):
            m = np.zeros(shape, np.uint8)
            n = rng.integers(1, 4)
            m[tuple(rng.integers(0, s, n) for s in shape)] = rng.integers(1, 4, n)
            want = ndimage.find_objects((m > 0).view(np.uint8))[0]
            assert bounding_box(m) == want and bounding_box(m > 0) == want
    assert bounding_box(np.zeros((3, 3, 3), bool)) is None


def test_box_sums_count_every_box_as_a_direct_sum():
    from drasclr.core.image import box_sums

    rng = np.random.default_rng(1)
    for shape, size in [((20, 17, 23), 8), ((9, 40, 12), 16), ((5, 6, 7), 8)]:
        m = (rng.random(shape) > 0.6) * rng.integers(1, 4, shape).astype(np.uint8)
        starts = [sorted({0, max(n - size, 0), *range(0, max(n - size, 0) + 1, 5)}) for n in shape]
        got = box_sums(m, starts, size)
        assert got.shape == tuple(len(s) for s in starts) and got.dtype == np.int32
        for i, z in enumerate(starts[0]):
            for j, y in enumerate(starts[1]):
                for k, x in enumerate(starts[2]):
                    assert got[i, j, k] == (m[z:z + size, y:y + size, x:x + size] > 0).sum()
