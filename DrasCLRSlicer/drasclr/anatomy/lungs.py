"""Automatic lung mask (classical, no clicks, no downloaded weights): labelmap 0 outside, 1 right lung, 2 left lung.

Pipeline (``segment_lungs``), coarse steps on a ~2 mm grid, boundary refined on the input grid:

1. **Body**: voxels above -500 HU (scanner padding such as -2048/-3024 outside the scan circle is never body),
   largest 3-D component, holes filled slice by slice; its row/column hull per slice ("body hull") is kept too.
2. **Air in the body**: -1500 < HU < -400, opened once. A 3-D air component is a lung candidate when at least
   80 % of it lies inside the body hull — so outside air is rejected while a lung cut by the scan's edge (where
   the chest wall is missing and the per-slice hole filling fails) is still found. Candidates under 1 % of the
   largest one (bowel gas, oesophagus) are dropped; no candidate of at least ``MIN_LUNG_ML`` → ``InputError``
   ``no lungs found``.
3. **Trachea and main bronchi**: found in the most superior slices as a round, central air section of 0.8–8 cm²,
   then tracked slice by slice down to the carina and along both main bronchi (each section must overlap the
   section above and may not grow more than ~3× in area; where it merges with a lung it is followed in the air
   below -920 HU after a 3×3 in-plane mean — the lumen, apart from the normal lung at about -850 HU — and stops
   when that too explodes).
   The tracked airway is removed from the candidates and from the final mask.
4. **Left/right**: two large components are the two lungs. When the lungs touch (anterior/posterior junction)
   the component is eroded until it falls apart into two large parts side by side (x centroids ≥ 30 mm apart,
   on either side of the body's midline); the parts are grown back inside the component, nearest part wins.
   Otherwise the scan holds one lung, named left or right by its side of the body's midline.
5. **Vessels and nodules**: each lung is closed and its holes filled slice by slice (axial) and in 3-D, so
   vessels, airways and nodules inside the lung belong to it.
6. **Border**: the coarse lung interior is mapped back to the input grid; in a band of one coarse voxel around
   the coarse border each input voxel is lung when it is below -400 HU (the half-way value between aerated
   lung and soft tissue), so the border follows the image at full resolution and is smooth.

Index orders: arrays are ``(z, y, x)`` as in :class:`~drasclr.core.image.CTImage`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..checks.lung_checks import check_lungs
from ..core import labels
from ..core.errors import InputError
from ..core.image import CTImage

AIR_HU = -400  # lung / soft tissue boundary
BODY_HU = -500
AIRWAY_HU = -920  # airway lumen (normal lung is about -850 HU)
PAD_HU = -1500  # below: scanner padding (outside the scan circle), neither air nor body
MIN_LUNG_ML = 100.0
# airway tracking (trachea found near the top of the air, followed down past the carina into the main bronchi)
TRACHEA_SEARCH_MM = 60.0  # the trachea starts within this distance of the most superior air
TRACHEA_AREA_CM2 = (0.8, 8.0)  # cross-section of a trachea (adult, and child to large adult)
TRACHEA_MAX_OFFSET_MM = 30.0  # from the body's left-right centre
TRACHEA_MAX_ASPECT = 2.2  # longest / shortest side of its bounding box: roughly round
TRACHEA_MAX_EXTENT_MM = 40.0
AIRWAY_MAX_AREA_CM2 = 8.0  # a larger section has merged with the lung
AIRWAY_MERGE_AREA_CM2 = 3.0  # ... or one above this area that also tripled since the last slice
AIRWAY_MERGE_GROWTH = 3.0
BRONCHI_FOLLOW_MM = 30.0  # followed this far below the carina
AIRWAY_MAX_LENGTH_MM = 200.0  # no carina within this length: stop
_BALL = ndi.generate_binary_structure(3, 1)


def segment_lungs(ct: CTImage, target_mm: float = 2.0, slab: bool = False) -> CTImage:
    """Lung labelmap on ``ct``'s grid (uint8, ``(Z, Y, X)``): 0 outside, 1 right lung, 2 left lung.

    Raises :class:`InputError` ``no lungs found ...`` when the image holds no lung-sized air inside a body.
    ``slab``: ``ct`` is one slice repeated (:func:`segment_lung_slices`): judged as a single section.
    """
    sup_axis, sup_sign = ct.superior_axis()
    if sup_axis != 0:  # the steps below work on axial slices = array axis 0
        return _segment_reoriented(ct, target_mm)
    f = [max(1, int(np.ceil(target_mm / s - 0.25))) for s in ct.spacing_zyx]  # strides, array order z y x
    a = ct.array[f[0] // 2:: f[0], f[1] // 2:: f[1], f[2] // 2:: f[2]]  # sample at the centre of each block
    coarse_spacing = np.asarray(ct.spacing_zyx) * f  # mm, z y x
    vox_ml = float(np.prod(coarse_spacing)) / 1000.0

    body, hull = _body(a)
    if not body.any():
        raise InputError("no lungs found: no body in the image")
    candidates = _air_candidates(a, hull, vox_ml)
    # airway lumen (~ -1000 HU) is tracked at a stricter threshold than lung (~ -850 HU): they stay apart
    strict = candidates & (ndi.uniform_filter(a.astype(np.float32), size=(1, 3, 3)) < AIRWAY_HU)  # denoised
    airway = _airway(candidates, strict, body, coarse_spacing, sup_sign)
    airway = ndi.binary_dilation(airway, structure=_BALL) & candidates
    lungs_air = candidates & ~airway
    parts = _components(lungs_air, vox_ml)
    if not parts and slab:
        raise InputError(f"lung sections too small in this slice: no air-filled region of at least "
                         f"{MIN_LUNG_ML / (SLAB_SLICES * SLAB_MM / 10):.0f} cm² inside the body (choose a slice with "
                         "more lung)")
    if not parts:
        raise InputError(f"no lungs found: no air-filled region of at least {MIN_LUNG_ML:.0f} ml inside the body "
                         "(is this a chest CT?)")
    midline = _midline_x(body, ct, f)
    lungs = _split_lungs(parts, ct, f, midline)
    coarse = np.zeros(a.shape, np.uint8)
    for part, value in lungs:
        filled = _fill(part)  # airway enclosed by the lung (intrapulmonary bronchi) is lung again
        coarse[filled & (coarse == 0)] = value
    check_lungs(coarse, a, body, vox_ml, section=slab)  # gas in the abdomen or a sliver of lung is not lung: refuse
    full = _refine(coarse, airway, ct, f)
    if not full.any():
        raise InputError("no lungs found after refinement")
    return ct.with_array(full)


SLAB_SLICES, SLAB_MM = 21, 6.0  # a single slice is segmented as a 126 mm slab of copies of itself


def segment_lung_slices(ct: CTImage, target_mm: float = 2.0) -> CTImage:
    """Lung labelmap of an image with fewer than 3 axial slices (a single HRCT slice): each slice is repeated
    into a slab (``SLAB_SLICES`` copies ``SLAB_MM`` apart, so a lung section of 8 cm² makes 100 ml), segmented
    with :func:`segment_lungs`, and the middle slice of the slab kept. Other images go to ``segment_lungs``."""
    sup_axis, _ = ct.superior_axis()
    if ct.array.shape[sup_axis] >= 3:
        return segment_lungs(ct, target_mm)
    out = np.zeros(ct.array.shape, np.uint8)
    for k in range(ct.array.shape[sup_axis]):
        sl = np.take(ct.array, [k], axis=sup_axis)
        spacing = list(ct.spacing)
        spacing[2 - sup_axis] = SLAB_MM
        slab = CTImage(np.repeat(sl, SLAB_SLICES, axis=sup_axis), tuple(spacing), ct.origin, ct.direction)
        lab = segment_lungs(slab, target_mm, slab=True).array
        idx = [slice(None)] * 3
        idx[sup_axis] = slice(k, k + 1)
        out[tuple(idx)] = np.take(lab, [SLAB_SLICES // 2], axis=sup_axis)
    return ct.with_array(out)


def _segment_reoriented(ct: CTImage, target_mm: float) -> CTImage:
    """Sagittal/coronal acquisitions: permute the array so axis 0 is cranio-caudal, segment, permute back."""
    sup_axis, _ = ct.superior_axis()
    order = [sup_axis] + [a for a in range(3) if a != sup_axis]
    arr = np.transpose(ct.array, order)
    # array axis a = ITK index axis 2 - a
    cols = [2 - a for a in order][::-1]  # ITK index axes in the new (x, y, z) order
    direction = ct.direction[:, cols]
    spacing = tuple(ct.spacing[c] for c in cols)
    tmp = CTImage(np.ascontiguousarray(arr), spacing, ct.origin, direction)
    lab = segment_lungs(tmp, target_mm).array
    return ct.with_array(np.ascontiguousarray(np.transpose(lab, np.argsort(order))))


# --- steps ---------------------------------------------------------------------------------------------------
def _body(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Body mask (largest component above -500 HU, holes filled per slice) and its per-slice row/column hull."""
    tissue = a > BODY_HU
    lab, n = ndi.label(tissue)
    if n == 0:
        return tissue, tissue
    sizes = np.bincount(lab.ravel())[1:]
    body = lab == (1 + int(np.argmax(sizes)))
    body = np.stack([ndi.binary_fill_holes(s) for s in body])
    # where the scan's edge cuts the chest, close the body along the image border so the hull holds the lung
    closed = body.copy()
    for axis in (1, 2):
        for end in (0, -1):
            line = np.take(closed, [end], axis=axis)
            fwd = np.maximum.accumulate(line, axis=3 - axis)
            bwd = np.flip(np.maximum.accumulate(np.flip(line, axis=3 - axis), axis=3 - axis), axis=3 - axis)
            idx = [slice(None)] * 3
            idx[axis] = slice(end, None) if end == -1 else slice(0, 1)
            closed[tuple(idx)] = fwd & bwd
    closed = np.stack([ndi.binary_fill_holes(s) for s in closed])
    return body, _row_col_hull(closed)


