"""Lobe sanity: each lobe one connected piece, lobes partition the lung mask, two lobes left and three right.

Connectivity is 26-neighbour. A lung island (a part of the lung mask cut off from the rest) necessarily holds a
piece of some lobe on its own; such pieces are not counted as a broken lobe.

:func:`make_connected` repairs a labelmap in place of the check: every piece of a lobe other than its largest
joins the lobe of the same lung it touches most. :func:`lobe_problems` lists what is still wrong (an empty list
when all is well); a lung island that touches no other lobe cannot be repaired and is reported.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...core import labels

SIDE_OF_LOBE = {v: labels.LEFT_LUNG for v in labels.LEFT_LOBES} | {v: labels.RIGHT_LUNG for v in labels.RIGHT_LOBES}
_FULL = np.ones((3, 3, 3), bool)


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, int, tuple]:
    lab, n = ndimage.label(mask, structure=_FULL)
    return lab, n, ndimage.find_objects(lab)


def make_connected(lobes: np.ndarray, max_rounds: int = 3) -> np.ndarray:
    """Every lobe's stray pieces (all but the largest) relabelled to the same-lung lobe they touch most."""
    out = lobes.copy()
    for _ in range(max_rounds):
        changed = False
        for v in labels.LOBES:
            box = ndimage.find_objects((out == v).astype(np.uint8))
            if not box or box[0] is None:
                continue
            sl = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box[0])
            sub = out[sl]
            lab, n, objs = _pieces(sub == v)
            if n < 2:
                continue
            sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
            keep = int(np.argmax(sizes)) + 1
            same_side = [w for w, s in SIDE_OF_LOBE.items() if s == SIDE_OF_LOBE[v] and w != v]
            for k in range(1, n + 1):
                if k == keep:
                    continue
                o = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in objs[k - 1])
                piece = lab[o] == k
                ring = ndimage.binary_dilation(piece, structure=_FULL) & ~piece
                neigh = sub[o][ring]
                counts = [(int(np.sum(neigh == w)), w) for w in same_side]
                best = max(counts)
                if best[0] > 0:
                    view = sub[o]
                    view[piece] = best[1]
                    changed = True
        if not changed:
            break
    return out


def _attached_pieces(lobes: np.ndarray, v: int) -> list[int]:
    """Sizes of the pieces of lobe ``v`` that touch another lobe of the same lung (a piece alone on a lung
    island, cut off from the rest of the lung by the lung mask itself, is not counted)."""
    box = ndimage.find_objects((lobes == v).astype(np.uint8))[0]
    sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    sub = lobes[sl]
    lab, n, objs = _pieces(sub == v)
    same_side = [w for w, s in SIDE_OF_LOBE.items() if s == SIDE_OF_LOBE[v] and w != v]
    sizes = []
    for k in range(1, n + 1):
        o = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in objs[k - 1])
        piece = lab[o] == k
        ring = ndimage.binary_dilation(piece, structure=_FULL) & ~piece
        if np.isin(sub[o][ring], same_side).any():
            sizes.append(int(piece.sum()))
    return sizes


def lobe_problems(lobes: np.ndarray, lungs: np.ndarray) -> list[str]:
    """What breaks the lobe contract (``lobes`` 1–5, ``lungs`` 1 right / 2 left, same grid); [] when none."""
    problems = []
    lung = lungs > 0
    unlabelled = int(np.sum(lung & (lobes == 0)))
    if unlabelled:
        problems.append(f"{unlabelled} lung voxels carry no lobe")
    outside = int(np.sum(~lung & (lobes > 0)))
    if outside:
        problems.append(f"{outside} lobe voxels lie outside the lung mask")
    for v, side in SIDE_OF_LOBE.items():
        mask = lobes == v
        if not np.any(lungs == side):
            continue
        if not mask.any():
            problems.append(f"{labels.LOBES[v]} is empty")
            continue
        wrong = int(np.sum(mask & lung & (lungs != side)))
        if wrong:
            problems.append(f"{labels.LOBES[v]}: {wrong} voxels in the other lung")
        n = len(_attached_pieces(lobes, v))
        if n > 1:
            problems.append(f"{labels.LOBES[v]} is in {n} pieces")
    return problems
