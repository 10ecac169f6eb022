"""Acquisition harmonization: measure a scan's noise and sharpness, and bring it to the look the subtype model was
trained on before the model and the densitometry see it (docs/acquisition.md, issue 26).

**Measured on every scan** (:func:`measure`): in uniform soft tissue (muscle, blood, mediastinum: voxels whose
~5 mm in-plane neighbourhood has a mean of -20..120 HU, inside the body, away from lung and bone) the local noise
SD, the lag-1 in-plane autocorrelation of the fine-band noise (texture: about 0.5 for the real soft kernels
measured, near 0 or negative for an edge-enhancing lung kernel) and the noise SD in three in-plane frequency
bands (differences of Gaussians of sigma 0 / 0.4 / 0.8 / 1.6 mm; a fourth, 1.6-3.2 mm, is recorded for noise
simulation); outside air's local SD is reported beside them.

**Harmonization** (:func:`harmonize`), in the spirit of Gallardo-Estrella et al. 2016 (kernel normalization by
frequency bands): the image is split into the same bands and each band is scaled by
``min(1, target / measured) ** STRENGTH`` (:data:`STRENGTH` 0.7: most of the way, see its note) where ``target``
is the band's noise SD in the training phantoms (:data:`TARGET_BAND_SD`, measured with :func:`measure` on
generator-2 phantoms, the look demo-v5 was trained on). Bands whose noise is at or below the
training look are kept (the image is never sharpened nor given noise), so a soft-kernel scan passes unchanged,
and a sharp or low-dose one loses the excess fine-grained power: noise and edge overshoot of a sharp kernel go
down together, as a softer reconstruction kernel would do. Only over the lungs' box plus :data:`BOX_MARGIN_MM`, what
the model and the densitometry read. The calibrated HU scale is kept (the lowest band carries the mean).

**Thin, noisy slices are first averaged through the plane** (:func:`slices_to_average`, :func:`average_slices`): where
the slices are thin and the soft-tissue noise is over :data:`THROUGH_NOISE_HU` (a low-dose or lung-kernel thin-slice
HRCT), each slice becomes the mean of itself and its neighbours (an odd count, at most :data:`THROUGH_MAX_MM` thick
together: the thicker reconstruction a reader would make of such a scan), which takes the noise down by about the
square root of that count without touching the in-plane detail; the bands are then measured again and scaled as above,
so the in-plane gains need not go as low. Band gains alone took a 1 mm, 105 HU lung-kernel phantom's centrilobular
emphysema with its noise (docs/acquisition.md, "Thin noisy slices").

``mode``: ``auto`` harmonizes when a band's noise is over its target by more than :data:`TOLERANCE` (not on
in-plane pixels over :data:`MAX_PIXEL_MM`), ``off`` never (the measurement is still recorded).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..core.errors import InputError
from ..core.image import CTImage, bounding_box
from ..core.io import read_ct
from ..core.threads import for_each, in_slabs, slab

MODES = ("auto", "off")
BAND_SIGMAS_MM = (0.4, 0.8, 1.6)  # band i = G(s_{i-1}) - G(s_i), s_0 = 0; the last band is everything coarser
# noise SD (HU) per band in uniform soft tissue of the training look: generator-2 phantoms (what demo-v5 was trained
# on), measured with :func:`measure` on a soft-kernel case (noise 13.3 HU: 3.18, 6.68, 3.91) and a sharp-kernel
# case (17.7 HU: 7.95, 7.95, 3.40); the target is their envelope, rounded
# (``python -m drasclr.acquisition.harmonize CT...``)
TARGET_BAND_SD = (8.0, 8.0, 4.0)
# measured only (for noise synthesis, drasclr.acquisition.perturb): the band G(1.6 mm) - G(3.2 mm)
COARSE_SIGMA_MM = 3.2
TOLERANCE = 1.15  # auto: harmonize when a band's noise exceeds its target by more than this factor
# how far toward the target: gain = min(1, target / measured) ** STRENGTH, i.e. this share of the excess removed on a
# log scale. 1 (sessions 8-9) brought sharp-kernel phantoms' CLE below what the model finds without harmonization
# (CLE Dice 0.44-0.66 against 0.75-0.81 on three v3 clinical training cases); 0.7 keeps most of it (0.69-0.74) and
# still calls 0.6 % on the real kernel-L scan A0001 (0.0 at 1; 2.1 % at 0.5; 5.8 % without). Tuned on those
# three phantoms and A0001 L (docs/acquisition.md, "Strength")
STRENGTH = 0.7
MAX_PIXEL_MM = 1.5  # coarser in-plane pixels: the bands lie below the pixel size; left unchanged
WINDOW_MM = 5.0
TISSUE_HU = (-20.0, 120.0)
# harmonized: the lungs' box + this margin: the model's lung box (8 mm, drasclr.dense.infer.lung_volume) plus the
# support of the widest band filter (4 x 1.6 mm); outside it the scan is kept as it was (faster, less memory)
BOX_MARGIN_MM = 16.0
SLAB_VOXELS = 4_000_000  # harmonized slab by slab (float32 bands of a slab: tens of MB, not GB)
# measurement: at most this many slices, evenly spaced (against 40 on lidc and the A0001 pair: gains within 1.3 %)
MAX_SLICES = 20
# thin noisy slices (auto): averaged through the plane when the soft-tissue noise SD is over this (HU) and
# THROUGH_MAX_MM hold at least three slices; the fewest slices (odd) that bring the noise to this level, at most
# THROUGH_MAX_MM together. Tuned on 10 clinical phantoms (docs/acquisition.md, "Thin noisy slices"): three 1 mm or
# 0.625 mm slices gained at 37-105 HU (macro Dice +0.005 to +0.04) and cost 0.003 at 15 HU; three 1.25 mm slices
# (3.75 mm) cost a soft-kernel case at 51 HU 0.019
THROUGH_NOISE_HU = 30.0
THROUGH_MAX_MM = 3.2


@dataclass
class NoiseMeasure:
    """What :func:`measure` found (HU); None where no uniform region was found."""

    tissue_sd_hu: float | None
    band_sd_hu: list[float] | None
    autocorr: float | None
    outside_air_sd_hu: float | None
    tissue_voxels: int
    coarse_band_sd_hu: float | None = None  # the band G(1.6 mm) - G(3.2 mm), noise plus some anatomy

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Harmonization:
    """Measured before and after, what was done; ``to_json()`` goes into stats.json as ``harmonization``."""

    mode: str
    before: NoiseMeasure
    applied: bool = False
    band_gains: list[float] = field(default_factory=list)
    after: NoiseMeasure | None = None  # measured over the harmonized box (the lungs + BOX_MARGIN_MM)
    reason: str = ""
    slices_averaged: int = 1  # thin noisy slices: this many averaged through the plane before the bands
    slice_mm: float | None = None
    averaged: NoiseMeasure | None = None  # measured after the through-plane averaging, what the gains answer
    _source: CTImage | None = field(default=None, repr=False)  # slices averaged: the scan before, and the box
    _box: tuple | None = field(default=None, repr=False)

    @property
    def counted(self) -> CTImage | None:
        """Slices averaged: the scan harmonized by the bands alone (as without the averaging), what the model card's
        density rule counts on (its thresholds were chosen on that look); made when asked for, not kept. None when
        no slices were averaged."""
        if self.slices_averaged == 1 or self._source is None:
            return None
        return apply_gains(self._source, gains(self.before, strength=STRENGTH), self._box)

    def to_json(self) -> dict:
        return {"mode": self.mode, "applied": self.applied, "reason": self.reason,
                "band_sigmas_mm": list(BAND_SIGMAS_MM), "target_band_sd_hu": list(TARGET_BAND_SD),
                "strength": STRENGTH,
                "band_gains": [round(g, 3) for g in self.band_gains], "before": self.before.to_json(),
                "after": None if self.after is None else self.after.to_json(),
                "through_plane": self._through_plane()}

    def _through_plane(self) -> dict:
        out = {"slices_averaged": self.slices_averaged, "noise_limit_hu": THROUGH_NOISE_HU, "max_mm": THROUGH_MAX_MM}
        if self.slice_mm is not None:
            out.update(slice_mm=round(self.slice_mm, 4), averaged_mm=round(self.slice_mm * self.slices_averaged, 4))
        if self.averaged is not None:
            out["measured_after_averaging"] = self.averaged.to_json()
        return out


def _axes(ct: CTImage) -> tuple[int, np.ndarray]:
    """(through-plane array axis, zyx spacing): the slice axis (the one nearest the body's cranio-caudal axis; the
    reconstruction kernel acts in the slice plane, also where slices are thinner than the pixels)."""
    return ct.superior_axis()[0], np.asarray(ct.spacing[::-1], float)


def _sigma(sp: np.ndarray, axis: int, mm: float) -> tuple[float, float, float]:
    return tuple(0.0 if i == axis else mm / sp[i] for i in range(3))


def bands(a: np.ndarray, sp: np.ndarray, axis: int, sigmas=BAND_SIGMAS_MM) -> list[np.ndarray]:
    """In-plane frequency bands of a float32 array: ``len(sigmas) + 1`` arrays that sum to ``a``."""
    out, prev = [], a
    for s in sigmas:
        g = ndi.gaussian_filter(a, _sigma(sp, axis, s), mode="nearest")
        out.append(prev - g)
        prev = g
    out.append(prev)
    return out


def _slices(a: np.ndarray, axis: int) -> np.ndarray:
    n = a.shape[axis]
    idx = np.unique(np.linspace(0, n - 1, min(n, MAX_SLICES)).round().astype(int))
    return np.take(a, idx, axis=axis), idx


def _local(a: np.ndarray, sp: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and SD over a ~5 mm in-plane window."""
    size = _local_size(sp, axis)
    m = ndi.uniform_filter(a, size, mode="nearest")
    v = ndi.uniform_filter(a * a, size, mode="nearest") - m * m
    return m, np.sqrt(np.maximum(v, 0))


