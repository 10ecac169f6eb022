"""The reference classifier on a CT: windows on a grid of each axial slice, classified, the lung map filled in.

Per axial slice that holds lung: window centres on a square lattice (every ``stride_mm``, about 4 mm) where the
centre is lung; each window is ``window_mm`` wide (the training patches' physical size, so its side in pixels
follows the CT's in-plane pixel size); its class probabilities are spread back over the slice by bilinear
interpolation between lattice points (lattice cells outside the lung take their nearest classified neighbour)
and every lung pixel takes the most likely subtype. Slices are independent, so a single slice or a sparse series
(e.g. 1 mm slices every 10 mm) is read as well as a volume.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage as ndi

from ..core.image import CTImage
from ..core.progress import progress
from .features import window_histograms
from .knn import CLASSES, LocalHistogramKNN

log = logging.getLogger(__name__)
STRIDE_MM = 4.0
UNSURE = 255  # pseudo-labels only: a lung voxel the classifier is not confident about (ignored in training)


def window_pixels(window_mm: float, pixel_mm: float) -> int:
    """Odd window side in pixels covering ``window_mm`` at ``pixel_mm`` (at least 5)."""
    n = max(5, int(round(window_mm / pixel_mm)))
    return n if n % 2 else n + 1


def lattice(mask2d: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Lattice points ``(N, 2)`` (pixel yx) inside ``mask2d`` and their lattice cells ``(N, 2)``."""
    off = stride // 2
    cells = np.argwhere(mask2d[off::stride, off::stride])
    return cells * stride + off, cells


def fill_slice(probs: np.ndarray, cells: np.ndarray, shape: tuple[int, int], stride: int,
               mask2d: np.ndarray, min_confidence: float | None = None) -> np.ndarray:
    """Labels (uint8) of one slice from lattice probabilities ``(N, C)`` at ``cells``; 0 outside ``mask2d``.
    With ``min_confidence``, lung pixels whose winning probability is below it get ``UNSURE``."""
    off = stride // 2
    gy, gx = len(range(off, shape[0], stride)), len(range(off, shape[1], stride))
    grid = np.zeros((probs.shape[1], gy, gx), np.float32)
    have = np.zeros((gy, gx), bool)
    grid[:, cells[:, 0], cells[:, 1]] = probs.T
    have[cells[:, 0], cells[:, 1]] = True
    if not have.all():  # empty cells copy their nearest classified cell (for interpolation at the lung border)
        _, (iy, ix) = ndi.distance_transform_edt(~have, return_indices=True)
        grid = grid[:, iy, ix]
    ys, xs = np.nonzero(mask2d)
    coords = np.stack([(ys - off) / stride, (xs - off) / stride])
    best = np.full(len(ys), -1.0, np.float32)
    lab = np.zeros(len(ys), np.uint8)
    for c, value in enumerate(CLASSES):
        p = ndi.map_coordinates(grid[c], coords, order=1, mode="nearest")
        better = p > best
        lab[better] = value
        best[better] = p[better]
    if min_confidence is not None:
        lab[best < min_confidence] = UNSURE
    out = np.zeros(shape, np.uint8)
    out[ys, xs] = lab
    return out


def predict_subtypes(ct: CTImage, lungs: CTImage, clf: LocalHistogramKNN, stride_mm: float = STRIDE_MM,
                     show_progress: bool = True, min_confidence: float | None = None) -> CTImage:
    """Subtype labelmap (uint8: 1 normal, 2 CLE, 3 PSE, 4 PLE in the lung, 0 outside) on ``ct``'s grid.
    ``min_confidence``: pseudo-labels for training, ``UNSURE`` where the winning probability is below it.

    Axial slices are array axis 0 (``ct.superior_axis()``); other acquisitions are permuted first.
    """
    sup_axis, _ = ct.superior_axis()
    if sup_axis != 0:
        order = [sup_axis] + [a for a in range(3) if a != sup_axis]
        cols = [2 - a for a in order][::-1]
        perm = CTImage(np.ascontiguousarray(np.transpose(ct.array, order)), tuple(ct.spacing[c] for c in cols),
                       ct.origin, ct.direction[:, cols])
        lab = predict_subtypes(perm, perm.with_array(np.ascontiguousarray(np.transpose(lungs.array, order))), clf,
                               stride_mm, show_progress, min_confidence).array
        return ct.with_array(np.ascontiguousarray(np.transpose(lab, np.argsort(order))))
    pixel_mm = float(np.sqrt(ct.spacing[0] * ct.spacing[1]))
    if not 0.5 * clf.pixel_mm <= pixel_mm <= 1.0:
        log.warning("in-plane pixels of %.2f mm are far from the training patches' %.2f mm: the cip-lh map is not a "
                    "reliable texture map at this resolution", pixel_mm, clf.pixel_mm)
    size = window_pixels(clf.window_mm, pixel_mm)
    stride = max(1, int(round(stride_mm / pixel_mm)))
    out = np.zeros(ct.array.shape, np.uint8)
    zs = [z for z in range(ct.array.shape[0]) if lungs.array[z].any()]
    items = progress(zs, desc="subtypes (cip-lh)") if show_progress else zs
    for z in items:
        mask2d = lungs.array[z] > 0
        centres, cells = lattice(mask2d, stride)
        if len(centres) == 0:  # a sliver of lung between lattice points: classify its own centre
            centres = np.argwhere(mask2d)[[len(np.argwhere(mask2d)) // 2]]
            cells = np.round((centres - stride // 2) / stride).clip(0).astype(int)
        feats, dense = window_histograms(ct.array[z], centres, size, clf.spec)
        probs = clf.predict_proba(feats, dense)
        out[z] = fill_slice(probs, cells, mask2d.shape, stride, mask2d, min_confidence)
    return ct.with_array(out)
