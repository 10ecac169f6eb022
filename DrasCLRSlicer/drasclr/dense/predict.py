"""The one dense-prediction call: a CT, its lung mask and a subtype model in; class probabilities *with their grid*
and the subtype labelmap on the CT's own grid out.

Everything that needs the model's dense output goes through :func:`predict`: ``drasclr analyze``, fine-tuning
from corrections (before/after metrics), calibration, benches and tests. The steps are fixed here once: crop the
lung box and resample it to 1 mm (:func:`~drasclr.dense.infer.lung_volume`), run overlapping 32³ patches with
their atlas locations and blend them (:func:`~drasclr.dense.infer.blend_probabilities`, optionally with mirrored
test-time augmentation), then resample the probabilities onto the CT and take the (calibrated) most likely class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from ..core.image import CTImage, bounding_box
from .infer import TTA_SELECT, Locator, blend_probabilities, lung_volume


@dataclass(frozen=True)
class ProbabilityMap:
    """Class probabilities ``array`` ``(C, Z, Y, X)`` float32 on ``grid``'s geometry (C = 5: outside, normal, CLE,
    PSE, PLE); ``disagreement`` ``(Z, Y, X)`` in 0..1 between the plain and mirrored passes (None without TTA)."""

    array: np.ndarray
    grid: CTImage
    disagreement: np.ndarray | None = None

    def __post_init__(self):
        if self.array.shape[1:] != self.grid.array.shape:
            raise ValueError(f"probabilities {self.array.shape} do not match their grid {self.grid.array.shape}")

    def channel(self, c: int) -> CTImage:
        """Probability of class ``c`` as an image on the map's grid."""
        return self.grid.with_array(self.array[c])

    def on(self, target: CTImage, c: int) -> np.ndarray:
        """Class ``c``'s probability resampled (linear) onto ``target``'s grid, float32 ``(Z, Y, X)``. Only the part
        of the map under ``target`` (plus a voxel) is handed to SimpleITK: a slab of a thin-slice scan costs its own
        size, not the whole map's."""
        ref = sitk.Image(target.shape_xyz, sitk.sitkUInt8)
        ref.SetSpacing(target.spacing)
        ref.SetOrigin(target.origin)
        ref.SetDirection(tuple(target.direction.ravel()))
        src = self.channel(c)
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in target.array.shape], indexing="ij")).reshape(3, -1).T
        at = src.lps_to_zyx(target.zyx_to_lps(corners.astype(float)))
        lo = np.maximum(np.floor(at.min(0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(at.max(0)).astype(int) + 2, src.array.shape)
        if np.any(hi <= lo):  # the target lies outside the map: zeros, as SimpleITK's default
            return np.zeros(target.array.shape, np.float32)
        return sitk.GetArrayFromImage(sitk.Resample(src.crop(lo, hi).to_sitk(), ref, sitk.Transform(),
                                                    sitk.sitkLinear, 0.0, sitk.sitkFloat32))

    def at(self, target: CTImage, inside: np.ndarray) -> np.ndarray:
        """Classes 1..C-1 interpolated (linear) at the voxels of ``target`` where ``inside`` is true: ``(C - 1, n)``
        float32, in ``np.nonzero(inside)`` order. Only those voxels are computed (torch's ``grid_sample`` at their
        points), so the cost follows the lung, not its box: what :meth:`on` gives there, up to float rounding."""
        return _sample(self.array[1:], self.grid, target, inside)

    def disagreement_at(self, target: CTImage, inside: np.ndarray) -> np.ndarray:
        """The disagreement map at the voxels of ``target`` where ``inside`` is true, ``(n,)`` (as :meth:`at`)."""
        if self.disagreement is None:
            raise ValueError("no disagreement map (tta=False)")
        return _sample(self.disagreement[None], self.grid, target, inside)[0]

    def labels(self, target: CTImage, target_lungs: np.ndarray, class_weights=None) -> CTImage:
        """The most likely subtype (1–4) of every voxel of ``target_lungs`` on ``target``'s grid, 0 outside.

        Probabilities are interpolated (linear) at the lung voxels only (:meth:`at`); ties go to the lower class.
        ``class_weights``: decision weights of classes 1–4 (``argmax w_c p_c``; see :mod:`drasclr.dense.calibrate`).
        """
        found = bounding_box(target_lungs)
        out = np.zeros(target.array.shape, np.uint8)
        if found is None:
            return target.with_array(out)
        lo, hi = np.array([s.start for s in found]), np.array([s.stop for s in found])
        inside = target_lungs[found] > 0
        p = self.at(target.crop(lo, hi), inside)
        if class_weights is not None:
            p *= np.asarray(class_weights, np.float32)[:, None]
        view = out[found]
        view[inside] = np.argmax(p, axis=0).astype(np.uint8) + 1
        return target.with_array(out)


def _sample(channels: np.ndarray, grid: CTImage, target: CTImage, inside: np.ndarray) -> np.ndarray:
    """``channels`` ``(K, Z, Y, X)`` on ``grid``, interpolated (trilinear; 0 outside, by SimpleITK's rule) at the
    voxels of ``target`` where ``inside`` is true: ``(K, n)`` float32. Only the part of the map under ``target`` (plus
    a voxel) is copied."""
    out = np.zeros((len(channels), int(np.count_nonzero(inside))), np.float32)
    if out.shape[1] == 0:
        return out
    # target (z, y, x) index -> map (z, y, x) index is one affine map: at = a @ idx + shift
    a = (np.linalg.inv(grid._index_matrix()) @ target._index_matrix())[::-1, ::-1]
    shift = grid.lps_to_zyx(np.asarray(target.origin)[None])[0]
    corners = np.array(np.meshgrid(*[(0, n - 1) for n in target.array.shape], indexing="ij")).reshape(3, -1).T
    reach = corners @ a.T + shift
    lo = np.maximum(np.floor(reach.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(reach.max(0)).astype(int) + 2, channels.shape[1:])
    if np.any(hi <= lo):  # the target lies outside the map: zeros
        return out
    sub = np.ascontiguousarray(channels[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.float32)
    idx = np.nonzero(inside)
    norm = np.empty((out.shape[1], 3), np.float32)  # grid_sample wants (x, y, z) of the sub-map in [-1, 1]
    for k in range(3):
        scale = 2.0 / max(sub.shape[1 + k] - 1, 1)
        col = np.full(out.shape[1], (shift[k] - lo[k]) * scale - 1.0, np.float32)
        for j in range(3):
            if a[k, j] != 0.0:  # axis-aligned grids (the usual case): one term per axis
                col += idx[j].astype(np.float32) * np.float32(a[k, j] * scale)
        norm[:, 2 - k] = col
    with torch.no_grad():
        res = torch.nn.functional.grid_sample(torch.from_numpy(sub)[None], torch.from_numpy(norm)[None, None, None],
                                              mode="bilinear", padding_mode="border", align_corners=True)
    out[:] = res[0, :, 0, 0].numpy()
    # as SimpleITK: half a voxel beyond the edge voxels' centres is still the map (their value), further out is 0
    half = np.array([1.0 / max(n - 1, 1) for n in sub.shape[:0:-1]], np.float32)  # (x, y, z)
    out[:, ((norm < -1.0 - half) | (norm >= 1.0 + half)).any(axis=1)] = 0.0
    return out


@dataclass(frozen=True)
class DensePrediction:
    """What :func:`predict` returns: the probabilities on their 1 mm lung-box grid (``probabilities.grid`` holds
    the resampled CT in HU, the grid patient embeddings are cut from), the lung mask on that grid, and the subtype
    labelmap on the input CT's grid."""

    probabilities: ProbabilityMap
    lungs: CTImage
    subtypes: CTImage | None  # None when asked for the probabilities only (``labels=False``)


def predict(ct: CTImage, lungs: CTImage, model: torch.nn.Module, device: str | torch.device = "cpu", *,
            locator: Locator | None = None, tta: bool = True, class_weights=None, stride: int | None = None,
            batch_size: int | None = None, margin_mm: float = 8.0, labels: bool = True,
            tta_select: float | None = TTA_SELECT, disagreement: bool = True) -> DensePrediction:
    """Dense subtype prediction of ``model`` over the lung of ``ct``.

    ``lungs``: non-zero inside the region to predict (the lung mask, or any sub-region); ``locator``: LPS patch
    centres -> normalised atlas locations (default: register ``lungs`` to the atlas, :func:`locate.locator_for`);
    ``tta``: mirrored test-time augmentation of the unsure patches (``tta_select``; None: every patch);
    ``class_weights``: decision weights of classes 1–4 from the model card; ``stride``: patch stride in mm
    (default 24 on CPU, 16 on GPU); ``labels``: False leaves the labelmap to the caller (``analyze`` maps labels
    and uncertainty in one pass: :func:`drasclr.dense.uncertainty.map_to_ct`); ``tta_select``, ``disagreement``:
    see :func:`~drasclr.dense.infer.blend_probabilities`."""
    device = torch.device(device)
    if locator is None:
        from .locate import locator_for

        locator, _ = locator_for(lungs)
    vol = lung_volume(ct, lungs, margin_mm=margin_mm)
    probs, dis = blend_probabilities(model, vol, locator, device, stride=stride, batch_size=batch_size, tta=tta,
                                     tta_select=tta_select, disagreement=disagreement)
    pmap = ProbabilityMap(probs, vol.ct, dis)
    return DensePrediction(pmap, vol.lungs, pmap.labels(ct, lungs.array, class_weights) if labels else None)
