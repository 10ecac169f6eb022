"""Scanner HU calibration: measure reference materials on every scan and correct an air offset.

Densitometry (LAA-950, Perc15) and the subtype model read absolute Hounsfield units, so a scanner whose air
reads -925 instead of -1000 HU shifts every number. ``analyze`` therefore measures, on every scan:

- **outside air** (the reference): voxels outside the body's per-slice hull, at least ``MARGIN_MM`` from any
  object denser than -500 HU (body, table, clothing, arms) and from scanner padding (values below -1500 HU,
  such as the -2048 outside the scan circle, are never air), and not on the table's side of the body (the
  foam mattress under the patient reads about -950 HU);
- **tracheal air**: the lumen core of the trachea (air inside the body, outside the lungs, a tube of 0.8-8 cm²
  near the midline over at least 2 cm in the upper half of the lungs), the fallback reference when there is no
  outside air in the field of view;
- **blood**: the deep mediastinal blood pool at heart level (soft tissue at least 8 mm from fat, lung and
  air). On a contrast-free scan it reads about +40 HU; a median above ``CONTRAST_HU`` marks an
  IV-contrast scan, whose blood is then no reference. It is recorded as a check, never used to correct.

Each measurement is a median with its interquartile range on a ~2 mm sample of the voxels (robust to noise,
streaks and the odd object). The offset is ``air median - (-1000)``. Modes (``--hu-calibration``):

- ``auto`` (default): subtract the offset only when **two independent air references agree**: outside air and
  tracheal (or main-bronchus) air each usable, within ``AGREE_HU`` (25 HU) of each other, and the offset beyond
  ``TOLERANCE_HU`` (20 HU; well-calibrated scanners read outside air within about ±10 HU, see
  docs/calibration.md). The offset is the outside air's (the larger, wall-free sample; tracheal air reads a few
  HU high from partial volume with the wall). Unenhanced blood is a further check: a correction that would move
  it out of the range of blood while it reads as blood uncorrected is not applied. A single reference, two that
  disagree, or a blood veto: measured, warned (``warning:``) and the HU left as they are;
- ``air``: always subtract the measured offset (outside air, else tracheal air);
- ``none``: never change the scan (still measured and reported; a warning when the offset exceeds the
  tolerance).

The correction shifts every voxel above -1500 HU (padding stays padding) and happens **before** lung masking,
densitometry and the model: the lungs are masked on the scan as read (to find the trachea), and masked again on
the corrected scan when a correction is applied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..core.distance import distance_to, within
from ..core.errors import InputError
from ..core.image import CTImage
from ..core.stages import note_lungs

AIR_HU = -1000.0  # nominal air
TOLERANCE_HU = 20.0  # auto mode corrects larger offsets
AGREE_HU = 25.0  # outside and tracheal air must agree this well for auto mode to correct
BLOOD_RANGE_HU = (-20.0, 120.0)  # unenhanced blood outside this after a correction: the correction is vetoed
PAD_HU = -1500.0  # below: scanner padding, never a measurement
OBJECT_HU = -500.0  # above: an object (body, table, clothing); below: air
MARGIN_MM = 10.0  # outside air keeps this far from objects and padding
MIN_AIR_ML = 2.0  # a reference needs at least this much air
MAX_IQR_HU = 100.0  # a wider spread is no reference (streaks, clothing)
CENSOR_FRACTION = 0.45  # share of voxels at the image minimum above which the median may be clipped
MAX_OFFSET_HU = 150.0  # an "air" median further from -1000 is something else (lung, foam): no reference
CONTRAST_HU = 120.0  # blood pool median above this: IV contrast
MODES = ("auto", "air", "none")
SAMPLE_MM = 2.0


@dataclass
class Measurement:
    """A reference material measured on the (uncorrected) scan."""

    median_hu: float
    iqr_hu: float
    p5_hu: float
    p95_hu: float
    volume_ml: float
    n: int
    floor_fraction: float = 0.0  # share of voxels at the image's minimum value (clipped by the scanner)
    usable: bool = True
    note: str = ""

    @classmethod
    def of(cls, hu: np.ndarray, voxel_ml: float, floor: float | None = None) -> Measurement:
        hu = np.asarray(hu, dtype=np.float32)
        p5, q1, med, q3, p95 = np.percentile(hu, [5, 25, 50, 75, 95])
        floor_fraction = float((hu <= floor).mean()) if floor is not None else 0.0
        return cls(median_hu=round(float(med), 1), iqr_hu=round(float(q3 - q1), 1), p5_hu=round(float(p5), 1),
                   p95_hu=round(float(p95), 1), volume_ml=round(hu.size * voxel_ml, 1), n=int(hu.size),
                   floor_fraction=round(floor_fraction, 3))


@dataclass
class Calibration:
    """What was measured and what was done; ``to_json()`` goes into stats.json as ``calibration``."""

    mode: str
    outside_air: Measurement | None = None
    tracheal_air: Measurement | None = None
    blood: Measurement | None = None
    reference: str | None = None  # "outside_air" or "tracheal_air": the measurement that gave the offset
    offset_hu: float | None = None  # reference median - (-1000); None without a usable air reference
    applied_hu: float = 0.0  # subtracted from every voxel above -1500 HU (the offset to the nearest HU)
    tolerance_hu: float = TOLERANCE_HU
    agreement_hu: float | None = None  # tracheal minus outside air median, when both are usable
    agree_tolerance_hu: float = AGREE_HU
    warnings: list[dict] = field(default_factory=list)

    @property
    def corrected(self) -> bool:
        return self.applied_hu != 0.0

    def warn(self, code: str, message: str) -> None:
        self.warnings.append({"code": code, "message": message})

    def to_json(self) -> dict:
        d = asdict(self)
        d["nominal_air_hu"] = AIR_HU
        d["corrected"] = self.corrected
        return d


# --- sampling helpers ---------------------------------------------------------------------------------------
def _axial(img: CTImage) -> CTImage:
    """The same voxels and geometry with the array axes ordered (cranio-caudal, antero-posterior, left-right), so
    sagittal and coronal acquisitions are measured like axial ones (no copy when the scan is axial already)."""
    d = img.direction
    sup_c = int(np.argmax(np.abs(d[2, :])))
    rest = [c for c in range(3) if c != sup_c]
    ap_c = max(rest, key=lambda c: abs(d[1, c]))
    cols = [next(c for c in rest if c != ap_c), ap_c, sup_c]  # old ITK index axes in the new (x, y, z) order
    if cols == [0, 1, 2]:
        return img
    arr = np.ascontiguousarray(np.transpose(img.array, [2 - c for c in cols[::-1]]))
    return CTImage(arr, tuple(img.spacing[c] for c in cols), img.origin, d[:, cols])


def _sample(ct: CTImage, target_mm: float = SAMPLE_MM):
    """Every f-th voxel (about ``target_mm`` apart; real voxel values, no averaging) -> (array, strides zyx,
    sample spacing zyx)."""
    f = [max(1, min(n, int(np.ceil(target_mm / s - 0.25)))) for s, n in zip(ct.spacing[::-1], ct.array.shape)]
    a = ct.array[f[0] // 2:: f[0], f[1] // 2:: f[1], f[2] // 2:: f[2]]
    return a, f, np.asarray(ct.spacing[::-1], float) * f


def _sample_labels(lab: np.ndarray, f: list[int]) -> np.ndarray:
    return lab[f[0] // 2:: f[0], f[1] // 2:: f[1], f[2] // 2:: f[2]]


def _span(m: np.ndarray, axis: int) -> np.ndarray:
    fwd = np.maximum.accumulate(m, axis=axis)
    bwd = np.flip(np.maximum.accumulate(np.flip(m, axis=axis), axis=axis), axis=axis)
    return fwd & bwd


def _hull(mask: np.ndarray) -> np.ndarray:
    """Per axial slice: pixels between the first and last mask pixel of their row and of their column."""
    return _span(mask, 1) & _span(mask, 2)


def _body(a: np.ndarray) -> np.ndarray:
    """Largest component above -500 HU (the patient), holes filled slice by slice; where the image's edge cuts
    the body, the edge is closed between the body's pixels on it first (so a lung cut by the edge is inside)."""
    objects = a > OBJECT_HU
    lab, n = ndi.label(objects)
    if n == 0:
        return objects
    body = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    for axis in (1, 2):
        for end in (0, body.shape[axis] - 1):
            idx = [slice(None)] * 3
            idx[axis] = end
            edge = body[tuple(idx)]  # (Z, n) lines along the image's edge
            body[tuple(idx)] = _span(edge[:, None, :], 2)[:, 0, :]
    return np.stack([ndi.binary_fill_holes(s) for s in body])


