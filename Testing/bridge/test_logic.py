"""DrasCLRLogic on a small synthetic chest CT: in-process and child-process paths, cancel, exports."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from bridge_support import synthetic_chest

from drasclr.analysis.analyze import analyze as engine_analyze
from drasclr.analysis.stats import COLUMNS, read_csv, read_json
from drasclr.core import labels, names
from drasclr.core.errors import InputError
from drasclr.core.settings import AnalysisSettings
from DrasCLRSlicerLib import process, segmentations, tables, terminology, volumes
from DrasCLRSlicerLib.logic import DrasCLRLogic, lobe_value_from_name

ZONE_ROWS = [*labels.ZONES.values(), "left_lung", "right_lung", "whole_lung"]
LOBE_ROWS = [*labels.LOBES.values(), "left_lung", "right_lung", "whole_lung"]


needs_cli = pytest.mark.skipif(importlib.util.find_spec("drasclr.analysis.report") is None,
                               reason="engine incomplete: drasclr analyze needs drasclr.analysis.report")


@pytest.fixture(scope="module")
def chest():
    return synthetic_chest()  # 96 x 96 x 64 at 3 mm


@pytest.fixture(scope="module")
def chest_result(chest):
    """The engine's own densitometry analysis of the chest (reference for the node contents): estimated lobes."""
    return engine_analyze(chest)


@pytest.fixture(scope="module")
def chest_zones(chest):
    """The same analysis with zones (the tests below build lobe inputs from them)."""
    return engine_analyze(chest, settings=AnalysisSettings(regions="zones"))


def node_names(scene, cls):
    c = scene.GetNodesByClass(cls)
    return sorted(c.GetItemAsObject(i).GetName() for i in range(c.GetNumberOfItems()))


def test_analyze_in_process_creates_named_nodes(scene, chest, chest_result):
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(ct_node, use_model=False)
    assert nodes.regions.GetName() == "chest regions"
    assert nodes.table.GetName() == "chest statistics"
    assert nodes.chart.GetName() == "chest chart"
    assert nodes.region_kind == "lobes"  # no lobe input: the engine's estimated lobes
    assert set(segmentations.segment_names(nodes.regions)) == {
        e.name for e in terminology.region_entries(labels.LOBES)}
    rows = tables.table_to_rows(nodes.table)
    assert [r["region"] for r in rows] == LOBE_ROWS
    # the numbers are the engine's numbers on the same CT
    want = chest_result.rows
    for got, ref in zip(rows, want):
        for c in COLUMNS[1:]:
            assert (math.isnan(got[c]) and math.isnan(ref[c])) or got[c] == pytest.approx(ref[c], abs=1e-4)
    whole = rows[-1]
    assert whole["volume_ml"] == pytest.approx(2016, rel=0.03)  # two ellipsoids of ~1008 ml
    assert -880 < whole["mean_hu"] < -840
    # the regions segmentation holds the engine's lobes voxel for voxel
    back = segmentations.segmentation_to_labelmap(nodes.regions, ct_node, terminology.region_entries(labels.LOBES))
    np.testing.assert_array_equal(back.array, chest_result.regions.array)
    zones = logic.analyze(ct_node, use_model=False, regions="zones")  # zones on request
    assert zones.region_kind == "zones" and [r["region"] for r in tables.table_to_rows(zones.table)] == ZONE_ROWS
    if nodes.subtypes is None:  # no subtype model in the engine yet: the chart shows LAA-950
        assert nodes.chart.GetNumberOfPlotSeriesNodes() == 1
    else:
        assert set(segmentations.segment_names(nodes.subtypes)) == {s.title for s in names.SUBTYPES.values()}


def test_analyze_twice_updates_the_same_nodes(scene, chest):
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    logic = DrasCLRLogic(scene)
    first = logic.analyze(ct_node, use_model=False)
    second = logic.analyze(ct_node, use_model=False)
    assert second.regions is first.regions and second.table is first.table and second.chart is first.chart
    assert node_names(scene, "vtkMRMLTableNode") == ["chest statistics"]
    assert node_names(scene, "vtkMRMLSegmentationNode") == ["chest regions"]


