"""Deformable registration of a later scan's lungs to the baseline's (SimpleITK, CPU).

Both scans are cropped to their lung box (+ 15 mm), smoothed and resampled to ``WORK_MM`` isotropic. Then:

1. **affine** on the soft lung masks (mean squares; initialised at the masks' centres of mass), which absorbs
   position, size and most of the inspiration difference;
2. **B-spline** (control points about every ``MESH_MM``, two image levels, L-BFGS, 10 % of the voxels sampled)
   on the lung CT: HU clipped to [-1000, -400] inside the lung and a constant outside, with normalised
   correlation as the metric, so a global density change (a different inspiration level, kernel or
   calibration) does not pull the deformation; new lesions are small against the lung border and the vessel
   tree, which drive it.

The result maps baseline points to later points (``forward``: resample the later scan onto the baseline grid)
and back (``inverse``: the B-spline part inverted as a displacement field; carries the baseline's lobes onto the
later scan). ITK convention: a transform maps points of the grid being filled to points of the image sampled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from ..core.errors import InputError
from ..core.image import CTImage, bounding_box

WORK_MM = 3.0
MESH_MM = 50.0
MARGIN_MM = 15.0
OUTSIDE_HU = -200.0  # the constant outside the lung in the B-spline's feature image


@dataclass
class LungRegistration:
    forward: sitk.Transform  # baseline point -> later point
    inverse: sitk.Transform  # later point -> baseline point
    seconds: float
    metric: float
    cpu_seconds: float = float("nan")  # process CPU time (all threads): the cost on a shared machine

    def to_baseline(self, image: CTImage, baseline: CTImage, label: bool = False, default: float = 0.0) -> CTImage:
        """``image`` (on the later scan's grid) resampled onto the ``baseline`` grid."""
        return _resample(image, baseline, self.forward, label, default)

    def to_later(self, image: CTImage, later: CTImage, label: bool = True, default: float = 0.0) -> CTImage:
        """``image`` (on the baseline grid) resampled onto the ``later`` scan's grid."""
        return _resample(image, later, self.inverse, label, default)

    def map_points(self, points_lps: np.ndarray) -> np.ndarray:
        """``(N, 3)`` baseline LPS points -> later LPS points."""
        return np.array([self.forward.TransformPoint(tuple(map(float, p))) for p in np.atleast_2d(points_lps)])


def _resample(image: CTImage, reference: CTImage, transform, label: bool, default: float) -> CTImage:
    src = image.to_sitk()
    ref = sitk.Image(reference.shape_xyz, sitk.sitkUInt8)
    ref.SetSpacing(reference.spacing)
    ref.SetOrigin(reference.origin)
    ref.SetDirection(tuple(reference.direction.ravel()))
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return CTImage.from_sitk(sitk.Resample(src, ref, transform, interp, default, src.GetPixelID()))


def _crop(image: CTImage, lung: np.ndarray) -> tuple[sitk.Image, sitk.Image]:
    """(CT, lung mask as float) cropped to the lung box + margin, as SimpleITK images with their geometry."""
    found = bounding_box(lung)
    if found is None:
        raise InputError("cannot register: a lung mask is empty")
    m = np.ceil(MARGIN_MM / np.asarray(image.spacing_zyx)).astype(int)
    lo = np.maximum(np.array([s.start for s in found]) - m, 0)
    hi = np.minimum(np.array([s.stop for s in found]) + m, lung.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = np.asarray(image.origin) + image.direction @ (lo[::-1] * np.asarray(image.spacing))
    out = []
    for a in (image.array[box].astype(np.float32), lung[box].astype(np.float32)):
        out.append(CTImage(a, image.spacing, tuple(origin), image.direction).to_sitk())
    return out[0], out[1]


def _work(img: sitk.Image, default: float) -> sitk.Image:
    """Anti-alias and resample to ``WORK_MM`` isotropic over the same extent."""
    sig = [max(0.0, (WORK_MM ** 2 - s ** 2)) ** 0.5 / 2.355 for s in img.GetSpacing()]
    img = sitk.SmoothingRecursiveGaussian(img, [max(s, 1e-3) for s in sig])
    size = [max(4, int(round(n * s / WORK_MM))) for n, s in zip(img.GetSize(), img.GetSpacing())]
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), (WORK_MM,) * 3,
                         img.GetDirection(), default, sitk.sitkFloat32)


def _features(ct: CTImage, lung: np.ndarray) -> tuple[sitk.Image, sitk.Image]:
    """(soft lung mask, lung-CT feature) on the work grid."""
    c, m = _crop(ct, lung)
    mask = _work(m, 0.0)
    soft = sitk.SmoothingRecursiveGaussian(mask, 2.0)
    hu = sitk.Clamp(c, sitk.sitkFloat32, -1000.0, -400.0)
    hu = _work(hu, OUTSIDE_HU)
    a = sitk.GetArrayFromImage(hu)
    w = np.clip(sitk.GetArrayFromImage(mask), 0, 1)
    feat = sitk.GetImageFromArray((w * a + (1 - w) * OUTSIDE_HU).astype(np.float32))
    feat.CopyInformation(hu)
    return soft, feat


def _affine(fixed: sitk.Image, moving: sitk.Image) -> sitk.AffineTransform:
    def com(img):
        a = sitk.GetArrayFromImage(img)
        idx = np.array(ndi.center_of_mass(a))[::-1]
        return np.array(img.TransformContinuousIndexToPhysicalPoint(tuple(map(float, idx))))

    cf, cm = com(fixed), com(moving)
    init = sitk.AffineTransform(3)
    init.SetCenter(tuple(cf))
    init.SetTranslation(tuple(cm - cf))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.01, numberOfIterations=200,
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-7)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetInitialTransform(init, inPlace=True)
    reg.Execute(fixed, moving)
    return init


def _bspline(fixed: sitk.Image, moving: sitk.Image, affine: sitk.Transform, iterations: int):
    mesh = [max(2, int(round(n * s / MESH_MM))) for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    tx = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.1, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGS2(numberOfIterations=iterations)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1, 0])
    reg.SetMovingInitialTransform(affine)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return tx, float(reg.GetMetricValue())


def register_lungs(base_ct: CTImage, base_lung: np.ndarray, later_ct: CTImage, later_lung: np.ndarray,
                   iterations: int = 30, deformable: bool = True) -> LungRegistration:
    """Register the later scan to the baseline (lung masks: boolean arrays on each CT's grid)."""
    t0, c0 = time.perf_counter(), time.process_time()
    f_mask, f_feat = _features(base_ct, base_lung)
    m_mask, m_feat = _features(later_ct, later_lung)
    affine = _affine(f_mask, m_mask)
    if not deformable:
        return LungRegistration(affine, affine.GetInverse(), time.perf_counter() - t0, float("nan"),
                                time.process_time() - c0)
    bspline, metric = _bspline(f_feat, m_feat, affine, iterations)
    field = sitk.TransformToDisplacementField(bspline, sitk.sitkVectorFloat64, f_feat.GetSize(), f_feat.GetOrigin(),
                                              f_feat.GetSpacing(), f_feat.GetDirection())
    inv_field = sitk.InvertDisplacementField(field, maximumNumberOfIterations=20, enforceBoundaryCondition=False)
    forward = sitk.CompositeTransform([affine, bspline])  # ITK applies the last first: affine(bspline(x))
    inverse = sitk.CompositeTransform([sitk.DisplacementFieldTransform(inv_field), affine.GetInverse()])
    return LungRegistration(forward, inverse, time.perf_counter() - t0, metric, time.process_time() - c0)