def _usable(m: Measurement, min_ml: float = MIN_AIR_ML) -> Measurement:
    if m.volume_ml < min_ml:
        m.usable, m.note = False, f"only {m.volume_ml} ml (needs {min_ml})"
    elif m.iqr_hu > MAX_IQR_HU:
        m.usable, m.note = False, f"spread too wide (IQR {m.iqr_hu} HU > {MAX_IQR_HU:.0f})"
    elif abs(m.median_hu - AIR_HU) > MAX_OFFSET_HU:
        m.usable, m.note = False, f"{m.median_hu:.0f} HU is no air (more than {MAX_OFFSET_HU:.0f} HU from -1000)"
    elif m.floor_fraction > CENSOR_FRACTION:
        m.usable, m.note = False, (f"{100 * m.floor_fraction:.0f} % of the voxels sit at the image minimum "
                                   "(clipped by the scanner): the median is censored")
    return m


# --- measurements -------------------------------------------------------------------------------------------
def measure_outside_air(ct: CTImage) -> Measurement | None:
    """Air outside the patient (see the module docstring); None when the field of view holds none."""
    ct = _axial(ct)
    a, _, sp = _sample(ct)
    valid = a > PAD_HU
    if not valid.any():
        return None
    objects = valid & (a > OBJECT_HU)
    body = _body(a)
    if not body.any():
        return None
    near_object = within(objects, MARGIN_MM, sp)
    near_pad = within(~valid, MARGIN_MM, sp) if not valid.all() else np.zeros_like(valid)
    air = valid & ~_hull(body) & ~near_object & ~near_pad & ~_table_side(a, objects, body, ct)
    if not air.any():
        return None
    floor = float(a[valid].min())
    return _usable(Measurement.of(a[air], float(np.prod(sp)) / 1000.0, floor))


