"""Local HU histograms of square axial windows: the features of the reference classifier ``cip-lh``.

A window's feature vector is its normalised HU histogram: ``n_bins`` bins of ``bin_hu`` HU from ``lo_hu`` (values
below fall into the first bin), then one *dense* bin holding every pixel at or above ``lo_hu + n_bins * bin_hu``
(vessel, wall, mediastinum), smoothed along the HU axis with a Gaussian of ``smooth_bins`` bins (the dense bin is
not smoothed) and divided by the number of pixels, so it sums to 1. The *dense fraction* (pixels above
``dense_hu``) is returned beside it for the paraseptal rule.

One code path serves the training patches (one window centred on each 31 x 31 patch) and a CT slice (windows
centred on a grid of points): :func:`window_histograms` gathers the windows with a strided view and counts the
bins with one ``bincount``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage as ndi


@dataclass(frozen=True)
class HistogramSpec:
    """How a window becomes a feature vector (stored in the model card)."""

    lo_hu: float = -1050.0
    bin_hu: float = 10.0
    n_bins: int = 60  # -1050 .. -450 HU; pixels at or above -450 go to the dense bin
    smooth_bins: float = 1.0  # Gaussian sigma along the HU axis, in bins (0: none)
    dense_hu: float = -450.0  # threshold of the dense fraction used by the paraseptal rule
    dense_weight: float = 1.0  # weight of the dense bin in the feature vector
    lung_only: bool = False  # True: the HU bins are normalised over the non-dense pixels alone
    absolute_weight: float = 1.0  # weight of the absolute HU bins
    relative_weight: float = 0.0  # > 0: append the lung bins re-centred on the window's median (offset-free shape)
    detail_bins: int = 0  # > 0: counts of the fine-detail image (HU minus its Gaussian blur), offset-free texture
    detail_lo_hu: float = -300.0
    detail_bin_hu: float = 20.0
    detail_sigma_px: float = 1.0
    detail_weight: float = 1.0

    @property
    def dim(self) -> int:
        """Length of the stored raw counts (absolute bins + dense bin + detail bins)."""
        return self.n_bins + 1 + self.detail_bins

    @property
    def feature_dim(self) -> int:
        """Length of a feature vector: the counts' dim, plus ``n_bins`` relative bins when ``relative_weight``."""
        return self.dim + (self.n_bins if self.relative_weight > 0 else 0)

    def to_dict(self) -> dict:
        """The fields; the robustness fields only when used (a version-1 card keeps its bytes)."""
        d = asdict(self)
        if self.absolute_weight == 1.0 and self.relative_weight == 0.0 and not self.detail_bins:
            d = {k: v for k, v in d.items() if k in _V1_FIELDS}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HistogramSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


_V1_FIELDS = ("lo_hu", "bin_hu", "n_bins", "smooth_bins", "dense_hu", "dense_weight", "lung_only")


def bin_index(hu: np.ndarray, spec: HistogramSpec) -> np.ndarray:
    """Per-pixel bin (uint8): 0..n_bins-1 for the HU bins, n_bins for dense pixels."""
    idx = np.floor((hu.astype(np.float32) - spec.lo_hu) / spec.bin_hu)
    return np.clip(idx, 0, spec.n_bins).astype(np.uint8)


def window_counts(slice_hu: np.ndarray, centres_yx: np.ndarray, size: int, spec: HistogramSpec,
                  pad_hu: float = -1000.0) -> tuple[np.ndarray, np.ndarray]:
    """Raw bin counts ``(N, dim)`` (uint16) of ``size`` x ``size`` windows of one 2-D slice centred on
    ``centres_yx`` ``(N, 2)`` pixel indices, and their dense fraction ``(N,)`` float32. Windows that reach past
    the slice's edge see ``pad_hu`` there."""
    if size % 2 != 1:
        raise ValueError(f"window size must be odd, got {size}")
    centres_yx = np.asarray(centres_yx, dtype=np.intp).reshape(-1, 2)
    n = len(centres_yx)
    if n == 0:
        return np.zeros((0, spec.dim), np.uint16), np.zeros(0, np.float32)
    h = size // 2
    padded = np.pad(np.asarray(slice_hu, np.float32), h, mode="constant", constant_values=pad_hu)
    bins = bin_index(padded, spec)
    # view[y, x] = the window centred on pixel (y, x) of the unpadded slice
    win = sliding_window_view(bins, (size, size))[centres_yx[:, 0], centres_yx[:, 1]].reshape(n, -1)
    m = spec.n_bins + 1
    counts = np.bincount((np.arange(n)[:, None] * m + win).ravel(), minlength=n * m)
    counts = counts.reshape(n, m)
    if spec.detail_bins:
        counts = np.concatenate([counts, _detail_counts(slice_hu, centres_yx, size, spec)], axis=1)
    dense = sliding_window_view(padded >= spec.dense_hu, (size, size))[centres_yx[:, 0], centres_yx[:, 1]]
    dense_frac = dense.reshape(n, -1).mean(axis=1, dtype=np.float32)
    return counts.astype(np.uint16), dense_frac


