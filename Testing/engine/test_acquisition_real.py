"""Same lung, same numbers (issue 26) on the real kernel pair: Lung-PET-CT-Dx A0001 reconstructed soft (B) and
sharp (L) from one acquisition. With the default analysis (harmonization auto) both readings call at most 1.5 %
emphysema and differ by at most 1.5 points; without harmonization the sharp one calls several points more (so the
comparison can fail: it is the harmonization that holds the number still)."""

from __future__ import annotations

import numpy as np
import pytest

from drasclr.analysis.analyze import analyze
from drasclr.analysis.loaded_model import load_for_analysis
from drasclr.core.io import read_ct
from drasclr.core.settings import AnalysisSettings
from drasclr.core.versions import default_model
from realdata import real_ct_path

pytestmark = pytest.mark.skipif(not default_model().exists(), reason="the bundled demo model is not built")


def _emphysema_pct(name: str, model, harmonize: str) -> float:
    res = analyze(read_ct(real_ct_path(name)), model=model,
                  settings=AnalysisSettings(harmonize=harmonize, regions="zones", tta=False))
    return float(100 * np.isin(res.subtypes.array[res.lungs.array > 0], (2, 3, 4)).mean())


def test_kernel_pair_gives_the_same_emphysema_when_harmonized():
    model = load_for_analysis(AnalysisSettings())
    soft = _emphysema_pct("lungpetctdx_A0001_5mm_kernelB", model, "auto")
    sharp = _emphysema_pct("lungpetctdx_A0001_5mm_kernelL", model, "auto")
    assert soft <= 1.5 and sharp <= 1.5 and abs(sharp - soft) <= 1.5, (soft, sharp)
    raw_sharp = _emphysema_pct("lungpetctdx_A0001_5mm_kernelL", model, "off")
    assert raw_sharp > sharp + 2.0, (raw_sharp, sharp)  # what harmonization removes
