"""``report.html`` for one analysis: lung-window slices with the subtype overlay, a per-region bar chart, the stats
table and model/version info. Everything is local (PNG files beside the HTML, inline CSS); no identifiers.

Display conventions (radiological): axial slices are seen from the feet, the patient's right on the image's left
and anterior at the top; coronal slices are seen from the front, the patient's right on the image's left and
superior at the top. Pixels are resampled to square physical size, so thick slices keep their true aspect.
Volumes are first reoriented to LPS (``SimpleITK.DICOMOrient``) so any scan direction is handled the same way.

Names, colours and column titles come from :mod:`drasclr.core.names` (the one table the web app and Slicer read too).
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .. import __version__
from ..core import labels, names
from ..core.image import CTImage
from ..core.names import hex_color, region_title
from .stats import COLUMNS

# colours (RGB 0-255) and overlay opacities: drasclr.core.names, the one table of names and colours
SUBTYPE_COLORS = names.subtype_colors()
SUBTYPE_ALPHA = {v: s.alpha for v, s in names.SUBTYPES.items()}
LAA_COLOR = names.LAA_COLOR
REGION_COLORS = names.region_colors()
LUNG_WINDOW = (1500.0, -600.0)  # width, level (HU)
PLANES = ("axial", "coronal", "sagittal")


# --- slicing in display orientation ----------------------------------------------------------------------------


def to_lps(image: CTImage) -> CTImage:
    """The same voxels reoriented (permute/flip only) so index axes x, y, z point to patient L, P, S."""
    if np.allclose(image.direction, np.eye(3)):
        return image
    return CTImage.from_sitk(sitk.DICOMOrient(image.to_sitk(), "LPS"))


def _plane_slice(a: np.ndarray, plane: str, index: int) -> np.ndarray:
    """2-D display slice of an LPS-oriented ``(Z, Y, X)`` array: rows top→bottom, columns left→right on screen."""
    if plane == "axial":  # rows anterior→posterior, columns patient right→left
        return a[index]
    if plane == "coronal":  # rows superior→inferior, columns patient right→left
        return a[::-1, index, :]
    if plane == "sagittal":  # rows superior→inferior, columns anterior→posterior
        return a[::-1, :, index]
    raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")


def _plane_spacing(spacing_xyz, plane: str) -> tuple[float, float]:
    sx, sy, sz = spacing_xyz
    return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[plane]


def _plane_axis(plane: str) -> int:
    return {"axial": 0, "coronal": 1, "sagittal": 2}[plane]


def _resample_2d(img: np.ndarray, row_mm: float, col_mm: float, pixel_mm: float, order: int) -> np.ndarray:
    """Resample a 2-D slice to square pixels of ``pixel_mm`` (order 1 for intensities, 0 for labels)."""
    h = max(1, int(round(img.shape[0] * row_mm / pixel_mm)))
    w = max(1, int(round(img.shape[1] * col_mm / pixel_mm)))
    r = (np.arange(h) + 0.5) * pixel_mm / row_mm - 0.5
    c = (np.arange(w) + 0.5) * pixel_mm / col_mm - 0.5
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return ndi.map_coordinates(img, [rr, cc], order=order, mode="nearest",
                               output=np.float32 if order else img.dtype)


def _window(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    return np.clip((hu - (level - width / 2)) / width, 0.0, 1.0)


def _outline(lab: np.ndarray) -> np.ndarray:
    """Boundary pixels of every labelled area (a pixel whose 4-neighbour has another label)."""
    edge = np.zeros(lab.shape, bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return edge & (lab > 0)


def render_slice(ct: CTImage, plane: str, index: int, labelmap: np.ndarray | None = None,
                 colors: dict | None = None, alphas: dict | None = None, outline: np.ndarray | None = None,
                 outline_colors: dict | None = None, crop: tuple | None = None,
                 window=LUNG_WINDOW, max_pixels: int = 900, min_pixels: int = 420) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 image of one slice of LPS-oriented volumes (see :func:`to_lps`).

    ``labelmap`` / ``outline``: ``(Z, Y, X)`` arrays on ``ct``'s grid; filled with ``colors`` (value → RGB) at
    ``alphas`` opacity, or drawn as outlines. ``crop``: ``(r0, r1, c0, c1)`` in the slice's own pixels.
    Pixels are square; the longest side is kept between ``min_pixels`` and ``max_pixels``.
    """
    row_mm, col_mm = _plane_spacing(ct.spacing, plane)

    def cut(a):
        s = _plane_slice(a, plane, index)
        return s if crop is None else s[crop[0]:crop[1], crop[2]:crop[3]]

    hu = cut(ct.array).astype(np.float32)
    pixel_mm = min(row_mm, col_mm)
    longest = max(hu.shape[0] * row_mm, hu.shape[1] * col_mm) / pixel_mm
    if longest > max_pixels:
        pixel_mm *= longest / max_pixels
    elif longest < min_pixels:  # coarse grids (phantoms, thick resampled scans): enlarge for display
        pixel_mm *= longest / min_pixels
    gray = _window(_resample_2d(hu, row_mm, col_mm, pixel_mm, 1), *window)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if labelmap is not None:
        lab = _resample_2d(cut(labelmap), row_mm, col_mm, pixel_mm, 0)
        colors = colors or SUBTYPE_COLORS
        alphas = alphas or {}
        for value, color in colors.items():
            m = lab == value
            if m.any():
                a = alphas.get(value, 0.6)
                rgb[m] = (1 - a) * rgb[m] + a * (np.asarray(color, np.float32) / 255.0)
    if outline is not None:
        lab = _resample_2d(cut(outline), row_mm, col_mm, pixel_mm, 0)
        edge = _outline(lab)
        oc = outline_colors or REGION_COLORS
        for value in np.unique(lab[edge]):
            rgb[edge & (lab == value)] = np.asarray(oc.get(int(value), (255, 255, 255)), np.float32) / 255.0
    return (rgb * 255 + 0.5).astype(np.uint8)