def test_lobes_from_segmentation_names(scene, chest, chest_zones):
    """A lobe segmentation (as TotalSegmentator names them) drives per-lobe rows."""
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    zones = chest_zones.regions.array
    lobes = np.zeros_like(zones)
    lobes[np.isin(zones, (11, 12))] = 1
    lobes[zones == 13] = 2
    lobes[zones == 14] = 3
    lobes[zones == 15] = 4
    lobes[zones == 16] = 5
    names = ["lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
             "lung_lower_lobe_right"]
    entries = [terminology.SegmentEntry(v, n, (0.5, 0.5, 0.5)) for v, n in zip(range(1, 6), names)]
    lobe_node = segmentations.labelmap_to_segmentation(scene, chest.with_array(lobes), ct_node, entries, name="lobes")
    nodes = DrasCLRLogic(scene).analyze(ct_node, lobes_node=lobe_node, use_model=False)
    rows = tables.table_to_rows(nodes.table)
    assert nodes.region_kind == "lobes"
    assert [r["region"] for r in rows][:5] == list(labels.LOBES.values())
    voxel_ml = float(np.prod(chest.spacing)) / 1000
    assert rows[0]["volume_ml"] == pytest.approx(np.isin(zones, (11, 12)).sum() * voxel_ml)


def test_lobe_labelmap_on_another_grid_is_resampled(scene, chest):
    """A lobe labelmap volume on a coarser grid lands on the CT's grid (nearest neighbour, LTRC values kept)."""
    from drasclr.core.image import CTImage
    from DrasCLRSlicerLib.logic import lobes_image

    ct_node = volumes.add_volume_node(scene, chest, "chest")
    coarse = np.zeros((33, 49, 49), np.uint8)  # one voxel more than half: covers the CT's last voxel centres
    coarse[:16] = 2  # lower half: left lower lobe
    coarse[16:] = 1  # upper half: left upper lobe
    lab = CTImage(coarse, tuple(2 * s for s in chest.spacing), chest.origin, chest.direction)
    lab_node = volumes.add_volume_node(scene, lab, "lobes", labelmap=True)
    out = lobes_image(lab_node, ct_node, chest)
    assert out.same_grid(chest) and out.array.dtype == np.uint8
    assert set(np.unique(out.array)) == {1, 2}
    np.testing.assert_array_equal(out.array[:31], 2)  # CT slice k sits at coarse slice k / 2
    np.testing.assert_array_equal(out.array[33:], 1)


def _lobes_from_zones(zones: np.ndarray) -> np.ndarray:
    """An LTRC lobe labelmap (1-5) made from the zones of the chest (upper two left thirds = left upper lobe)."""
    lobes = np.zeros_like(zones)
    for value, zone_values in {1: (11, 12), 2: (13,), 3: (14,), 4: (15,), 5: (16,)}.items():
        lobes[np.isin(zones, zone_values)] = value
    return lobes


# the same five lobes written in each supported convention: LTRC (lungmask), TotalSegmentator, CIP chest regions
LOBE_VALUES = {"ltrc": (1, 2, 3, 4, 5), "totalseg": (10, 11, 12, 13, 14), "cip": (7, 8, 4, 5, 6)}


@pytest.mark.parametrize("path", ["in_process", needs_cli("subprocess")])
@pytest.mark.parametrize("convention", list(LOBE_VALUES))
def test_lobe_labelmap_conventions_give_lobe_rows(scene, chest, chest_zones, convention, path, tmp_path):
    """A lobe labelmap volume in any supported convention gives the five lobe rows on both paths, with the
    lobes' own volumes (regression: TotalSegmentator values 11-14 were reported as zones in-process and
    value 10 vanished from whole_lung)."""
    from drasclr.core.image import CTImage

    ct_node = volumes.add_volume_node(scene, chest, "chest")
    ltrc = _lobes_from_zones(chest_zones.regions.array)
    lut = np.zeros(256, np.uint16)
    for ltrc_value, source_value in zip(range(1, 6), LOBE_VALUES[convention]):
        lut[ltrc_value] = source_value
    lab = CTImage(lut[ltrc], chest.spacing, chest.origin, chest.direction)
    lab_node = volumes.add_volume_node(scene, lab, "lobes", labelmap=True)
    logic = DrasCLRLogic(scene)
    if path == "in_process":
        nodes = logic.analyze(ct_node, lobes_node=lab_node, use_model=False)
    else:
        nodes = logic.run_in_subprocess(ct_node, lobes_node=lab_node, use_model=False, work_dir=tmp_path)
    rows = {r["region"]: r for r in tables.table_to_rows(nodes.table)}
    assert nodes.region_kind == "lobes"
    assert list(rows)[:5] == list(labels.LOBES.values())
    assert not set(rows) & set(labels.ZONES.values())
    voxel_ml = float(np.prod(chest.spacing)) / 1000
    for value, name in labels.LOBES.items():
        assert rows[name]["volume_ml"] == pytest.approx((ltrc == value).sum() * voxel_ml)
    lung_ml = (chest_zones.lungs.array > 0).sum() * voxel_ml
    assert rows["whole_lung"]["volume_ml"] == pytest.approx(lung_ml)


