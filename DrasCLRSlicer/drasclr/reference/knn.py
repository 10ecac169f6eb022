"""The local-histogram kNN classifier (after the Chest Imaging Platform's method, re-implemented here).

Reference windows (histograms of expert-labelled patches) vote for a query window's subtype: the ``k`` nearest
under the L1 distance, weighted by inverse distance (scikit-learn's brute-force ``KNeighborsClassifier``). Then
the *paraseptal rule*: a window voted emphysematous (CLE or PLE) whose dense fraction (pixels above the spec's
``dense_hu``) exceeds ``pse_dense_frac`` touches pleura or a fissure, and is called paraseptal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from ..core import labels
from .features import HistogramSpec

CLASSES = (labels.NORMAL, labels.CLE, labels.PSE, labels.PLE)  # column order of probabilities


@dataclass
class LocalHistogramKNN:
    """Reference features + labels and the decision settings. ``predict_proba`` columns follow ``CLASSES``."""

    spec: HistogramSpec
    features: np.ndarray  # (M, dim) float32
    labels: np.ndarray  # (M,) uint8 subtype values
    k: int = 5
    pse_dense_frac: float | None = 0.28  # None: no paraseptal rule
    window_mm: float = 20.15  # physical window side (31 px at the reference pixel size)
    pixel_mm: float = 0.65  # reference pixel size of the training patches
    pse_needs_emphysema: bool = True  # a PSE vote whose lung part alone looks normal is called normal

    def __post_init__(self):
        self.features = np.asarray(self.features, np.float32)
        self.labels = np.asarray(self.labels, np.uint8)
        if self.features.ndim != 2 or self.features.shape[1] != self.spec.feature_dim:
            raise ValueError(f"reference features {self.features.shape} do not match the spec "
                             f"(dim {self.spec.feature_dim})")
        if len(self.labels) != len(self.features):
            raise ValueError("reference features and labels differ in length")
        self._knn = KNeighborsClassifier(n_neighbors=self.k, metric="manhattan", weights="distance",
                                         algorithm="brute", n_jobs=1).fit(self.features, self.labels)
        self._cols = [list(self._knn.classes_).index(c) if c in self._knn.classes_ else None for c in CLASSES]
        # the lung part alone (dense bin dropped): normal or emphysematous (CLE, PSE or PLE)
        self._lung_knn = KNeighborsClassifier(n_neighbors=self.k, metric="manhattan", weights="distance",
                                              algorithm="brute", n_jobs=1)
        self._lung_knn.fit(self.features[:, : self.spec.n_bins], self.labels != labels.NORMAL)

    def predict_proba(self, feats: np.ndarray, dense_frac: np.ndarray, batch: int = 8192) -> np.ndarray:
        """``(N, 4)`` float32 probabilities (normal, CLE, PSE, PLE) after the paraseptal rule."""
        out = np.zeros((len(feats), len(CLASSES)), np.float32)
        for s in range(0, len(feats), batch):
            p = self._knn.predict_proba(np.asarray(feats[s:s + batch], np.float32))
            for j, col in enumerate(self._cols):
                if col is not None:
                    out[s:s + batch, j] = p[:, col]
        out = apply_pse_rule(out, dense_frac, self.pse_dense_frac)
        if self.pse_needs_emphysema:
            self._check_pse(out, feats)
        return out

    def _check_pse(self, probs: np.ndarray, feats: np.ndarray) -> None:
        """Windows voted PSE whose lung part (without the dense bin) looks normal become normal (in place): the
        wall in a window of normal subpleural lung is not paraseptal emphysema."""
        pse = np.flatnonzero(np.argmax(probs, axis=1) == 2)
        if len(pse) == 0:
            return
        emph = self._lung_knn.predict(np.asarray(feats[pse, : self.spec.n_bins], np.float32))
        normal = pse[~emph.astype(bool)]
        probs[normal, 0] += probs[normal, 2]
        probs[normal, 2] = 0.0

    def predict(self, feats: np.ndarray, dense_frac: np.ndarray) -> np.ndarray:
        """``(N,)`` uint8 subtype values."""
        return np.asarray(CLASSES, np.uint8)[np.argmax(self.predict_proba(feats, dense_frac), axis=1)]


def apply_pse_rule(probs: np.ndarray, dense_frac: np.ndarray, threshold: float | None) -> np.ndarray:
    """Windows whose vote is CLE or PLE and whose dense fraction exceeds ``threshold`` become PSE: their CLE and
    PLE probability moves to PSE. ``probs`` columns follow ``CLASSES``; modified in place and returned."""
    if threshold is None or len(probs) == 0:
        return probs
    top = np.argmax(probs, axis=1)
    hit = np.isin(top, (1, 3)) & (np.asarray(dense_frac) > threshold)
    probs[hit, 2] += probs[hit, 1] + probs[hit, 3]
    probs[hit, 1] = 0.0
    probs[hit, 3] = 0.0
    return probs
