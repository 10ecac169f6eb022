"""Overlay images of the automatic lung mask on every real CT (lung window, axial + coronal) for docs/anatomy.md.

    PYTHONPATH=$PWD/DrasCLRSlicer .venv/bin/python bench/overlay_lungs.py [../shared/data/real] [docs/images]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from drasclr.anatomy.lungs import segment_lungs  # noqa: E402
from drasclr.core.io import read_ct  # noqa: E402


def overlay(ct, lungs, out: Path, title: str) -> None:
    a = np.clip(ct.array.astype(np.float32), -1350, 150)
    lab = lungs.array
    zs = np.nonzero(lab.any(axis=(1, 2)))[0]
    z_levels = [zs[int(len(zs) * q)] for q in (0.15, 0.45, 0.8)]
    y = int(np.nonzero(lab.any(axis=(0, 2)))[0].mean())
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    colors = np.array([[0, 0, 0, 0], [1, 0.2, 0.2, 0.35], [0.2, 0.5, 1, 0.35]])  # 1 right red, 2 left blue
    sx, sy, sz = ct.spacing
    for ax, z in zip(axes[:3], z_levels):
        ax.imshow(a[z], cmap="gray", vmin=-1350, vmax=150, aspect=sy / sx)
        ax.imshow(colors[lab[z]], aspect=sy / sx)
        ax.set_title(f"axial z={z}")
    cor = np.flipud(a[:, y, :])
    ax = axes[3]
    ax.imshow(cor, cmap="gray", vmin=-1350, vmax=150, aspect=sz / sx)
    ax.imshow(colors[np.flipud(lab[:, y, :])], aspect=sz / sx)
    ax.set_title(f"coronal y={y}")
    for ax in axes:
        ax.axis("off")
    vols = [(lab == v).sum() * ct.voxel_volume_ml for v in (1, 2)]
    fig.suptitle(f"{title}: right lung (red) {vols[0]:.0f} ml, left lung (blue) {vols[1]:.0f} ml "
                 "(radiological view: patient's right on the image left)")
    fig.tight_layout()
    fig.savefig(out, dpi=48)
    plt.close(fig)


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data/real")
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("docs/images")
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.nii.gz")):
        ct = read_ct(p)
        lungs = segment_lungs(ct)
        name = p.name.replace(".nii.gz", "")
        overlay(ct, lungs, dst / f"lungmask_{name}.png", name)
        print("wrote", dst / f"lungmask_{name}.png")


if __name__ == "__main__":
    main()