def test_engine_refuses_lobe_values_outside_ltrc(chest, chest_zones):
    """analyze() itself checks its lobe labelmap: values outside LTRC 1-5 are an input error, not zones."""

    bad = chest.with_array((_lobes_from_zones(chest_zones.regions.array) + 9) * (chest_zones.regions.array > 0))
    with pytest.raises(InputError, match="LTRC"):
        engine_analyze(chest, bad.with_array(bad.array.astype(np.uint8)))


@pytest.mark.parametrize("name,value", [("Left upper lobe", 1), ("lung_lower_lobe_left", 2),
                                        ("right superior lobe of lung", 3), ("Right middle lobe", 4),
                                        ("lung_lower_lobe_right", 5), ("left lung", None), ("Trachea", None)])
def test_lobe_value_from_name(name, value):
    assert lobe_value_from_name(name) == value


def test_progress_line_parsing():
    p = process.parse_progress("progress: lung mask 3/10")
    assert (p.desc, p.done, p.total, p.fraction) == ("lung mask", 3, 10, 0.3)
    assert process.parse_progress("progress: patches 5/?").total is None
    assert process.parse_progress("wrote out") is None


DENSITOMETRY_STAGES = ["Lung mask", "Harmonization", "Lobes", "Statistics", "Writing report"]


def assert_stage_progress(progress):
    """A densitometry analysis's progress: each stage in order with its place and a non-negative estimate, the
    bar (the estimated share done) never going back, then finished."""
    stages = [p for p in progress if p.stage is not None and not p.finished]
    firsts = [p for i, p in enumerate(stages) if i == 0 or p.stage != stages[i - 1].stage]
    assert [p.stage for p in firsts] == DENSITOMETRY_STAGES
    assert [(p.index, p.count) for p in firsts] == [(i, 5) for i in range(1, 6)]
    assert firsts[1].text.startswith("Harmonization (2 of 5)")
    assert all(p.seconds_left is not None and p.seconds_left >= 0 and p.elapsed >= 0 for p in stages)
    fractions = [p.fraction for p in progress if p.stage is not None]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < fractions[-2] < 1
    assert progress[-1].finished and progress[-1].fraction == 1.0 and progress[-1].text.startswith("Finished in")


def test_stage_lines_become_progress_with_a_countdown():
    """Plain loop lines during a stage carry the stage and its estimate, counted down by the clock."""
    now = [100.0]
    reader = process.ProgressReader(clock=lambda: now[0])
    first = reader.read('progress: stage {"name": "Subtype map", "index": 5, "count": 10, "left_s": 40.0, '
                        '"stage_s": 30.0, "elapsed_s": 10.0, "finished": false}')
    assert (first.stage, first.index, first.count, first.seconds_left) == ("Subtype map", 5, 10, 40.0)
    assert first.text == "Subtype map (5 of 10) — about 40 s left" and first.fraction == pytest.approx(0.2)
    now[0] += 12.0
    loop = reader.read("progress: subtypes 2/3 mirrored 16/16")
    assert (loop.desc, loop.done, loop.total) == ("subtypes 2/3 mirrored", 16, 16)
    assert loop.seconds_left == pytest.approx(28.0) and loop.elapsed == pytest.approx(22.0)
    assert loop.headline == "Subtype map (5 of 10) — about 30 s left" and loop.fraction > first.fraction
    now[0] += 60.0  # overran its estimate: the stages after it are still ahead
    assert reader.read("progress: subtypes 3/3 4/4").seconds_left == pytest.approx(10.0)
    assert reader.read("warning: something") is None
    assert process.ProgressReader().read("progress: lung mask 3/10").text == "lung mask 3/10"  # no stage yet


def _parsed(cmd):
    """The settings the engine's own parser reads from a child command line."""
    from drasclr.cli import build_parser

    return AnalysisSettings.from_args(build_parser(["analyze"]).parse_args(cmd[3:]))


