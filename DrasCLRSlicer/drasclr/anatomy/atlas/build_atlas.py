"""Regenerate the shipped atlas file deterministically (no patient data, no randomness):

    PYTHONPATH=DrasCLRSlicer python -m drasclr.anatomy.atlas.build_atlas [OUT.nii.gz]

Writes the canonical lung shape of :mod:`drasclr.anatomy.atlas.shape` as an LTRC lobe labelmap (uint8, 2 mm isotropic,
LPS, identity direction) to ``drasclr/data/atlas/atlas_lobes_2mm.nii.gz``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ... import DATA_DIR
from ...core.io import write_image
from .shape import canonical_lobes

DEFAULT_OUT = DATA_DIR / "atlas" / "atlas_lobes_2mm.nii.gz"


def build(out: Path = DEFAULT_OUT) -> Path:
    lobes = canonical_lobes(2.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_image(lobes, out, dtype=np.uint8)


if __name__ == "__main__":
    path = build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
