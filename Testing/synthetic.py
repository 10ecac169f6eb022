"""A small synthetic chest CT built in memory for tests: body, two ellipsoid lungs, a trachea tube.

Geometry follows the engine's convention: array [z, y, x], LPS, z index increasing = superior,
x index increasing = patient's left.
"""

from __future__ import annotations

import numpy as np

from drasclr.core.image import CTImage


def synthetic_chest(shape=(48, 96, 96), spacing=(3.0, 3.0, 4.0), seed=0, lungs=True) -> tuple[CTImage, np.ndarray]:
    """Return ``(ct, truth)``; ``truth`` is 0 outside, 1 right lung, 2 left lung. ``spacing`` is (x, y, z) mm."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    nz, ny, nx = shape
    ct = np.full(shape, -1000.0, np.float32)
    body = ((x - nx / 2) / (0.45 * nx)) ** 2 + ((y - ny / 2) / (0.35 * ny)) ** 2 < 1
    ct[body] = 40.0
    truth = np.zeros(shape, np.uint8)
    if lungs:
        for label, cx in ((1, 0.32 * nx), (2, 0.68 * nx)):  # right lung at small x (patient's right)
            ell = (((x - cx) / (0.13 * nx)) ** 2 + ((y - ny / 2) / (0.22 * ny)) ** 2
                   + ((z - nz / 2) / (0.42 * nz)) ** 2) < 1
            truth[ell] = label
        ct[truth > 0] = -850.0
        trachea = ((x - nx / 2) ** 2 + (y - 0.45 * ny) ** 2 < (0.03 * nx) ** 2 + 1) & (z > 0.75 * nz)
        ct[trachea & body] = -1000.0
    ct += rng.normal(0, 15, shape).astype(np.float32)
    img = CTImage(ct.round().astype(np.int16), spacing=spacing, origin=(-150.0, -140.0, -100.0))
    return img, truth


def synthetic_cohort(root, n: int = 4, seed: int = 10):
    """``root/case_<i>/{ct,subtypes}.nii.gz`` for ``n`` small synthetic chests: the right lung normal, the left PLE
    (a labelled cohort for training tests)."""
    from drasclr.core import labels
    from drasclr.core.io import write_image

    for i in range(n):
        ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0), seed=seed + i)
        sub = np.where(truth == 1, labels.NORMAL, np.where(truth == 2, labels.PLE, 0)).astype(np.uint8)
        (root / f"case_{i}").mkdir(parents=True)
        write_image(ct, root / f"case_{i}" / "ct.nii.gz")
        write_image(ct.with_array(sub), root / f"case_{i}" / "subtypes.nii.gz")
    return root


TINY_ENCODER = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


def tiny_loaded_model(seed: int = 0):
    """An untrained tiny subtype model, loaded as ``analyze`` takes it (CPU): fast end-to-end analyses in tests."""
    import torch

    from drasclr.analysis.loaded_model import LoadedModel
    from drasclr.dense.segmenter import SubtypeSegmenter

    torch.manual_seed(seed)
    model = SubtypeSegmenter(encoder=TINY_ENCODER, decoder=(8, 8, 8, 4, 4))
    return LoadedModel(model, {"name": "tiny", "version": "tiny-v1"}, None, torch.device("cpu"))