@pytest.mark.parametrize("settings", [
    AnalysisSettings(),
    AnalysisSettings(model="m.safetensors", device="cuda", tta=False, regions="zones", hu_calibration="none",
                     density_veto=False, strict=True, batch_size=16),
    AnalysisSettings(use_model=False, density_veto=True, lobes_from="lungmask"),
], ids=["defaults", "every-option", "no-model"])
def test_child_command_carries_every_setting(tmp_path, settings):
    """What a panel asks for is exactly what the child's parser reads back (AnalysisSettings.to_args)."""
    cmd = process.analyze_command(tmp_path / "ct.nrrd", tmp_path / "out", settings, python="py")
    assert cmd[:5] == ["py", "-m", "drasclr", "analyze", str(tmp_path / "ct.nrrd")]
    assert cmd[cmd.index("-o") + 1] == str(tmp_path / "out")
    assert _parsed(cmd) == settings
    with_lobes = process.analyze_command("ct", "out", settings, lobes_path=tmp_path / "lobes.nrrd", python="py")
    assert with_lobes[with_lobes.index("--lobes") + 1] == str(tmp_path / "lobes.nrrd")
    assert _parsed(with_lobes) == settings.replace(lobes_convention="ltrc")  # lobes_image() writes LTRC values


def test_panel_values_become_settings():
    """The shells' values (any letter case, camelCase keys) become settings; an unknown one is refused."""
    logic_settings = DrasCLRLogic.settings(AnalysisSettings(tta=False), device="CPU", huCalibration="None",
                                           densityVeto="Off", batchSize=0)
    assert logic_settings == AnalysisSettings(tta=False, device="cpu", hu_calibration="none", density_veto=False)
    with pytest.raises(InputError, match="unknown analysis setting"):
        DrasCLRLogic.settings(hu_calbration="none")
    with pytest.raises(InputError, match="--regions"):
        DrasCLRLogic.settings(regions="segments")


def test_finetune_command_and_summary(tmp_path):
    cmd = process.finetune_command("ct.nrrd", "pred.nrrd", "corr.nrrd", model="m-v1", output_root=tmp_path,
                                   device="cpu", max_seconds=12.5, python="py")
    assert cmd[:8] == ["py", "-m", "drasclr", "finetune", "corrections", "ct.nrrd", "pred.nrrd", "corr.nrrd"]
    assert cmd[cmd.index("--max-seconds") + 1] == "12.5" and cmd[cmd.index("--model") + 1] == "m-v1"
    assert cmd[cmd.index("-o") + 1] == str(tmp_path)
    lines = ["progress: train 5/10", "{", '  "model": "/x/m-v2",', '  "after": {"accuracy": 0.9}', "}"]
    assert process.last_json(lines) == {"model": "/x/m-v2", "after": {"accuracy": 0.9}}
    with pytest.raises(process.EngineError):
        process.last_json(["wrote out"])


@needs_cli
def test_run_in_subprocess_loads_outputs(scene, chest, chest_result, tmp_path):
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    logic = DrasCLRLogic(scene)
    lines, idle, progress = [], [], []
    nodes = logic.run_in_subprocess(ct_node, on_line=lines.append, on_idle=lambda: idle.append(1), use_model=False,
                                    work_dir=tmp_path / "work", on_progress=progress.append)
    assert any(line.startswith("wrote ") for line in lines)
    assert idle, "the GUI hook must be called while the child runs"
    assert_stage_progress(progress)
    rows = tables.table_to_rows(nodes.table)
    assert [r["region"] for r in rows] == LOBE_ROWS  # the engine's default: estimated lobes
    want = chest_result.rows
    for got, ref in zip(rows, want):  # stats.csv keeps 4 decimals
        assert got["volume_ml"] == pytest.approx(ref["volume_ml"], abs=1e-4)
        assert got["laa950_pct"] == pytest.approx(ref["laa950_pct"], abs=1e-4)
    assert read_csv(nodes.output_dir / "stats.csv")[0]["region"] == "left_upper_lobe"
    assert read_json(nodes.output_dir / "stats.json")["region_source"] == "atlas+fissures"
    back = segmentations.segmentation_to_labelmap(nodes.regions, ct_node, terminology.region_entries(labels.LOBES))
    np.testing.assert_array_equal(back.array, chest_result.regions.array)
    # exports
    csv_path = logic.export_csv(nodes, tmp_path / "stats.csv")
    assert read_csv(csv_path)[-1]["region"] == "whole_lung"
    report = logic.export_html(nodes, tmp_path / "report.html")  # the engine's own report of this run
    assert report.read_bytes() == (nodes.output_dir / "report.html").read_bytes()
    logic.cleanup()