def _row_col_hull(mask: np.ndarray) -> np.ndarray:
    """Per slice: pixels between the first and last mask pixel of their row AND of their column."""
    def span(m, axis):
        fwd = np.maximum.accumulate(m, axis=axis)
        bwd = np.flip(np.maximum.accumulate(np.flip(m, axis=axis), axis=axis), axis=axis)
        return fwd & bwd
    return span(mask, 1) & span(mask, 2)


def _air_candidates(a: np.ndarray, hull: np.ndarray, vox_ml: float) -> np.ndarray:
    air = (a < AIR_HU) & (a > PAD_HU)
    air = ndi.binary_opening(air, structure=_BALL)
    lab, n = ndi.label(air)
    if n == 0:
        return air
    idx = np.arange(1, n + 1)
    size = ndi.sum_labels(air, lab, idx)
    inside = ndi.sum_labels(hull, lab, idx)
    keep = (inside >= 0.8 * size) & (size * vox_ml >= 1.0)
    if not keep.any():
        return np.zeros_like(air)
    biggest = size[keep].max()
    keep &= size >= 0.01 * biggest
    return np.isin(lab, idx[keep])


def _airway(cand: np.ndarray, strict: np.ndarray, body: np.ndarray, sp: np.ndarray, sup_sign: int) -> np.ndarray:
    """Trachea + main bronchi on the coarse grid, tracked slice by slice from the top (see module docstring).

    ``cand``: air below -400 HU; ``strict``: air below the airway threshold. A section that merges with the lung
    in ``cand`` is followed in ``strict`` (the lumen without the surrounding lung) instead.
    """
    airway = np.zeros_like(cand)
    nz = cand.shape[0]
    order = list(range(nz))[::-1] if sup_sign > 0 else list(range(nz))  # most superior slice first
    px_cm2 = sp[1] * sp[2] / 100.0
    max_start = max(1, int(round(TRACHEA_SEARCH_MM / sp[0])))
    first_air = next((i for i, z in enumerate(order) if cand[z].any()), None)
    if first_air is None:
        return airway
    prev = None
    started_at = None
    limit_slices = None
    for step, z in enumerate(order[first_air:], start=first_air):
        sl = cand[z]
        if prev is None:
            if step - first_air > max_start:
                return airway
            prev = _trachea_section(sl, body[z], px_cm2, sp)
            if prev is not None:
                airway[z] = prev
                started_at = step
            continue
        lab, n = ndi.label(sl)
        if n == 0:
            break
        grown = ndi.binary_dilation(prev, iterations=2)
        hits = np.unique(lab[grown & sl])
        hits = hits[hits > 0]
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        cur = np.zeros_like(sl)
        prev_area = max(prev.sum(), 1)
        for h in hits:
            comp = lab == h
            area_cm2 = sizes[h] * px_cm2
            grew = area_cm2 > AIRWAY_MERGE_AREA_CM2 and sizes[h] > AIRWAY_MERGE_GROWTH * prev_area
            if area_cm2 > AIRWAY_MAX_AREA_CM2 or grew:  # merged with the lung
                lumen = comp & strict[z]
                sl_lab, m = ndi.label(lumen)
                keep = np.unique(sl_lab[grown & lumen])
                keep = keep[keep > 0]
                lumen = np.isin(sl_lab, keep)
                small = lumen.sum() * px_cm2 <= AIRWAY_MAX_AREA_CM2
                if lumen.any() and small and lumen.sum() <= AIRWAY_MERGE_GROWTH * prev_area + 4:
                    cur |= ndi.binary_dilation(lumen) & comp
                continue
            cur |= comp
        if not cur.any():
            break
        airway[z] = cur
        prev = cur
        if limit_slices is None and ndi.label(cur)[1] >= 2:  # carina passed: follow the bronchi a little more
            limit_slices = step + max(1, int(round(BRONCHI_FOLLOW_MM / sp[0])))
        if limit_slices is not None and step >= limit_slices:
            break
        if started_at is not None and (step - started_at) * sp[0] > AIRWAY_MAX_LENGTH_MM:
            break
    return airway


