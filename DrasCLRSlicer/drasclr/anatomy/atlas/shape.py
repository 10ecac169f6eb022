"""A canonical adult lung shape, defined procedurally (no patient data), and a synthetic chest CT around it.

Used to build the shipped atlas (``build_atlas.py``) and, deformed by known affines, to test lung masking and
registration. Physical space is LPS in millimetres, centred near the carina:

- each lung: an elliptic cross-section (right half-width 68 mm, left 62 mm, antero-posterior half-depth 95 mm)
  that narrows towards a rounded apex at z = +125 mm and sits on a diaphragm dome (lowest at the posterior
  costophrenic recesses, z = -125 mm, rising ~45 mm at the dome); the lungs' centres lie 78 mm either side of
  the midline and come within ~4 mm of each other anteriorly (anterior junction);
- the heart (an ellipsoid, shifted to the left and anterior) carves the medial lower lungs, more on the left;
- lobes (LTRC numbering): an oblique fissure in each lung (plane z = c + 0.75 y rising from the anterior
  diaphragm to posterior-superior, c = -6 mm left, -10.5 mm right), on the right also a horizontal fissure
  (z = +14 mm) in front of the oblique one. The three heights were set so that the lobes' shares of the lung
  volume equal the supine-inspiration means of 32 healthy adult volunteers (Yamada et al., Respiration 2020,
  doi:10.1159/000507265, table 3: RUL 17.9 %, RML 9.3 %, RLL 26.5 %, LUL 23.1 %, LLL 23.2 %).

Overall size ≈ 300 mm wide, 250 mm tall, 190 mm deep: an adult lung at total lung capacity.
"""

from __future__ import annotations

import numpy as np

from ...core.image import CTImage

RIGHT_CX, LEFT_CX = -78.0, 78.0  # LPS x of each lung's axis (+x = patient's left)
HALF_W = {1: 68.0, 2: 62.0}  # by lung label (1 right, 2 left)
HALF_D = 95.0
Z_APEX, Z_BASE = 125.0, -125.0
# shape parameters (mm unless noted); chosen by eye and by a small search that maximised the overlap of the
# affinely registered shape with automatic lung masks of public CTs (only these numbers, no image data)
SHAPE = {"apex_gain": 1.45, "apex_power": 0.5, "dome": 50.0, "anterior_rise": 60.0, "heart_rx": 65.0,
         "heart_ry": 70.0, "heart_rz": 70.0, "heart_z": -60.0, "mediastinum": 22.0, "junction": 10.0}


# fissures (mm): oblique z = c + slope * y per lung, right horizontal z = const (lobe shares = adult norms)
FISSURES = {"slope": 0.75, "oblique_left": -6.0, "oblique_right": -10.5, "horizontal": 14.0}


def lobe_labels(lps: np.ndarray) -> np.ndarray:
    """LTRC lobe value (0..5) of each LPS point ``(..., 3)`` under the canonical shape."""
    x, y, z = lps[..., 0], lps[..., 1], lps[..., 2]
    out = np.zeros(x.shape, np.uint8)
    for lung, cx in ((1, RIGHT_CX), (2, LEFT_CX)):
        t = np.clip((z - Z_BASE) / (Z_APEX - Z_BASE), 0, None)  # 0 base .. 1 apex
        scale = np.clip(SHAPE["apex_gain"] * np.clip(1 - t, 0, None) ** SHAPE["apex_power"], 0, 1)
        # anterior (y < 0) medial borders come closer to the midline: the anterior junction
        shift = np.where(y < 0, np.clip(-y / HALF_D, 0, 1) * SHAPE["junction"], 0.0) * np.sign(-cx)
        u = (x - cx - shift) / (HALF_W[lung] * np.maximum(scale, 1e-3))
        v = (y - 5.0) / (HALF_D * np.maximum(scale, 1e-3))
        r2 = u ** 2 + v ** 2
        # diaphragm: a dome under each lung, higher anteriorly; deepest in the posterior costophrenic recess
        dome = Z_BASE + SHAPE["dome"] * np.clip(1 - r2, 0, 1) + SHAPE["anterior_rise"] * np.clip(-v, 0, 1) ** 1.5
        inside = (r2 < 1) & (z > dome) & (z < Z_APEX) & (scale > 0)
        # heart (left of the midline, anterior, low) and the mediastinum in front of the spine
        heart = (((x - 20.0) / SHAPE["heart_rx"]) ** 2 + ((y + 25.0) / SHAPE["heart_ry"]) ** 2
                 + ((z - SHAPE["heart_z"]) / SHAPE["heart_rz"]) ** 2) < 1
        mediastinum = (np.abs(x - 5.0) < SHAPE["mediastinum"] + 8.0 * np.clip(-z / 100.0, 0, 1)) & (y < 60.0)
        spine = ((x / 35.0) ** 2 + ((y - 80.0) / 35.0) ** 2) < 1
        inside &= ~heart & ~mediastinum & ~spine
        oblique = z - (FISSURES["oblique_left" if lung == 2 else "oblique_right"] + FISSURES["slope"] * y)
        if lung == 2:  # > 0 above the oblique fissure
            lobe = np.where(oblique > 0, 1, 2)
        else:
            lobe = np.where(oblique > 0, np.where(z > FISSURES["horizontal"], 3, 4), 5)
        out[inside] = lobe[inside]
    return out


