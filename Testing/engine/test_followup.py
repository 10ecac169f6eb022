"""Follow-up comparison (drasclr.followup, ``drasclr compare``) on small phantom series with exact truth.

The scans' own truth folders (ct + regions + subtypes) stand in for their analyses, so these tests check the
registration, the carried lobes, the adjustment and the change map without the subtype model (its accuracy on
follow-ups is measured by bench/bench_followup.py).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from drasclr.cli import main
from drasclr.core.io import read_image
from drasclr.followup import changemap, measure
from drasclr.followup.register import register_lungs
from drasclr.followup.truth import score
from drasclr.research.phantom import PhantomOptions
from drasclr.research.phantom.followup import FollowupOptions, generate_series, write_series

SMALL = PhantomOptions(size=(112, 112, 56), spacing=2.6, thickness=4.0, kernel="soft", noise=15.0, vessel_points=400,
                       subtypes=("cle", "pse", "ple"), severity=0.3)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Baseline + one follow-up: planted progression and 15 % more lung volume."""
    out = tmp_path_factory.mktemp("series") / "s"
    write_series(out, 41, SMALL, FollowupOptions(scans=2, volume_change=(0.15,)))
    return out


@pytest.fixture(scope="module")
def compared(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "c"
    rc = main(["compare", str(series / "scan_0"), str(series / "scan_1"), "-o", str(out),
               "--landmarks", str(series / "scan_1" / "landmarks.csv")])
    assert rc == 0
    return out


def test_series_truth_plants_progression_and_inspiration(series):
    meta = json.loads((series / "series.json").read_text())
    t0, t1 = (s["lobe_truth"]["whole_lung"] for s in meta["scans"])
    assert 1.11 < t1["volume_ml"] / t0["volume_ml"] < 1.19  # +15 % lung volume
    assert t1["emphysema_pct"] > t0["emphysema_pct"] + 1.0  # progression
    truth = read_image(series / "scan_1" / "change_truth.nii.gz").array
    assert (truth == changemap.NEW).sum() > 100 and (truth == changemap.CHANGED).sum() > 0
    pairs = np.loadtxt(series / "scan_1" / "landmarks.csv", delimiter=",", skiprows=1)
    assert pairs.shape == (200, 6)


def test_pure_inspiration_changes_density_by_mass_conservation():
    a, b = generate_series(42, SMALL, FollowupOptions(scans=2, volume_change=(-0.12,), progression=0.0))
    lung_a, lung_b = a.regions.array > 0, b.regions.array > 0
    ratio = lung_b.sum() / lung_a.sum()
    assert 0.84 < ratio < 0.92
    mean_a, mean_b = a.ct.array[lung_a].mean(), b.ct.array[lung_b].mean()
    assert mean_b > mean_a + 5  # smaller lung, denser
    assert abs((mean_b + 1000) * ratio - (mean_a + 1000)) < 4  # sponge model (vessels keep their density)
    assert (b.subtypes.array >= 2)[lung_b].mean() == pytest.approx((a.subtypes.array >= 2)[lung_a].mean(), abs=0.01)


def test_registration_aligns_lungs_and_landmarks(series):
    base, later = (read_image(series / f"scan_{k}" / "ct.nii.gz") for k in (0, 1))
    lungs = [read_image(series / f"scan_{k}" / "regions.nii.gz") for k in (0, 1)]
    reg = register_lungs(base, lungs[0].array > 0, later, lungs[1].array > 0)
    warped = reg.to_baseline(lungs[1], base, label=True).array > 0
    assert changemap.dice(warped, lungs[0].array > 0) >= 0.95
    pairs = np.loadtxt(series / "scan_1" / "landmarks.csv", delimiter=",", skiprows=1)
    err = np.linalg.norm(reg.map_points(pairs[:, :3]) - pairs[:, 3:], axis=1)
    before = np.linalg.norm(pairs[:, :3] - pairs[:, 3:], axis=1)
    assert err.mean() < 2.0 and err.mean() < 0.5 * before.mean()
    back = reg.to_later(lungs[0], later).array > 0  # the inverse carries the baseline's lobes
    assert changemap.dice(back, lungs[1].array > 0) >= 0.95


def test_compare_outputs_and_truth(compared, series):
    assert {"change.csv", "change.json", "change_map.nii.gz", "report.html"} <= {p.name for p in compared.iterdir()}
    with open(compared / "change.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == measure.COLUMNS
    assert {r["scan"] for r in rows} == {"0", "1"} and "right_middle_lobe" in {r["region"] for r in rows}
    s = score(compared, series)["scans"][0]
    assert s["lobe_emphysema_error_max"] < 2.0  # oracle subtypes: the error is registration + carried lobes
    assert s["new_emphysema_dice"] >= 0.7
    assert s["lung_dice"] >= 0.95 and s["landmark_error_mm"] < 2.0
    doc = json.loads((compared / "change.json").read_text())
    whole = next(r for r in doc["rows"] if r["scan"] == 1 and r["region"] == "whole_lung")
    assert whole["volume_ratio"] == pytest.approx(1.15, abs=0.04)
    assert whole["new_emphysema_ml"] > 0
    change = read_image(compared / "change_map.nii.gz")
    assert change.array.shape == read_image(series / "scan_0" / "ct.nii.gz").array.shape
    assert set(np.unique(change.array)) <= set(range(6))


def test_compare_pure_inspiration_adjusted_perc15(tmp_path):
    write_series(tmp_path / "s", 43, SMALL, FollowupOptions(scans=2, volume_change=(0.15,), progression=0.0))
    rc = main(["compare", str(tmp_path / "s" / "scan_0"), str(tmp_path / "s" / "scan_1"), "-o", str(tmp_path / "c"),
               "--no-report"])
    assert rc == 0
    s = score(tmp_path / "c", tmp_path / "s")["scans"][0]
    assert abs(s["d_perc15_adj"]) <= 3.0
    assert s["d_perc15_raw"] < s["d_perc15_adj"]  # inflated lung: raw Perc15 falls, adjusted stays
    assert abs(s["d_emphysema_pct"]) <= 1.5


@pytest.mark.parametrize("argv", [["only_one"], ["a", "b", "--landmarks", "x.csv", "y.csv"], ["missing1", "missing2"]])
def test_compare_bad_input_exit_2(tmp_path, capsys, series, argv):
    argv = [str(series / "scan_0") if a in ("only_one", "a") else str(series / "scan_1") if a == "b" else a
            for a in argv]
    rc = main(["compare", *argv, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "out").exists()