def _plane(axis: int) -> np.ndarray:
    """3x3 in-plane structuring element (nothing along ``axis``)."""
    plane = np.zeros((3, 3, 3), bool)
    sl = [slice(None)] * 3
    sl[axis] = slice(1, 2)
    plane[tuple(sl)] = True
    return plane


def _tissue_mask(a: np.ndarray, m: np.ndarray, sp: np.ndarray, axis: int, lungs: np.ndarray | None) -> np.ndarray:
    """Uniform soft tissue: local mean in ``TISSUE_HU``, eroded about 3 mm in-plane, away from the lungs."""
    tissue = (m > TISSUE_HU[0]) & (m < TISSUE_HU[1]) & (a > -400)
    plane = _plane(axis)
    n_er = max(1, int(round(3.0 / min(sp[i] for i in range(3) if i != axis))))
    tissue = ndi.binary_erosion(tissue, plane, iterations=n_er)
    if lungs is not None:
        tissue &= ~ndi.binary_dilation(lungs, plane, iterations=n_er)
    return tissue


def _autocorr(r: np.ndarray, mask: np.ndarray, axis: int) -> float | None:
    """Lag-1 autocorrelation of ``r`` within ``mask`` along the two in-plane axes (mean of both)."""
    vals = []
    for ax in (i for i in range(3) if i != axis):
        a0 = np.take(r, range(r.shape[ax] - 1), axis=ax)
        a1 = np.take(r, range(1, r.shape[ax]), axis=ax)
        m = np.take(mask, range(r.shape[ax] - 1), axis=ax) & np.take(mask, range(1, r.shape[ax]), axis=ax)
        if m.sum() < 100:
            return None
        x, y = a0[m], a1[m]
        vals.append(float(np.mean(x * y) / max(np.sqrt(np.mean(x * x) * np.mean(y * y)), 1e-6)))
    return float(np.mean(vals))


