"""The follow-up report (``report.html``): one self-contained page (images inline as PNG data).

Side-by-side overlays per time point (every scan on the baseline grid after registration, the same axial and
coronal cuts, its subtype map over it), the change map over the baseline, per-lobe trend plots over the time
points (emphysema %, adjusted Perc15, adjusted LAA-950) and the change table. Display conventions and colours
are those of :mod:`drasclr.analysis.report`.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..analysis.report import (
    LAA_COLOR,
    SUBTYPE_ALPHA,
    SUBTYPE_COLORS,
    _bbox,
    _crop_for,
    axial_levels,
    coronal_index,
    hex_color,
    region_title,
    render_slice,
    to_lps,
)
from ..core import labels
from . import changemap

CHANGE_ALPHA = {changemap.STABLE_NORMAL: 0.0, changemap.STABLE_EMPHYSEMA: 0.35, changemap.NEW: 0.8,
                changemap.GONE: 0.8, changemap.CHANGED: 0.8}
TREND = (("emphysema_pct", "Emphysema (CLE+PSE+PLE) %"), ("perc15_hu_adj", "Perc15, volume-adjusted (HU)"),
         ("laa950_adj_pct", "LAA-950, volume-adjusted %"))
TABLE = (("d_volume_ml", "Δ volume ml", 0), ("d_perc15_hu", "Δ Perc15 raw", 1), ("d_perc15_hu_adj", "Δ Perc15 adj", 1),
         ("d_laa950_pct", "Δ LAA-950 raw", 1), ("d_laa950_adj_pct", "Δ LAA-950 adj", 1),
         ("d_emphysema_pct", "Δ emphysema %", 1), ("d_cle_pct", "Δ CLE %", 1), ("d_pse_pct", "Δ PSE %", 1),
         ("d_ple_pct", "Δ PLE %", 1), ("d_emphysema_ml", "Δ emphysema ml", 0),
         ("new_emphysema_ml", "new ml", 0), ("emphysema_gone_ml", "gone ml", 0),
         ("subtype_changed_ml", "changed ml", 0))
CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f4f6f8}
header{background:#1d2733;color:#fff;padding:14px 22px}h1{margin:0;font-size:20px}main{padding:10px 22px}
section{background:#fff;border-radius:6px;padding:12px 16px;margin:12px 0}h2{font-size:16px;margin:0 0 8px}
.row{display:flex;gap:8px;flex-wrap:wrap}figure{margin:0;text-align:center}figure img{max-width:300px}
figcaption{font-size:12px;color:#5b6b7c}table{border-collapse:collapse;font-size:12px}
td,th{border-bottom:1px solid #dde3ea;padding:3px 7px;text-align:right}td:first-child,th:first-child{text-align:left}
.sw{display:inline-block;width:11px;height:11px;margin:0 4px 0 12px;border-radius:2px}"""


