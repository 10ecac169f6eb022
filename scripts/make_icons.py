#!/usr/bin/env python3
"""Draw the extension icon (Resources/DrasCLRSlicer.png) and the module icon
(DrasCLRSlicer/Resources/Icons/DrasCLRSlicer.png): two lungs with the four subtype colours, 128x128 RGBA."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, Ellipse, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TERMS = ROOT / "DrasCLRSlicer" / "Resources" / "SegmentationCategoryTypeModifier-DrasCLR.term.json"


def colours() -> dict[int, tuple[float, float, float]]:
    types = json.loads(TERMS.read_text())["SegmentationCodes"]["Category"][0]["Type"]
    return {t["DrasCLRLabelValue"]: tuple(c / 255 for c in t["recommendedDisplayRGBValue"]) for t in types}


def draw(path: Path, size: int = 128) -> None:
    c = colours()
    fig = plt.figure(figsize=(1, 1), dpi=size)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((0.04, 0.04), 0.92, 0.92, boxstyle="round,pad=0,rounding_size=0.16",
                                fc=(0.12, 0.16, 0.24), ec="none"))
    ax.add_patch(FancyBboxPatch((0.47, 0.55), 0.06, 0.33, boxstyle="round,pad=0,rounding_size=0.03",
                                fc=(0.85, 0.85, 0.85), ec="none"))  # trachea
    for x, angle in ((0.30, 8), (0.70, -8)):
        ax.add_patch(Ellipse((x, 0.45), 0.34, 0.66, angle=angle, fc=c[1], ec="white", lw=1.5))
    for (x, y, r), v in zip([(0.25, 0.58, 0.06), (0.33, 0.42, 0.05), (0.72, 0.62, 0.05), (0.80, 0.45, 0.045),
                             (0.66, 0.30, 0.07), (0.22, 0.30, 0.045)], [2, 2, 2, 3, 4, 3]):
        ax.add_patch(Circle((x, y), r, fc=c[v], ec="none"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=size, transparent=True)
    plt.close(fig)


if __name__ == "__main__":
    for p in (ROOT / "Resources" / "DrasCLRSlicer.png",
              ROOT / "DrasCLRSlicer" / "Resources" / "Icons" / "DrasCLRSlicer.png"):
        draw(p)
        print("wrote", p.relative_to(ROOT))
