"""The Logic returns the analysis warnings (HU calibration, resolution guard) and passes --hu-calibration/--strict
to the engine, in process and through the child process (real MRML from slicer-core)."""

from __future__ import annotations

import numpy as np
import pytest
from bridge_support import synthetic_chest

from DrasCLRSlicerLib import process, volumes
from DrasCLRSlicerLib.logic import DrasCLRLogic


def miscalibrated(offset: int = 75, trachea: bool = True):
    """A +``offset`` HU scan; with ``trachea`` a phantom whose outside and tracheal air agree (auto corrects it),
    else a synthetic chest without a trachea (one reference: auto warns and leaves it)."""
    if trachea:
        from drasclr.research.phantom import PhantomOptions, generate_case

        ct = generate_case(31, 0, PhantomOptions(size=(112, 112, 80), spacing=3.0, thickness=3.2, kernel="soft",
                                                 noise=15.0)).ct
    else:
        ct = synthetic_chest()
    return ct.with_array((ct.array.astype(np.int32) + offset).astype(np.int16))


def test_analyze_command_passes_calibration_and_strict():
    cmd = process.analyze_command("ct", "out", python="py")
    assert "--hu-calibration" not in cmd and "--strict" not in cmd  # the engine's defaults (auto, not strict)
    cmd = process.analyze_command("ct", "out", python="py", hu_calibration="None", strict=True)
    assert cmd[cmd.index("--hu-calibration") + 1] == "none" and "--strict" in cmd


def test_in_process_warnings_and_calibration(scene):
    node = volumes.add_volume_node(scene, miscalibrated(), "ct")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(node, use_model=False, regions="zones")  # auto: corrected, no warning
    assert nodes.calibration["corrected"] and abs(nodes.calibration["applied_hu"] - 75) <= 2
    assert nodes.warnings == []
    # the line both shells show beside the table, and the numbers of the scan as read in the rows
    assert nodes.calibration_line.startswith("HU corrected by -7") and "outside air" in nodes.calibration_line
    assert "tracheal air" in nodes.calibration_line
    whole = nodes.rows[-1]
    assert whole["uncorrected_perc15_hu"] - whole["perc15_hu"] == pytest.approx(75, abs=2)
    nodes = logic.analyze(node, use_model=False, hu_calibration="none", regions="zones")
    assert not nodes.calibration["corrected"] and nodes.calibration_line == ""
    assert [w["code"] for w in nodes.warnings] == ["hu_offset_uncorrected"]
    one_reference = volumes.add_volume_node(scene, miscalibrated(trachea=False), "ct2")
    nodes = logic.analyze(one_reference, use_model=False, regions="zones")
    assert not nodes.calibration["corrected"] and nodes.calibration_line == ""
    assert [w["code"] for w in nodes.warnings] == ["single_air_reference"]
    assert "uncorrected_perc15_hu" not in nodes.rows[-1]


def test_child_process_warnings_are_read_back(scene, tmp_path):
    node = volumes.add_volume_node(scene, miscalibrated(trachea=False), "ct")
    nodes = DrasCLRLogic(scene).run_in_subprocess(node, use_model=False, hu_calibration="none", regions="zones",
                                                  work_dir=tmp_path)
    assert [w["code"] for w in nodes.warnings] == ["hu_offset_uncorrected"]
    assert nodes.calibration["mode"] == "none" and abs(nodes.calibration["offset_hu"] - 75) <= 2
    node = volumes.add_volume_node(scene, miscalibrated(), "ct2")
    nodes = DrasCLRLogic(scene).run_in_subprocess(node, use_model=False, regions="zones", work_dir=tmp_path / "auto")
    assert nodes.calibration_line.startswith("HU corrected by -7")


def test_harmonization_line_says_what_the_model_read(scene):
    """A thin (1 mm) lung-kernel scan at 90 HU: the Logic returns the harmonization record and the line both shells
    show (slices averaged through the plane, bands scaled); a clean scan: no line."""
    from drasclr.research.phantom.acquisition import ct_noise
    from DrasCLRSlicerLib.phantom import chest_phantom

    clean = chest_phantom((80, 256, 256), (0.8, 0.8, 1.0))
    noise = ct_noise(clean.array.shape, 0.8, 0.85, 0.9, 90.0, np.random.default_rng(3))
    noisy = clean.with_array(np.clip(np.rint(clean.array + noise), -1024, 3000).astype(np.int16))
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(volumes.add_volume_node(scene, noisy, "thin"), use_model=False, regions="zones")
    h = nodes.harmonization
    assert h["applied"] and h["through_plane"]["slices_averaged"] == 3 and h["before"]["tissue_sd_hu"] > 60
    assert nodes.harmonization_line.startswith("Harmonized for the model")
    assert "3 slices averaged through the plane (3.0 mm)" in nodes.harmonization_line
    assert "harmonized_laa950_pct" in nodes.rows[-1]
    nodes = logic.analyze(volumes.add_volume_node(scene, clean, "clean"), use_model=False, regions="zones")
    assert not nodes.harmonization["applied"] and nodes.harmonization_line == ""
