"""Voxel uncertainty of a dense subtype prediction, at no extra model cost (from the probabilities and the mirrored
test-time-augmentation pass that :func:`drasclr.dense.predict` already ran).

Three measures, each in 0..1, computed over the four subtype classes (1 normal, 2 CLE, 3 PSE, 4 PLE; the
"outside" channel is dropped and the rest renormalised):

- ``entropy``: predictive entropy of the TTA-mean probabilities divided by log 4 (0: one class certain, 1: all four
  equally likely);
- ``disagreement``: half the L1 distance between the plain and mirrored passes' probability vectors (needs TTA);
- ``margin``: 1 minus the gap between the two most likely classes.

The default, :data:`DEFAULT_KIND`, is the one that ranked wrong voxels best on held-out phantoms
(``bench/bench_guided.py``, docs/guided_correction.md). ``uncertainty.nii.gz`` stores it as uint8 percent
(0..100; :data:`SCALE` = 100) on the CT's own grid, 0 outside the lung.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..anatomy.regions import region_histograms
from ..core import labels
from ..core.image import CTImage, bounding_box
from ..core.threads import for_each
from .predict import ProbabilityMap

KINDS = ("entropy", "disagreement", "margin")
DEFAULT_KIND = "entropy"
SCALE = 100  # uncertainty.nii.gz value = round(SCALE * uncertainty)


@dataclass(frozen=True)
class VoxelUncertainty:
    """Per-voxel uncertainty on a CT's grid over the lung bounding box ``lo``..``hi`` (zyx, exclusive).

    ``measures[kind]`` ``(z, y, x)`` float16 in 0..1 for every kind computed (``disagreement`` only with TTA);
    ``p_predicted`` float16 the (renormalised) probability of the predicted class; ``inside`` the lung mask of the
    box. Reduced precision: a thin-slice scan's lung box holds tens of millions of voxels."""

    grid: CTImage
    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    measures: dict[str, np.ndarray]
    p_predicted: np.ndarray
    inside: np.ndarray
    kind: str = DEFAULT_KIND

    @property
    def box(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi))

    def full(self, kind: str | None = None) -> np.ndarray:
        """Measure ``kind`` (default: the chosen one) on the whole CT grid, float32, 0 outside the lung."""
        out = np.zeros(self.grid.array.shape, np.float32)
        out[self.box] = self.in_box(kind)
        return out

    def expected_errors(self) -> np.ndarray:
        """``1 - p(predicted class)`` on the whole CT grid (0 outside the lung): the chance each voxel is wrong."""
        out = np.zeros(self.grid.array.shape, np.float32)
        out[self.box] = self.expected_errors_in_box()
        return out

    def in_box(self, kind: str | None = None) -> np.ndarray:
        """Measure ``kind`` (default: the chosen one) over the lung box only (0 outside the lung), float32."""
        return np.where(self.inside, self.measures[kind or self.kind], 0).astype(np.float32)

    def expected_errors_in_box(self) -> np.ndarray:
        """:meth:`expected_errors` over the lung box only (float16): what the review queue needs, without
        whole-scan copies."""
        return np.where(self.inside, np.float16(1) - self.p_predicted, np.float16(0))

    def image(self) -> CTImage:
        """The chosen measure as the ``uncertainty.nii.gz`` image: uint8 percent (0..100) on the CT's grid."""
        out = np.zeros(self.grid.array.shape, np.uint8)
        m, view = self.measures[self.kind], out[self.box]
        for z in range(0, m.shape[0], 16):  # slab by slab: no box-sized float temporaries
            view[z:z + 16] = np.where(self.inside[z:z + 16], np.rint(m[z:z + 16].astype(np.float32) * SCALE), 0)
        return self.grid.with_array(out)


def measures_from_probabilities(p: np.ndarray, disagreement: np.ndarray | None = None,
                                kinds=("entropy", "margin", "disagreement")) -> dict[str, np.ndarray]:
    """The uncertainty measures ``kinds`` of class probabilities ``p`` ``(4, ...)`` (classes 1..4, any scale:
    renormalised), float32 in 0..1; ``disagreement`` (clipped to 0..1) only when given."""
    p = np.clip(np.asarray(p, np.float32), 0, None)
    total = p.sum(0)
    p = p / np.where(total > 0, total, 1)[None]
    p[:, total <= 0] = 1.0 / len(p)
    out = {}
    if "entropy" in kinds:
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log(p), 0).sum(0) / np.log(len(p))
        out["entropy"] = np.clip(ent, 0, 1).astype(np.float32)
    if "margin" in kinds:
        top2 = np.partition(p, len(p) - 2, axis=0)[-2:]
        out["margin"] = np.clip(1.0 - (top2[1] - top2[0]), 0, 1).astype(np.float32)
    if "disagreement" in kinds and disagreement is not None:
        out["disagreement"] = np.clip(disagreement, 0, 1).astype(np.float32)
    return out


def voxel_uncertainty(probabilities: ProbabilityMap, ct: CTImage, lungs: CTImage, subtypes: CTImage,
                      kind: str = DEFAULT_KIND, all_kinds: bool = False) -> VoxelUncertainty:
    """Uncertainty of a prediction on ``ct``'s grid: ``probabilities`` from :func:`drasclr.dense.predict`
    (resampled linearly over the lung box), ``subtypes`` the labelmap it produced (for the predicted class).
    ``all_kinds``: compute every measure (benches), not only ``kind``."""
    return map_to_ct(probabilities, ct, lungs, kind=kind, all_kinds=all_kinds, subtypes=subtypes)[1]


