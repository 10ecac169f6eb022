"""Airway and pulmonary vessel trees grown by space filling (Tawhai/Kitaoka style), rasterised as tubes.

Each lung's tree starts at the hilum; one branch per lobe, then every branch heads 40 % of the way to the
centroid of the lung points it supplies, and the points are split in half across their principal axis until
one point is left. Radii follow Murray's law (radius ~ points served ** 1/3), so vessels taper from about 7 mm
at the hilum to about 0.5 mm at the periphery. Arteries run beside the bronchi; veins form their own tree.
"""

from __future__ import annotations

import numpy as np

from .grid import Grid


def grow(start: np.ndarray, groups: list[np.ndarray], r_root: float, frac: float = 0.4,
         min_len: float = 1.0) -> dict[str, np.ndarray]:
    """Space-filling tree from ``start`` over point groups (``(n_i, 3)`` mm, z y x; one first branch per group).

    Returns arrays ``p0 (M, 3)``, ``p1 (M, 3)``, ``r (M,)`` (mm), ``n (M,)`` points served, ``gen (M,)``."""
    total = sum(len(g) for g in groups)
    p0, p1, nn, gen = [], [], [], []
    stack = [(np.asarray(start, float), g, 1) for g in groups if len(g)]
    while stack:
        s, pts, k = stack.pop()
        n = len(pts)
        c = pts.mean(0)
        e = pts[0] if n == 1 else s + frac * (c - s)
        if np.linalg.norm(e - s) < min_len and n > 1:
            e = s + (c - s) * min(1.0, min_len / max(np.linalg.norm(c - s), 1e-6))
        p0.append(s)
        p1.append(e)
        nn.append(n)
        gen.append(k)
        if n == 1:
            continue
        d = pts - c
        w, v = np.linalg.eigh(d.T @ d)
        order = np.argsort(d @ v[:, -1])
        h = n // 2
        stack.append((e, pts[order[:h]], k + 1))
        stack.append((e, pts[order[h:]], k + 1))
    nn_a = np.array(nn, float)
    return {"p0": np.array(p0), "p1": np.array(p1), "r": r_root * (nn_a / total) ** (1 / 3), "n": nn_a,
            "gen": np.array(gen)}


def sample_points(rng: np.random.Generator, grid: Grid, labels: np.ndarray, value: int, n: int) -> np.ndarray:
    """``n`` random points (mm, z y x) inside the fine-grid region ``labels == value``."""
    step = 2
    sub = labels[::step, ::step, ::step] == value
    idx = np.flatnonzero(sub)
    if len(idx) == 0:
        return np.zeros((0, 3))
    pick = rng.choice(idx, size=min(n, len(idx)), replace=False)
    zyx = np.stack(np.unravel_index(pick, sub.shape), 1) * step
    zyx = zyx + rng.uniform(-0.5, 0.5, zyx.shape) * step
    sp = grid.fine_spacing_zyx()
    return np.array([grid.zf[0], grid.y[0], grid.x[0]]) + zyx * sp


def artery_beside(tree: dict[str, np.ndarray], airway_r: np.ndarray, wall: np.ndarray, r_art: np.ndarray,
                  visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Artery centreline segments: next to each visible bronchus (offset sideways), on the branch otherwise."""
    d = tree["p1"] - tree["p0"]
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    ref = np.where(np.abs(d[:, :1]) > 0.9, np.array([[0.0, 1.0, 0.0]]), np.array([[1.0, 0.0, 0.0]]))
    side = np.cross(d, ref)
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-6)
    off = np.where(visible[:, None], side * (airway_r + wall + r_art + 0.3)[:, None], 0.0)
    return tree["p0"] + off, tree["p1"] + off
