"""Compare with prior (issue 31): ``drasclr compare`` outputs <-> MRML nodes; no Qt.

- :func:`compare_command`: the ``drasclr compare`` command line for a child process (:func:`process.run_engine`);
- :func:`load_comparison`: its output folder as nodes: ``<prior> change map`` (segmentation on the baseline's
  grid: new emphysema, emphysema gone, subtype changed, stable emphysema), ``<prior> change`` (table: the rows of
  ``change.csv``) and ``<prior> trends`` (plot chart: emphysema % per region over the scans).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import vtk

from drasclr.core.io import read_image
from drasclr.core.settings import AnalysisSettings
from drasclr.followup import changemap
from drasclr.followup.measure import COLUMNS

from . import process
from .segmentations import labelmap_to_segmentation
from .terminology import SegmentEntry


@dataclass
class FollowupNodes:
    baseline: object  # the earlier (baseline) volume node: the change map's grid
    change_map: object  # segmentation node on the baseline volume
    table: object
    chart: object
    rows: list[dict] = field(default_factory=list)
    registration: list[dict] = field(default_factory=list)
    output_dir: Path | None = None


def compare_command(scans, output_dir, model=None, device: str = "auto", use_model: bool = True,
                    python: str | None = None) -> list[str]:
    """``drasclr compare SCAN... -o OUT`` (the baseline first: CT files or analysis folders); the analysis settings
    travel as ``drasclr analyze`` flags (AnalysisSettings.to_args)."""
    settings = AnalysisSettings.from_panel({"model": model, "device": device, "use_model": use_model}, strict=True)
    return [python or process.python_executable(), "-m", "drasclr", "compare", *map(str, scans), "-o",
            str(output_dir), "--overwrite", *settings.to_args()]


def prepare_compare(logic, volume_node, prior, work_dir: Path, model=None, device: str = "auto",
                    use_model: bool = True) -> tuple[list[str], Path, object]:
    """MRML step before the child process (GUI/event-loop thread): write the scans into ``work_dir`` and return
    (command, output folder, baseline volume node). ``prior``: the earlier scan, a volume node or an analysis
    folder (its CT is loaded as a node)."""
    work_dir = Path(work_dir)
    later, _ = logic.write_inputs(volume_node, None, work_dir / "later")
    if isinstance(prior, str | Path):
        from drasclr.followup.compare import analysis_ct_path

        baseline, baseline_node = Path(prior), logic.load_ct(analysis_ct_path(prior))
    else:
        (baseline, _), baseline_node = logic.write_inputs(prior, None, work_dir / "prior"), prior
    out_dir = work_dir / "output"
    return compare_command([baseline, later], out_dir, model, device, use_model), out_dir, baseline_node


def change_entries() -> list[SegmentEntry]:
    return [SegmentEntry(v, changemap.NAMES[v].replace("_", " ").capitalize(),
                         tuple(c / 255.0 for c in changemap.COLORS[v])) for v in changemap.NAMES if v > 1]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: (v if k in ("name", "region") else float(v) if v else math.nan) for k, v in r.items()}
                for r in csv.DictReader(fh)]


def _table(scene, rows: list[dict], columns: list[str], name: str, node=None):
    node = node or scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    for col in columns:
        arr = vtk.vtkStringArray() if col in ("name", "region") else vtk.vtkDoubleArray()
        arr.SetName(col)
        arr.SetNumberOfTuples(len(rows))
        for i, r in enumerate(rows):
            v = r.get(col)
            arr.SetValue(i, str(v)) if col in ("name", "region") else arr.SetValue(i, math.nan if v is None
                                                                                    else float(v))
        table.AddColumn(arr)
    node.SetUseColumnTitleAsColumnHeader(True)
    table.Modified()
    return node


def _trend_chart(scene, rows: list[dict], name: str, column: str = "emphysema_pct"):
    """A line chart: ``column`` per region (one series each) over the scans."""
    regions = [r for r in dict.fromkeys(r["region"] for r in rows) if r not in ("left_lung", "right_lung")]
    scans = sorted({int(r["scan"]) for r in rows})
    wide = [{"scan": float(s), **{g: next(r[column] for r in rows if int(r["scan"]) == s and r["region"] == g)
                                  for g in regions}} for s in scans]
    table = _table(scene, wide, ["scan", *regions], f"{name} table")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    for g in regions:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {g}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(series.PlotTypeScatter)
        series.SetXColumnName("scan")
        series.SetYColumnName(g)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Emphysema % per region over time")
    chart.SetXAxisTitle("scan (0 = baseline)")
    chart.SetYAxisTitle("% of region volume")
    return chart


def load_comparison(scene, baseline_node, out_dir: Path, name: str | None = None) -> FollowupNodes:
    """Nodes from a ``drasclr compare`` output folder whose baseline is ``baseline_node``'s CT."""
    from .volumes import image_from_volume_node

    out_dir = Path(out_dir)
    name = name or baseline_node.GetName()
    ct = image_from_volume_node(baseline_node)
    change = read_image(out_dir / "change_map.nii.gz")
    if not change.same_grid(ct):
        raise ValueError(f"{out_dir}: the change map is not on {baseline_node.GetName()!r}'s grid")
    seg = labelmap_to_segmentation(scene, change, baseline_node, change_entries(), name=f"{name} change map")
    rows = read_rows(out_dir / "change.csv")
    table = _table(scene, rows, COLUMNS, f"{name} change")
    chart = _trend_chart(scene, rows, f"{name} trends")
    doc = json.loads((out_dir / "change.json").read_text())
    return FollowupNodes(baseline_node, seg, table, chart, rows, doc.get("registration", []), out_dir)


def summary(nodes: FollowupNodes) -> str:
    """One status line: whole-lung change from the baseline to the last scan and the registration quality."""
    last = max(int(r["scan"]) for r in nodes.rows)
    w = next(r for r in nodes.rows if int(r["scan"]) == last and r["region"] == "whole_lung")
    dice = ", ".join(f"{q['lung_dice']:.3f}" for q in nodes.registration)
    return (f"Change since the prior: emphysema {w['d_emphysema_pct']:+.1f} points, Perc15 (volume-adjusted) "
            f"{w['d_perc15_hu_adj']:+.1f} HU (raw {w['d_perc15_hu']:+.1f}), lung volume {w['d_volume_ml']:+.0f} ml, "
            f"new emphysema {w['new_emphysema_ml']:.0f} ml; registration lung Dice {dice}.")