def test_in_process_results_come_from_an_output_folder_like_the_child(scene, chest, tmp_path):
    """One way to build the displayed result: the in-process path writes the engine's output folder (report
    included) and shows it as the child-process path does; the export is that report; it goes with cleanup."""
    logic = DrasCLRLogic(scene)
    progress = []
    nodes = logic.analyze(volumes.add_volume_node(scene, chest, "chest"), use_model=False,
                          on_progress=progress.append)
    assert read_json(nodes.output_dir / "stats.json")["settings"]["use_model"] is False
    assert_stage_progress(progress)  # the same progress objects as from the child's lines
    html = logic.export_html(nodes, tmp_path / "report.html").read_text()
    assert html == (nodes.output_dir / "report.html").read_text() and "Left upper lobe" in html
    logic.cleanup()
    with pytest.raises(FileNotFoundError, match="analyze again"):
        logic.export_html(nodes, tmp_path / "again.html")


def test_cancel_leaves_no_nodes_and_no_files(scene, chest, tmp_path):
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    before = scene.GetNumberOfNodes()
    with pytest.raises(process.Cancelled):
        DrasCLRLogic(scene).run_in_subprocess(ct_node, should_cancel=lambda: True, work_dir=tmp_path / "w",
                                              use_model=False)
    assert scene.GetNumberOfNodes() == before
    assert not (tmp_path / "w" / "output").exists()


