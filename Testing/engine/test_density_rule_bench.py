"""The density-rule bench's real-patch mode (bench/bench_density_rule.py --real-patches): the rule's statistic on
constructed patches whose share is known, and on the real CIP patches (skipped where ../shared is absent) what the
documented finding says: at the shipped threshold few real normal patches and few real mild CLE patches pass."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from repo_scripts import REPO, load_repo_script


@pytest.fixture(scope="module")
def bench():
    return load_repo_script("bench/bench_density_rule.py")


def test_the_share_counts_lung_pixels_below_950(bench, tmp_path):
    p = np.full((2, 31, 31), -880, np.int16)
    p[0, :10, :] = 40  # chest wall: not lung, not counted
    p[0, 10:, :3] = -990  # 3 of 31 lung columns below -950
    p[1, :, :] = -1000  # all of it
    np.savez(tmp_path / "patches.npz", patches=p, cip_class=np.array(["NT", "PL"]))
    shares = bench.real_patch_shares(tmp_path)
    assert shares["NT"][0] == pytest.approx(3 / 31) and shares["PL"][0] == 1.0
    rows = bench.real_patch_table(tmp_path, [0.05, 0.15])
    assert rows[0]["normal"] == 1.0 and rows[1]["normal"] == 0.0 and rows[1]["PLE"] == 1.0
    assert rows[0]["CLE mild"] is None  # no patch of that class: no number


def test_the_cli_refuses_a_folder_without_patches(tmp_path):
    p = subprocess.run([sys.executable, str(REPO / "bench" / "bench_density_rule.py"), "--real-patches",
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:")


def test_on_real_patches_the_shipped_threshold_keeps_little_mild_cle(bench):
    if not (bench.REAL_PATCHES / "patches.npz").is_file():
        pytest.skip("the real CIP patches (../shared) are not here")
    rows = {r["threshold"]: r for r in bench.real_patch_table(bench.REAL_PATCHES, [0.04, 0.15])}
    assert rows[0.15]["normal"] <= 0.05 and rows[0.15]["CLE mild"] <= 0.2  # the documented finding
    assert rows[0.15]["CLE severe"] >= 0.99 and rows[0.15]["PLE"] >= 0.99
    for name in ("normal", "CLE mild", "CLE moderate", "PSE"):  # a lower threshold keeps more
        assert rows[0.04][name] >= rows[0.15][name]


def test_the_share_can_be_counted_below_another_attenuation(bench, tmp_path):
    p = np.full((3, 31, 31), -880, np.int16)
    p[0, :, :4] = -960  # below -950, not below -970
    p[1, :, :2] = -990  # below both
    p[2, :, :] = -1000
    np.savez(tmp_path / "patches.npz", patches=p, cip_class=np.array(["NT", "NT", "PL"]))
    at950, at970 = bench.real_patch_shares(tmp_path, -950.0), bench.real_patch_shares(tmp_path, -970.0)
    np.testing.assert_allclose(at950["NT"], [4 / 31, 2 / 31])
    np.testing.assert_allclose(at970["NT"], [0.0, 2 / 31])
    assert bench.specificity_point(at970, 0.5) == pytest.approx(round(1 / 31, 3))
    assert bench.rule_key(0.02, 0.15, -970.0) == "0.02/0.15@-970" and bench.rule_key(0.15, 0.15, -950.0) == "0.15/0.15"
    rows = bench.real_patch_table(tmp_path, [0.05], -970.0)
    assert rows[0]["hu"] == -970.0 and rows[0]["normal"] == 0.5 and rows[0]["PLE"] == 1.0
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "bench_density_rule.py"), "--real-patches",
                          str(tmp_path), "--hu=-300"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")


def test_on_real_patches_a_lower_cut_at_the_same_specificity_keeps_more_emphysema(bench):
    """The session-15 finding (docs/acquisition.md): at the threshold where 97 % of real normal patches fall below
    it, the share below -970 HU keeps more real mild and moderate CLE and PSE than the share below -950 HU."""
    if not (bench.REAL_PATCHES / "patches.npz").is_file():
        pytest.skip("the real CIP patches (../shared) are not here")
    kept = {}
    for hu in (-950.0, -970.0):
        shares = bench.real_patch_shares(bench.REAL_PATCHES, hu)
        t = bench.specificity_point(shares)
        kept[hu] = {c: float((shares[c] >= t).mean()) for c in ("NT", "CL1", "CL2", "PS")}
    assert abs(kept[-950.0]["NT"] - kept[-970.0]["NT"]) <= 0.01
    for c in ("CL1", "CL2", "PS"):
        assert kept[-970.0][c] >= kept[-950.0][c] + 0.15


def test_the_share_can_be_counted_on_the_patch_smoothed(bench, tmp_path):
    """``--smooth``: isolated pixels below -950 HU (noise) stop counting once the patch is smoothed at 1 mm; a
    low-attenuation area 10 pixels wide keeps most of its share."""
    p = np.full((2, 31, 31), -880, np.int16)
    p[0, ::4, ::4] = -990  # isolated dark pixels
    p[1, :, :10] = -1000  # an area
    np.savez(tmp_path / "patches.npz", patches=p, cip_class=np.array(["NT", "CL2"]))
    raw, smooth = bench.real_patch_shares(tmp_path, -950.0), bench.real_patch_shares(tmp_path, -950.0, 1.0)
    assert raw["NT"][0] == pytest.approx(64 / 961) and smooth["NT"][0] == 0.0
    assert raw["CL2"][0] == pytest.approx(10 / 31) and smooth["CL2"][0] >= 8 / 31
    assert bench.rule_key(0.08, 0.08, -950.0, 1.0) == "0.08/0.08~1"
    assert bench.rule_key(0.15, 0.15, -950.0) == "0.15/0.15"
    assert bench.real_patch_table(tmp_path, [0.05], -950.0, 1.0)[0]["smooth_mm"] == 1.0
    bad = subprocess.run([sys.executable, str(REPO / "bench" / "bench_density_rule.py"), "--real-patches",
                          str(tmp_path), "--smooth", "9"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
