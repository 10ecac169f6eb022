"""Atlas lobes carried into the subject: the affine atlas registration refined by a deformable step on the lungs.

1. Affine: :func:`drasclr.anatomy.registration.register_to_atlas` (lung masks, moments + mean squares, 4 mm).
2. Deformable: symmetric-forces demons (SimpleITK ``FastSymmetricForcesDemonsRegistrationFilter``) between the
   subject's smoothed lung masks and the affinely mapped atlas masks at ``DEMONS_MM``, right lung coded 1 and
   left lung 2 so that each lung of the atlas is pulled onto the same lung of the subject. The displacement
   field is smoothed (Gaussian, ``DEMONS_SIGMA_MM``) at every iteration, which keeps the map smooth and
   invertible-looking at the scale of a lobe.
3. The atlas's lobe labels are resampled through (demons ∘ affine) onto the working grid.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ...core import labels
from ...core.image import CTImage
from ..atlas import Atlas, load_atlas
from ..registration import AtlasTransform, register_to_atlas

DEMONS_MM = 6.0
DEMONS_SIGMA_MM = 6.0  # smoothing of the displacement field (physical units)
DEMONS_ITERATIONS = 30
MASK_SIGMA_MM = 2.0


def _coded_lungs(lungs: CTImage, reference: sitk.Image, transform: sitk.Transform | None = None) -> sitk.Image:
    """Right lung 1, left lung 2 (float, linear-resampled onto ``reference`` through ``transform``), smoothed."""
    a = lungs.array
    if a.dtype == np.uint8 and labels.RIGHT_LUNG == 1 and labels.LEFT_LUNG == 2 and int(a.max(initial=0)) <= 2:
        code = a  # already the code: resampled as it is (no float copy of a thin-slice grid)
    else:
        code = np.zeros(a.shape, np.float32)
        code[a == labels.RIGHT_LUNG] = 1.0
        code[a == labels.LEFT_LUNG] = 2.0
    img = sitk.Resample(lungs.with_array(code).to_sitk(), reference, transform or sitk.Transform(),
                        sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.SmoothingRecursiveGaussian(img, MASK_SIGMA_MM)


def _coarse_reference(reference: sitk.Image, spacing: float) -> sitk.Image:
    size = [max(4, int(round(n * s / spacing))) for n, s in zip(reference.GetSize(), reference.GetSpacing())]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetSpacing((spacing,) * 3)
    ref.SetOrigin(reference.GetOrigin())
    ref.SetDirection(reference.GetDirection())
    return ref


def subject_to_atlas(lungs: CTImage, reference: sitk.Image, affine: AtlasTransform | None = None,
                     atlas: Atlas | None = None, deformable: bool = True) -> tuple[sitk.Transform, AtlasTransform]:
    """The transform mapping subject LPS points (on ``reference``) to atlas LPS points, and the affine part.

    ``affine``: reuse an existing atlas registration (else :func:`register_to_atlas` runs). ``deformable``:
    add the demons refinement (else affine only).
    """
    atlas = atlas or load_atlas()
    affine = affine or register_to_atlas(lungs, atlas)
    to_atlas = affine.inverse().to_sitk()  # subject point -> atlas point
    if not deformable:
        return to_atlas, affine
    coarse = _coarse_reference(reference, DEMONS_MM)
    fixed = _coded_lungs(lungs, coarse)
    moving = _coded_lungs(atlas.lungs, coarse, to_atlas)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(DEMONS_ITERATIONS)
    demons.SetSmoothDisplacementField(True)
    demons.SetUseImageSpacing(True)  # field, smoothing and step in millimetres
    demons.SetStandardDeviations(DEMONS_SIGMA_MM)
    demons.SetMaximumUpdateStepLength(2.0)
    field = demons.Execute(fixed, moving)
    field = sitk.Cast(field, sitk.sitkVectorFloat64)
    warp = sitk.DisplacementFieldTransform(field)  # subject point -> point of the affinely mapped atlas
    composite = sitk.CompositeTransform(to_atlas)
    composite.AddTransform(warp)  # applied first
    return composite, affine


def atlas_lobes_on(reference: sitk.Image, to_atlas: sitk.Transform, atlas: Atlas | None = None) -> np.ndarray:
    """The atlas's LTRC lobes (uint8 ``(Z, Y, X)``) on ``reference`` through ``to_atlas`` (nearest neighbour)."""
    atlas = atlas or load_atlas()
    out = sitk.Resample(atlas.lobes.to_sitk(), reference, to_atlas, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)
