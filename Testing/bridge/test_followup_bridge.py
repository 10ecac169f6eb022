"""Compare with prior in the MRML bridge: ``drasclr compare`` output as nodes (change map, table, trend chart)."""

from __future__ import annotations

import numpy as np

from drasclr.cli import main
from drasclr.core.io import read_image
from drasclr.followup import changemap
from drasclr.research.phantom import PhantomOptions
from drasclr.research.phantom.followup import FollowupOptions, write_series
from DrasCLRSlicerLib import followup, segmentations
from DrasCLRSlicerLib.volumes import add_volume_node

SMALL = PhantomOptions(size=(112, 112, 56), spacing=2.6, thickness=4.0, kernel="soft", noise=15.0, vessel_points=400,
                       subtypes=("cle", "pse", "ple"), severity=0.3)


def test_compare_command_names_baseline_first(tmp_path):
    cmd = followup.compare_command([tmp_path / "prior.nrrd", tmp_path / "now.nrrd"], tmp_path / "out",
                                   use_model=False, python="python")
    assert cmd[:4] == ["python", "-m", "drasclr", "compare"]
    assert cmd[4:6] == [str(tmp_path / "prior.nrrd"), str(tmp_path / "now.nrrd")] and "--no-model" in cmd


def test_load_comparison_as_nodes(scene, tmp_path):
    write_series(tmp_path / "s", 44, SMALL, FollowupOptions(scans=2, volume_change=(0.15,)))
    assert main(["compare", str(tmp_path / "s" / "scan_0"), str(tmp_path / "s" / "scan_1"), "-o",
                 str(tmp_path / "c"), "--no-report"]) == 0
    base = add_volume_node(scene, read_image(tmp_path / "s" / "scan_0" / "ct.nii.gz"), "prior CT")
    nodes = followup.load_comparison(scene, base, tmp_path / "c")
    names = segmentations.segment_names(nodes.change_map)
    assert "New emphysema" in names
    seg = segmentations.segmentation_to_labelmap(nodes.change_map, base, followup.change_entries())
    truth = read_image(tmp_path / "c" / "change_map.nii.gz").array
    assert np.array_equal(seg.array == changemap.NEW, truth == changemap.NEW)  # the map survives MRML exactly
    assert nodes.table.GetTable().GetNumberOfRows() == len(nodes.rows) == 16  # 2 scans x (5 lobes + 3)
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 6  # 5 lobes + whole lung
    assert "registration lung Dice" in followup.summary(nodes)


def test_compare_with_prior_runs_the_engine(scene, tmp_path):
    """The Logic path of the Qt button: two volume nodes -> drasclr compare in a child process -> nodes."""
    from DrasCLRSlicerLib.logic import DrasCLRLogic

    write_series(tmp_path / "s", 46, SMALL, FollowupOptions(scans=2, volume_change=(-0.1,)))
    prior = add_volume_node(scene, read_image(tmp_path / "s" / "scan_0" / "ct.nii.gz"), "prior CT")
    now = add_volume_node(scene, read_image(tmp_path / "s" / "scan_1" / "ct.nii.gz"), "current CT")
    nodes = DrasCLRLogic(scene).compare_with_prior(now, prior, use_model=False, work_dir=tmp_path / "w")
    assert nodes.baseline is prior and nodes.registration[0]["lung_dice"] >= 0.95
    whole = next(r for r in nodes.rows if r["scan"] == 1 and r["region"] == "whole_lung")
    assert whole["volume_ratio"] < 0.97  # the follow-up was scanned at a smaller volume
    assert (tmp_path / "w" / "output" / "report.html").is_file()