def measure(ct: CTImage, lungs: CTImage | None = None) -> NoiseMeasure:
    """Noise and sharpness of a scan (see the module docstring); ``lungs``: the lung mask (kept out of the
    uniform-tissue region)."""
    axis, sp = _axes(ct)
    a, idx = _slices(ct.array, axis)
    a = a.astype(np.float32)
    lm = None if lungs is None else np.take(lungs.array > 0, idx, axis=axis)
    # every step below is in-plane (nothing reaches across slices), so the slices are measured in slabs on the
    # analysis' threads and put back together: the same arrays as in one piece

    def masks(a, lm):
        m, s = _local(a, sp, axis)
        tissue = _tissue_mask(a, m, sp, axis, lm)
        body = np.stack([ndi.binary_fill_holes(x) for x in np.moveaxis(a > -500, axis, 0)], axis=axis)
        outside = ~ndi.binary_dilation(body, _plane(axis), iterations=5) & (a > -1200) & (m < -800)
        return s, tissue, outside

    s, tissue, outside = in_slabs(masks, axis, a, lm)
    air_sd = float(np.median(s[outside])) if outside.sum() > 500 else None
    n = int(tissue.sum())
    if n < 500:
        return NoiseMeasure(None, None, None, _r(air_sd), n)
    crop = _reach(tissue, sp, axis)  # the bands only where the tissue's measures read them: the same numbers
    ac, tc = a[crop], tissue[crop]

    def band_maps(ac):  # each band's local variance, and the fine bands together
        bs = bands(ac, sp, axis, (*BAND_SIGMAS_MM, COARSE_SIGMA_MM))
        return (*(ndi.uniform_filter(b * b, _local_size(sp, axis)) for b in bs[:-1]), ac - bs[-1] - bs[-2])

    *local_var, resid = in_slabs(band_maps, axis, ac)
    band_sd = [float(np.sqrt(np.median(v[tc]))) for v in local_var]
    return NoiseMeasure(_r(float(np.median(s[tissue]))), [_r(v) for v in band_sd[:-1]],
                        _r(_autocorr(resid, tc, axis), 3), _r(air_sd), n, _r(band_sd[-1]))


