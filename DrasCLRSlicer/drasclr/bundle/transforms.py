"""MONAI dictionary transforms of the bundle's ``configs/inference.json``: the same steps as ``drasclr analyze``.

data dict keys: ``image`` (path, then a :class:`drasclr.core.image.CTImage` in HU, LPS), ``lungs`` (lung labelmap),
``locator`` (LPS patch centres ``(N, 3)`` -> normalised atlas locations ``(N, 3)`` z, y, x: the network's
anatomical-location input), ``pred`` (subtype labelmap 0-4), ``pred_path`` (the written file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.transforms import MapTransform, Transform


class LoadCTd(MapTransform):
    """Read a CT file or DICOM series folder (``drasclr.core.io.read_ct``: HU check, DICOM slice order)."""

    def __call__(self, data):
        from ..core.io import image_stem, read_ct

        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_name"] = image_stem(d[key])
            d[key] = read_ct(d[key])
        return d


class LungMaskd(MapTransform):
    """HU calibration (``auto``/``air``/``none``, docs/calibration.md) and the lung mask on the corrected scan."""

    def __init__(self, keys="image", hu_calibration: str = "auto"):
        super().__init__(keys)
        self.hu_calibration = hu_calibration

    def __call__(self, data):
        from ..anatomy.hu_calibration import calibrate_and_segment
        from ..anatomy.lungs import segment_lung_slices

        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d["lungs"], cal = calibrate_and_segment(d[key], self.hu_calibration,
                                                            segment=segment_lung_slices)
            d["calibration"] = cal.to_json()
        return d


class AtlasLocatord(MapTransform):
    """Affine registration of the lung mask to the bundled atlas: the anatomical-location input of the network."""

    def __call__(self, data):
        from ..anatomy.registration import register_to_atlas
        from ..dense.locate import locator_for

        d = dict(data)
        for key in self.key_iterator(d):
            d["locator"], _ = locator_for(d[key], register_to_atlas(d[key]))
        return d


class SubtypeInferer:
    """Sliding 32-voxel patches at 1 mm over the lung, location-conditioned network, optional left-right mirrored
    test-time augmentation, the card's class decision weights (``drasclr.dense.predict``)."""

    def __init__(self, tta: bool = True, class_weights=None, batch_size: int | None = None):
        self.tta, self.class_weights, self.batch_size = bool(tta), class_weights, batch_size

    def __call__(self, data, network, device="cpu"):
        import torch

        from ..dense import predict

        d = dict(data)
        with torch.no_grad():
            pred = predict(d["image"], d["lungs"], network.eval(), device, locator=d["locator"], tta=self.tta,
                           class_weights=self.class_weights, batch_size=self.batch_size)
        d["pred"] = pred.subtypes
        return d


class DensityVetod(Transform):
    """The model card's density rule: emphysema called in normal-density lung (under ``min_laa950`` of the lung
    within ``window_mm`` below -950 HU) is turned normal; ``card`` None or without the rule: unchanged."""

    def __init__(self, card: dict | None = None):
        from ..dense.density import DensityVeto

        self.rule = DensityVeto.from_card(card)

    def __call__(self, data):
        d = dict(data)
        if self.rule is not None:
            d["pred"], d["density_veto"] = self.rule.apply(d["pred"], d["image"])
        return d


class SaveSubtypesd(Transform):
    """Write ``pred`` as ``OUTPUT_DIR/<input name>_subtypes.nii.gz`` (uint8, the input's grid and geometry)."""

    def __init__(self, output_dir: str):
        self.output_dir = Path(output_dir)

    def __call__(self, data):
        from ..core.io import write_image

        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{d.get('image_name', 'ct')}_subtypes.nii.gz"
        write_image(d["pred"], path, dtype=np.uint8)
        d["pred_path"] = str(path)
        return d
