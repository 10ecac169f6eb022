"""The reading room's advanced settings come from AnalysisSettings: every user setting has a widget and a state
key, the page's values become the settings the engine runs, and a bad value is refused before any work."""

from __future__ import annotations

import pytest

pytest.importorskip("trame", reason="the web shell needs trame (pip install '.[web]')")

from drasclr.core.errors import InputError  # noqa: E402
from drasclr.core.settings import AnalysisSettings, shell_options  # noqa: E402
from DrasCLRSlicerWeb import settings_panel  # noqa: E402


def test_every_advanced_setting_has_a_state_key_with_the_engine_default():
    state = {}
    settings_panel.init_state(state)
    shown = {o["name"] for o in shell_options(advanced=True)} - settings_panel.SHOWN_ELSEWHERE
    assert {k.removeprefix("setting_") for k in state} == shown
    assert {"hu_calibration", "density_veto", "regions", "strict", "batch_size", "lobes_from", "thin_slices"} <= shown
    # untouched widgets give exactly the command line's defaults
    assert settings_panel.settings(state, device="auto", tta=True) == AnalysisSettings()


def test_page_values_become_the_settings_the_child_runs():
    state = {}
    settings_panel.init_state(state)
    state.update(setting_hu_calibration="none", setting_density_veto="Off", setting_regions="zones",
                 setting_batch_size="16", setting_strict=True)
    got = settings_panel.settings(state, model="cip-lh", device="cpu", tta=False)
    assert got == AnalysisSettings(model="cip-lh", device="cpu", tta=False, hu_calibration="none",
                                   density_veto=False, regions="zones", batch_size=16, strict=True)
    assert "--no-density-veto" in got.to_args() and ["--batch-size", "16"] == got.to_args()[-2:]


def test_a_bad_value_is_refused():
    state = {}
    settings_panel.init_state(state)
    state["setting_batch_size"] = "0x10"
    with pytest.raises(InputError, match="whole number"):
        settings_panel.settings(state)
