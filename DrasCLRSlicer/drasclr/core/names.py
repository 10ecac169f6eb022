"""One table of what people read: the name, short name and colour of every subtype and region, and the title of
every statistics column. The report, the web reading room, the Slicer tables and segments and the terminology
file all read it from here (the terminology JSON of the Slicer module is checked against it by a test).

Label values are the contract of :mod:`drasclr.core.labels`; this module only says how each value is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import labels


@dataclass(frozen=True)
class Shown:
    """How one label (or one summary row) is shown: ``key`` as in files (``cle``, ``left_upper_lobe``), ``title``
    for people, ``short`` for narrow places (legends, bars), ``color`` RGB 0-255, ``alpha`` overlay opacity."""

    value: int | None
    key: str
    title: str
    short: str
    color: tuple[int, int, int]
    alpha: float = 1.0


SUBTYPES: dict[int, Shown] = {
    labels.NORMAL: Shown(labels.NORMAL, "normal", "Normal parenchyma", "Normal", (102, 187, 106), 0.12),
    labels.CLE: Shown(labels.CLE, "cle", "Centrilobular emphysema", "CLE", (255, 140, 0), 0.7),
    labels.PSE: Shown(labels.PSE, "pse", "Paraseptal emphysema", "PSE", (0, 200, 255), 0.7),
    labels.PLE: Shown(labels.PLE, "ple", "Panlobular emphysema", "PLE", (170, 60, 220), 0.6),
}
LAA_COLOR = (255, 215, 0)  # the LAA-950 overlay when no subtype map exists (gold)

_REGION_STYLE = {  # value: (short, colour)
    1: ("LUL", (255, 255, 255)), 2: ("LLL", (255, 105, 180)), 3: ("RUL", (144, 238, 144)),
    4: ("RML", (135, 206, 250)), 5: ("RLL", (255, 99, 71)),
    11: ("L upper", (255, 255, 255)), 12: ("L middle", (255, 182, 193)), 13: ("L lower", (255, 105, 180)),
    14: ("R upper", (144, 238, 144)), 15: ("R middle", (135, 206, 250)), 16: ("R lower", (255, 99, 71)),
}
REGIONS: dict[int, Shown] = {
    v: Shown(v, key, key.replace("_", " ").capitalize(), _REGION_STYLE[v][0], _REGION_STYLE[v][1])
    for v, key in labels.REGION_NAMES.items()
}
SUMMARY_ROWS = {"left_lung": "Left lung", "right_lung": "Right lung", "whole_lung": "Whole lung"}

# statistics columns: key -> (title, unit, decimals shown)
COLUMNS: dict[str, tuple[str, str, int]] = {
    "region": ("Region", "", 0), "volume_ml": ("Volume", "mL", 0), "mean_hu": ("Mean HU", "HU", 0),
    "perc15_hu": ("Perc15", "HU", 0), "laa950_pct": ("LAA-950", "%", 1), "laa910_pct": ("LAA-910", "%", 1),
    "laa856_pct": ("LAA-856", "%", 1), "normal_pct": ("Normal", "%", 1), "cle_pct": ("CLE", "%", 1),
    "pse_pct": ("PSE", "%", 1), "ple_pct": ("PLE", "%", 1), "mean_uncertainty": ("Uncertainty", "%", 1),
}


def region_title(key: str) -> str:
    """``left_upper_lobe`` -> ``Left upper lobe``; ``whole_lung`` -> ``Whole lung``; an unknown key as it is."""
    if key in SUMMARY_ROWS:
        return SUMMARY_ROWS[key]
    for shown in REGIONS.values():
        if shown.key == key:
            return shown.title
    return key


def column_title(column: str, with_unit: bool = True) -> str:
    """``laa950_pct`` -> ``LAA-950 %``; ``volume_ml`` -> ``Volume (mL)``; an unknown column as it is."""
    if column not in COLUMNS:
        return column
    title, unit, _ = COLUMNS[column]
    if not with_unit or not unit or unit in title:
        return title
    return f"{title} {unit}" if unit == "%" else f"{title} ({unit})"


def format_value(column: str, value) -> str:
    """A cell as people read it: the column's decimals, an en dash for a missing value."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{COLUMNS.get(column, ('', '', 1))[2]}f}"


def hex_color(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def subtype_colors() -> dict[int, tuple[int, int, int]]:
    return {v: s.color for v, s in SUBTYPES.items()}


def region_colors() -> dict[int, tuple[int, int, int]]:
    return {v: s.color for v, s in REGIONS.items()}