def _detail_counts(slice_hu: np.ndarray, centres_yx: np.ndarray, size: int, spec: HistogramSpec) -> np.ndarray:
    """Counts ``(N, detail_bins)`` of the fine-detail image (HU minus its Gaussian blur of ``detail_sigma_px``,
    reflected at the slice's edge; no detail beyond it): vessel edges, septa and lucency borders, the same whatever
    the scanner's HU offset."""
    hu = np.asarray(slice_hu, np.float32)
    padded = np.pad(hu - ndi.gaussian_filter(hu, spec.detail_sigma_px), size // 2, mode="constant")
    detail = padded
    idx = np.clip(np.floor((detail - spec.detail_lo_hu) / spec.detail_bin_hu), 0, spec.detail_bins - 1)
    n = len(centres_yx)
    win = sliding_window_view(idx.astype(np.uint8), (size, size))[centres_yx[:, 0], centres_yx[:, 1]].reshape(n, -1)
    counts = np.bincount((np.arange(n)[:, None] * spec.detail_bins + win).ravel(), minlength=n * spec.detail_bins)
    return counts.reshape(n, spec.detail_bins)


def window_histograms(slice_hu: np.ndarray, centres_yx: np.ndarray, size: int, spec: HistogramSpec,
                      pad_hu: float = -1000.0) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors ``(N, dim)`` float32 and dense fractions ``(N,)`` of windows (see :func:`window_counts`)."""
    counts, dense_frac = window_counts(slice_hu, centres_yx, size, spec, pad_hu)
    return finish(counts, spec), dense_frac


def finish(counts: np.ndarray, spec: HistogramSpec) -> np.ndarray:
    """Raw bin counts ``(N, dim)`` -> smoothed, normalised, weighted feature vectors."""
    counts = counts.astype(np.float32)
    detail = counts[:, spec.n_bins + 1:]
    counts = counts[:, : spec.n_bins + 1]
    total = counts.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    if spec.smooth_bins > 0:
        counts[:, : spec.n_bins] = ndi.gaussian_filter1d(counts[:, : spec.n_bins], spec.smooth_bins, axis=1,
                                                         mode="constant")
    feats = counts / total
    if spec.lung_only:  # the lung part's own histogram, whatever share of wall/vessel the window holds
        lung = counts[:, : spec.n_bins].sum(axis=1, keepdims=True)
        lung[lung == 0] = 1.0
        feats[:, : spec.n_bins] = counts[:, : spec.n_bins] / lung
    feats[:, spec.n_bins] *= spec.dense_weight
    if spec.detail_bins:
        detail = ndi.gaussian_filter1d(detail, 1.0, axis=1, mode="constant") if spec.smooth_bins > 0 else detail
        feats = np.concatenate([feats, spec.detail_weight * detail / total], axis=1)
    if spec.relative_weight > 0:
        feats = np.concatenate([feats, spec.relative_weight * _recentred(feats[:, : spec.n_bins])], axis=1)
    feats[:, : spec.n_bins] *= spec.absolute_weight
    return feats


def _recentred(hist: np.ndarray) -> np.ndarray:
    """Each row's bins shifted so that its median bin lands in the middle (bins shifted past an end dropped): the
    histogram's shape without its position, which an HU offset of the scanner moves."""
    n, m = hist.shape
    med = np.argmax(np.cumsum(hist, axis=1) >= 0.5 * hist.sum(axis=1, keepdims=True), axis=1)
    src = np.arange(m)[None, :] + (med[:, None] - m // 2)  # output bin j reads input bin j + (median - middle)
    ok = (src >= 0) & (src < m)
    out = np.zeros_like(hist)
    rows = np.broadcast_to(np.arange(n)[:, None], src.shape)
    out[ok] = hist[rows[ok], src[ok]]
    return out


def patch_counts(patches: np.ndarray, spec: HistogramSpec, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw counts and dense fractions of training patches ``(N, H, W)`` HU: one window of ``size`` (default: the
    largest odd square in the patch) at each patch's centre."""
    patches = np.asarray(patches)
    n, hgt, wid = patches.shape
    size = size or min(hgt, wid) - (1 - min(hgt, wid) % 2)
    out = [window_counts(p, np.array([[hgt // 2, wid // 2]]), size, spec) for p in patches]
    return np.concatenate([c for c, _ in out]), np.concatenate([d for _, d in out])


def patch_features(patches: np.ndarray, spec: HistogramSpec, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors and dense fractions of training patches (see :func:`patch_counts`)."""
    counts, dense = patch_counts(patches, spec, size)
    return finish(counts, spec), dense
