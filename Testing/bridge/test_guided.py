"""Guided correction through the Logic on real MRML (slicer-core): the uncertainty heat overlay toggles in the slice
views, "next region to review" centres the views on each unit in rank order and marks it reviewed, the reviewed
units reach fine-tuning, and an engine output folder brings its queue along."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import slicer
import vtk
from bridge_support import synthetic_chest

from drasclr.analysis.analyze import analyze as engine_analyze
from drasclr.analysis.analyze import write_analysis
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import save_segmenter
from DrasCLRSlicerLib import guided, process, tables, volumes
from DrasCLRSlicerLib.logic import DrasCLRLogic

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def add_views(scene):
    """Red/Yellow/Green slice nodes with their composite nodes (what the Slicer layout creates)."""
    out = []
    for name, orient in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = slicer.vtkMRMLSliceNode()
        node.SetLayoutName(name)
        node.SetDimensions(256, 256, 1)
        node.SetFieldOfView(250, 250, 1)
        scene.AddNode(node)
        getattr(node, f"SetOrientationTo{orient}")()
        comp = slicer.vtkMRMLSliceCompositeNode()
        comp.SetLayoutName(name)
        scene.AddNode(comp)
        out.append((node, comp))
    return out


def slice_centre(node) -> np.ndarray:
    m = node.GetSliceToRAS()
    return np.array([m.GetElement(i, 3) for i in range(3)])


def ras_to_ijk(volume_node, ras) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(m)
    return np.array(m.MultiplyPoint([*ras, 1.0])[:3])


@pytest.fixture
def tiny_model_dir(tmp_path):
    import torch

    torch.manual_seed(0)
    return save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), tmp_path / "models" / "tiny-v1",
                          {"name": "tiny", "version": "tiny-v1"})


@pytest.mark.slow
def test_overlay_toggle_next_region_and_finetune_with_reviewed_units(scene, tmp_path, tiny_model_dir):
    views = add_views(scene)
    ct_node = volumes.add_volume_node(scene, synthetic_chest((20, 28, 28), spacing=(6.0, 6.0, 6.0)), "small")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(ct_node, model=tiny_model_dir, device="cpu")
    assert nodes.uncertainty is not None and nodes.review is not None and nodes.review.units

    # the heat overlay: on in every view over the CT, values as computed, off again
    heat = logic.show_uncertainty(nodes, True)
    assert heat.GetName() == "small uncertainty" and logic.uncertainty_visible(nodes)
    for _, comp in views:
        assert comp.GetForegroundVolumeID() == heat.GetID() and comp.GetBackgroundVolumeID() == ct_node.GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(guided.OVERLAY_OPACITY)
    np.testing.assert_array_equal(volumes.image_from_volume_node(heat).array, nodes.uncertainty.array)
    assert volumes.image_from_volume_node(heat).same_grid(nodes.uncertainty)
    assert heat.GetDisplayNode().GetColorNode().GetName() == guided.HEAT_COLOR_NAME
    assert logic.show_uncertainty(nodes, False) is heat and not logic.uncertainty_visible(nodes)
    assert all(comp.GetForegroundVolumeID() is None for _, comp in views)
    assert logic.show_uncertainty(nodes, True) is heat  # the same node comes back
    assert len([n for n in [scene.GetFirstNode("small uncertainty", "vtkMRMLScalarVolumeNode")] if n]) == 1

    # next region: rank order, views centred on a voxel of the unit, each marked reviewed
    labels_arr = nodes.review.labels.array
    seen = []
    while (unit := logic.next_review_unit(nodes)) is not None:
        seen.append(unit["rank"])
        for node, _ in views:
            np.testing.assert_allclose(slice_centre(node), unit["centre_ras"], atol=1e-6)
        np.testing.assert_allclose(unit["centre_ras"], [-unit["centre_lps"][0], -unit["centre_lps"][1],
                                                        unit["centre_lps"][2]])
        i, j, k = np.rint(ras_to_ijk(ct_node, unit["centre_ras"])).astype(int)
        assert labels_arr[k, j, i] == unit["rank"]
        marker = scene.GetFirstNode(guided.UNIT_MARKER, "vtkMRMLMarkupsFiducialNode")  # shown in every 2-D view
        assert marker.GetNumberOfControlPoints() == 1 and marker.GetNthControlPointLabel(0) == f"Region {unit['rank']}"
        np.testing.assert_allclose(marker.GetNthControlPointPositionWorld(0), unit["centre_ras"], atol=1e-6)
        if len(seen) == 2:
            mask = logic.reviewed_mask(nodes).array
            np.testing.assert_array_equal(mask > 0, np.isin(labels_arr, seen))
            break
    assert seen == [1, 2]

    # fine-tuning with nothing repainted: the two accepted units are the confirmed labels
    summary = logic.finetune_from_corrections(nodes, device="cpu", max_seconds=1, output_root=tmp_path / "models")
    assert Path(summary["model"]) == tmp_path / "models" / "tiny-v2"
    assert summary["corrected_voxels"] == 0
    assert summary["reviewed_voxels"] == int(np.isin(labels_arr, seen).sum()) > 0
    card = json.loads((Path(summary["model"]) / "model.json").read_text())
    assert card["finetune"]["reviewed_voxels"] == summary["reviewed_voxels"]
    logic.analyze(ct_node, model=summary["model"], device="cpu")  # a new analysis: a new queue, no marker
    assert scene.GetFirstNode(guided.UNIT_MARKER, "vtkMRMLMarkupsFiducialNode") is None


@pytest.mark.slow
def test_output_folder_brings_uncertainty_and_queue(scene, tmp_path, tiny_model_dir):
    from drasclr.analysis.loaded_model import LoadedModel
    from drasclr.dense.store import load_segmenter

    chest = synthetic_chest((20, 28, 28), spacing=(6.0, 6.0, 6.0))
    net, card, folder = load_segmenter(tiny_model_dir)
    res = engine_analyze(chest, model=LoadedModel(net, card, folder, "cpu"))
    out = write_analysis(res, tmp_path / "out", report=False)
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    logic = DrasCLRLogic(scene)
    nodes = logic.load_outputs(ct_node, out)
    np.testing.assert_array_equal(nodes.uncertainty.array, res.uncertainty.array)
    np.testing.assert_array_equal(nodes.review.labels.array, res.review.labels.array)
    assert [u["rank"] for u in nodes.review.units] == [u["rank"] for u in res.review.units]
    got = tables.table_to_rows(nodes.table)  # the table shows the per-region mean uncertainty too
    assert [r["mean_uncertainty"] for r in got] == pytest.approx([r["mean_uncertainty"] for r in res.rows], abs=1e-4)
    assert logic.reviewed_mask(nodes).array.sum() == 0
    unit = logic.next_review_unit(nodes)  # works without any slice view
    assert unit["rank"] == 1 and nodes.review.reviewed == [1]


def test_no_queue_without_a_model(scene):
    ct_node = volumes.add_volume_node(scene, synthetic_chest((20, 28, 28), spacing=(6.0, 6.0, 6.0)), "bare")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(ct_node, use_model=False)
    with pytest.raises(ValueError, match="subtype model"):
        logic.show_uncertainty(nodes, True)
    assert logic.show_uncertainty(nodes, False) is None  # hiding what was never shown is harmless
    with pytest.raises(ValueError, match="subtype model"):
        logic.next_review_unit(nodes)
    assert logic.reviewed_mask(nodes) is None


def test_finetune_command_passes_the_reviewed_mask():
    cmd = process.finetune_command("ct.nrrd", "p.nrrd", "c.nrrd", reviewed_path="rev.nrrd", python="py")
    assert cmd[cmd.index("--reviewed") + 1] == "rev.nrrd"
    assert "--reviewed" not in process.finetune_command("ct.nrrd", "p.nrrd", "c.nrrd", python="py")


def test_center_slices_moves_the_crosshair_and_describe_unit(scene):
    views = add_views(scene)
    crosshair = slicer.vtkMRMLCrosshairNode()
    scene.AddNode(crosshair)
    ras = guided.center_slices(scene, [10.0, -20.0, 30.0])
    np.testing.assert_allclose(ras, [-10.0, 20.0, 30.0])
    np.testing.assert_allclose(crosshair.GetCrosshairRAS(), ras)
    for node, _ in views:
        np.testing.assert_allclose(slice_centre(node), ras, atol=1e-6)
    unit = {"rank": 2, "region": "right_lower_lobe", "volume_ml": 1.8, "score": 51.7,
            "predicted": {"normal": 0.4, "cle": 0.14, "pse": 0.004, "ple": 0.456}}
    assert guided.unit_classes(unit) == "ple 46%, normal 40%, cle 14%"  # under 1 % left out
    assert guided.describe_unit(unit, 291) == ("Region 2/291 (right lower lobe, 2 ml: ple 46%, normal 40%, cle 14%); "
                                               "about 52 voxels expected wrong.")