def _table_side(a: np.ndarray, objects: np.ndarray, body: np.ndarray, ct: CTImage) -> np.ndarray:
    """Voxels on the table's side of the body's centre (the foam mattress under a patient reads about -950 HU,
    not air). The table side is where the objects outside the body lie (the table); posterior (supine) when
    there are none."""
    rows = np.arange(a.shape[1])[None, :, None]
    cy = ndi.center_of_mass(body)[1]
    others = objects & ~ndi.binary_dilation(body, iterations=2)
    if others.sum() > 0.002 * body.sum():
        side = 1.0 if ndi.center_of_mass(others)[1] > cy else -1.0
    else:
        side = float(np.sign(ct.direction[1, 1]) or 1.0)  # array rows towards posterior (LPS +y)
    return (rows - cy) * side > 0


def _lung_levels(lung: np.ndarray) -> np.ndarray:
    """Array-axis-0 indices of the slices that hold lung, in increasing index order."""
    return np.flatnonzero(lung.any(axis=(1, 2)))


def measure_tracheal_air(ct: CTImage, lungs: CTImage) -> Measurement | None:
    """Lumen core of the trachea (see the module docstring); None when no trachea is found."""
    ct, lungs = _axial(ct), _axial(lungs)
    a, f, sp = _sample(ct)
    lung = _sample_labels(lungs.array, f) > 0
    zs = _lung_levels(lung)
    thin = a.shape[0] < 3  # one or two slices: the main bronchus or trachea in the slice, no extent to check
    if zs.size < (1 if thin else 3):
        return None
    sup_sign = ct.superior_axis()[1]
    half = zs.size // 2
    z_lo, z_hi = (zs[half], a.shape[0]) if sup_sign > 0 else (0, zs[zs.size - 1 - half] + 1)  # upper half + above
    if thin:
        z_lo, z_hi = 0, a.shape[0]
    body = _body(a)
    inside = _hull(body)
    air = (a > PAD_HU) & (a < OBJECT_HU) & inside & ~ndi.binary_dilation(lung, iterations=1)
    air[:z_lo] = False
    air[z_hi:] = False
    lab, n = ndi.label(air)
    if n == 0:
        return None
    xs = np.flatnonzero(body.any(axis=(0, 1)))
    centre_x = 0.5 * (xs[0] + xs[-1])
    px_cm2 = sp[1] * sp[2] / 100.0
    best = None
    for i, obj in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[obj] == i
        per_slice = comp.sum(axis=(1, 2))
        per_slice = per_slice[per_slice > 0]
        if not thin and per_slice.size * sp[0] < 20.0:
            continue
        area = float(np.median(per_slice)) * px_cm2
        if not 0.8 <= area <= 8.0:
            continue
        cx = ndi.center_of_mass(comp)[2] + obj[2].start
        if abs(cx - centre_x) * sp[2] > 30.0:
            continue
        if best is None or comp.sum() > best[0]:
            best = (int(comp.sum()), obj, comp)
    if best is None:
        return None
    _, obj, comp = best
    core = np.stack([ndi.binary_erosion(s) for s in comp])  # away from the wall (partial volume)
    if core.sum() < 10:
        core = comp
    return _usable(Measurement.of(a[obj][core], float(np.prod(sp)) / 1000.0), min_ml=0.2 if thin else 0.5)


