"""The reading room's "Compare with prior" section on real MRML, without a browser (as test_guided_room)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow


def test_compare_with_prior_shows_change_map(tmp_path):
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    from trame.app import get_server

    from drasclr.research.phantom import PhantomOptions
    from drasclr.research.phantom.followup import FollowupOptions, write_series
    from DrasCLRSlicerLib.segmentations import segment_names
    from DrasCLRSlicerWeb import followup_panel
    from DrasCLRSlicerWeb.server import create_app

    opts = PhantomOptions(size=(112, 112, 56), spacing=2.6, thickness=4.0, kernel="soft", noise=15.0,
                          vessel_points=400, subtypes=("cle", "pse", "ple"), severity=0.3)
    write_series(tmp_path / "data" / "series", 45, opts, FollowupOptions(scans=2, volume_change=(0.15,)))
    server = get_server(f"followup-{tmp_path.name}", client_type="vue3")
    room = create_app(tmp_path / "data", device="cpu", server=server)
    room.state.ready()
    try:
        room.open_path("series/scan_1/ct.nii.gz")
        assert room.volume is not None
        asyncio.run(followup_panel.compare(room, "series/scan_0/ct.nii.gz", use_model=False))
        assert room.state.error in ("", None)
        assert "registration lung Dice" in room.state.followup_summary
        maps = [n for n in room.scene.GetNodesByClass("vtkMRMLSegmentationNode") if n.GetName().endswith("change map")]
        assert maps and "New emphysema" in segment_names(maps[0])
    finally:
        room.shutdown()
