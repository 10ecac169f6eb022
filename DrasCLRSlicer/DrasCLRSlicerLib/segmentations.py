"""Labelmaps (engine :class:`~drasclr.core.image.CTImage` of label values) <-> segmentation nodes, by segment NAME.

Going in, each label value becomes a segment with the name and colour of its :class:`SegmentEntry` (all entries
get a segment, empty ones included, so an annotator can paint into them). Going out, segments are matched to
label values by their names, never by their order or internal label value (Slicer renumbers those). The
segmentation's reference image geometry is set from the source volume, so ``.seg.nrrd`` files keep the full grid.
"""

from __future__ import annotations

import logging

import numpy as np
import slicer
import vtk

from drasclr.core.image import CTImage

from .terminology import SegmentEntry
from .volumes import add_volume_node, image_from_volume_node

log = logging.getLogger(__name__)
LABEL_VALUE_TAG = "DrasCLR.LabelValue"  # informative only: reading back goes by name


def color_table_node(scene, entries: list[SegmentEntry], name: str = "DrasCLR colors"):
    """A user colour table with one named colour per entry value (others undefined)."""
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(max(e.value for e in entries) + 1)
    node.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for e in entries:
        node.SetColor(e.value, e.name, *e.color, 1.0)
    node.SetHideFromEditors(True)
    return node


def _temporary_labelmap(scene, image: CTImage, colors):
    display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
    display.SetAndObserveColorNodeID(colors.GetID())
    node = add_volume_node(scene, image, "__drasclr_tmp_labelmap__", labelmap=True, dtype=np.uint8)
    node.SetAndObserveDisplayNodeID(display.GetID())
    return node, display


def segment_names(segmentation_node) -> dict[str, str]:
    """``{segment name: segment id}`` of a segmentation node."""
    seg = segmentation_node.GetSegmentation()
    return {seg.GetNthSegment(i).GetName(): seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}


def labelmap_to_segmentation(scene, labelmap: CTImage, reference_node, entries: list[SegmentEntry],
                             node=None, name: str = "DrasCLR segmentation"):
    """Fill a segmentation node (new, or ``node`` with its segments replaced) from a labelmap on the
    reference volume's grid. Values not among ``entries`` are ignored. Returns the node."""
    known = np.isin(labelmap.array, [e.value for e in entries])
    clean = labelmap.with_array(np.where(known, labelmap.array, 0).astype(np.uint8))
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
    else:
        node.GetSegmentation().RemoveAllSegments()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    colors = color_table_node(scene, entries, "__drasclr_tmp_colors__")
    tmp, display = _temporary_labelmap(scene, clean, colors)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(tmp, node, ""):
            raise RuntimeError("importing the labelmap into the segmentation failed")
    finally:
        for n in (tmp, display, colors):
            scene.RemoveNode(n)
    seg = node.GetSegmentation()
    present = segment_names(node)
    for e in entries:  # empty segments for absent classes, and our colours on all
        if e.name not in present:
            seg.AddEmptySegment("", e.name, list(e.color))
        sid = seg.GetSegmentIdBySegmentName(e.name)
        seg.GetSegment(sid).SetColor(*e.color)
        seg.GetSegment(sid).SetTag(LABEL_VALUE_TAG, str(e.value))
        if e.terminology:
            seg.GetSegment(sid).SetTerminology(e.terminology)
    return node


def segmentation_to_labelmap(segmentation_node, reference_node, entries: list[SegmentEntry]) -> CTImage:
    """A segmentation node -> labelmap with the entries' values on the reference volume's grid, segments
    matched by name. Segments with other names are left out (logged). Where segments overlap, the entry
    listed later wins."""
    scene = segmentation_node.GetScene()
    present = segment_names(segmentation_node)
    unknown = sorted(set(present) - {e.name for e in entries})
    if unknown:
        log.warning("segments not mapped to a label value (ignored): %s", ", ".join(unknown))
    reference = image_from_volume_node(reference_node)
    out = np.zeros(reference.array.shape, dtype=np.uint8)
    tmp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__drasclr_tmp_export__")
    try:
        for e in entries:
            if e.name not in present:
                continue
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(present[e.name])
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentation_node, ids, tmp, reference_node):
                raise RuntimeError(f"exporting segment {e.name!r} failed")
            mask = slicer.util.arrayFromVolume(tmp) > 0
            if mask.shape != out.shape:
                raise RuntimeError(f"segment {e.name!r} exported on a grid {mask.shape}, expected {out.shape}")
            out[mask] = e.value
    finally:
        scene.RemoveNode(tmp)
    return reference.with_array(out)
