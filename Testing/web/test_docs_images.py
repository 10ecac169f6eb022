"""docs/web.md shows the screenshots of the browser test run; they exist and are not blank."""

from __future__ import annotations

import re

import numpy as np
import pytest
from web_support import ROOT

DOC = ROOT / "docs" / "web.md"


def test_web_doc_screenshots_exist_and_are_not_blank():
    from PIL import Image

    images = re.findall(r"\]\((images/web_[^)]+\.png)\)", DOC.read_text())
    assert len(images) >= 4, images
    for rel in images:
        path = DOC.parent / rel
        assert path.is_file(), rel
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        assert grey.shape[0] > 300 and grey.shape[1] > 600, (rel, grey.shape)
        assert grey.std() > 20 and len(np.unique(grey)) > 64, f"{rel} looks blank"


@pytest.mark.parametrize("name", ["web_1_loaded.png", "web_2_analyzed.png", "web_3_painted.png",
                                  "web_4_finetuned.png", "web_5_review.png"])
def test_each_step_of_the_loop_has_a_screenshot(name):
    assert name in DOC.read_text()