def _png(rgb: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, rgb, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fig(src: str, caption: str) -> str:
    cap = html.escape(caption)
    return f'<figure><img src="{src}" alt="{cap}"><figcaption>{cap}</figcaption></figure>'


def _overlays(comp) -> list[str]:
    """One row per time point: axial (middle) and coronal cuts on the baseline grid with its subtype overlay."""
    base = comp.timepoints[0]
    lung = to_lps(base.regions).array > 0
    shape = lung.shape
    sx, sy, sz = to_lps(base.ct).spacing
    box = _bbox(lung, 0, (int(math.ceil(12 / sz)), int(math.ceil(15 / sy)), int(math.ceil(15 / sx))))
    cuts = (("axial", axial_levels(lung)["middle"]), ("coronal", coronal_index(lung)))
    base_labels = base.subtypes.array if base.subtypes is not None else np.where(
        (base.ct.array < -950) & (base.regions.array > 0), labels.CLE, labels.NORMAL)
    cts = [base.ct, *comp.on_baseline]
    fills = [base_labels, *comp.labels_on_baseline]
    rows = []
    for k, (ct, fill) in enumerate(zip(cts, fills)):
        vol = to_lps(ct)
        lab = None if fill is None else to_lps(base.ct.with_array(np.asarray(fill))).array
        colors = SUBTYPE_COLORS if base.subtypes is not None else {labels.CLE: LAA_COLOR}
        figs = [_fig(_png(render_slice(vol, plane, i, lab, colors, SUBTYPE_ALPHA, crop=_crop_for(plane, box, shape))),
                     f"{comp.timepoints[k].name} · {plane}") for plane, i in cuts]
        if k:
            cm = to_lps(comp.change_maps[k - 1]).array
            figs += [_fig(_png(render_slice(to_lps(base.ct), plane, i, cm, changemap.COLORS, CHANGE_ALPHA,
                                            crop=_crop_for(plane, box, shape))),
                          f"change baseline → {comp.timepoints[k].name} · {plane}") for plane, i in cuts]
        rows.append('<div class="row">' + "".join(figs) + "</div>")
    return rows


def _trends(comp) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = [r for r in dict.fromkeys(r["region"] for r in comp.rows) if r not in ("left_lung", "right_lung")]
    fig, axes = plt.subplots(1, len(TREND), figsize=(4.2 * len(TREND), 3.2))
    scans = sorted({r["scan"] for r in comp.rows})
    for ax, (col, title) in zip(axes, TREND):
        for region in regions:
            ys = [next(r[col] for r in comp.rows if r["scan"] == s and r["region"] == region) for s in scans]
            ax.plot(scans, ys, marker="o", lw=2.5 if region == "whole_lung" else 1.2, label=region_title(region))
        ax.set_title(title, fontsize=10)
        ax.set_xticks(scans, [comp.timepoints[s].name for s in scans], fontsize=8)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return _fig("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), "per-region trends")


def _fmt(v, d: int) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _table(comp) -> str:
    head = "<tr><th>scan</th><th>region</th>" + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in TABLE) + "</tr>"
    body = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{html.escape(region_title(r['region']))}</td>"
                   + "".join(f"<td>{_fmt(r.get(c), d)}</td>" for c, _, d in TABLE) + "</tr>"
                   for r in comp.rows if r["scan"] > 0)
    return f"<table>{head}{body}</table>"


def _registration(comp) -> str:
    cells = []
    for q in comp.registration:
        lm = (f", landmark error {q['landmark_error_mm']:.2f} mm over {q['landmarks']} points"
              if q.get("landmark_error_mm") is not None else "")
        cells.append(f"<li>{html.escape(q['name'])}: lung Dice {q['lung_dice']:.3f} after registration "
                     f"({html.escape(q['method'])}, {q['seconds']:.0f} s){lm}</li>")
    return "<ul>" + "".join(cells) + "</ul>"


def _legend() -> str:
    return "".join(f'<span class="sw" style="background:{hex_color(changemap.COLORS[v])}"></span>'
                   f"{html.escape(changemap.NAMES[v].replace('_', ' '))}" for v in changemap.NAMES if v > 1)


def write_change_report(out: Path, comp) -> Path:
    """Write ``out/report.html`` (self-contained)."""
    page = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>DrasCLR follow-up report</title>
<style>{CSS}</style></head><body><header><h1>DrasCLR follow-up report</h1>
<div>{len(comp.timepoints)} scans · baseline {html.escape(comp.timepoints[0].name)} · lung window · radiological
convention · later scans shown on the baseline grid after registration</div></header><main>
<section><h2>Registration</h2>{_registration(comp)}</section>
<section><h2>Time points and change map</h2>{"".join(_overlays(comp))}<div>{_legend()}</div></section>
<section><h2>Trends per region</h2>{_trends(comp)}<p style="font-size:12px">Adjusted: sponge model, each
region's HU scaled to the baseline volume (docs/followup.md).</p></section>
<section><h2>Change from the baseline</h2>{_table(comp)}</section></main>
<footer style="padding:10px 22px;font-size:12px">DrasCLR {html.escape(__version__)}. For research use; not a
diagnostic device.</footer></body></html>
"""
    path = Path(out) / "report.html"
    tmp = path.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
