"""Generator version 3 of the emphysema subtypes: version 2 (:mod:`.emphysema_v2`, kept bit-identical) with the
gaps the realism bench measured closed (docs/realism.md, "Version 3"):

- PLE: confluent regions of whole lobules chosen by a smooth field without per-lobule noise (real PLE is diffuse
  over lobes, not a patchwork of single lobules), more homogeneous (weaker texture), and its vessels pruned by
  the PLE region itself (every vessel point inside it; thinner than ``PLE_PRUNE_MM`` vanish, the rest thinned),
  no centrilobular dots inside it.
- PSE: bullae only subpleural, one row, flatter against the pleura (centre nearer the wall), and avascular:
  the vessels are removed inside them (``avascular`` occupancy returned to the case).
- Airways drawn only from ``AIRWAY_MIN_R`` mm lumen radius with thinner walls, fissures fainter (real HRCT shows
  few airway walls beyond the segmental level and hair-thin fissures).
- CLE: smaller, fewer lesions per lobule at the same severity (real CLE: 33 % < -950 HU, clusters ~160 mm²).

Parameters not listed here are those of version 2.
"""

from __future__ import annotations

import numpy as np

from . import emphysema_v2 as v2
from .emphysema import Lobules
from .grid import Grid

# as version 2
parenchyma = v2.parenchyma
PARENCHYMA_HU, CLE_HU = v2.PARENCHYMA_HU, v2.CLE_HU
PSE_AIR_HU, PSE_WALL_HU, PSE_WALL_MM = v2.PSE_AIR_HU, v2.PSE_WALL_HU, v2.PSE_WALL_MM
VESSEL_SCALE = v2.VESSEL_SCALE
GRAVITY_HU = v2.GRAVITY_HU
# version 3
PLE_PRUNE_MM = 3.0
PLE_THIN = 0.5
PLE_HU = -977.0  # version 2: -982
PLE_TEXTURE = 0.3  # share of the parenchyma's variation kept inside PLE (version 2: 0.2)
CLE_HALO = (0.25, 0.35)  # version 2: (0.15, 0.25)
AIRWAY_MIN_R = 1.6  # mm lumen radius of the smallest airway drawn (version 2: 0.9)
AIRWAY_WALL = (0.2, 0.12)  # wall thickness = a + b * lumen radius, mm (version 2: 0.3 + 0.18 r)
FISSURE_HU = -830.0  # version 2: -760
PRUNE_IN_REGION = True
DOTS_IN_PLE = False
AVASCULAR_BULLAE = True


def cle_lesions(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Centrilobular lesions as in version 2, in more lobules (confluent at moderate severity), more and smaller
    lesions per lobule (see :func:`.cle_lesions_drawn`)."""
    return v2.cle_lesions_drawn(rng, lob, lung_pts, z_base, height, sev, n_per=(2.5, 7.0), radius=(2.2, 4.0, 5.0),
                                density=3.5)


def pse_bullae(rng, grid: Grid, lobes: np.ndarray, z_base: dict, height: float, sev: float):
    """Subpleural bullae, 1-2 cm, one row along the chest wall (none along fissures), flattened by the pleura:
    centres ``(N, 3)`` and radii ``(N,)`` mm."""
    return v2.pse_bullae(rng, grid, lobes, z_base, height, sev, fissure_share=0.0, depth=0.4,
                          radius=(8.0, 10.0, 3.0))


def ple_lobules(rng, lob: Lobules, lung_pts: np.ndarray, z_base: dict, height: float, sev: float):
    """Boolean per lung point inside a panlobular lobule and the chosen keys: lobules chosen by zone (lower) and a
    wide smooth field only (no per-lobule noise), so neighbours go together and the regions are confluent."""
    return v2.ple_lobules(rng, lob, lung_pts, z_base, height, sev, field_mm=110.0, weights=(2.2, 0.7, 0.0))
