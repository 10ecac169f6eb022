"""CT input/output: file formats, DICOM series (sorted by position, rescaled, series choice), and refusals."""

import numpy as np
import pytest

from dicom_writer import write_dicom_series
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import check_hounsfield, read_ct, read_image, write_image
from synthetic import synthetic_chest


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_file_formats_round_trip_voxels_and_geometry(tmp_path, suffix):
    ct, _ = synthetic_chest()
    path = write_image(ct, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    assert np.array_equal(back.array, ct.array)
    assert back.same_grid(ct, tol=1e-5)


def test_dicom_series_sorted_by_position_and_rescaled(tmp_path):
    ct, _ = synthetic_chest(shape=(12, 40, 40), spacing=(2.0, 2.0, 3.0))
    ct = ct.with_array((ct.array // 2) * 2)  # slope 2 stores even values exactly
    ct.array[:, 0, 0] = np.arange(12) * 10 - 1000  # a ramp along z reveals any mis-sorting
    # file names in reverse order of position: sorting by name would flip the volume
    names = [f"img{11 - k:03d}.dcm" for k in range(12)]
    write_dicom_series(ct, tmp_path / "series", intercept=-2048, slope=2.0, names=names)
    back = read_ct(tmp_path / "series")
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, ct.array)
    assert np.allclose(back.spacing, ct.spacing, atol=1e-4)
    assert np.allclose(back.origin, ct.origin, atol=1e-4)


def test_dicom_folder_picks_largest_series_and_ignores_localizer(tmp_path):
    big, _ = synthetic_chest(shape=(10, 32, 32))
    small, _ = synthetic_chest(shape=(6, 32, 32), seed=1)
    scout, _ = synthetic_chest(shape=(2, 32, 32), seed=2)
    write_dicom_series(big, tmp_path / "a")
    write_dicom_series(small, tmp_path / "b")
    write_dicom_series(scout, tmp_path / "c")
    back = read_ct(tmp_path)
    assert back.array.shape == (10, 32, 32)


def test_dicom_two_series_of_equal_size_are_refused_unless_chosen(tmp_path):
    a, _ = synthetic_chest(shape=(8, 32, 32))
    b, _ = synthetic_chest(shape=(8, 32, 32), seed=3)
    write_dicom_series(a, tmp_path / "a", series_uid="1.2.3.4.1")
    write_dicom_series(b, tmp_path / "b", series_uid="1.2.3.4.2")
    with pytest.raises(InputError, match="2 DICOM series"):
        read_ct(tmp_path)
    chosen = read_ct(tmp_path, series_uid="1.2.3.4.2")
    assert np.array_equal(chosen.array, b.array)


def test_empty_dicom_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(InputError, match="no DICOM series"):
        read_ct(tmp_path)


def test_dimension_and_content_checks(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([20, 20], sitk.sitkInt16), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="2-D"):
        read_image(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(tmp_path / "four.nii.gz"))
    with pytest.raises(InputError, match="4-D"):
        read_image(tmp_path / "four.nii.gz")
    mr = CTImage(np.random.default_rng(0).integers(0, 800, (8, 16, 16)).astype(np.int16))
    with pytest.raises(InputError, match="Hounsfield"):
        check_hounsfield(mr)
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "junk.nii.gz")
