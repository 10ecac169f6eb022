"""Per-region rows of ``drasclr.analysis.stats`` <-> a table node, and a bar chart of them (plot chart node)."""

from __future__ import annotations

import math

import vtk

from drasclr.analysis.stats import COLUMNS, UNCERTAINTY_COLUMN
from drasclr.core import names

# chart series: (column, legend title); the subtype columns when a subtype map exists, else LAA-950
SUBTYPE_SERIES = [(c, names.column_title(c)) for c in ("normal_pct", "cle_pct", "pse_pct", "ple_pct")]
DENSITY_SERIES = [("laa950_pct", names.column_title("laa950_pct"))]
_REGION_KEYS = {names.region_title(k): k for k in [*(s.key for s in names.REGIONS.values()), *names.SUMMARY_ROWS]}


def rows_to_table(scene, rows: list[dict], node=None, name: str = "DrasCLR statistics"):
    """A table node with the columns of ``drasclr.analysis.stats.COLUMNS`` (``region`` as text, the rest as doubles;
    a missing value is NaN), then ``mean_uncertainty`` when the rows have it. ``node`` is refilled when given.
    People read it: regions by name ("Left upper lobe"), columns by title (drasclr.core.names); the column names stay
    the file keys. Returns the node."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    was = node.StartModify()
    table.Initialize()
    columns = [*COLUMNS, UNCERTAINTY_COLUMN] if rows and UNCERTAINTY_COLUMN in rows[0] else COLUMNS
    for col in columns:
        arr = vtk.vtkStringArray() if col == "region" else vtk.vtkDoubleArray()
        arr.SetName(col)
        arr.SetNumberOfTuples(len(rows))
        for i, row in enumerate(rows):
            v = row.get(col)
            if col == "region":
                arr.SetValue(i, names.region_title(str(v)))
            else:
                arr.SetValue(i, math.nan if v is None else float(v))
        table.AddColumn(arr)
    node.SetUseColumnTitleAsColumnHeader(True)
    for col in columns:
        node.SetColumnTitle(col, names.column_title(col, with_unit=False))
        node.SetColumnUnitLabel(col, names.COLUMNS.get(col, ("", "", 0))[1])
    table.Modified()
    node.EndModify(was)
    return node


def table_to_rows(node) -> list[dict]:
    """Rows back from a table node (strings for ``region``, floats elsewhere), columns of ``COLUMNS`` (and
    ``mean_uncertainty`` when the table has it)."""
    table = node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ValueError(f"table {node.GetName()!r} lacks columns {missing}")
    columns = [*COLUMNS, UNCERTAINTY_COLUMN] if UNCERTAINTY_COLUMN in names else COLUMNS
    rows = []
    for r in range(table.GetNumberOfRows()):
        row = {}
        for col in columns:
            v = table.GetValueByName(r, col)
            if col == "region":
                row[col] = _REGION_KEYS.get(v.ToString(), v.ToString())
            else:
                row[col] = v.ToDouble() if v.IsNumeric() else _to_float(v.ToString())
        rows.append(row)
    return rows


def _to_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def has_subtypes(rows: list[dict]) -> bool:
    return any(r.get("normal_pct") is not None and not math.isnan(r["normal_pct"]) for r in rows)


def bar_chart(scene, table_node, rows: list[dict], chart=None, name: str = "DrasCLR chart"):
    """A plot chart node: one bar series per subtype (% of region volume), regions on the x axis.

    Without a subtype map (no model) the chart shows LAA-950 % per region instead. Existing series of
    ``chart`` are replaced. Returns the chart node.
    """
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    for sid in [chart.GetNthPlotSeriesNodeID(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]:
        series = scene.GetNodeByID(sid)
        chart.RemovePlotSeriesNodeID(sid)
        if series is not None:
            scene.RemoveNode(series)
    specs = SUBTYPE_SERIES if has_subtypes(rows) else DENSITY_SERIES
    for col, title in specs:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {title}")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetPlotType(series.PlotTypeBar)
        series.SetXColumnName("")  # bars at the row index; labels from the region column
        series.SetLabelColumnName("region")
        series.SetYColumnName(col)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Emphysema subtypes per region" if specs is SUBTYPE_SERIES else "LAA-950 per region")
    chart.SetXAxisTitle("region")
    chart.SetYAxisTitle("% of region volume")
    return chart