def _trachea_section(sl: np.ndarray, body: np.ndarray, px_cm2: float, sp: np.ndarray) -> np.ndarray | None:
    """A round air section of trachea size near the body's left-right centre (``TRACHEA_*``), or None."""
    lab, n = ndi.label(sl)
    if n == 0:
        return None
    xs = np.nonzero(body.any(axis=0))[0]
    if xs.size == 0:
        return None
    centre_x = 0.5 * (xs[0] + xs[-1])
    best = None
    for i, obj in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[obj] == i
        area = comp.sum() * px_cm2
        if not TRACHEA_AREA_CM2[0] <= area <= TRACHEA_AREA_CM2[1]:
            continue
        cy, cx = ndi.center_of_mass(comp)
        cx += obj[1].start
        if abs(cx - centre_x) * sp[2] > TRACHEA_MAX_OFFSET_MM:
            continue
        h = (obj[0].stop - obj[0].start) * sp[1]
        w = (obj[1].stop - obj[1].start) * sp[2]
        if max(h, w) > TRACHEA_MAX_ASPECT * min(h, w) or max(h, w) > TRACHEA_MAX_EXTENT_MM:
            continue
        if best is None or abs(cx - centre_x) < best[0]:
            full = np.zeros_like(sl)
            full[obj] = comp
            best = (abs(cx - centre_x), full)
    return None if best is None else best[1]


