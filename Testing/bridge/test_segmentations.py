"""Labelmap -> segmentation node -> labelmap, matched by segment name, on the reference volume's grid."""

from __future__ import annotations

import json

import numpy as np
import slicer
import vtk
from bridge_support import oblique_direction, synthetic_chest

from drasclr.core import labels
from drasclr.core import names as display
from DrasCLRSlicerLib import segmentations, terminology, volumes


def subtype_labelmap(ct):
    """Blocks of values 1, 2 and 4 (no 3: an empty class must still get a segment)."""
    lab = np.zeros(ct.array.shape, dtype=np.uint8)
    lab[2:6, 3:9, 2:8] = labels.NORMAL
    lab[6:9, 1:5, 5:12] = labels.CLE
    lab[1:3, 9:13, 9:14] = labels.PLE
    return ct.with_array(lab)


def reference_geometry(node) -> str:
    return node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())


def test_terminology_matches_engine_labels():
    entries = terminology.subtype_entries()
    assert [e.value for e in entries] == [1, 2, 3, 4]
    assert {e.value: e.name for e in entries} == {v: s.title for v, s in display.SUBTYPES.items()}
    # one table of names and colours: the Slicer terminology shows what the report and the web app show
    assert {e.value: tuple(round(c * 255) for c in e.color) for e in entries} == display.subtype_colors()
    regions = terminology.region_entries()
    assert {e.value: tuple(round(c * 255) for c in e.color) for e in regions} == display.region_colors()
    assert terminology.region_entries([1])[0].name == "Left upper lobe" == display.region_title("left_upper_lobe")
    doc = json.loads(terminology.TERMINOLOGY_FILE.read_text())
    types = doc["SegmentationCodes"]["Category"][0]["Type"]
    assert {t["DrasCLRColumn"] for t in types} == {f"{n}_pct" for n in labels.SUBTYPES.values()}
    cip = {c["name"] for t in types for c in t["CIPChestTypes"]}
    assert {"NORMALPARENCHYMA", "MILDCENTRILOBULAREMPHYSEMA", "MILDPARASEPTALEMPHYSEMA",
            "SEVEREPANLOBULAREMPHYSEMA"} <= cip


def test_terminology_loads_in_slicer_terminology_logic(scene):
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    logic.SetMRMLScene(scene)
    name = logic.LoadTerminologyFromFile(str(terminology.TERMINOLOGY_FILE))
    assert name == "DrasCLR emphysema subtypes"
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    assert name in [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def test_labelmap_segmentation_round_trip_by_name(scene):
    ct = synthetic_chest((10, 14, 16), spacing=(0.7, 0.9, 2.5), direction=oblique_direction())
    ref = volumes.add_volume_node(scene, ct, "ct")
    lab = subtype_labelmap(ct)
    entries = terminology.subtype_entries()
    seg = segmentations.labelmap_to_segmentation(scene, lab, ref, entries, name="subtypes")
    by_name = segmentations.segment_names(seg)
    assert set(by_name) == {s.title for s in display.SUBTYPES.values()}  # PSE present, although empty
    for e in entries:
        segment = seg.GetSegmentation().GetSegment(by_name[e.name])
        np.testing.assert_allclose(segment.GetColor(), e.color)
        tag = vtk.reference("")
        assert segment.GetTag(segmentations.LABEL_VALUE_TAG, tag) and str(tag) == str(e.value)
        assert f"99DRASCLR^{e.value}^{e.name}" in segment.GetTerminology()
    # the reference geometry is the CT's grid, so .seg.nrrd files are not cropped
    ref_seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ref_seg.SetReferenceImageGeometryParameterFromVolumeNode(ref)
    assert reference_geometry(seg) == reference_geometry(ref_seg) != ""
    back = segmentations.segmentation_to_labelmap(seg, ref, entries)
    assert back.same_grid(ct, tol=1e-9)
    np.testing.assert_array_equal(back.array, lab.array)
    # no temporary nodes are left behind
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_values_follow_names_not_order(scene):
    """Renaming a segment moves its voxels to the other label value; a foreign segment is ignored."""
    ct = synthetic_chest((10, 14, 16))
    ref = volumes.add_volume_node(scene, ct, "ct")
    lab = subtype_labelmap(ct)
    entries = terminology.subtype_entries()
    seg = segmentations.labelmap_to_segmentation(scene, lab, ref, entries)
    ids = segmentations.segment_names(seg)
    s = seg.GetSegmentation()
    s.RemoveSegment(ids["Paraseptal emphysema"])
    s.GetSegment(ids["Panlobular emphysema"]).SetName("Paraseptal emphysema")  # an annotator relabels PLE
    s.GetSegment(ids["Normal parenchyma"]).SetName("Airway")  # a name we do not know
    back = segmentations.segmentation_to_labelmap(seg, ref, entries)
    expected = np.where(lab.array == labels.PLE, labels.PSE, lab.array)
    expected[lab.array == labels.NORMAL] = 0
    np.testing.assert_array_equal(back.array, expected)


def test_refill_replaces_segments(scene):
    ct = synthetic_chest((8, 10, 12))
    ref = volumes.add_volume_node(scene, ct, "ct")
    entries = terminology.subtype_entries()
    seg = segmentations.labelmap_to_segmentation(scene, subtype_labelmap(ct), ref, entries)
    empty = ct.with_array(np.zeros(ct.array.shape, np.uint8))
    again = segmentations.labelmap_to_segmentation(scene, empty, ref, entries, node=seg)
    assert again is seg and seg.GetSegmentation().GetNumberOfSegments() == 4
    assert segmentations.segmentation_to_labelmap(seg, ref, entries).array.max() == 0


def test_region_entries_named_and_distinct():
    entries = terminology.region_entries()
    assert [e.value for e in entries] == sorted(labels.REGION_NAMES)
    assert entries[0].name == "Left upper lobe"
    lobes = [e.color for e in entries if e.value in labels.LOBES]
    zones = [e.color for e in entries if e.value in labels.ZONES]
    assert len(set(lobes)) == len(lobes) and len(set(zones)) == len(zones)  # distinct within what is shown at once
