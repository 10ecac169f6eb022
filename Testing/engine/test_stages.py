"""Stage progress of ``drasclr analyze`` (drasclr.core.stages): each stage's name in order with its place and an
estimate of the time left, on stderr for the shells; the estimate learns from this machine's earlier runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import cli_runner
from drasclr.analysis.analyze import analyze, write_analysis
from drasclr.analysis.stage_plan import track_analysis
from drasclr.core.io import write_image
from drasclr.core.progress import progress
from drasclr.core.settings import AnalysisSettings
from drasclr.core.stages import History, parse_stage_line
from drasclr.core.versions import default_model
from synthetic import synthetic_chest

MODEL_STAGES = ["Lung mask", "Harmonization", "Atlas registration", "Lobes", "Subtype map", "Labels and uncertainty",
                "Review queue", "Patient embedding", "Statistics", "Writing report"]
ZONE_STAGES = ["Lung mask", "Harmonization", "Zones", "Statistics", "Writing report"]


def run_cli(*args, cache):
    env = {**os.environ, "DRASCLR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return cli_runner.run_cli(*args, env=env, timeout=300)


@pytest.mark.skipif(not default_model().exists(), reason="the bundled demo model is not built (make demo-model)")
def test_cli_reports_each_stage_in_order_with_a_falling_estimate(tmp_path):
    ct, _ = synthetic_chest()
    write_image(ct, tmp_path / "ct.nrrd")
    proc = run_cli("analyze", tmp_path / "ct.nrrd", "-o", tmp_path / "out", "--no-tta", "--quiet", "--embedding",
                   cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    emb = np.load(tmp_path / "out" / "embedding.npy")  # asked for: the embedding stage ran and wrote it
    assert emb.ndim == 1 and emb.size == 128 and np.isfinite(emb).all()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert all(ln.startswith(("progress:", "info:", "warning:")) for ln in lines), lines  # the CLI contract
    events = [e for e in map(parse_stage_line, lines) if e is not None]
    starts, end = events[:-1], events[-1]
    assert [e.name for e in starts] == MODEL_STAGES
    assert [(e.index, e.count) for e in starts] == [(i, len(MODEL_STAGES)) for i in range(1, len(MODEL_STAGES) + 1)]
    assert end.finished and end.left_s == 0
    lefts = [e.left_s for e in starts]
    assert all(v is not None and v >= 0 for v in lefts)
    assert lefts[-1] < lefts[0] and lefts[-1] <= min(lefts[:-1])  # decreasing-ish: the last stage has least left
    elapsed = [e.elapsed_s for e in events]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    # the loops' own lines are still there, in the format the shells have always read
    assert any(ln.startswith("progress: subtypes") for ln in lines)
    # the history: per stage kind one sample; sizes and times only
    doc = json.loads((tmp_path / "cache" / "stage_times.json").read_text())
    assert len(doc["samples"]) == len(MODEL_STAGES) and all(len(v) == 1 for v in doc["samples"].values())
    assert "ct.nrrd" not in json.dumps(doc) and str(tmp_path) not in json.dumps(doc)


def _tracked_run(ct, settings, out):
    """An analysis in this process inside the stage tracker (the Logic's in-process path); its events."""
    events = []
    with track_analysis(ct, settings, sink=events.append):
        write_analysis(analyze(ct, settings=settings), out)
    return events


def test_history_updates_and_improves_the_next_estimate(tmp_path, monkeypatch):
    ct, _ = synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0))
    settings = AnalysisSettings(use_model=False, regions="zones")
    cache = tmp_path / "cache"
    monkeypatch.setenv("DRASCLR_CACHE_DIR", str(cache))
    first = _tracked_run(ct, settings, tmp_path / "a")
    assert [e.name for e in first[:-1]] == ZONE_STAGES and first[-1].finished
    history = History.load(cache / "stage_times.json")
    assert len(history.samples) == len(ZONE_STAGES)
    actual = sum(s for pairs in history.samples.values() for _, s in pairs)  # the stages' own times, first run
    assert 0 < history.lung_fraction[0] < 1

    second = _tracked_run(ct, settings, tmp_path / "b")
    history = History.load(cache / "stage_times.json")
    assert all(len(pairs) == 2 for pairs in history.samples.values())  # the file grew by this run
    # same scan: the second run starts from what the first one measured, not from the built-in defaults
    assert second[0].left_s == pytest.approx(actual, abs=0.15)
    assert abs(second[0].left_s - actual) <= max(abs(first[0].left_s - actual), 0.15)


def test_unwritable_cache_never_fails_the_analysis(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DRASCLR_CACHE_DIR", str(blocker / "x"))
    ct, _ = synthetic_chest(shape=(24, 64, 64), spacing=(4.0, 4.0, 6.0))
    events = _tracked_run(ct, AnalysisSettings(use_model=False, regions="zones"), tmp_path / "out")
    assert events[-1].finished and (tmp_path / "out" / "stats.csv").exists()
    assert History.load(blocker / "x" / "stage_times.json").samples == {}


def test_plain_progress_lines_are_unchanged(capsys):
    list(progress(range(4), desc="patches", every=2))
    assert capsys.readouterr().err.splitlines() == ["progress: patches 2/4", "progress: patches 4/4"]


def test_history_scales_the_cost_curve_by_this_machines_speed():
    """A run twice as slow as the built-in curve at one size predicts twice the curve at another size (a fixed
    cost stays fixed); nearer sizes weigh more."""
    def curve(u):
        return 4.0 + 0.1 * u

    h = History()
    assert h.predict("regions", 10.0, curve) is None
    h.add("regions", 2.0, 2 * curve(2.0))
    assert h.predict("regions", 30.0, curve) == pytest.approx(2 * curve(30.0))
    h.add("regions", 30.0, curve(30.0))  # as fast as the curve at 30
    assert curve(30.0) < h.predict("regions", 30.0, curve) < 1.5 * curve(30.0)
    assert h.predict("regions", 3.0, curve) > 1.5 * curve(3.0)


def test_estimates_follow_the_slab_grid_when_thin_slices_run_as_slabs(tmp_path):
    """Thin slices analysed on slabs (drasclr.analysis.thin_slices): the stages up to the statistics scale with the
    slab grid's voxels, and the lungs counted there are measured in the slab grid's voxel volume (the scan's own
    lung volume, not a third of it); statistics and writing stay on the scan's own voxels."""
    from drasclr.core.stages import Stage, StageTracker, note_grid, note_lungs, tracking

    plan = [Stage("lung_mask", "Lung mask"), Stage("subtypes", "Subtype map", "lung_ml"), Stage("stats", "Statistics")]
    tracker = StageTracker(plan, voxels=3_000_000, voxel_ml=0.0005, sink=lambda e: None, history=History(),
                           path=tmp_path / "h.json")
    slab_grid = np.zeros((100, 100, 100), np.int16)  # 1e6 voxels of three native slices each

    class Grid:
        array, voxel_volume_ml = slab_grid, 0.0015

    with tracking(tracker):
        assert tracker.units(plan[0]) == pytest.approx(3.0)
        note_grid(Grid())
        note_lungs(np.ones(200_000, np.uint8))  # counted on the slab grid
        assert tracker.units(plan[0]) == pytest.approx(1.0)  # million voxels of the slab grid
        assert tracker.units(plan[1]) == pytest.approx(0.3)  # litres: 200,000 x 1.5 ml
        assert tracker.units(plan[2]) == pytest.approx(3.0)  # the statistics on the native voxels
    assert tracker.done.lung_fraction == [0.2]