def measure_blood(ct: CTImage, lungs: CTImage, offset_hu: float = 0.0) -> Measurement | None:
    """Deep mediastinal blood pool at heart level (see the module docstring); None when not found. ``offset_hu``:
    the scan's known air offset (the tissue thresholds move with it; the values are reported as read)."""
    ct, lungs = _axial(ct), _axial(lungs)
    a, f, sp = _sample(ct)
    lab = _sample_labels(lungs.array, f)
    both = np.flatnonzero(((lab == 1).any(axis=(1, 2))) & ((lab == 2).any(axis=(1, 2))))
    if both.size < 3:
        return None
    sup_sign = ct.superior_axis()[1]
    ordered = both[::-1] if sup_sign > 0 else both  # superior first
    levels = ordered[int(0.4 * both.size): max(int(0.85 * both.size), int(0.4 * both.size) + 1)]
    lung = lab > 0
    hu = a.astype(np.float32) - np.float32(offset_hu)
    soft = (hu > -30) & (hu < 600)  # blood, myocardium, contrast; not fat, lung, air or cortical bone
    deep = distance_to(~soft, sp) >= 8.0
    region = np.zeros_like(lung)
    region[levels] = _hull(lung[levels]) & ~lung[levels]
    # anterior of the lungs' centre: the heart, not the spine (posterior = +y in LPS)
    post_axis_sign = np.sign(ct.direction[1, 1]) or 1.0
    rows = np.arange(a.shape[1])[None, :, None]
    cy = ndi.center_of_mass(lung)[1]
    region &= (rows < cy) if post_axis_sign > 0 else (rows > cy)
    cand = region & deep
    if cand.sum() < 20:
        return None
    return Measurement.of(a[cand], float(np.prod(sp)) / 1000.0)


def _judge_blood(m: Measurement | None, offset_hu: float) -> None:
    """Contrast or not, and whether unenhanced blood reads as expected once the air offset is removed."""
    if m is None:
        return
    value = m.median_hu - offset_hu
    if value > CONTRAST_HU:
        m.usable, m.note = False, f"IV contrast ({value:.0f} HU after the air correction): no blood reference"
    elif not 0.0 <= value <= 100.0:
        m.note = f"{value:.0f} HU after the air correction: outside the 0-100 HU expected of unenhanced blood"
    else:
        m.note = f"{value:.0f} HU after the air correction: unenhanced blood as expected"


# --- decision and correction ---------------------------------------------------------------------------------
def apply_offset(ct: CTImage, offset_hu: float) -> CTImage:
    """Subtract ``offset_hu`` from every voxel above -1500 HU (padding untouched); keeps the array's dtype."""
    if offset_hu == 0.0:
        return ct
    a = ct.array
    out = np.where(a > PAD_HU, a.astype(np.float32) - np.float32(offset_hu), a)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return ct.with_array(out.astype(a.dtype))


def _offset(m: Measurement | None) -> float | None:
    return None if m is None or not m.usable else round(m.median_hu - AIR_HU, 1)