def _components(mask: np.ndarray, vox_ml: float) -> list[np.ndarray]:
    """The (up to 3) largest components of at least MIN_LUNG_ML / 2, largest first."""
    lab, n = ndi.label(mask)
    if n == 0:
        return []
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1][:3]
    if sizes[order[0]] * vox_ml < MIN_LUNG_ML:
        return []
    return [lab == (i + 1) for i in order if sizes[i] * vox_ml >= MIN_LUNG_ML / 2]


def _midline_x(body: np.ndarray, ct: CTImage, f: list[int]) -> float:
    """LPS x (mm) of the body's centre of mass: the patient's midline."""
    zyx = np.array(ndi.center_of_mass(body)) * np.asarray(f)
    return float(ct.zyx_to_lps(zyx)[0][0])


def _x_mm(mask: np.ndarray, ct: CTImage, f: list[int], offset=(0, 0, 0)) -> float:
    zyx = (np.array(ndi.center_of_mass(mask)) + np.asarray(offset)) * np.asarray(f)
    return float(ct.zyx_to_lps(zyx)[0][0])


def _side(x: float, midline: float) -> int:
    return labels.LEFT_LUNG if x > midline else labels.RIGHT_LUNG  # LPS: +x is the patient's left


def _split_lungs(parts: list[np.ndarray], ct: CTImage, f: list[int], midline: float) -> list[tuple]:
    """``[(mask, label)]``: two lungs (left/right by position) or one lung when the scan holds only one."""
    if len(parts) >= 2 and parts[1].sum() > 0.1 * parts[0].sum():
        a, b = parts[0], parts[1]
        xa, xb = _x_mm(a, ct, f), _x_mm(b, ct, f)
        if abs(xa - xb) >= 30.0:
            return [(a, labels.LEFT_LUNG if xa > xb else labels.RIGHT_LUNG),
                    (b, labels.LEFT_LUNG if xb > xa else labels.RIGHT_LUNG)]
    big = parts[0]
    two = _erode_split(big, ct, f, midline)
    if two is not None:
        return two
    return [(big, _side(_x_mm(big, ct, f), midline))]


