"""Volume node <-> CTImage: voxels and geometry exact both ways, checked against SimpleITK and Slicer's reader."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from bridge_support import oblique_direction, synthetic_chest

from drasclr.core.image import CTImage
from drasclr.core.io import read_ct, write_image
from DrasCLRSlicerLib import geometry, storage, volumes


def expected_ijk_to_ras(ct: CTImage) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ ct.direction @ np.diag(ct.spacing)
    m[:3, 3] = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(ct.origin)
    return m


def assert_same_image(a: CTImage, b: CTImage):
    assert a.array.dtype == b.array.dtype
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spacing == b.spacing
    assert a.origin == b.origin
    np.testing.assert_array_equal(a.direction, b.direction)


def ras_of_voxel_by_sitk(ct: CTImage, ijk) -> np.ndarray:
    lps = np.array(ct.to_sitk().TransformIndexToPhysicalPoint(tuple(int(v) for v in ijk)))
    return lps * np.array([-1.0, -1.0, 1.0])


def test_geometry_conversion_is_its_own_inverse_and_exact():
    d = oblique_direction()
    g = geometry.ras_geometry((0.7, 0.8, 2.5), (10.5, -20.25, 30.0), d)
    spacing, origin, direction = geometry.lps_geometry(g)
    assert spacing == (0.7, 0.8, 2.5) and origin == (10.5, -20.25, 30.0)
    np.testing.assert_array_equal(direction, d)
    np.testing.assert_array_equal(g.origin, (-10.5, 20.25, 30.0))
    np.testing.assert_array_equal(geometry.lps_to_ras_points([[1.0, 2.0, 3.0]]), [[-1.0, -2.0, 3.0]])


def test_oblique_volume_round_trip_exact(scene):
    ct = synthetic_chest((12, 14, 16), spacing=(0.7, 0.9, 2.5), direction=oblique_direction())
    node = volumes.add_volume_node(scene, ct, "oblique")
    np.testing.assert_allclose(volumes.ijk_to_ras(node), expected_ijk_to_ras(ct), rtol=0, atol=1e-12)
    np.testing.assert_allclose(volumes.ijk_to_ras(node), geometry.ijk_to_ras_matrix(ct.ijk_to_lps), rtol=0, atol=1e-12)
    assert_same_image(volumes.image_from_volume_node(node), ct)
    # a known voxel: the node's RAS position equals SimpleITK's physical point with x, y negated
    ijk = (3, 11, 7)
    ras = volumes.ijk_to_ras(node) @ np.array([*ijk, 1.0])
    np.testing.assert_allclose(ras[:3], ras_of_voxel_by_sitk(ct, ijk), rtol=0, atol=1e-9)
    # and MRML's value at that index is the voxel SimpleITK reads there
    assert slicer_voxel(node, ijk) == ct.to_sitk().GetPixel(*ijk)


def slicer_voxel(node, ijk):
    i, j, k = ijk
    return node.GetImageData().GetScalarComponentAsDouble(i, j, k, 0)


def test_oblique_file_read_by_slicer_matches_engine(scene, tmp_path):
    """Slicer's own NRRD reader and the engine's SimpleITK reader agree through our conversion."""
    ct = synthetic_chest((10, 12, 14), spacing=(0.8, 0.8, 3.0), direction=oblique_direction())
    path = write_image(ct, tmp_path / "oblique.nrrd")
    node = storage.load_volume(scene, path)
    np.testing.assert_allclose(volumes.ijk_to_ras(node), expected_ijk_to_ras(ct), rtol=0, atol=1e-9)
    back = volumes.image_from_volume_node(node)
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.direction, ct.direction, atol=1e-9)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-9)


def test_real_ct_round_trip_exact(scene, real_ct_path):
    ct = read_ct(real_ct_path)
    node = volumes.add_volume_node(scene, ct, "real")
    np.testing.assert_array_equal(volumes.ijk_to_ras(node), expected_ijk_to_ras(ct))
    assert_same_image(volumes.image_from_volume_node(node), ct)
    corner = (ct.shape_xyz[0] - 1, 0, ct.shape_xyz[2] - 1)
    ras = volumes.ijk_to_ras(node) @ np.array([*corner, 1.0])
    np.testing.assert_allclose(ras[:3], ras_of_voxel_by_sitk(ct, corner), rtol=0, atol=1e-9)
    # Slicer reading the same file (its own NIfTI reader) lands on the same matrix and voxels
    loaded = storage.load_volume(scene, real_ct_path)
    np.testing.assert_allclose(volumes.ijk_to_ras(loaded), expected_ijk_to_ras(ct), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(volumes.image_from_volume_node(loaded).array, ct.array)


def test_real_ct_geometry_against_sitk_header(real_ct_path):
    """The expected matrix itself is built from the file's SimpleITK header, not from CTImage."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(real_ct_path))
    reader.ReadImageInformation()
    ct = read_ct(real_ct_path)
    assert ct.spacing == reader.GetSpacing() and ct.origin == reader.GetOrigin()
    assert tuple(ct.direction.ravel()) == reader.GetDirection()


def test_transformed_volume_is_refused(scene):
    ct = synthetic_chest((4, 5, 6))
    node = volumes.add_volume_node(scene, ct, "moved")
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(t.GetID())
    try:
        volumes.image_from_volume_node(node)
    except ValueError as exc:
        assert "transform" in str(exc)
    else:
        raise AssertionError("a volume under a transform must be refused")


@pytest.mark.real
def test_real_ct_through_storage_nodes_and_segmentation(scene, real_ct_path, tmp_path):
    """The real CT survives .nrrd save/load; its engine zones survive segmentation -> .seg.nrrd -> labelmap."""
    from drasclr.analysis.analyze import analyze
    from drasclr.core import labels
    from drasclr.core.settings import AnalysisSettings
    from DrasCLRSlicerLib import segmentations, terminology

    ct = read_ct(real_ct_path)
    node = volumes.add_volume_node(scene, ct, "real")
    loaded = storage.load_volume(scene, storage.save_node(node, tmp_path / "real.nrrd"))
    back = volumes.image_from_volume_node(loaded)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.spacing == ct.spacing and back.origin == ct.origin
    np.testing.assert_array_equal(back.direction, ct.direction)

    zones = analyze(ct, settings=AnalysisSettings(regions="zones")).regions
    entries = terminology.region_entries(labels.ZONES)
    seg = segmentations.labelmap_to_segmentation(scene, zones, node, entries, name="zones")
    seg_loaded = storage.load_segmentation(scene, storage.save_node(seg, tmp_path / "zones.seg.nrrd"))
    out = segmentations.segmentation_to_labelmap(seg_loaded, node, entries)
    assert out.same_grid(ct, tol=0.0)
    np.testing.assert_array_equal(out.array, zones.array)
