"""The reading room's guided-correction handlers on real MRML and trame-slicer views, without a browser.

The page's *Uncertainty* switch and *Next region to review* button run these handlers; here they run on a
``ReadingRoom`` built on a trame server that is never started (so no chromium is needed): the switch puts the
Logic's heat overlay in trame-slicer's slice views and takes it off, each click centres the views on the next
unit of the queue (the ``slice_positions`` state follows the views), and Fine-tune sends the reviewed units to
``drasclr finetune corrections`` (a real child process) as ``--reviewed``.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


@pytest.fixture
def room(tmp_path):
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    import torch
    from trame.app import get_server

    from drasclr.dense.segmenter import SubtypeSegmenter
    from drasclr.dense.store import save_segmenter
    from DrasCLRSlicerWeb.server import create_app

    torch.manual_seed(0)
    models = tmp_path / "data" / "models"
    save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), models / "tiny-v1",
                   {"name": "tiny", "version": "tiny-v1"})
    server = get_server(f"guided-{tmp_path.name}", client_type="vue3")
    room = create_app(tmp_path / "data", device="cpu", finetune_seconds=1, server=server)
    room.state.ready()  # state-change handlers run on flush, as on a started server
    yield room
    room.shutdown()


def slice_views(room):
    from trame_slicer.views import SliceView

    return [v for v in room.slicer_app.view_manager.get_views() if isinstance(v, SliceView)]


def test_uncertainty_switch_next_region_and_reviewed_finetune(room, tmp_path):
    from DrasCLRSlicerLib import guided
    from DrasCLRSlicerLib.phantom import chest_phantom
    from DrasCLRSlicerLib.volumes import add_volume_node

    room._open(lambda: add_volume_node(room.scene, chest_phantom((20, 28, 28), (6.0, 6.0, 6.0), None, 0), "small"))
    assert room.state.has_ct and not room.state.has_review
    room.refresh_models()  # the engine's default family is preselected; this test picks its tiny model (fast)
    assert room.state.model_path.endswith("demo-v10")
    room.refresh_models(select=str(tmp_path / "data" / "models" / "tiny-v1"))
    assert room.state.model_path.endswith("tiny-v1")
    nodes = room.logic.analyze(room.volume, model=room._model(), device="cpu", tta=False)
    room._show_results(nodes)
    units = nodes.review.units
    assert room.state.has_review and room.state.review_total == len(units) >= 2
    assert room.state.reviewed_count == 0 and room.state.review is None

    # the switch: the heat overlay is the foreground of the slice views, then gone
    views = slice_views(room)
    assert [v.get_orientation() for v in views] == ["Axial", "Coronal"]
    with room.state:
        room.state.uncertainty = True
    heat = room.scene.GetFirstNode("small uncertainty", "vtkMRMLScalarVolumeNode")
    assert heat is not None and all(v.get_foreground_volume_id() == heat.GetID() for v in views)
    assert all(v.get_background_volume_id() == room.volume.GetID() for v in views)
    with room.state:
        room.state.uncertainty = False
    assert all(v.get_foreground_volume_id() is None for v in views)

    # Next region: ranks 1 and 2 in turn; the views and the page's positions are on each unit's centre
    for k in (1, 2):
        room.next_review()
        unit = units[k - 1]
        shown = room.state.review
        assert (shown["rank"], shown["total"]) == (k, len(units))
        assert shown["region"] == unit["region"].replace("_", " ")
        assert shown["text"].startswith(f"Region {k}/{len(units)} ({shown['region']}")
        lps = unit["centre_lps"]
        want = {"Axial": ("S", lps[2]), "Coronal": ("A", -lps[1])}
        got = {p["view"]: (p["axis"], p["mm"]) for p in room.state.slice_positions}
        for view in views:  # the views themselves, and what the page shows of them
            axis, mm = want[view.get_orientation()]
            assert view.get_slice_value() == pytest.approx(mm, abs=1e-6)
            assert got[view.get_orientation()][0] == axis
            assert got[view.get_orientation()][1] == pytest.approx(mm, abs=0.01)
        assert room.state.reviewed_count == k
        crosshair = room.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")  # marks the centre in the 3-D view
        assert crosshair.GetCrosshairMode() == crosshair.ShowSmallBasic
        np.testing.assert_allclose(crosshair.GetCrosshairRAS(), [-lps[0], -lps[1], lps[2]], atol=1e-6)
        # and the review-unit fiducial marks it in the 2-D views (which draw no crosshair): rendered pixels
        marker = room.scene.GetFirstNode(guided.UNIT_MARKER, "vtkMRMLMarkupsFiducialNode")
        assert marker.GetNthControlPointLabel(0) == f"Region {k}"
        for view in views:
            shown_px = _pixels(view)
            marker.GetDisplayNode().SetVisibility(False)
            hidden_px = _pixels(view)
            marker.GetDisplayNode().SetVisibility(True)
            assert (np.abs(shown_px.astype(int) - hidden_px).sum(-1) > 60).sum() >= 20, view.get_orientation()
    assert nodes.review.reviewed == [1, 2]

    # Fine-tune with nothing painted: the job gets the two reviewed units as confirmed labels, then re-analyses
    asyncio.run(room._finetune())
    assert "failed" not in room.state.job_message, room.state.job_message
    work = room.session.folder / "finetune-001"
    np.testing.assert_array_equal(_read(work / "reviewed.nrrd") > 0, np.isin(nodes.review.labels.array, [1, 2]))
    card = json.loads((tmp_path / "data" / "models" / "tiny-v2" / "model.json").read_text())
    assert card["finetune"]["corrected_voxels"] == 0
    assert card["finetune"]["reviewed_voxels"] == int(np.isin(nodes.review.labels.array, [1, 2]).sum())
    assert f"2 reviewed regions ({card['finetune']['reviewed_voxels']} confirmed voxels)" in room.state.message
    # the re-analysis with tiny-v2 starts a new queue
    assert room.state.analysis_count == 2 and room.state.last_model == "tiny-v2"
    assert room.state.reviewed_count == 0 and room.state.review is None and room.nodes.review.reviewed == []
    assert crosshair.GetCrosshairMode() == crosshair.NoCrosshair
    assert room.scene.GetFirstNode(guided.UNIT_MARKER, "vtkMRMLMarkupsFiducialNode") is None


def _pixels(view) -> np.ndarray:
    """The view rendered offscreen, as an (H, W, 3) uint8 array."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    view.render_window().Render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.ReadFrontBufferOff()
    grab.Update()
    img = grab.GetOutput()
    w, h, _ = img.GetDimensions()
    return vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[..., :3].copy()


def _read(path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