def _dead(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` is gone or a zombie (killed, waiting to be reaped)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_cancel_kills_the_whole_process_tree():
    """Cancel kills the child and what it started (PythonSlicer is a launcher around the real Python)."""
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(60)']); print('grandchild', p.pid, flush=True); time.sleep(60)")
    seen = []
    with pytest.raises(process.Cancelled):
        process.run_engine([sys.executable, "-c", code], on_line=seen.append,
                           should_cancel=lambda: any(s.startswith("grandchild") for s in seen))
    grandchild = int(next(s for s in seen if s.startswith("grandchild")).split()[1])
    assert _dead(grandchild), "the grandchild process survived Cancel"


def test_engine_error_is_reported():
    """A child that follows the CLI contract (one ``error:`` line, exit 2): its message becomes the error.
    (The real CLI's bad-input path imports torch first, ~3-9 s here, so a contract-following child stands in.)"""
    code = "import sys; print('progress: x 1/2', file=sys.stderr); print('error: input not found: a.nrrd', " \
           "file=sys.stderr); sys.exit(2)"
    with pytest.raises(process.EngineError, match="^input not found: a.nrrd$"):
        process.run_engine([sys.executable, "-c", code])
    with pytest.raises(process.EngineError, match="status 3"):
        process.run_engine([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])


def test_load_demo_ct_gives_a_ct_volume(scene):
    node = DrasCLRLogic(scene).load_demo_ct()
    assert node.IsA("vtkMRMLScalarVolumeNode") and node.GetName() == "DrasCLR demo CT"
    a = volumes.image_from_volume_node(node).array
    assert a.ndim == 3 and a.min() < -900 and a.max() > 0


@needs_cli
def test_kept_files_live_until_the_next_run(scene, chest):
    small = synthetic_chest((24, 40, 40), spacing=(6.0, 6.0, 6.0))
    ct_node = volumes.add_volume_node(scene, small, "small")
    logic = DrasCLRLogic(scene)
    first = logic.run_in_subprocess(ct_node, use_model=False)
    assert (first.output_dir / "stats.csv").exists()
    second = logic.analyze(ct_node, use_model=False)  # in process: the same kind of folder
    assert (second.output_dir / "stats.csv").exists()
    assert not first.output_dir.parent.exists()  # only the latest run's files are kept
    logic.cleanup()
    assert not second.output_dir.parent.exists()


needs_model_engine = pytest.mark.skipif(
    importlib.util.find_spec("drasclr.anatomy.registration") is None
    or importlib.util.find_spec("drasclr.analysis.report") is None,
    reason="engine incomplete: the subtype model path needs drasclr.anatomy.registration and drasclr.analysis.report")


@pytest.mark.slow
@needs_model_engine
def test_model_analysis_correction_and_finetune(scene, tmp_path):
    """With a tiny random subtype model: the subtype segmentation round-trips by name, and a correction painted
    into it becomes a new model version through ``drasclr finetune corrections`` (CPU inference dominates:
    about 25 s on an idle 2-core machine, minutes on a loaded one)."""
    from drasclr.dense.segmenter import SubtypeSegmenter
    from drasclr.dense.store import save_segmenter

    tiny = SubtypeSegmenter(encoder={"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1},
                            decoder=(8, 8, 8, 4, 4))
    model_dir = save_segmenter(tiny, tmp_path / "models" / "tiny-v1", {"name": "tiny", "version": "tiny-v1"})
    small = synthetic_chest((20, 28, 28), spacing=(6.0, 6.0, 6.0))
    ct_node = volumes.add_volume_node(scene, small, "small")
    logic = DrasCLRLogic(scene)
    nodes = logic.analyze(ct_node, model=model_dir, device="cpu")
    assert nodes.subtypes is not None and nodes.model == model_dir
    assert nodes.subtypes.GetName() == "small subtypes"
    assert set(segmentations.segment_names(nodes.subtypes)) == {s.title for s in names.SUBTYPES.values()}
    np.testing.assert_array_equal(logic.corrected_subtypes(nodes).array, nodes.prediction.array)
    whole = tables.table_to_rows(nodes.table)[-1]
    # four shares each rounded to 4 decimals in the table
    assert sum(whole[c] for c in ("normal_pct", "cle_pct", "pse_pct", "ple_pct")) == pytest.approx(100.0, abs=2e-4)
    with pytest.raises(ValueError, match="not been corrected"):
        logic.finetune_from_corrections(nodes, device="cpu")
    corrected = nodes.prediction.array.copy()
    z, y, x = np.argwhere(corrected > 0)[np.count_nonzero(corrected) // 2]
    block = corrected[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2]
    block[block > 0] = np.where(block[block > 0] == labels.CLE, labels.PSE, labels.CLE)  # a small repaint
    in_lung = int((corrected != nodes.prediction.array).sum())
    corrected[0, :2, :2] = labels.PLE  # and a stray stroke outside the lung: ignored, counted, reported
    segmentations.labelmap_to_segmentation(scene, nodes.prediction.with_array(corrected), ct_node,
                                           terminology.subtype_entries(), node=nodes.subtypes)
    summary = logic.finetune_from_corrections(nodes, device="cpu", max_seconds=1, output_root=tmp_path / "models")
    assert Path(summary["model"]) == tmp_path / "models" / "tiny-v2"
    assert (Path(summary["model"]) / "model.json").exists()
    assert summary["corrected_voxels"] == in_lung and summary["outside_lung_voxels"] == 4
    message = logic.finetune_message(summary)
    assert message.startswith("new model version tiny-v2 (accuracy on the corrected voxels")
    assert message.endswith("4 painted voxels outside the lung were ignored")


def test_engine_output_folder_with_subtypes_becomes_nodes(scene, tmp_path):
    """An analysis folder with a subtype map (the engine's bundled demo case and its own writers) loads as
    the subtype segmentation, regions, table and a four-series chart; the corrected map reads back by name."""
    from drasclr.analysis.stats import region_stats, write_csv, write_json
    from drasclr.core.io import read_image, write_image
    from DrasCLRSlicerLib.logic import DEMO_CT

    data = DEMO_CT.parent
    if not (data / "demo_subtypes.nii.gz").exists():
        pytest.skip("the engine's demo case (demo_ct/demo_regions/demo_subtypes) is not bundled")
    logic = DrasCLRLogic(scene)
    ct_node = logic.load_demo_ct()
    ct = volumes.image_from_volume_node(ct_node)
    subtypes, regions = read_image(data / "demo_subtypes.nii.gz"), read_image(data / "demo_regions.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    write_image(subtypes, out / "subtypes.nii.gz")
    write_image(regions, out / "regions.nii.gz")
    rows = region_stats(ct, regions, subtypes)
    write_csv(rows, out / "stats.csv")
    kind = "lobes" if set(np.unique(regions.array)) & set(labels.LOBES) else "zones"
    write_json(rows, out / "stats.json", {"region_kind": kind})
    nodes = logic.load_outputs(ct_node, out)
    assert nodes.subtypes.GetName() == "DrasCLR demo CT subtypes"
    assert nodes.region_kind == kind  # the fact stats.json records, not a guess from region names
    np.testing.assert_array_equal(logic.corrected_subtypes(nodes).array, subtypes.array)
    np.testing.assert_array_equal(nodes.prediction.array, subtypes.array)
    got = tables.table_to_rows(nodes.table)
    assert [r["region"] for r in got] == [r["region"] for r in rows]
    for g, r in zip(got, rows):
        for c in ("normal_pct", "cle_pct", "pse_pct", "ple_pct"):
            assert g[c] == pytest.approx(r[c], abs=1e-4)
    series = [scene.GetNodeByID(nodes.chart.GetNthPlotSeriesNodeID(i))
              for i in range(nodes.chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == ["normal_pct", "cle_pct", "pse_pct", "ple_pct"]
    assert not nodes.regions.GetDisplayNode().GetVisibility()  # the subtype map is shown, regions hidden


def test_totalsegmentator_action_refused_without_the_extension(scene, chest):
    """Without the SlicerTotalSegmentator extension (slicer-core has none) the action is not offered (the panel
    hides its button on ``totalsegmentator_available()``) and, called anyway, refuses with a clear message and
    leaves no node behind."""
    from DrasCLRSlicerLib.logic import totalsegmentator_available, totalsegmentator_extension

    if totalsegmentator_extension() is not None:
        pytest.skip("the TotalSegmentator extension is installed here")
    assert not totalsegmentator_available()
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    with pytest.raises(RuntimeError, match="TotalSegmentator extension is not installed"):
        DrasCLRLogic(scene).compute_lobes_totalsegmentator(ct_node)
    assert node_names(scene, "vtkMRMLSegmentationNode") == []


@pytest.mark.parametrize("names", [
    ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
     "lung_lower_lobe_right"),  # TotalSegmentator's class names
    ("Left upper lobe of lung", "Left lower lobe of lung", "Right upper lobe of lung", "Right middle lobe of lung",
     "Right lower lobe of lung"),  # the extension's standard segment names
])
def test_totalsegmentator_segments_become_the_lobe_input(scene, chest, chest_zones, names):
    """The extension's output segmentation (either naming, segments in its own order) becomes our five-segment
    lobe input with the right voxels in each lobe; a segmentation lacking a lobe is refused."""
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    lobes = _lobes_from_zones(chest_zones.regions.array)
    order = [4, 2, 5, 1, 3]  # not the LTRC order
    entries = [terminology.SegmentEntry(v, names[v - 1], (0.5, 0.5, 0.5)) for v in order]
    raw = segmentations.labelmap_to_segmentation(scene, chest.with_array(lobes), ct_node, entries, name="raw")
    logic = DrasCLRLogic(scene)
    node = logic.lobes_from_segmentation(raw, ct_node, "chest lobes (TotalSegmentator)")
    assert set(segmentations.segment_names(node)) == {e.name for e in terminology.region_entries(labels.LOBES)}
    back = segmentations.segmentation_to_labelmap(node, ct_node, terminology.region_entries(labels.LOBES))
    np.testing.assert_array_equal(back.array, lobes)
    nodes = logic.analyze(ct_node, lobes_node=node, use_model=False)
    assert nodes.region_kind == "lobes"
    partial = chest.with_array(np.where(lobes == 4, 0, lobes).astype(np.uint8))
    raw2 = segmentations.labelmap_to_segmentation(scene, partial, ct_node, entries, name="raw2")
    with pytest.raises(ValueError, match="right_middle_lobe"):
        logic.lobes_from_segmentation(raw2, ct_node, "chest lobes 2")


def test_totalsegmentator_extension_lobes(scene, chest):
    """With the extension installed (inside Slicer): its Logic's lobes come back as the five-segment lobe input."""
    pytest.importorskip("TotalSegmentator", reason="the SlicerTotalSegmentator extension is not installed")
    ct_node = volumes.add_volume_node(scene, chest, "chest")
    logic = DrasCLRLogic(scene)
    try:
        lobe_node = logic.compute_lobes_totalsegmentator(ct_node, cpu=True)
    except Exception as exc:  # weights not cached: never download in tests
        pytest.skip(f"TotalSegmentator weights unavailable offline: {exc}")
    assert lobe_node.GetSegmentation().GetNumberOfSegments() == 5
    nodes = logic.analyze(ct_node, lobes_node=lobe_node, use_model=False)
    assert nodes.region_kind == "lobes"
