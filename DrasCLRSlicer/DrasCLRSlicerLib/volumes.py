"""Volume nodes <-> engine :class:`~drasclr.core.image.CTImage` (voxels copied, geometry exact; see geometry.py)."""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from drasclr.core.image import CTImage

from .geometry import RASGeometry, lps_geometry, ras_geometry


def node_geometry(node) -> RASGeometry:
    """The RAS geometry stored on a volume node (spacing, origin, directions)."""
    dirs = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(dirs)
    return RASGeometry(spacing=tuple(node.GetSpacing()), origin=tuple(node.GetOrigin()),
                       directions=slicer.util.arrayFromVTKMatrix(dirs)[:3, :3].copy())


def set_node_geometry(node, geometry: RASGeometry) -> None:
    dirs = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            dirs.SetElement(r, c, float(geometry.directions[r, c]))
    node.SetIJKToRASDirectionMatrix(dirs)
    node.SetSpacing(*geometry.spacing)
    node.SetOrigin(*geometry.origin)


def ijk_to_ras(node) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a volume node."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def image_from_volume_node(node) -> CTImage:
    """A scalar or labelmap volume node -> CTImage (array ``(Z, Y, X)`` copied, geometry in LPS).

    A parent transform on the node is not applied (the engine works on the voxel grid); harden it first.
    """
    if node is None or node.GetImageData() is None:
        raise ValueError("volume node has no image data")
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"volume {node.GetName()!r} is under a transform; harden the transform first")
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    spacing, origin, direction = lps_geometry(node_geometry(node))
    return CTImage(array, spacing, origin, direction)


def update_volume_node(node, image: CTImage, dtype=None):
    """Write ``image`` (voxels and geometry) into an existing volume node; returns the node."""
    array = image.array if dtype is None else image.array.astype(dtype, copy=False)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
    set_node_geometry(node, ras_geometry(image.spacing, image.origin, image.direction))
    return node


def add_volume_node(scene, image: CTImage, name: str, labelmap: bool = False, dtype=None):
    """A new ``vtkMRMLScalarVolumeNode`` (or labelmap node) in ``scene`` holding ``image``."""
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, name)
    update_volume_node(node, image, dtype=dtype)
    return node
