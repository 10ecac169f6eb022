"""Density consistency: emphysema destroys tissue, so a CLE/PSE/PLE call needs low attenuation around it.

A subtype model reads texture; on a scan unlike its training data (thick slices, a sharp kernel, a real lung
instead of a phantom) it can call texture "emphysema" where the lung has normal density. The rule here keeps a
CLE/PSE/PLE voxel only where at least ``min_laa950`` of the lung in a box of ``window_mm`` (z, y, x) around it is
below -950 HU on the calibrated CT; elsewhere the voxel becomes normal. The same rule (15 % within 20 mm in-plane,
10 mm through-plane) filters the reference classifier's pseudo-labels in training (:mod:`drasclr.dense.pseudo`),
where it was set on the training CT; a model opts in through its card (``inference.density_veto``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..core import labels
from ..core.image import CTImage

LAA_HU = -950.0


def local_low_attenuation(ct: CTImage, lung: np.ndarray, window_mm=(10.0, 20.0, 20.0)) -> np.ndarray:
    """Per voxel, the fraction of lung below -950 HU in a box of ``window_mm`` (z, y, x) around it."""
    size = [max(1, int(round(w / s))) for w, s in zip(window_mm, ct.spacing_zyx)]
    low = ndi.uniform_filter(((ct.array < LAA_HU) & lung).astype(np.float32), size)
    return low / np.maximum(ndi.uniform_filter(lung.astype(np.float32), size), 1e-6)


@dataclass(frozen=True)
class DensityVeto:
    min_laa950: float = 0.15
    window_mm: tuple[float, float, float] = (10.0, 20.0, 20.0)

    @classmethod
    def from_card(cls, card: dict | None) -> DensityVeto | None:
        """The rule a model card asks for (``inference.density_veto``), None when it asks for none."""
        spec = ((card or {}).get("inference") or {}).get("density_veto")
        if not spec:
            return None
        return cls(float(spec.get("min_laa950", cls.min_laa950)),
                   tuple(float(v) for v in spec.get("window_mm", cls.window_mm)))

    @classmethod
    def for_analysis(cls, override: bool | None, card: dict | None) -> DensityVeto | None:
        """The rule ``analyze`` applies: the card's (``override`` None), none (False), or the card's / the default
        rule (True)."""
        if override is False:
            return None
        rule = cls.from_card(card)
        return rule if rule is not None or not override else cls()

    def card(self) -> dict:
        return {"min_laa950": self.min_laa950, "window_mm": list(self.window_mm)}

    def vetoed(self, subtypes: np.ndarray, ct: CTImage) -> np.ndarray:
        """Where ``subtypes`` (lung = non-zero) calls CLE/PSE/PLE in normal-density lung. The box filter runs over
        the lung's bounding box (+ half a window) only: the same values as over the whole grid."""
        emph = (subtypes >= labels.CLE) & (subtypes <= labels.PLE)
        out = np.zeros(subtypes.shape, bool)
        if emph.any():
            lung = subtypes > 0
            half = [int(round(w / s)) // 2 + 1 for w, s in zip(self.window_mm, ct.spacing_zyx)]
            nz = np.nonzero(lung)
            lo = [max(int(i.min()) - h, 0) for i, h in zip(nz, half)]
            hi = [int(i.max()) + h + 1 for i, h in zip(nz, half)]
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            out[box] = emph[box] & (local_low_attenuation(ct.crop(lo, hi), lung[box], self.window_mm)
                                    < self.min_laa950)
        return out

    def apply(self, subtypes: CTImage, ct: CTImage) -> tuple[CTImage, dict]:
        """``subtypes`` with emphysema calls in normal-density lung turned normal, and what was done (for
        stats.json): the rule, the voxels turned normal per subtype."""
        sub = subtypes.array
        vetoed = self.vetoed(sub, ct)
        info = {**self.card(), "vetoed_voxels": {name: int((vetoed & (sub == v)).sum())
                                                 for v, name in labels.SUBTYPES.items() if v >= labels.CLE}}
        return subtypes.with_array(np.where(vetoed, labels.NORMAL, sub).astype(sub.dtype)), info

__all__ = ["DensityVeto", "local_low_attenuation"]