def lps_grid(spacing_mm: float, margin_mm: float = 20.0, box=((-160, 160), (-110, 110), (-150, 140))) -> CTImage:
    """An empty LPS-aligned grid (identity direction) around the canonical shape, ``spacing_mm`` isotropic."""
    lo = np.array([b[0] for b in box], float) - margin_mm
    hi = np.array([b[1] for b in box], float) + margin_mm
    size = np.ceil((hi - lo) / spacing_mm).astype(int) + 1  # x, y, z
    return CTImage(np.zeros(size[::-1], np.uint8), (spacing_mm,) * 3, tuple(lo))


def canonical_lobes(spacing_mm: float = 2.0, affine: np.ndarray | None = None, grid: CTImage | None = None) -> CTImage:
    """Lobe labelmap (LTRC 1..5, uint8) of the canonical shape, optionally deformed by a 4×4 LPS ``affine``.

    ``affine`` maps canonical points to subject points; the label of subject point ``p`` is the canonical label of
    ``affine⁻¹ p``. ``grid`` (default: :func:`lps_grid`) gives the output geometry.
    """
    grid = grid if grid is not None else lps_grid(spacing_mm)
    nz, ny, nx = grid.array.shape
    out = np.zeros((nz, ny, nx), np.uint8)
    inv = np.eye(4) if affine is None else np.linalg.inv(affine)
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    for k in range(nz):
        ijk = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1)
        p = grid.index_to_lps(ijk) @ inv[:3, :3].T + inv[:3, 3]
        out[k] = lobe_labels(p).reshape(ny, nx)
    return grid.with_array(out)


def lungs_from_lobes(lobes: np.ndarray) -> np.ndarray:
    """1 right lung, 2 left lung from LTRC lobes."""
    return np.where(np.isin(lobes, (1, 2)), 2, np.where(lobes > 0, 1, 0)).astype(np.uint8)


def synthetic_ct(lobes: CTImage, seed: int = 0, noise_hu: float = 20.0, trachea: bool = True,
                 vessels: int = 40) -> CTImage:
    """A chest CT (int16 HU) around a lobe labelmap: body (soft tissue, fat rim), lungs at -850 HU with vessels,
    a trachea running from the top of the image to a carina and two main bronchi into the lungs.

    Lung truth is ``lobes.array > 0`` — vessels inside the lung count as lung.
    """
    rng = np.random.default_rng(seed)
    a = lobes.array
    lung = a > 0
    nz, ny, nx = a.shape
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij", sparse=True)
    sx, sy, sz = lobes.spacing
    # body: an elliptic cylinder 15 mm around the lungs' extent in x/y
    ys, xs = np.nonzero(lung.any(axis=0))
    cy, cx = 0.5 * (ys.min() + ys.max()), 0.5 * (xs.min() + xs.max())
    ry = 0.5 * (ys.max() - ys.min()) + 25.0 / sy
    rx = 0.5 * (xs.max() - xs.min()) + 25.0 / sx
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    ct = np.full(a.shape, -1000.0, np.float32)
    ct[np.broadcast_to(body, a.shape)] = 40.0
    ct[lung] = -850.0
    # vessels: random tubes inside the lung (kept as lung in the truth)
    pts = np.argwhere(lung)
    for _ in range(vessels):
        c = pts[rng.integers(len(pts))]
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        for t in np.linspace(-20, 20, 41):
            p = (c + t * d / np.array([sz, sy, sx])).round().astype(int)
            if np.all(p >= 1) and np.all(p < np.array(a.shape) - 1):
                sl = tuple(slice(q - 1, q + 1) for q in p)
                ct[sl] = np.where(lung[sl], 40.0, ct[sl])
    if trachea:
        zs = np.nonzero(lung.any(axis=(1, 2)))[0]
        top = nz - 1 if lobes.direction[2, 2] > 0 else 0
        z_car = int(zs.min() + 0.62 * (zs.max() - zs.min()))
        r = 9.0 / sx
        mid_x = cx
        y_tr = cy - 5.0 / sy
        tube = ((yy - y_tr) ** 2 + (xx - mid_x) ** 2 < r ** 2)
        span = (zz >= min(z_car, top)) & (zz <= max(z_car, top))
        ct[np.broadcast_to(tube & span, a.shape) & ~lung] = -1000.0
        # main bronchi: from the carina 40 mm down and 25 mm (right) / 35 mm (left) out to the hila
        for side, lateral in ((-1, 25.0), (1, 35.0)):
            for t in np.linspace(0, 1, 40):
                z = z_car - t * 40.0 / sz
                x = mid_x + side * t * lateral / sx
                b = ((yy - y_tr) ** 2 + (xx - x) ** 2 < (6.0 / sx) ** 2) & (np.abs(zz - z) <= 0.5 + 3.0 / sz)
                b = np.broadcast_to(b, a.shape)
                ct[b & ~lung] = -1000.0
    ct += rng.normal(0, noise_hu, a.shape).astype(np.float32)
    return lobes.with_array(np.clip(ct, -1024, 3000).round().astype(np.int16))
