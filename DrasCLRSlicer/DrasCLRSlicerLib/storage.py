"""Saving and loading nodes through MRML storage nodes (``slicer.util.load*``/``saveNode`` need the app).

Volumes: ``.nrrd`` / ``.nii.gz`` (vtkMRMLVolumeArchetypeStorageNode); segmentations: ``.seg.nrrd``;
tables: ``.tsv`` / ``.csv``. The storage node chosen is the node class's default one.
"""

from __future__ import annotations

import os
from pathlib import Path


def _storage_node(node):
    storage = node.GetStorageNode()
    if storage is None:
        if not node.AddDefaultStorageNode():
            raise OSError(f"{node.GetClassName()} has no storage node")
        storage = node.GetStorageNode()
    return storage


def save_node(node, path: str | os.PathLike) -> Path:
    """Write ``node`` to ``path`` with its (default) storage node; raises OSError when writing fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = _storage_node(node)
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"could not write {node.GetName()!r} to {path}")
    return path


def load_node(scene, path: str | os.PathLike, class_name: str, name: str | None = None):
    """A new node of ``class_name`` read from ``path``; raises OSError when reading fails."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    node = scene.AddNewNodeByClass(class_name, name or path.name.split(".")[0])
    storage = _storage_node(node)
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        scene.RemoveNode(storage)
        scene.RemoveNode(node)
        raise OSError(f"could not read {path} as {class_name}")
    if class_name in ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"):
        node.CreateDefaultDisplayNodes()
    return node


def load_volume(scene, path, name=None, labelmap: bool = False):
    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    return load_node(scene, path, cls, name)


def load_segmentation(scene, path, name=None):
    return load_node(scene, path, "vtkMRMLSegmentationNode", name)


def load_table(scene, path, name=None):
    return load_node(scene, path, "vtkMRMLTableNode", name)