def _erode_split(big_full: np.ndarray, ct: CTImage, f: list[int], midline: float) -> list[tuple] | None:
    box = _bbox(big_full, 1)
    big = big_full[box]
    off = np.array([s.start for s in box])
    eroded = big
    for _ in range(12):
        eroded = ndi.binary_erosion(eroded, structure=_BALL)
        lab, n = ndi.label(eroded)
        if n < 2:
            if n == 0:
                return None
            continue
        sizes = np.bincount(lab.ravel())[1:]
        i, j = np.argsort(sizes)[::-1][:2]
        if sizes[j] < 0.1 * sizes[i]:
            continue
        pa, pb = lab == i + 1, lab == j + 1
        xa, xb = _x_mm(pa, ct, f, off), _x_mm(pb, ct, f, off)
        if abs(xa - xb) < 30.0 or (xa - midline) * (xb - midline) > 0:
            continue  # two parts of one lung (e.g. upper and lower), not left and right
        markers = np.zeros(big.shape, np.uint8)
        markers[pa] = 1
        markers[pb] = 2
        _, inds = ndi.distance_transform_edt(markers == 0, return_indices=True)
        grown = np.zeros(big_full.shape, np.uint8)
        grown[box] = markers[tuple(inds)] * big
        left_first = xa > xb
        return [(grown == 1, labels.LEFT_LUNG if left_first else labels.RIGHT_LUNG),
                (grown == 2, labels.RIGHT_LUNG if left_first else labels.LEFT_LUNG)]
    return None


def _bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    idx = [np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)]
    return tuple(slice(max(0, i[0] - margin), min(n, i[-1] + 1 + margin)) for i, n in zip(idx, mask.shape))


def _fill(part: np.ndarray) -> np.ndarray:
    """Close and fill holes (vessels, nodules) slice by slice and in 3-D; border slices are not eroded."""
    box = _bbox(part, 3)
    sub = part[box]
    padded = np.pad(sub, 2, mode="edge")
    closed = ndi.binary_closing(padded, structure=_BALL, iterations=2)[2:-2, 2:-2, 2:-2] | sub
    closed = np.stack([ndi.binary_fill_holes(s) for s in closed])
    out = np.zeros_like(part)
    out[box] = ndi.binary_fill_holes(closed)
    return out


def _refine(coarse: np.ndarray, airway: np.ndarray, ct: CTImage, f: list[int]) -> np.ndarray:
    """Map the coarse labels to the input grid; in a one-coarse-voxel band around the border use HU < -400."""
    shape = ct.array.shape
    box_c = _bbox(coarse > 0, 2)
    c = coarse[box_c]
    inner = np.zeros_like(c)
    for v in (labels.RIGHT_LUNG, labels.LEFT_LUNG):
        m = c == v
        if m.any():
            inner[ndi.binary_erosion(m, structure=_BALL, border_value=1)] = v  # a cut at the scan's edge stays
    outer = np.where(c > 0, c, ndi.grey_dilation(c, footprint=_BALL))
    outer[airway[box_c] & (c == 0)] = 0
    box_f = tuple(slice(s.start * k, min(n, s.stop * k)) for s, k, n in zip(box_c, f, shape))
    sub = tuple(slice(0, s.stop - s.start) for s in box_f)
    # the core (inner) keeps its label; the band around it is lung where the HU says air. The core's label is the
    # outer map's there (the core is the eroded labelled part), so: the outer map where core or air, else 0
    hu = ct.array[box_f]
    keep = (hu < AIR_HU) & (hu > PAD_HU)
    keep |= _upsample(inner > 0, f)[sub]
    out = np.zeros(shape, np.uint8)
    out[box_f] = _upsample(outer, f)[sub]
    out[box_f] *= keep
    return out


def _upsample(lab: np.ndarray, f: list[int]) -> np.ndarray:
    up = lab
    for axis, k in enumerate(f):
        if k > 1:
            up = np.repeat(up, k, axis=axis)
    return up
