"""Lobe sanity: each lobe one connected piece, lobes partition the lung mask, two lobes left and three right.

Connectivity is 26-neighbour. A lung island (a part of the lung mask cut off from the rest) necessarily holds a
piece of some lobe on its own; such pieces are not counted as a broken lobe.

:func:`make_connected` repairs a labelmap in place of the check: every piece of a lobe other than its largest
joins the lobe of the same lung it touches most. :func:`lobe_problems` lists what is still wrong (an empty list
when all is well); a lung island that touches no other lobe cannot be repaired and is reported.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ...core import labels
from ...core.image import bounding_box

SIDE_OF_LOBE = {v: labels.LEFT_LUNG for v in labels.LEFT_LOBES} | {v: labels.RIGHT_LUNG for v in labels.RIGHT_LOBES}
_FULL = np.ones((3, 3, 3), bool)


def _pieces(mask: np.ndarray) -> tuple[np.ndarray | None, int, tuple]:
    """26-connected pieces of ``mask``, largest first: (labels, count, their boxes); SimpleITK (multi-threaded,
    GIL-free). One piece or none (the usual case): (None, count, ())."""
    f = sitk.ConnectedComponentImageFilter()
    f.FullyConnectedOn()
    cc = f.Execute(sitk.GetImageFromArray(np.ascontiguousarray(mask).view(np.uint8)))
    n = f.GetObjectCount()
    if n < 2:
        return None, n, ()
    lab = sitk.GetArrayFromImage(sitk.RelabelComponent(cc, sortByObjectSize=True))
    lab = lab.view(np.int32) if lab.dtype == np.uint32 else lab.astype(np.int32)  # counts far below 2**31
    # the boxes of the pieces after the largest, from their voxels' indices (they are small; a find_objects
    # pass over the whole box cost more than the components themselves on a thin-slice scan)
    where = np.nonzero(lab > 1)
    which = lab[where]
    boxes = [tuple(slice(0, n_) for n_ in lab.shape)]
    for k in range(2, n + 1):
        sel = which == k
        boxes.append(tuple(slice(int(ix[sel].min()), int(ix[sel].max()) + 1) for ix in where))
    return lab, n, tuple(boxes)


def _boxes(lobes: np.ndarray) -> dict[int, tuple]:
    """Each lobe's bounding box (one pass over the labelmap)."""
    outer = bounding_box(lobes)  # the labelled part first (fast), each lobe's box inside it
    if outer is None:
        return {}
    found = ndimage.find_objects(lobes[outer], max_label=max(labels.LOBES))
    return {v: tuple(slice(a.start + o.start, a.stop + o.start) for a, o in zip(found[v - 1], outer))
            for v in labels.LOBES if found[v - 1] is not None}


def make_connected(lobes: np.ndarray, max_rounds: int = 3, whole: set | None = None) -> np.ndarray:
    """Every lobe's stray pieces (all but the largest) relabelled to the same-lung lobe they touch most.
    ``whole``: a set that receives, when a round changed nothing, every lobe present: each is then one piece
    plus, at most, pieces touching no other lobe of its lung (islands of the lung mask itself), which is what
    :func:`lobe_problems` checks, so it need not look again."""
    out = lobes.copy()
    boxes = _boxes(out)
    todo = set(boxes)  # a lobe is looked at again only after it took over a piece (that piece may hold strays)
    for _ in range(max_rounds):
        changed = False
        grown: set[int] = set()
        for v in labels.LOBES:
            box = boxes.get(v)  # grown below by every piece a lobe takes over, so it always holds the lobe
            if box is None or v not in todo:
                continue
            sl = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
            sub = out[sl]
            lab, n, objs = _pieces(sub == v)
            if n < 2:
                continue
            same_side = [w for w, s in SIDE_OF_LOBE.items() if s == SIDE_OF_LOBE[v] and w != v]
            for k in range(2, n + 1):  # piece 1 is the largest: kept
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
                    grown.add(best[1])
                    at = tuple(slice(a.start + b.start, a.stop + b.start) for a, b in zip(o, sl))  # whole grid
                    old_box = boxes.get(best[1], at)
                    boxes[best[1]] = tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                                           for a, b in zip(old_box, at))
        if not changed:
            if whole is not None:
                whole.update(boxes)
            break
        todo = grown
    return out


def _attached_pieces(lobes: np.ndarray, v: int, box: tuple) -> list[int]:
    """Sizes of the pieces of lobe ``v`` (within ``box``) that touch another lobe of the same lung (a piece alone
    on a lung island, cut off from the rest of the lung by the lung mask itself, is not counted)."""
    sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
    sub = lobes[sl]
    lab, n, objs = _pieces(sub == v)
    if n < 2:  # one piece: nothing stray
        return [int(np.count_nonzero(sub == v))] if n else []
    same_side = [w for w, s in SIDE_OF_LOBE.items() if s == SIDE_OF_LOBE[v] and w != v]
    sizes = []
    for k in range(1, n + 1):
        o = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in objs[k - 1])
        piece = lab[o] == k
        ring = ndimage.binary_dilation(piece, structure=_FULL) & ~piece
        if np.isin(sub[o][ring], same_side).any():
            sizes.append(int(piece.sum()))
    return sizes


def lobe_problems(lobes: np.ndarray, lungs: np.ndarray, whole: set | None = None) -> list[str]:
    """What breaks the lobe contract (``lobes`` 1–5, ``lungs`` 1 right / 2 left, same grid); [] when none.
    ``whole``: lobes already known to be in one piece (from :func:`make_connected` on this very labelmap)."""
    problems = []
    lung, lobe = lungs > 0, lobes > 0
    unlabelled = int(np.count_nonzero(lung & ~lobe))
    if unlabelled:
        problems.append(f"{unlabelled} lung voxels carry no lobe")
    outside = int(np.count_nonzero(lobe & ~lung))
    if outside:
        problems.append(f"{outside} lobe voxels lie outside the lung mask")
    boxes = _boxes(lobes)
    present = {s: bool(np.any(lungs == s)) for s in set(SIDE_OF_LOBE.values())}
    for v, s in SIDE_OF_LOBE.items():
        if not present[s]:
            continue
        if v not in boxes:
            problems.append(f"{labels.LOBES[v]} is empty")
            continue
        here = lobes[boxes[v]] == v
        wrong = int(np.count_nonzero(here & (lungs[boxes[v]] != s)))  # in the other lung (or outside: counted above)
        wrong -= int(np.count_nonzero(here & (lungs[boxes[v]] == 0)))
        if wrong:
            problems.append(f"{labels.LOBES[v]}: {wrong} voxels in the other lung")
        if whole is not None and v in whole:
            continue
        n = len(_attached_pieces(lobes, v, boxes[v]))
        if n > 1:
            problems.append(f"{labels.LOBES[v]} is in {n} pieces")
    return problems
