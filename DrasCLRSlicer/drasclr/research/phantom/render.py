"""Rasterising tubes and balls into occupancy volumes (0..1 with a one-voxel partial-volume ramp), vectorised.

A tube is sampled as a row of balls along its centreline (step small against its radius), and every ball is
splatted with a stencil of voxel offsets; overlapping shapes combine by maximum. No per-voxel Python loops.
"""

from __future__ import annotations

import numpy as np

from .grid import Grid

_CHUNK = 3_000_000  # stencil evaluations per vectorised batch


def tube_points(p0: np.ndarray, p1: np.ndarray, r0: np.ndarray, r1: np.ndarray | None = None,
                min_step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples of tubes ``p0[i] -> p1[i]`` (``(M, 3)`` mm, z y x) with radii tapering ``r0 -> r1``.
    Returns ``(N, 3)`` points and ``(N,)`` radii."""
    p0 = np.atleast_2d(np.asarray(p0, float))
    p1 = np.atleast_2d(np.asarray(p1, float))
    r0 = np.broadcast_to(np.asarray(r0, float), (len(p0),))
    r1 = r0 if r1 is None else np.broadcast_to(np.asarray(r1, float), (len(p0),))
    length = np.linalg.norm(p1 - p0, axis=1)
    step = np.maximum(min_step, 0.3 * np.minimum(r0, r1))
    n = np.maximum(2, np.ceil(length / step).astype(int) + 1)
    seg = np.repeat(np.arange(len(p0)), n)
    start = np.cumsum(n) - n
    t = (np.arange(n.sum()) - np.repeat(start, n)) / np.repeat(n - 1, n)
    pts = p0[seg] + (p1[seg] - p0[seg]) * t[:, None]
    rad = r0[seg] + (r1[seg] - r0[seg]) * t
    return pts, rad


def splat_balls(grid: Grid, pts: np.ndarray, radii: np.ndarray, out: np.ndarray | None = None,
                soft: float | None = None) -> np.ndarray:
    """Max-combine balls (centres ``(N, 3)`` mm z y x, radii ``(N,)`` mm) into a fine-grid occupancy volume
    ``(nz*k, ny, nx)`` float32. ``soft`` is the partial-volume ramp width (default: the in-plane spacing)."""
    shape = grid.fine_shape
    if out is None:
        out = np.zeros(shape, np.float32)
    if len(pts) == 0:
        return out
    sp = grid.fine_spacing_zyx()
    soft = float(soft or grid.spacing)
    origin = np.array([grid.zf[0], grid.y[0], grid.x[0]], float)
    idx = (np.asarray(pts, float) - origin) / sp
    radii = np.asarray(radii, float)
    reach = radii + 0.5 * soft
    hz = np.ceil(reach / sp[0]).astype(int)
    hxy = np.ceil(reach / sp[1]).astype(int)
    # drop balls wholly outside the grid
    lo = idx - np.stack([hz, hxy, hxy], 1)
    hi = idx + np.stack([hz, hxy, hxy], 1)
    keep = np.all(hi >= 0, 1) & np.all(lo <= np.array(shape) - 1, 1)
    idx, radii, hz, hxy = idx[keep], radii[keep], hz[keep], hxy[keep]
    flat_out = out.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    key = hz * 1000 + hxy
    for kval in np.unique(key):
        sel = np.flatnonzero(key == kval)
        h_z, h_xy = int(kval // 1000), int(kval % 1000)
        oz, oy, ox = np.meshgrid(np.arange(-h_z, h_z + 1), np.arange(-h_xy, h_xy + 1), np.arange(-h_xy, h_xy + 1),
                                 indexing="ij")
        off = np.stack([oz.ravel(), oy.ravel(), ox.ravel()], 1)
        per = max(1, _CHUNK // len(off))
        for c in range(0, len(sel), per):
            s = sel[c: c + per]
            base = np.rint(idx[s]).astype(np.int64)
            vox = base[:, None, :] + off[None, :, :]  # (G, O, 3)
            d = np.sqrt((((vox - idx[s][:, None, :]) * sp) ** 2).sum(-1))
            occ = np.clip((radii[s][:, None] - d) / soft + 0.5, 0.0, 1.0).astype(np.float32)
            ok = (occ > 0) & np.all((vox >= 0) & (vox < np.array(shape)), -1)
            flat = (vox[ok] * strides).sum(-1)
            np.maximum.at(flat_out, flat, occ[ok])
    return out


def splat_tubes(grid: Grid, p0, p1, r0, r1=None, out=None, soft=None) -> np.ndarray:
    """Occupancy of tubes ``p0 -> p1`` (mm, z y x) with radii ``r0 -> r1``; see :func:`splat_balls`."""
    pts, rad = tube_points(p0, p1, r0, r1, min_step=0.5 * min(grid.spacing, grid.dz_fine))
    return splat_balls(grid, pts, rad, out=out, soft=soft)
