"""Density consistency: emphysema destroys tissue, so a CLE/PSE/PLE call needs low attenuation around it.

A subtype model reads texture; on a scan unlike its training data (thick slices, a sharp kernel, a real lung
instead of a phantom) it can call texture "emphysema" where the lung has normal density. The rule here keeps a
CLE/PSE/PLE voxel only where at least ``min_laa950`` of the lung in a box of ``window_mm`` (z, y, x) around it is
below ``laa_hu`` (-950 HU unless the card says otherwise) on the calibrated CT; elsewhere the voxel becomes normal.
With ``smooth_mm`` (a card's ``smooth_mm``) the CT is first smoothed in-plane (Gaussian, that sigma in mm): the
share then counts lung that is low in attenuation over about a millimetre, not single voxels pushed below the
cut by noise or a sharp kernel (docs/acquisition.md, "The rule on a smoothed scan").
The same rule (15 % within 20 mm in-plane, 10 mm through-plane) filters the reference classifier's pseudo-labels in
training (:mod:`drasclr.dense.pseudo`), where it was set on the training CT; a model opts in through its card
(``inference.density_veto``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..core import labels
from ..core.image import CTImage, bounding_box
from ..core.threads import for_each, slab

LAA_HU = -950.0
MAX_SMOOTH_MM = 5.0  # a wider smoothing than this would blur the lesions the rule keeps
EMPHYSEMA = {"cle": labels.CLE, "pse": labels.PSE, "ple": labels.PLE}  # the subtypes a threshold can be given for


def local_low_attenuation(ct: CTImage, lung: np.ndarray, window_mm=(10.0, 20.0, 20.0),
                          hu: float = LAA_HU, smooth_mm: float = 0.0) -> np.ndarray:
    """Per voxel, the fraction of lung below ``hu`` (-950 HU) in a box of ``window_mm`` (z, y, x) around it; with
    ``smooth_mm`` > 0, below ``hu`` on the CT smoothed in-plane (:func:`smoothed_below`)."""
    size = [max(1, int(round(w / s))) for w, s in zip(window_mm, ct.spacing_zyx)]
    if smooth_mm > 0:
        below = smoothed_below(ct, hu, smooth_mm)
    else:  # HU below a whole number on an integer grid: compared as an integer (no float copy of the grid)
        a = ct.array
        below = a < int(np.ceil(hu)) if a.dtype.kind in "iu" and hu == int(hu) else a < hu
    low = _box_mean(np.logical_and(below, lung, out=below).astype(np.float32), size)
    share = _box_mean(lung.astype(np.float32), size)
    return np.divide(low, np.maximum(share, np.float32(1e-6), out=share), out=low)  # in place: no third array


def smoothed_below(ct: CTImage, hu: float, smooth_mm: float) -> np.ndarray:
    """Where ``ct`` smoothed in-plane with a Gaussian of sigma ``smooth_mm`` (mm; not across slices, whose thickness
    already averages) is below ``hu``; slice blocks on the analysis' threads, without a float copy of the grid."""
    axis = ct.superior_axis()[0]
    a, out = ct.array, np.empty(ct.array.shape, bool)
    step = max(1, -(-a.shape[axis] // 32))  # blocks of a few slices: the two passes stay in cache
    first, second = (d for d in range(a.ndim) if d != axis)  # the in-plane axes

    def block(i: int) -> None:
        sl = slab(axis, i, i + step, a.ndim)
        b = a[sl].astype(np.float32)
        tmp = np.empty_like(b)
        ndi.gaussian_filter1d(b, smooth_mm / ct.spacing_zyx[first], axis=first, output=tmp, mode="nearest")
        ndi.gaussian_filter1d(tmp, smooth_mm / ct.spacing_zyx[second], axis=second, output=b, mode="nearest")
        np.less(b, hu, out=out[sl])

    for_each(block, range(0, a.shape[axis], step))
    return out


def _box_mean(a: np.ndarray, size) -> np.ndarray:
    """``scipy.ndimage.uniform_filter(a, size)`` in place, axis by axis (the same values: scipy filters axis by axis
    through its output array too), without its second full-size array (on a thin-slice scan each is 0.3 GB), each
    axis' pass in blocks along another axis on the analysis' threads."""
    for axis, n in enumerate(size):
        across = 1 if axis == 0 else 0
        step = max(1, -(-a.shape[across] // 8))

        def block(i: int, axis=axis, n=n, across=across, step=step) -> None:
            sl = slab(across, i, i + step, a.ndim)
            ndi.uniform_filter1d(a[sl], n, axis=axis, output=a[sl])

        for_each(block, range(0, a.shape[across], step))
    return a


@dataclass(frozen=True)
class DensityVeto:
    """The rule: a CLE/PSE/PLE call needs ``min_laa950`` of the lung within ``window_mm`` below -950 HU;
    ``by_subtype`` (``(("cle", 0.04), ...)``) gives a subtype its own threshold (a model whose calls of one subtype on
    real normal lung are rarer needs less of the rule there; docs/acquisition.md). ``laa_hu``: the attenuation the
    share is counted below (the names keep "950", the default; a card's ``laa_hu`` sets another); ``smooth_mm``: the
    in-plane Gaussian sigma (mm) the CT is smoothed with before it is counted (0: as it is)."""

    min_laa950: float = 0.15
    window_mm: tuple[float, float, float] = (10.0, 20.0, 20.0)
    by_subtype: tuple[tuple[str, float], ...] = ()
    laa_hu: float = LAA_HU
    smooth_mm: float = 0.0

    def __post_init__(self) -> None:
        if not -1024.0 < self.laa_hu < -500.0:
            raise ValueError(f"density rule: laa_hu {self.laa_hu:g} is not a low-attenuation threshold "
                             "(-1024 < HU < -500)")
        if not 0.0 <= self.smooth_mm <= MAX_SMOOTH_MM:
            raise ValueError(f"density rule: smooth_mm {self.smooth_mm:g} is outside 0-{MAX_SMOOTH_MM:g} mm")

    @classmethod
    def from_card(cls, card: dict | None) -> DensityVeto | None:
        """The rule a model card asks for (``inference.density_veto``), None when it asks for none."""
        spec = ((card or {}).get("inference") or {}).get("density_veto")
        if not spec:
            return None
        by = spec.get("min_laa950_by_subtype") or {}
        unknown = sorted(set(by) - set(EMPHYSEMA))
        if unknown:
            raise ValueError(f"density rule: unknown subtype(s) {unknown} (expected {sorted(EMPHYSEMA)})")
        return cls(float(spec.get("min_laa950", cls.min_laa950)),
                   tuple(float(v) for v in spec.get("window_mm", cls.window_mm)),
                   tuple(sorted((k, float(v)) for k, v in by.items())), float(spec.get("laa_hu", LAA_HU)),
                   float(spec.get("smooth_mm", 0.0)))

    @classmethod
    def for_analysis(cls, override: bool | None, card: dict | None) -> DensityVeto | None:
        """The rule ``analyze`` applies: the card's (``override`` None), none (False), or the card's / the default
        rule (True)."""
        if override is False:
            return None
        rule = cls.from_card(card)
        return rule if rule is not None or not override else cls()

    def card(self) -> dict:
        out = {"min_laa950": self.min_laa950, "window_mm": list(self.window_mm)}
        if self.by_subtype:
            out["min_laa950_by_subtype"] = dict(self.by_subtype)
        if self.laa_hu != LAA_HU:  # the default rule's record as it always was
            out["laa_hu"] = self.laa_hu
        if self.smooth_mm:
            out["smooth_mm"] = self.smooth_mm
        return out

    def _cuts(self) -> np.ndarray:
        """The rule's distinct thresholds, ascending (float32, as the share is compared)."""
        return np.asarray(sorted({self.min_laa950, *(t for _, t in self.by_subtype)}), np.float32)

    def levels(self, ct: CTImage, lung: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray,
                                                             np.ndarray]:
        """:meth:`local_share` with the share kept as its level among the rule's thresholds (uint8: how many of
        them it reaches), all :meth:`turns` needs at a byte a voxel: ``(lo, hi, levels, inside)``."""
        lo, hi, share, inside = self.local_share(ct, lung)
        return lo, hi, np.searchsorted(self._cuts(), share, side="right").astype(np.uint8), inside

    def turns(self, levels: np.ndarray, subtypes: np.ndarray) -> np.ndarray:
        """Which calls of ``subtypes`` (CLE/PSE/PLE) the rule turns normal, given :meth:`levels` there: those whose
        share is below their threshold (``min_laa950``, or their subtype's own)."""
        cuts = list(self._cuts())
        need = np.full(subtypes.shape, cuts.index(np.float32(self.min_laa950)), np.uint8)
        for name, t in self.by_subtype:
            need[subtypes == EMPHYSEMA[name]] = cuts.index(np.float32(t))
        emph = (subtypes >= labels.CLE) & (subtypes <= labels.PLE)
        return emph & (levels <= need)

    def local_share(self, ct: CTImage, lung: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], np.ndarray,
                                                                  np.ndarray]:
        """The rule's statistic, :func:`local_low_attenuation` in this rule's window, over the lung's bounding box:
        ``(lo, hi, share, inside)`` (zyx, hi exclusive; ``inside`` the lung within the box). The box filter runs
        over the bounding box + half a window: the same values as over the whole grid."""
        found = bounding_box(lung)
        if found is None:
            empty = np.zeros((0, 0, 0), bool)
            return (0, 0, 0), (0, 0, 0), empty.astype(np.float32), empty
        lo, hi = [s.start for s in found], [s.stop for s in found]
        half = [int(round(w / s)) // 2 + 1 for w, s in zip(self.window_mm, ct.spacing_zyx)]
        plo = [max(a - h, 0) for a, h in zip(lo, half)]
        phi = [b + h for b, h in zip(hi, half)]
        pad = tuple(slice(a, b) for a, b in zip(plo, phi))
        inner = tuple(slice(a - p, b - p) for a, b, p in zip(lo, hi, plo))
        lung_pad = lung[pad] > 0
        share = local_low_attenuation(ct.crop(plo, phi), lung_pad, self.window_mm, self.laa_hu, self.smooth_mm)[inner]
        return tuple(lo), tuple(hi), share, lung_pad[inner]

    def vetoed(self, subtypes: np.ndarray, ct: CTImage) -> np.ndarray:
        """Where ``subtypes`` (lung = non-zero) calls CLE/PSE/PLE in normal-density lung."""
        emph = (subtypes >= labels.CLE) & (subtypes <= labels.PLE)
        out = np.zeros(subtypes.shape, bool)
        if emph.any():
            lo, hi, level, inside = self.levels(ct, subtypes > 0)
            box = tuple(slice(a, b) for a, b in zip(lo, hi))
            out[box] = self.turns(level, subtypes[box]) & inside
        return out

    def counts(self, before: np.ndarray, vetoed: np.ndarray) -> dict:
        """What stats.json records: the rule and the voxels turned normal per subtype (``before``: the calls)."""
        return {**self.card(), "vetoed_voxels": {name: int((vetoed & (before == v)).sum())
                                                 for v, name in labels.SUBTYPES.items() if v >= labels.CLE}}

    def apply(self, subtypes: CTImage, ct: CTImage) -> tuple[CTImage, dict]:
        """``subtypes`` with emphysema calls in normal-density lung turned normal, and what was done (for
        stats.json): the rule, the voxels turned normal per subtype."""
        sub = subtypes.array
        vetoed = self.vetoed(sub, ct)
        return subtypes.with_array(np.where(vetoed, labels.NORMAL, sub).astype(sub.dtype)), self.counts(sub, vetoed)


__all__ = ["DensityVeto", "local_low_attenuation", "smoothed_below"]
