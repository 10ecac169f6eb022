"""Synthetic chest CT phantom: determinism, label consistency, subtype physics and placement, geometry, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from drasclr.core import labels
from drasclr.core.io import read_image
from drasclr.research.phantom import PhantomOptions, demo_case, demo_paths, generate_case, write_case
from drasclr.research.phantom.outcomes import outcomes

# these tests check generator version 1's physics (pinned; version 2 is tested in test_phantom_v2.py)
SMALL = PhantomOptions(size=(96, 96, 72), spacing=3.4, thickness=3.6, kernel="soft", noise=15.0, vessel_points=500,
                       generator="1")
SICK = PhantomOptions(size=(128, 128, 96), spacing=2.6, thickness=2.8, kernel="soft", noise=15.0,
                      subtypes=("cle", "pse", "ple"), severity=0.8, vessel_points=600, generator="1")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sick():
    return generate_case(5, 0, SICK)


@pytest.fixture(scope="module")
def small():
    return generate_case(11, 2, SMALL)


def test_same_seed_same_case_and_bytes(small, tmp_path):
    again = generate_case(11, 2, SMALL)
    for name in ("ct", "regions", "subtypes"):
        assert np.array_equal(getattr(small, name).array, getattr(again, name).array)
    assert small.meta == again.meta
    other = generate_case(12, 2, SMALL)
    assert not np.array_equal(small.ct.array, other.ct.array)
    write_case(small, tmp_path / "a")
    write_case(again, tmp_path / "b")
    for f in ("ct.nii.gz", "regions.nii.gz", "subtypes.nii.gz", "meta.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_labels_consistent(sick, small):
    for case in (sick, small):
        reg, sub = case.regions.array, case.subtypes.array
        assert reg.dtype == np.uint8 and sub.dtype == np.uint8 and case.ct.array.dtype == np.int16
        assert set(np.unique(reg)) == {0, 1, 2, 3, 4, 5}, "every lobe present"
        assert np.array_equal(reg > 0, sub > 0), "subtypes exactly inside the lung, every lung voxel labelled"
        assert set(np.unique(sub)) <= {0, 1, 2, 3, 4}
        # each lobe is essentially one piece; left lobes lie at larger LPS x, upper lobes above lower lobes
        for v in range(1, 6):
            lab, n = ndi.label(reg == v)
            sizes = np.bincount(lab.ravel())[1:]
            assert sizes.max() >= 0.97 * sizes.sum(), f"lobe {v} fragmented"
        cz = {v: np.argwhere(reg == v).mean(0) for v in range(1, 6)}  # (z, y, x) index; x index up = left
        assert min(cz[1][2], cz[2][2]) > max(cz[3][2], cz[4][2], cz[5][2])
        assert cz[1][0] > cz[2][0] and cz[3][0] > cz[5][0] and cz[3][0] > cz[4][0]
        assert cz[4][1] < cz[5][1], "middle lobe anterior to the right lower lobe"


def test_all_subtypes_present_when_forced(sick):
    counts = np.bincount(sick.subtypes.array.ravel(), minlength=5)
    assert all(counts[k] > 50 for k in (labels.CLE, labels.PSE, labels.PLE)), counts
    assert sick.meta["fractions"]["normal"] > 0.5


def test_emphysema_density(sick):
    ct, sub = sick.ct.array, sick.subtypes.array
    for k in (labels.CLE, labels.PLE):
        assert (ct[sub == k] < -950).mean() > 0.6, k
    assert (ct[sub == labels.NORMAL] < -950).mean() < 0.1
    # the threshold alone does not give the subtypes: many low voxels are not CLE/PLE and vice versa
    low = ct < -950
    assert (sub[low & (sub > 0)] == labels.NORMAL).mean() < 0.3


def test_pse_touches_pleura_or_fissure(sick):
    reg, sub = sick.regions.array, sick.subtypes.array
    boundary = np.zeros(reg.shape, bool)
    for v in range(0, 6):  # voxels next to another lobe or to non-lung
        m = reg == v
        boundary |= ndi.binary_dilation(m) & ~m
    near = ndi.binary_dilation(boundary, iterations=2)
    lab, n = ndi.label(sub == labels.PSE)
    assert n > 3
    touching = ndi.maximum(near, lab, index=np.arange(1, n + 1))
    assert touching.mean() > 0.95


def _rel_height(case, k):
    reg, sub = case.regions.array, case.subtypes.array
    zs = np.argwhere(reg > 0)[:, 0]
    z = np.argwhere(sub == k)[:, 0]
    return (z.mean() - zs.min()) / (zs.max() - zs.min())


def test_cle_higher_than_ple_across_cohort(sick):
    opts = PhantomOptions(size=(96, 96, 72), spacing=3.4, thickness=3.6, kernel="soft", noise=15.0,
                          subtypes=("cle", "ple"), severity=0.7, vessel_points=400, generator="1")
    cases = [sick] + [generate_case(21, i, opts) for i in range(3)]
    cle = np.mean([_rel_height(c, labels.CLE) for c in cases])
    ple = np.mean([_rel_height(c, labels.PLE) for c in cases])
    assert cle > ple + 0.15, (cle, ple)


def test_geometry_written(small, tmp_path):
    write_case(small, tmp_path / "c")
    ct = read_image(tmp_path / "c" / "ct.nii.gz")
    reg = read_image(tmp_path / "c" / "regions.nii.gz")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert ct.same_grid(reg) and ct.same_grid(small.ct)
    assert np.allclose(ct.direction, np.eye(3))
    assert np.allclose(ct.spacing, meta["protocol"]["spacing_mm"])
    assert ct.array.shape == tuple(meta["protocol"]["size_xyz"][::-1])
    assert np.array_equal(ct.array, small.ct.array) and np.array_equal(reg.array, small.regions.array)
    # LPS: the left lung (lobes 1, 2) lies at larger physical x; lung apex towards +z (superior)
    pts = {v: ct.index_to_lps(np.argwhere(reg.array == v)[:, ::-1]).mean(0) for v in (1, 2, 3, 5)}
    assert pts[1][0] > 0 > pts[3][0]
    assert pts[1][2] > pts[2][2] and pts[3][2] > pts[5][2]
    # air outside the body, soft tissue in it, liver below the lungs
    assert ct.array[:, 0, :].mean() < -900


def test_outcomes_follow_burden():
    rng = np.random.default_rng(0)
    healthy = [outcomes(rng, {"cle": 0, "pse": 0, "ple": 0}) for _ in range(200)]
    sick = [outcomes(rng, {"cle": 0.1, "pse": 0.02, "ple": 0.08}) for _ in range(200)]
    assert np.mean([o["fev1_pct_pred"] for o in sick]) < np.mean([o["fev1_pct_pred"] for o in healthy]) - 20
    assert np.mean([o["survival_years"] for o in sick]) < np.mean([o["survival_years"] for o in healthy])
    assert 0 < np.mean([o["event"] for o in healthy]) < 1  # some censored


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "drasclr", "phantom", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "DrasCLRSlicer"), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("bad", [["--size", "0", "96", "72"], ["--n", "-1"], ["--spacing", "0.5", "--generator", "1"],
                                 ["--size", "96", "96", "20", "--thickness", "1"], ["--size", "32", "32", "16"],
                                 ["--healthy-fraction", "2"],
                                 ["--kernel", "blurry"]])
def test_cli_bad_options(tmp_path, bad):
    out = tmp_path / "o"
    r = _cli("-o", str(out), *bad)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_cli_cohort_independent_of_workers(tmp_path):
    args = ["--n", "2", "--seed", "4", "--size", "64", "64", "48", "--spacing", "4.0", "--thickness", "5.0"]
    r = _cli("-o", str(tmp_path / "w2"), *args, "--workers", "2")
    assert r.returncode == 0, r.stderr
    r = _cli("-o", str(tmp_path / "w1"), *args, "--workers", "1")
    assert r.returncode == 0, r.stderr
    for i in range(2):
        for f in ("ct.nii.gz", "regions.nii.gz", "subtypes.nii.gz", "meta.json"):
            a = (tmp_path / "w1" / f"case_{i:03d}" / f).read_bytes()
            assert a == (tmp_path / "w2" / f"case_{i:03d}" / f).read_bytes()
    rows = (tmp_path / "w1" / "cohort.csv").read_text().splitlines()
    assert len(rows) == 3 and "fev1_pct_pred" in rows[0] and "survival_years" in rows[0]
    assert not list((tmp_path / "w1").glob(".*tmp*"))


def test_bundled_demo_case():
    paths = demo_paths()
    if not paths["ct"].exists():
        pytest.skip("demo files not built")
    assert sum(p.stat().st_size for p in paths.values()) < 4_000_000
    ct, reg, sub = (read_image(paths[k]) for k in ("ct", "regions", "subtypes"))
    assert ct.array.dtype == np.int16 and ct.same_grid(sub) and ct.same_grid(reg)
    assert set(np.unique(sub.array)) == {0, 1, 2, 3, 4}
    # the bundled files are what the current generator makes from the demo seed (not stale)
    fresh = demo_case()
    assert fresh.ct.same_grid(ct)
    assert (fresh.regions.array == reg.array).mean() > 0.999
    assert (fresh.subtypes.array == sub.array).mean() > 0.999
    assert np.abs(fresh.ct.array.astype(np.int32) - ct.array).mean() < 1.0