def _reach(mask: np.ndarray, sp: np.ndarray, axis: int) -> tuple[slice, ...]:
    """The in-plane box of ``mask`` widened by what a band's local SD at a mask voxel reads (the coarsest Gaussian's
    radius, as scipy truncates it, plus half the local window): filtering only this box gives the same values on
    the mask as filtering the whole slices."""
    found = bounding_box(mask)
    size = _local_size(sp, axis)
    out = []
    for i, (s, n) in enumerate(zip(found, mask.shape)):
        m = 0 if i == axis else int(4.0 * COARSE_SIGMA_MM / sp[i] + 0.5) + size[i] // 2 + 1
        out.append(slice(max(s.start - m, 0), min(s.stop + m, n)))
    return tuple(out)


def _local_size(sp: np.ndarray, axis: int) -> tuple[int, int, int]:
    return tuple(1 if i == axis else max(3, int(round(WINDOW_MM / sp[i])) | 1) for i in range(3))


def _r(v, d: int = 2):
    return None if v is None else round(float(v), d)


def gains(measured: NoiseMeasure, target=TARGET_BAND_SD, strength: float = 1.0) -> list[float]:
    """Per-band gain ``min(1, target / measured) ** strength`` (1 where nothing was measured)."""
    if measured.band_sd_hu is None:
        return [1.0] * len(target)
    return [min(1.0, t / max(m, 1e-6)) ** strength for t, m in zip(target, measured.band_sd_hu)]


def lung_box(ct: CTImage, lungs: CTImage | None, margin_mm: float = BOX_MARGIN_MM):
    """(lo, hi) zyx of the lungs' bounding box plus ``margin_mm``, clipped to the grid; None without lungs."""
    found = None if lungs is None else bounding_box(lungs.array)
    if found is None:
        return None
    margin = np.ceil(margin_mm / np.asarray(ct.spacing_zyx)).astype(int)
    lo = np.maximum([s.start for s in found] - margin, 0)
    return tuple(lo), tuple(np.minimum([s.stop for s in found] + margin, ct.array.shape))


def _inside(box, ct: CTImage, fn) -> CTImage:
    """``fn`` applied to ``ct`` inside ``box`` ((lo, hi) zyx); the rest of the image as it was."""
    out = ct.array.copy()
    out[tuple(slice(a, b) for a, b in zip(*box))] = fn(ct.crop(*box)).array
    return ct.with_array(out)


