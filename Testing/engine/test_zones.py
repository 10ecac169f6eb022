"""Zones 11-16: thirds of each lung's volume, upper = most superior (checked in physical LPS space)."""

import numpy as np
import pytest

from drasclr.anatomy.regions import zones_from_lungs
from drasclr.core import labels
from drasclr.core.image import CTImage


@pytest.mark.parametrize("z_dir", [1.0, -1.0])
def test_zones_are_thirds_ordered_from_superior_down(z_dir):
    lungs = np.zeros((60, 20, 40), np.uint8)
    lungs[:, 5:15, 2:18] = labels.RIGHT_LUNG  # small x: patient's right
    lungs[:, 5:15, 22:38] = labels.LEFT_LUNG
    img = CTImage(lungs, spacing=(1.0, 1.0, 2.0), direction=np.diag([1.0, 1.0, z_dir]))
    zones = zones_from_lungs(img).array
    for lung, (upper, middle, lower) in ((labels.LEFT_LUNG, labels.LEFT_ZONES),
                                        (labels.RIGHT_LUNG, labels.RIGHT_ZONES)):
        inside = lungs == lung
        assert set(np.unique(zones[inside])) == {upper, middle, lower}
        s = {}
        for z in (upper, middle, lower):
            k = np.argwhere(zones == z)[:, 0]
            s[z] = float(img.index_to_lps(np.stack([np.zeros_like(k), np.zeros_like(k), k], 1))[:, 2].mean())
            assert abs((zones == z).sum() / inside.sum() - 1 / 3) < 0.02
        assert s[upper] > s[middle] > s[lower]
    assert np.array_equal(zones > 0, lungs > 0)