def _save_png(rgb: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    mpimg.imsave(str(path), rgb)
    return path


def overlay_png(ct: CTImage, labelmap, path, plane: str = "axial", index: int | None = None,
                colors: dict | None = None, alphas: dict | None = None, outline=None) -> Path:
    """Write a lung-window PNG of one slice with ``labelmap`` filled in colour (subtype colours by default).

    ``labelmap`` / ``outline``: CTImage or ``(Z, Y, X)`` array on ``ct``'s grid, or None. ``plane``: axial,
    coronal or sagittal. ``index`` counts slices in the LPS-oriented volume (axial: from inferior up; coronal:
    anterior to posterior; sagittal: patient right to left); None takes the middle slice. Radiological display.
    """
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    vol = to_lps(ct)

    def orient(x):
        if x is None:
            return None
        arr = np.asarray(getattr(x, "array", x))
        return to_lps(ct.with_array(arr)).array

    axis = _plane_axis(plane)
    if index is None:
        index = vol.array.shape[axis] // 2
    if not 0 <= index < vol.array.shape[axis]:
        raise ValueError(f"{plane} index {index} outside 0..{vol.array.shape[axis] - 1}")
    rgb = render_slice(vol, plane, index, orient(labelmap), colors, alphas or SUBTYPE_ALPHA, orient(outline))
    return _save_png(rgb, Path(path))


# --- choosing slices -------------------------------------------------------------------------------------------


def axial_levels(lung: np.ndarray) -> dict[str, int]:
    """Axial indices (LPS-oriented, z up) through the upper, middle and lower thirds of the lung volume."""
    per = lung.sum(axis=(1, 2)).astype(float)
    if per.sum() == 0:
        n = lung.shape[0]
        return {"upper": (5 * n) // 6, "middle": n // 2, "lower": n // 6}
    cum = np.cumsum(per) / per.sum()
    pick = {name: int(np.searchsorted(cum, q)) for name, q in (("upper", 5 / 6), ("middle", 0.5), ("lower", 1 / 6))}
    return pick


def coronal_index(lung: np.ndarray) -> int:
    per = lung.sum(axis=(0, 2)).astype(float)
    if per.sum() == 0:
        return lung.shape[1] // 2
    return int(np.searchsorted(np.cumsum(per) / per.sum(), 0.5))


def _bbox(mask: np.ndarray, axis_keep: int, margin: tuple[int, ...]) -> tuple[slice, ...] | None:
    if not mask.any():
        return None
    out = []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = max(0, idx[0] - margin[ax]), min(mask.shape[ax], idx[-1] + 1 + margin[ax])
        out.append((lo, hi))
    return tuple(out)


def _crop_for(plane: str, box, shape) -> tuple | None:
    """Crop ``(r0, r1, c0, c1)`` in display pixels for a plane from a ``((z0,z1),(y0,y1),(x0,x1))`` box."""
    if box is None:
        return None
    (z0, z1), (y0, y1), (x0, x1) = box
    nz = shape[0]
    if plane == "axial":
        return (y0, y1, x0, x1)
    if plane == "coronal":  # rows are z flipped
        return (nz - z1, nz - z0, x0, x1)
    return (nz - z1, nz - z0, y0, y1)


# --- charts and html -------------------------------------------------------------------------------------------


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def bar_chart(rows: list[dict], path: Path, with_subtypes: bool) -> Path:
    """Horizontal stacked bars of subtype % per region (or LAA-950 % without subtypes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = [region_title(r["region"]) for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(rows) + 1.3), dpi=110)
    y = np.arange(len(rows))
    if with_subtypes:
        left = np.zeros(len(rows))
        for value, cls in labels.SUBTYPES.items():
            vals = np.array([0.0 if _nan(r[f"{cls}_pct"]) else r[f"{cls}_pct"] for r in rows][::-1])
            ax.barh(y, vals, left=left, color=hex_color(SUBTYPE_COLORS[value]), edgecolor="white", linewidth=0.5,
                    label=names.SUBTYPES[value].title)
            left += vals
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of region volume")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(rows) > 4 else -0.3), ncol=4,
                  frameon=False, fontsize=8)
    else:
        vals = np.array([0.0 if _nan(r["laa950_pct"]) else r["laa950_pct"] for r in rows][::-1])
        ax.barh(y, vals, color=hex_color(LAA_COLOR), edgecolor="#8a6d00", linewidth=0.6)
        for yi, v in zip(y, vals):
            ax.text(v, yi, f" {v:.1f}", va="center", fontsize=8, color="#333")
        ax.set_xlim(0, max(10.0, float(vals.max()) * 1.25 if vals.size else 10.0))
        ax.set_xlabel("LAA-950 (% of region volume below -950 HU)")
    ax.set_yticks(y, titles, fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#1d2733}
header{background:#1f3a5f;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header p{margin:4px 0 0;opacity:.8;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:20px 32px 40px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:16px 0}
h2{font-size:16px;margin:0 0 12px;color:#1f3a5f}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 140px;background:#f7f9fb;border:1px solid #e3e8ee;border-radius:6px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#5b6b7c}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:14px}
figure{margin:0;background:#000;border-radius:6px;overflow:hidden;position:relative}
figure img{display:block;width:100%;height:auto}
figcaption{background:#fff;color:#334;font-size:12px;padding:6px 2px}
.ori{position:absolute;top:6px;color:#ffd54f;font:bold 13px monospace;text-shadow:0 0 3px #000}
.ori.l{left:8px}.ori.r{right:8px}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:12px;margin-top:10px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;vertical-align:-2px;
border:1px solid rgba(0,0,0,.2)}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{padding:5px 8px;border-bottom:1px solid #e6eaef;text-align:right;white-space:nowrap}
th{background:#f0f3f6;color:#334;font-weight:600}
td:first-child,th:first-child{text-align:left}
tr.sum td{font-weight:600;background:#fafbfc}
.kv td{text-align:left}.kv td:first-child{color:#5b6b7c;width:220px}
.warn{border-left:4px solid #d9822b;background:#fff7ed}.warn li{margin:4px 0}
.calib-note{border-left:4px solid #2b6cb0;background:#eef5ff;padding:6px 10px;margin:0 0 10px}
footer{font-size:11.5px;color:#6b7785;text-align:center;padding:10px}
"""

_SUM_ROWS = ("left_lung", "right_lung", "whole_lung")
_TABLE = [(c, names.column_title(c), names.COLUMNS[c][2]) for c in COLUMNS[1:]]
_IDENTIFYING = re.compile(r"(path|file|input|output|patient|subject|series|study|uid|accession|date|dir)", re.I)


def safe_info(info: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten ``info`` to (key, text) pairs, dropping anything that could name a file or a patient."""
    out = []
    for k, v in (info or {}).items():
        key = f"{prefix}{k}"
        if _IDENTIFYING.search(str(k)):
            continue
        if isinstance(v, dict):
            out += safe_info(v, key + ".")
            continue
        if isinstance(v, float):
            text = f"{v:.3g}"
        elif isinstance(v, list | tuple):
            text = " × ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v)
        else:
            text = str(v)
        if "/" in text or "\\" in text or re.search(r"\.(nii|nrrd|mha|mhd|dcm)", text, re.I):
            continue
        out.append((key, text))
    return out


def _fmt(v, d) -> str:
    return "–" if _nan(v) else f"{v:,.{d}f}"


def _table_html(rows: list[dict], with_subtypes: bool) -> str:
    cols = [c for c in _TABLE if with_subtypes or not c[0].endswith(("normal_pct", "cle_pct", "pse_pct", "ple_pct"))]
    head = "<tr><th>Region</th>" + "".join(f"<th>{t}</th>" for _, t, _ in cols) + "</tr>"
    body = []
    for r in rows:
        cls = ' class="sum"' if r["region"] in _SUM_ROWS else ""
        body.append(f"<tr{cls}><td>{html.escape(region_title(r['region']))}</td>"
                    + "".join(f"<td>{_fmt(r.get(c), d)}</td>" for c, _, d in cols) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


_NOTICE_KEYS = ("calibration", "warnings", "resolution")  # shown in their own sections, not the details table
_REFERENCES = (("outside_air", "Outside air"), ("tracheal_air", "Tracheal air"), ("blood", "Blood pool (mediastinum)"))


def _warnings_html(info: dict) -> str:
    """A highlighted list of the analysis warnings (HU calibration, resolution guard); empty when none."""
    items = [w.get("message", "") if isinstance(w, dict) else str(w) for w in (info or {}).get("warnings") or []]
    if not items:
        return ""
    return ('<section class="warn"><h2>Warnings</h2><ul>'
            + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul></section>")


def _calibration_html(info: dict) -> str:
    """Scanner calibration: the reference materials measured and what was done with the air offset."""
    cal = (info or {}).get("calibration")
    if not cal:
        return ""
    rows = []
    for key, title in _REFERENCES:
        m = cal.get(key)
        if not m:
            rows.append(f"<tr><td>{title}</td><td>–</td><td>–</td><td>–</td><td>not found</td></tr>")
            continue
        note = m.get("note") or ("used" if key == cal.get("reference") else "")
        rows.append(f"<tr><td>{title}</td><td>{_fmt(m['median_hu'], 0)}</td><td>{_fmt(m['iqr_hu'], 0)}</td>"
                    f"<td>{_fmt(m['volume_ml'], 1)}</td><td>{html.escape(note)}</td></tr>")
    tol = cal.get("tolerance_hu", 0)
    if cal.get("offset_hu") is None:
        verdict = "No usable air reference: the HU calibration could not be checked."
    elif cal.get("corrected"):
        verdict = (f"Air offset {cal['offset_hu']:+.0f} HU (from {cal['reference'].replace('_', ' ')}): "
                   f"{cal['applied_hu']:+.0f} HU subtracted from the scan before lung masking, densitometry and the "
                   f"model (mode {cal['mode']}).")
    else:
        verdict = (f"Air offset {cal['offset_hu']:+.0f} HU (from {cal['reference'].replace('_', ' ')}; tolerance "
                   f"±{tol:.0f} HU, mode {cal['mode']}): scan used as it is.")
    head = "<tr><th>Reference</th><th>Median HU</th><th>IQR HU</th><th>Volume (mL)</th><th>Note</th></tr>"
    return (f"<section><h2>Scanner calibration</h2><p>{html.escape(verdict)} Measured on the scan as read "
            f"(before any correction).</p><table>{head}{''.join(rows)}</table></section>")


def _correction_html(info: dict, rows: list[dict]) -> str:
    """Beside the numbers: an applied HU correction and the whole-lung densitometry of the scan as read."""
    cal = (info or {}).get("calibration") or {}
    if not cal.get("corrected"):
        return ""
    whole = next((r for r in rows if r.get("region") == "whole_lung"), rows[-1] if rows else {})
    u = {k[len("uncorrected_"):]: v for k, v in whole.items() if k.startswith("uncorrected_")}
    before = (f" As read (uncorrected), whole lung: LAA-950 {_fmt(u.get('laa950_pct'), 1)} %, "
              f"Perc15 {_fmt(u.get('perc15_hu'), 0)} HU, mean {_fmt(u.get('mean_hu'), 0)} HU." if u else "")
    summary = html.escape(cal.get("summary", "HU corrected"))
    return f'<p class="calib-note"><b>{summary}.</b>{html.escape(before)}</p>'


def _legend_html(with_subtypes: bool, region_values) -> str:
    items = []
    if with_subtypes:
        items += [(SUBTYPE_COLORS[v], names.SUBTYPES[v].title) for v in labels.SUBTYPES]
    else:
        items.append((LAA_COLOR, "LAA-950 (below -950 HU)"))
    items += [(REGION_COLORS[v], f"{region_title(labels.REGION_NAMES[v])} outline") for v in region_values
              if v in REGION_COLORS]
    return '<div class="legend">' + "".join(
        f'<span><span class="sw" style="background:{hex_color(c)}"></span>{html.escape(t)}</span>'
        for c, t in items) + "</div>"


def write_report(out_dir, ct: CTImage, subtypes: CTImage | None, regions: CTImage, rows: list[dict],
                 info: dict | None = None) -> Path:
    """Write ``report.html`` + ``report_*.png`` into ``out_dir``; return the HTML path.

    ``ct``, ``subtypes`` (or None before a model exists: an LAA-950 overlay is shown instead) and ``regions`` share
    one grid; ``rows`` are the ``stats.csv`` rows; ``info`` (version, model card fields, timings) is shown as a
    key/value table with anything naming a file or a patient left out.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures, region_values = render_figures(out_dir, ct, subtypes, regions, rows)
    page = report_html(figures, rows, info or {}, subtypes is not None, region_values)
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_figures(out_dir: Path, ct: CTImage, subtypes: CTImage | None, regions: CTImage,
                   rows: list[dict]) -> tuple[list[tuple[str, str, tuple[str, str]]], list[int]]:
    """The report's images in ``out_dir``: three axial levels and a coronal cut with the overlay, and the
    per-region chart. Returns the figures ``(file, caption, (left, right) orientation)`` and the region values."""
    vol = to_lps(ct)
    reg = to_lps(regions).array if regions is not None else np.zeros(vol.array.shape, np.uint8)
    lung = reg > 0
    with_subtypes = subtypes is not None
    if with_subtypes:
        fill = to_lps(subtypes).array
        colors, alphas = SUBTYPE_COLORS, SUBTYPE_ALPHA
    else:
        fill = ((vol.array < -950) & lung).astype(np.uint8)
        colors, alphas = {1: LAA_COLOR}, {1: 0.75}
    sx, sy, sz = vol.spacing
    box = _bbox(lung, 0, (int(math.ceil(12 / sz)), int(math.ceil(15 / sy)), int(math.ceil(15 / sx))))
    shape = vol.array.shape
    figures = []
    thin = shape[0] < 3  # a single slice (or two): its axial view only, no zones, no coronal view
    levels = {"middle": axial_levels(lung)["middle"]} if thin else axial_levels(lung)
    for level, k in levels.items():
        name = f"report_axial_{level}.png"
        rgb = render_slice(vol, "axial", k, fill, colors, alphas, reg, crop=_crop_for("axial", box, shape))
        _save_png(rgb, out_dir / name)
        figures.append((name, "Axial slice" if thin else f"Axial, {level} zone", ("R", "L")))
    if not thin:
        j = coronal_index(lung)
        rgb = render_slice(vol, "coronal", j, fill, colors, alphas, reg, crop=_crop_for("coronal", box, shape))
        _save_png(rgb, out_dir / "report_coronal.png")
        figures.append(("report_coronal.png", "Coronal, through the lung centre", ("R", "L")))
    bar_chart(rows, out_dir / "report_regions.png", with_subtypes)
    present = np.unique(reg[tuple(slice(a, b) for a, b in box)]) if box is not None else []  # regions are lung
    return figures, sorted(int(v) for v in present if int(v) in labels.REGION_NAMES)


def report_html(figures, rows: list[dict], info: dict, with_subtypes: bool, region_values: list[int]) -> str:
    """The report page (self-contained HTML referring to the figures beside it)."""
    whole = next((r for r in rows if r["region"] == "whole_lung"), None)
    cards = []
    if whole:
        cards += [("Lung volume", f"{_fmt(whole['volume_ml'] / 1000, 2)} L"),
                  ("LAA-950", f"{_fmt(whole['laa950_pct'], 1)} %"),
                  ("Perc15", f"{_fmt(whole['perc15_hu'], 0)} HU")]
        if with_subtypes:
            cards += [(names.SUBTYPES[v].title, f"{_fmt(whole[f'{c}_pct'], 1)} %")
                      for v, c in labels.SUBTYPES.items() if v != labels.NORMAL]
    cards_html = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div>'
                         f'<div class="k">{html.escape(k)}</div></div>' for k, v in cards)
    figs_html = "".join(
        f'<figure><img src="{n}" alt="{html.escape(c)}"><span class="ori l">{o[0]}</span>'
        f'<span class="ori r">{o[1]}</span><figcaption>{html.escape(c)}</figcaption></figure>'
        for n, c, o in figures)
    details = {k: v for k, v in (info or {}).items() if k not in _NOTICE_KEYS}
    info_pairs = [("drasclr version", __version__)] + [(k, v) for k, v in safe_info(details)
                                                         if k != "drasclr_version"]
    info_html = "<table class='kv'>" + "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in info_pairs) + "</table>"
    overlay_note = ("Overlay: emphysema subtype map." if with_subtypes else
                    "No subtype model was applied: the overlay shows LAA-950 voxels (below -950 HU) instead.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>DrasCLR emphysema report</title><style>{_CSS}</style></head>
<body><header><h1>DrasCLR emphysema report</h1>
<p>Quantitative chest CT analysis &middot; lung window W1500 / L-600 &middot; radiological convention (patient's
right on image left)</p></header>
<main>{_warnings_html(info)}
<section><h2>Whole lung</h2>{_correction_html(info, rows)}<div class="cards">{cards_html}</div></section>
<section><h2>Images</h2><div class="grid">{figs_html}</div>
<p style="font-size:12px;color:#5b6b7c;margin:10px 0 0">{overlay_note}</p>{_legend_html(with_subtypes, region_values)}
</section>
<section><h2>{"Subtype composition per region" if with_subtypes else "LAA-950 per region"}</h2>
<img src="report_regions.png" alt="per-region chart" style="max-width:100%"></section>
<section><h2>Per-region measurements</h2>{_correction_html(info, rows)}{_table_html(rows, with_subtypes)}</section>
{_calibration_html(info)}
<section><h2>Analysis details</h2>{info_html}</section>
</main><footer>Generated by DrasCLR {html.escape(__version__)}. For research use; not a diagnostic device.</footer>
</body></html>
"""
