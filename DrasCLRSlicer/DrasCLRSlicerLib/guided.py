"""Guided correction in MRML: the uncertainty heat overlay and the review queue walk (no Qt).

- :func:`show_heat_overlay` puts ``<CT> uncertainty`` (uint8 0..100, ``uncertainty.nii.gz``) over the CT in every
  slice view as a thresholded heat map (certain voxels stay transparent), or takes it off.
- :class:`ReviewWalk` holds the ranked units of ``review.json`` with their labelmap (``review_units.nii.gz``) and
  the ranks visited; :func:`center_slices` centres the slice views on a unit (its ``centre_lps``, in RAS here);
  :func:`describe_unit` is the line both shells show for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import slicer

from drasclr.core.image import CTImage

from .geometry import lps_to_ras_points
from .volumes import add_volume_node, update_volume_node

HEAT_COLOR_NAME = "DrasCLR uncertainty heat"
OVERLAY_THRESHOLD = 10  # uncertainty (percent) below which the overlay is transparent
OVERLAY_OPACITY = 0.5


def heat_color_node(scene):
    """A colour table for 0..100: transparent yellow at 0 through orange to opaque red at 100 (created once)."""
    node = scene.GetFirstNode(HEAT_COLOR_NAME, "vtkMRMLColorTableNode")
    if node is not None:
        return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetName(HEAT_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(101)
    for i in range(101):
        t = i / 100.0
        node.SetColor(i, f"u{i}", 1.0, float(1.0 - t), 0.0, float(min(1.0, 0.3 + t)))
    node.SetHideFromEditors(True)
    scene.AddNode(node)
    return node


def show_heat_overlay(scene, ct_node, image: CTImage | None, name: str, visible: bool = True):
    """Show ``image`` (uint8 0..100 on the CT's grid) as the foreground of every slice view over ``ct_node``, or
    (``visible`` False) remove it from the views. The volume node ``name`` is created once and updated after;
    returns it (None when hiding an overlay that was never made)."""
    node = scene.GetFirstNode(name, "vtkMRMLScalarVolumeNode")
    if not visible:
        if node is not None:
            _set_foreground(scene, node.GetID(), hide=True)
        return node
    if image is None:
        raise ValueError("no uncertainty map: analyze with a subtype model first")
    if node is None:
        node = add_volume_node(scene, image, name, dtype=np.uint8)
    else:
        update_volume_node(node, image, dtype=np.uint8)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(heat_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(100.0, 50.0)
    display.SetLowerThreshold(OVERLAY_THRESHOLD)
    display.SetUpperThreshold(255)
    display.ApplyThresholdOn()
    _set_foreground(scene, node.GetID(), background=ct_node.GetID())
    return node


def _set_foreground(scene, node_id: str, background: str | None = None, hide: bool = False) -> None:
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        c = composites.GetItemAsObject(i)
        if hide:
            if c.GetForegroundVolumeID() == node_id:
                c.SetForegroundVolumeID(None)
            continue
        if background is not None and not c.GetBackgroundVolumeID():
            c.SetBackgroundVolumeID(background)
        c.SetForegroundVolumeID(node_id)
        c.SetForegroundOpacity(OVERLAY_OPACITY)


def overlay_visible(scene, node) -> bool:
    """True when ``node`` is the foreground of at least one slice view."""
    if node is None:
        return False
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return any(composites.GetItemAsObject(i).GetForegroundVolumeID() == node.GetID()
               for i in range(composites.GetNumberOfItems()))


def center_slices(scene, centre_lps) -> np.ndarray:
    """Centre every slice view on the LPS point ``centre_lps`` and put the crosshair there (shown where the
    crosshair is switched on); returns the point in RAS."""
    ras = lps_to_ras_points(np.asarray(centre_lps, float))[0]
    nodes = scene.GetNodesByClass("vtkMRMLSliceNode")
    for i in range(nodes.GetNumberOfItems()):
        nodes.GetItemAsObject(i).JumpSliceByCentering(*(float(v) for v in ras))
    crosshair = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
    if crosshair is not None:
        crosshair.SetCrosshairRAS(*(float(v) for v in ras))
    return ras


UNIT_MARKER = "Review unit"  # the fiducial that marks the current review unit's centre in every view


def mark_unit(scene, ras, label: str):
    """Put the (locked) fiducial ``Review unit`` on the RAS point ``ras`` with the text ``label``: unlike the
    crosshair it shows in every slice view, also where a view draws no crosshair (trame-slicer's slice views).
    Returns the node, or None when the scene has no markups (a bare MRML scene without the Markups module)."""
    node = scene.GetFirstNode(UNIT_MARKER, "vtkMRMLMarkupsFiducialNode")
    if node is None:
        if not scene.IsNodeClassRegistered("vtkMRMLMarkupsFiducialNode"):
            return None
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", UNIT_MARKER)
        node.CreateDefaultDisplayNodes()
        node.SetLocked(True)
        node.SetHideFromEditors(True)
        display = node.GetDisplayNode()
        display.SetSelectedColor(1.0, 0.85, 0.0)  # amber: apart from every subtype colour and the heat map
        display.SetColor(1.0, 0.85, 0.0)
        display.SetGlyphScale(4.0)
        display.SetTextScale(3.5)
    node.RemoveAllControlPoints()
    node.AddControlPoint(*(float(v) for v in ras), label)
    node.GetDisplayNode().SetVisibility(True)
    return node


def clear_unit_marker(scene) -> None:
    """Remove the review-unit fiducial (a new analysis starts a new queue)."""
    node = scene.GetFirstNode(UNIT_MARKER, "vtkMRMLMarkupsFiducialNode")
    if node is not None:
        scene.RemoveNode(node)


def unit_classes(unit: dict, floor: float = 0.01) -> str:
    """The unit's predicted subtypes, largest share first, those under ``floor`` left out: ``"normal 80%, cle 20%"``."""
    share = sorted(((k, v) for k, v in unit["predicted"].items() if v >= floor), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in share)


def describe_unit(unit: dict, total: int) -> str:
    """The line the shells show for a review unit: rank k of n, region, volume, predicted subtypes, expected errors."""
    return (f"Region {unit['rank']}/{total} ({unit['region'].replace('_', ' ')}, {unit['volume_ml']:.0f} ml: "
            f"{unit_classes(unit)}); about {unit['score']:.0f} voxels expected wrong.")


@dataclass
class ReviewWalk:
    """The review queue of one analysis and the annotator's progress through it."""

    units: list[dict]
    labels: CTImage  # review_units.nii.gz: rank per voxel, 0 outside every unit
    reviewed: list[int] = field(default_factory=list)  # ranks, in the order visited

    def next_unit(self) -> dict | None:
        """The best-ranked unit not yet reviewed (None when all are)."""
        done = set(self.reviewed)
        return next((u for u in self.units if u["rank"] not in done), None)

    def mark(self, rank: int) -> None:
        if rank not in self.reviewed:
            self.reviewed.append(int(rank))

    def mask(self) -> CTImage:
        """The reviewed units as a 0/1 uint8 labelmap on the CT's grid."""
        m = np.isin(self.labels.array, np.asarray(self.reviewed, dtype=np.int64)) if self.reviewed else \
            np.zeros(self.labels.array.shape, bool)
        return self.labels.with_array(m.astype(np.uint8))