def _rounded(acc: np.ndarray, dtype) -> np.ndarray:
    """float32 values in ``dtype``: integers rounded and clipped to its range (in place)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        acc = np.clip(np.rint(acc, out=acc), info.min, info.max, out=acc)
    return acc


def apply_gains(ct: CTImage, band_gains: list[float], box=None) -> CTImage:
    """The image with its in-plane bands scaled by ``band_gains`` (the coarsest band kept), same dtype; with
    ``box`` ((lo, hi) zyx) only inside it (the rest is the image as it was)."""
    if box is not None:
        return _inside(box, ct, lambda part: apply_gains(part, band_gains))
    axis, sp = _axes(ct)
    out = np.empty(ct.array.shape, ct.array.dtype)
    step = max(1, SLAB_VOXELS // max(1, ct.array.size // ct.array.shape[axis]))

    def one_slab(i: int) -> None:  # slab by slab: the bands are in-plane, so this is exact
        sl = slab(axis, i, i + step)
        a = ct.array[sl].astype(np.float32)
        acc = np.zeros_like(a)
        # the sum of gain x band of :func:`bands`, band by band in the same order and precision (the same values),
        # through three reused arrays instead of two per band
        prev, smooth, band = a, np.empty_like(a), np.empty_like(a)
        for g, s in zip(band_gains, BAND_SIGMAS_MM):
            ndi.gaussian_filter(a, _sigma(sp, axis, s), output=smooth, mode="nearest")
            np.subtract(prev, smooth, out=band)
            acc += np.multiply(band, np.float32(g), out=band)
            prev, smooth = smooth, (np.empty_like(a) if prev is a else prev)
        acc += prev  # the coarsest band, kept (gain 1)
        out[sl] = _rounded(acc, ct.array.dtype)

    for_each(one_slab, range(0, ct.array.shape[axis], step))  # the slabs on the analysis' threads
    return ct.with_array(out)


def slices_to_average(measured: NoiseMeasure, slice_mm: float) -> int:
    """How many slices (odd; 1: none) to average through the plane: the fewest that bring the soft-tissue noise SD to
    :data:`THROUGH_NOISE_HU` (noise independent from slice to slice falls with the square root of the count), at
    most :data:`THROUGH_MAX_MM` of slices together; 1 where the noise is at or below that, unmeasured, or
    :data:`THROUGH_MAX_MM` holds fewer than three slices."""
    noise_hu = THROUGH_NOISE_HU
    sd = measured.tissue_sd_hu
    if sd is None or sd <= noise_hu or slice_mm <= 0:
        return 1
    most = int(np.floor(THROUGH_MAX_MM / slice_mm + 1e-6))
    most -= 1 - most % 2  # odd: centred on its slice
    if most < 3:
        return 1
    k = 3
    while k + 2 <= most and sd / np.sqrt(k) > noise_hu:
        k += 2
    return k


def average_slices(ct: CTImage, k: int, box=None) -> CTImage:
    """Each slice the mean of the ``k`` (odd) slices centred on it (the scan's end slices repeated past its ends),
    same dtype; with ``box`` ((lo, hi) zyx) only inside it."""
    if box is not None:
        return _inside(box, ct, lambda part: average_slices(part, k))
    axis = _axes(ct)[0]
    across = next(i for i in range(3) if i != axis)  # chunks along an in-plane axis: the filter never crosses them
    out = np.empty(ct.array.shape, ct.array.dtype)
    step = max(1, SLAB_VOXELS // max(1, ct.array.size // ct.array.shape[across]))

    def one_chunk(i: int) -> None:
        sl = slab(across, i, i + step)
        acc = ndi.uniform_filter1d(ct.array[sl].astype(np.float32), k, axis=axis, mode="nearest")
        out[sl] = _rounded(acc, ct.array.dtype)

    for_each(one_chunk, range(0, ct.array.shape[across], step))
    return ct.with_array(out)


def _measure_box(image: CTImage, lungs: CTImage | None, box) -> NoiseMeasure:
    return measure(image, lungs) if box is None else measure(image.crop(*box), lungs.crop(*box))


def harmonize(ct: CTImage, lungs: CTImage | None = None, mode: str = "auto") -> tuple[CTImage, Harmonization]:
    """Measure and (``auto``, when needed) harmonize -> (the image the model and the harmonized densitometry
    see, the record). ``off``: the image itself, measured only."""
    if mode not in MODES:
        raise InputError(f"--harmonize {mode}: choose auto or off")
    before = measure(ct, lungs)
    h = Harmonization(mode=mode, before=before)
    if mode == "off":
        h.reason = "off: measured only"
        return ct, h
    if before.band_sd_hu is None:
        h.reason = "no uniform soft tissue found to measure the noise: left unchanged"
        return ct, h
    axis, sp = _axes(ct)
    if max(sp[i] for i in range(3) if i != axis) > MAX_PIXEL_MM:
        h.reason = f"in-plane pixels over {MAX_PIXEL_MM} mm: the noise bands lie below the pixel size; left unchanged"
        return ct, h
    h.slice_mm = float(sp[axis])
    if min(gains(before)) * TOLERANCE >= 1.0:  # judged on the full excess
        h.band_gains = gains(before, strength=STRENGTH)
        h.reason = "noise at or below the training look: left unchanged"
        return ct, h
    box = lung_box(ct, lungs)  # what the model and the harmonized densitometry read (the whole scan without lungs)
    h.slices_averaged = slices_to_average(before, h.slice_mm)
    done = []
    if h.slices_averaged > 1:  # thin noisy slices: through the plane first, then the bands answer what is left
        h._source, h._box = ct, box  # the rule's band-only scan: Harmonization.counted, made when it counts
        ct = average_slices(ct, h.slices_averaged, box)
        h.averaged = _measure_box(ct, lungs, box)
        done.append(f"{h.slices_averaged} thin noisy slices averaged through the plane "
                    f"({h.slice_mm * h.slices_averaged:.2g} mm)")
    measured = h.averaged or before
    g = gains(measured, strength=STRENGTH)
    h.band_gains = g
    if min(gains(measured)) * TOLERANCE < 1.0:
        ct = apply_gains(ct, g, box)
        done.append(f"fine-band noise above the training look: bands scaled toward it (strength {STRENGTH})")
    else:
        h.band_gains = [1.0] * len(g)
        done.append("the bands then at the training look: kept")
    h.applied, h.after, h.reason = True, _measure_box(ct, lungs, box), "; ".join(done)
    return ct, h


def describe(record: dict | None) -> str:
    """One line on what harmonization did to the scan the model read (terminal ``info:``, Slicer panel, web table);
    "" when it left the scan as read. ``record``: :meth:`Harmonization.to_json`."""
    if not record or not record.get("applied"):
        return ""
    before = record.get("before") or {}
    done = []
    through = record.get("through_plane") or {}
    if through.get("slices_averaged", 1) > 1:
        done.append(f"{through['slices_averaged']} slices averaged through the plane "
                    f"({through.get('averaged_mm', 0):.1f} mm)")
    gains_ = record.get("band_gains") or []
    if any(g < 1.0 for g in gains_):
        done.append("fine bands scaled x " + " / ".join(f"{g:.2f}" for g in gains_))
    after = (record.get("after") or {}).get("tissue_sd_hu")
    noise = f"soft-tissue noise {before.get('tissue_sd_hu', 0):.0f} HU" + (f" -> {after:.0f} HU" if after else "")
    return (f"Harmonized for the model ({noise}): {'; '.join(done)}; densitometry as read in the table, "
            "harmonized_* beside it")


def for_analysis(ct: CTImage, lungs: CTImage, mode: str, reference: bool) -> tuple[CTImage, Harmonization]:
    """:func:`harmonize` as ``analyze`` runs it: with the reference classifier (cip-lh, trained on real sharp-kernel
    COPDGene CT, not on the phantoms' look) the scan is measured only."""
    if not reference or mode == "off":
        return harmonize(ct, lungs, mode)
    out, h = harmonize(ct, lungs, "off")
    h.mode, h.reason = mode, "reference classifier: measured only (its training look is real sharp-kernel CT)"
    return out, h


def main(argv=None) -> int:  # python -m drasclr.acquisition.harmonize CT...: each scan measured, one JSON line


    for path in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps({"ct": str(path), **measure(read_ct(path)).to_json()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