def _decide(cal: Calibration) -> None:
    """Set ``reference`` / ``offset_hu`` / ``applied_hu`` from the usable air references per ``cal.mode``, and warn
    where auto mode leaves an offset beyond the tolerance uncorrected."""
    out, tr = _offset(cal.outside_air), _offset(cal.tracheal_air)
    if out is None and tr is None:
        cal.warn("no_air_reference", "no usable outside or tracheal air: the scanner's HU calibration is unchecked")
        return
    cal.reference, cal.offset_hu = ("outside_air", out) if out is not None else ("tracheal_air", tr)
    if out is not None and tr is not None:
        cal.agreement_hu = round(tr - out, 1)
    big = abs(cal.offset_hu) > cal.tolerance_hu
    if cal.mode == "air":
        cal.applied_hu = float(round(cal.offset_hu))  # whole HU: every voxel moves by the same integer
        return
    if cal.mode == "none":
        if big:
            cal.warn("hu_offset_uncorrected", f"air reads {cal.offset_hu + AIR_HU:.0f} HU ({cal.offset_hu:+.0f} HU "
                     f"off, tolerance ±{cal.tolerance_hu:.0f}) and --hu-calibration none: densitometry and subtypes "
                     "are biased")
        return
    if cal.agreement_hu is not None and abs(cal.agreement_hu) > AGREE_HU:
        cal.warn("air_disagree", f"outside air reads {cal.outside_air.median_hu:.0f} HU and tracheal air "
                 f"{cal.tracheal_air.median_hu:.0f} HU: {abs(cal.agreement_hu):.0f} HU apart (they must agree within "
                 f"{AGREE_HU:.0f}); HU left as they are ({cal.offset_hu:+.0f} HU by outside air), check the scan")
        return
    if not big:
        return
    if cal.agreement_hu is None:
        other = "tracheal air" if cal.reference == "outside_air" else "outside air"
        cal.warn("single_air_reference", f"{cal.reference.replace('_', ' ')} reads {cal.offset_hu:+.0f} HU off -1000 "
                 f"but no usable {other} confirms it: HU left as they are (--hu-calibration air corrects)")
        return
    cal.applied_hu = float(round(cal.offset_hu))


def _blood_veto(cal: Calibration) -> None:
    """Undo a due auto correction that would move unenhanced blood out of the range of blood."""
    b = cal.blood
    if cal.mode != "auto" or not cal.applied_hu or b is None or not b.usable:
        return
    lo, hi = BLOOD_RANGE_HU
    before, after = b.median_hu, b.median_hu - cal.applied_hu
    if lo <= before <= hi and not lo <= after <= hi:
        cal.warn("blood_disagree", f"blood reads {before:.0f} HU as read but {after:.0f} HU after the "
                 f"{cal.applied_hu:+.0f} HU air correction: HU left as they are, check the scan")
        cal.applied_hu = 0.0


def calibrate_and_segment(ct: CTImage, mode: str = "auto", segment=None,
                          tolerance_hu: float = TOLERANCE_HU) -> tuple[CTImage, CTImage, Calibration]:
    """Measure, correct (per ``mode``) and mask the lungs on the corrected scan.

    Returns ``(ct_used, lungs, calibration)``: ``ct_used`` is the corrected scan (``ct`` itself when nothing was
    applied). ``segment``: the lung masking function (default :func:`drasclr.anatomy.lungs.segment_lungs`)."""
    if mode not in MODES:
        raise InputError(f"--hu-calibration {mode}: choose auto, air or none")
    if segment is None:
        from .lungs import segment_lungs as segment
    cal = Calibration(mode=mode, tolerance_hu=float(tolerance_hu))
    cal.outside_air = measure_outside_air(ct)
    # mask where the outside air says (lung masking thresholds are absolute): right whenever the trachea agrees
    guess = _offset(cal.outside_air)
    guess = float(round(guess)) if guess is not None and mode != "none" and abs(guess) > tolerance_hu else 0.0
    used = apply_offset(ct, guess)
    lungs = segment(used)
    cal.tracheal_air = measure_tracheal_air(ct, lungs)
    _decide(cal)
    cal.blood = measure_blood(ct, lungs, cal.offset_hu or 0.0)
    _judge_blood(cal.blood, cal.offset_hu or 0.0)
    _blood_veto(cal)
    if cal.applied_hu != guess:  # mask again on the scan actually used
        used = apply_offset(ct, cal.applied_hu)
        lungs = segment(used)
    note_lungs(lungs)  # stage estimates scale with the lung voxels from here on (drasclr.core.stages)
    return used, lungs, cal


def describe(cal: dict | None) -> str:
    """One line on an applied correction (terminal ``info:``, report, Slicer panel, web table); "" when none."""
    if not cal or not cal.get("corrected"):
        return ""
    refs = []
    for key, name in (("outside_air", "outside air"), ("tracheal_air", "tracheal air")):
        m = cal.get(key) or {}
        if m.get("usable"):
            refs.append(f"{name} {m['median_hu']:.0f} HU")
    blood = cal.get("blood") or {}
    if blood.get("usable"):
        refs.append(f"blood {blood['median_hu']:.0f} HU as read")
    return (f"HU corrected by {-cal['applied_hu']:+.0f} HU (air read {cal['offset_hu']:+.0f} HU off -1000: "
            f"{', '.join(refs)}; mode {cal['mode']}); uncorrected densitometry in the uncorrected_* columns")
