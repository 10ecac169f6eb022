"""Storage-node round trips (.nrrd, .seg.nrrd, .tsv) and the statistics table / chart nodes."""

from __future__ import annotations

import math

import numpy as np
from bridge_support import oblique_direction, synthetic_chest

from drasclr.analysis.stats import COLUMNS
from DrasCLRSlicerLib import segmentations, storage, tables, terminology, volumes

ROWS = [
    {"region": "left_upper_zone", "volume_ml": 1007.3160000000001, "mean_hu": -861.5, "perc15_hu": -902.0,
     "laa950_pct": 3.5,
     "laa910_pct": 12.0, "laa856_pct": 55.0, "normal_pct": 80.0, "cle_pct": 15.0, "pse_pct": 5.0, "ple_pct": 0.0},
    {"region": "whole_lung", "volume_ml": 3001.0, "mean_hu": -850.25, "perc15_hu": -890.5, "laa950_pct": 2.0,
     "laa910_pct": 9.0, "laa856_pct": 50.0, "normal_pct": math.nan, "cle_pct": math.nan, "pse_pct": math.nan,
     "ple_pct": math.nan},
]


def assert_rows_equal(got, want, rel=0.0):
    assert [r["region"] for r in got] == [r["region"] for r in want]
    for g, w in zip(got, want):
        for c in COLUMNS[1:]:
            same = (math.isnan(g[c]) and math.isnan(w[c])) or abs(g[c] - w[c]) <= rel * abs(w[c])
            assert same, (g["region"], c, g[c], w[c])


def test_volume_nrrd_round_trip(scene, tmp_path):
    ct = synthetic_chest((9, 11, 13), spacing=(0.6, 0.75, 2.0), direction=oblique_direction())
    node = volumes.add_volume_node(scene, ct, "ct")
    path = storage.save_node(node, tmp_path / "ct.nrrd")
    back = volumes.image_from_volume_node(storage.load_volume(scene, path))
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.spacing, ct.spacing, rtol=0, atol=1e-12)
    np.testing.assert_allclose(back.origin, ct.origin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.direction, ct.direction, rtol=0, atol=1e-12)


def test_segmentation_seg_nrrd_round_trip(scene, tmp_path):
    ct = synthetic_chest((9, 11, 13), direction=oblique_direction())
    ref = volumes.add_volume_node(scene, ct, "ct")
    lab = np.zeros(ct.array.shape, np.uint8)
    lab[1:3, 2:5, 2:4] = 2
    lab[5:8, 6:9, 8:12] = 4
    entries = terminology.subtype_entries()
    seg = segmentations.labelmap_to_segmentation(scene, ct.with_array(lab), ref, entries)
    path = storage.save_node(seg, tmp_path / "sub.seg.nrrd")
    loaded = storage.load_segmentation(scene, path)
    assert set(segmentations.segment_names(loaded)) == {e.name for e in entries}
    for e in entries:  # colours and terminology travel with the file
        segment = loaded.GetSegmentation().GetSegment(segmentations.segment_names(loaded)[e.name])
        np.testing.assert_allclose(segment.GetColor(), e.color, atol=1e-6)
        assert f"99DRASCLR^{e.value}^{e.name}" in segment.GetTerminology()
    back = segmentations.segmentation_to_labelmap(loaded, ref, entries)
    np.testing.assert_array_equal(back.array, lab)
    # not cropped to the segments' bounding box: the file holds the whole reference grid
    import SimpleITK as sitk

    assert sitk.ReadImage(str(path)).GetSize()[:3] == ct.shape_xyz


def test_table_node_columns_and_values(scene):
    node = tables.rows_to_table(scene, ROWS, name="stats")
    t = node.GetTable()
    assert [t.GetColumnName(i) for i in range(t.GetNumberOfColumns())] == COLUMNS
    assert t.GetNumberOfRows() == 2
    assert node.GetCellText(0, 0) == "Left upper zone"  # people read names; the rows come back as keys
    assert node.GetColumnTitle("laa950_pct") == "LAA-950"
    assert t.GetValueByName(1, "volume_ml").ToDouble() == 3001.0
    assert node.GetColumnUnitLabel("mean_hu") == "HU"
    assert_rows_equal(tables.table_to_rows(node), ROWS)
    tables.rows_to_table(scene, ROWS[:1], node=node)  # refilled, not appended
    assert node.GetTable().GetNumberOfRows() == 1


def test_table_tsv_round_trip(scene, tmp_path):
    node = tables.rows_to_table(scene, ROWS, name="stats")
    path = storage.save_node(node, tmp_path / "stats.tsv")
    header = path.read_text().splitlines()[0].split("\t")
    assert header == COLUMNS
    assert (tmp_path / "stats.schema.tsv").exists()  # column types travel with the table
    loaded = storage.load_table(scene, path)
    assert loaded.GetTable().GetColumnByName("volume_ml").IsA("vtkDoubleArray")
    assert loaded.GetTable().GetColumnByName("region").IsA("vtkStringArray")
    # Slicer's delimited-text writer keeps 6 significant digits (vtkVariant::ToString's default)
    assert_rows_equal(tables.table_to_rows(loaded), ROWS, rel=5e-6)


def test_bar_chart_series(scene):
    table = tables.rows_to_table(scene, ROWS, name="stats")
    chart = tables.bar_chart(scene, table, ROWS, name="chart")
    series = [scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(i)) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == ["normal_pct", "cle_pct", "pse_pct", "ple_pct"]
    assert all(s.GetPlotType() == s.PlotTypeBar and s.GetLabelColumnName() == "region" for s in series)
    assert all(s.GetTableNodeID() == table.GetID() for s in series)
    no_model = [{**r, **{c: math.nan for c in ("normal_pct", "cle_pct", "pse_pct", "ple_pct")}} for r in ROWS]
    tables.bar_chart(scene, table, no_model, chart=chart)
    assert chart.GetNumberOfPlotSeriesNodes() == 1
    assert scene.GetNodeByID(chart.GetNthPlotSeriesNodeID(0)).GetYColumnName() == "laa950_pct"
    assert scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 1  # old series removed