SLAB_VOXELS = 2_000_000  # CT-grid voxels per slab of map_to_ct (4 float32 channels: 32 MB)


def map_to_ct(probabilities: ProbabilityMap, ct: CTImage, lungs: CTImage, class_weights=None, veto=None,
              kind: str = DEFAULT_KIND, all_kinds: bool = False,
              subtypes: CTImage | None = None,
              counted: CTImage | None = None) -> tuple[CTImage, VoxelUncertainty, dict | None]:
    """The subtype map and its voxel uncertainty on ``ct``'s grid in one pass: the class probabilities are
    interpolated (linear) at the lung voxels only, slab by slab over the lung box: memory does not grow with the
    slice count, and the time follows the lung, not its box.

    Labels: the most likely subtype (``argmax w_c p_c``, ``class_weights`` from the card) of every lung voxel
    (``lungs`` non-zero), as :meth:`ProbabilityMap.labels`; with ``veto`` (a
    :class:`~drasclr.dense.density.DensityVeto`) emphysema calls in normal-density lung become normal (its counts
    are returned for stats.json), its densities counted on ``counted`` (default ``ct``; the same grid).
    ``subtypes`` given: those labels are used instead (no weights, no veto).
    Returns (subtypes, uncertainty, the veto's record or None)."""
    if kind not in KINDS:
        raise ValueError(f"uncertainty kind {kind!r}: expected one of {KINDS}")
    if kind == "disagreement" and probabilities.disagreement is None:
        raise ValueError("disagreement needs the mirrored test-time augmentation (tta=True)")
    found = bounding_box(lungs.array)
    if found is None:
        raise ValueError("empty lung mask")
    lo, hi = tuple(s.start for s in found), tuple(s.stop for s in found)
    box = ct.crop(lo, hi)
    inside = lungs.array[found] > 0
    kinds = KINDS if all_kinds else (kind,)
    if probabilities.disagreement is None:
        kinds = tuple(k for k in kinds if k != "disagreement")
    measures = {k: np.zeros(inside.shape, np.float16) for k in kinds}
    p_pred = np.zeros(inside.shape, np.float16)
    labels_box = (np.zeros(inside.shape, np.uint8) if subtypes is None
                  else np.asarray(subtypes.array[found], np.uint8))
    counted = ct if counted is None else counted
    rule = veto.levels(counted, lungs.array)[2] if veto is not None and subtypes is None else None  # a byte a voxel
    vetoed = np.zeros(inside.shape, np.uint8) if rule is not None else None  # the call turned normal, 0: none
    ny, nx = inside.shape[1:]
    step = max(1, SLAB_VOXELS // (ny * nx))

    def one_slab(z0: int) -> None:  # each slab writes its own z range only: the slabs run on the analysis' threads
        z = slice(z0, min(z0 + step, inside.shape[0]))
        slab = box.crop((z.start, 0, 0), (z.stop, ny, nx))
        ins = inside[z]
        # the lung's voxels of the slab only, as (classes, voxels): the box around a lung is mostly not lung
        p = probabilities.at(slab, ins)
        if subtypes is None:
            w = p if class_weights is None else p * np.asarray(class_weights, np.float32)[:, None]
            lab = (np.argmax(w, axis=0) + 1).astype(np.uint8)
            if rule is not None:
                turned = veto.turns(rule[z][ins], lab)
                vetoed[z][ins] = np.where(turned, lab, 0)
                lab[turned] = labels.NORMAL
            labels_box[z][ins] = lab
        else:
            lab = labels_box[z][ins]
        dis = probabilities.disagreement_at(slab, ins) if "disagreement" in kinds else None
        for k, m in measures_from_probabilities(p, dis, kinds).items():
            measures[k][z][ins] = m
        total = p.sum(0)
        chosen = np.take_along_axis(p, np.clip(lab.astype(np.int64) - 1, 0, len(p) - 1)[None], 0)[0]
        p_pred[z][ins] = np.where(total > 0, chosen / np.where(total > 0, total, 1), 1.0 / len(p))

    for_each(one_slab, range(0, inside.shape[0], step))  # torch's grid_sample runs one thread per call
    out = subtypes
    if out is None:
        full = np.zeros(ct.array.shape, np.uint8)
        full[found] = labels_box
        out = ct.with_array(full)
    record = veto.counts(vetoed, vetoed > 0) if vetoed is not None else None
    return out, VoxelUncertainty(ct, lo, hi, measures, p_pred, inside, kind), record


def region_mean_uncertainty(uncertainty: CTImage, regions: CTImage, rows: list[dict]) -> list[dict]:
    """``rows`` (from :func:`drasclr.analysis.stats.region_stats`) each with ``mean_uncertainty`` added: the mean voxel
    uncertainty (0..1) over the row's region (lobes/zones by name, left_lung/right_lung/whole_lung by side)."""
    hist = region_histograms(regions.array, uncertainty.array, offsets=[0])[0]
    out = []
    for row in rows:
        _, counts = hist.get(row["region"], (0, None))
        n = 0 if counts is None else int(counts.sum())
        value = float((np.arange(counts.size) * counts).sum() / n / SCALE) if n else float("nan")
        out.append({**row, "mean_uncertainty": value})
    return out


__all__ = ["DEFAULT_KIND", "KINDS", "SCALE", "VoxelUncertainty", "measures_from_probabilities",
           "region_mean_uncertainty", "voxel_uncertainty"]
