"""Phantom generator version 2 (realistic HRCT emphysema) and the version option: version 1 rebuilds
bit-identically, meta.json records the version, the air offset simulates a miscalibrated scanner, and the
version-2 subtypes have the density, shape and placement of real emphysema (docs/realism.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from drasclr.core import labels
from drasclr.core.errors import InputError
from drasclr.core.io import read_image
from drasclr.research.phantom import PhantomOptions, generate_case
from drasclr.research.phantom.case import _plan, case_rngs

REPO = Path(__file__).resolve().parents[2]
# small, fast version-2 case with all three subtypes (a coarse grid: the physics, not the resolution, is tested)
SICK2 = PhantomOptions(size=(160, 160, 72), spacing=2.0, thickness=3.0, kernel="soft", noise=20.0,
                       subtypes=("cle", "pse", "ple"), severity=0.8, vessel_points=500, generator="2")

# Recorded from the version-1 code before version 2 existed (commit 9afbe31): sha256 of the ct, regions and
# subtypes arrays (in that order) and of the meta.json text. Version 1 must keep producing exactly these.
V1_CASES = [
    (11, 2, {"size": (96, 96, 72), "spacing": 3.4, "thickness": 3.6, "kernel": "soft", "noise": 15.0,
             "vessel_points": 500},
     "efa3a0151b95912b9d9db146127803f98277e7a31440c894df6b8419729d730a",
     "684c1de5e5704117a552597db5e44a677671c69e7987eae5226336c5c45b2005"),
    (5, 0, {"size": (96, 96, 72), "spacing": 3.4, "thickness": 3.6, "kernel": "sharp", "noise": 45.0,
            "subtypes": ("cle", "pse", "ple"), "severity": 0.8, "vessel_points": 400},
     "220bb3a5f162e055b873825fa60476b419cb010076a542ef015573dcfa029bfd",
     "1ac83501a4e793f3ebecd2cd1e7a5d330003ac455bd92f213ed995291c7a1043"),
]

# Recorded from the version-2 code before version 3 existed (commit 637d966), the same cases and hashes: version 2
# (what the demo models are trained on) must keep producing exactly these.
V2_CASES = [
    (*V1_CASES[0][:3], "df8423a267cd8525c1320d325779c0765ee9c36983c21092e13cc4bbaf99a01f",
     "1eacbfdeee9e9fd0b4c52d40b8fb8010bf229ca179844ec6be87d2820df5870e"),
    (*V1_CASES[1][:3], "a7738a4e8122c317f7713456d52b5fa5eb3b14f321e178c7a9f05c96af7d7f52",
     "659e627408543fbb23146d4a1cd117331de89a2dc86ec09fa253eaf0e29cfb5b"),
]


def _digest(case) -> str:
    h = hashlib.sha256()
    for name in ("ct", "regions", "subtypes"):
        h.update(np.ascontiguousarray(getattr(case, name).array).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def sick2():
    return generate_case(3, 0, SICK2)


@pytest.mark.parametrize("version,seed,index,kw,arrays,meta",
                         [("1", *c) for c in V1_CASES] + [("2", *c) for c in V2_CASES])
def test_old_generators_unchanged(version, seed, index, kw, arrays, meta):
    case = generate_case(seed, index, PhantomOptions(generator=version, **kw))
    assert _digest(case) == arrays
    text = json.dumps(case.meta, indent=1, sort_keys=True) + "\n"  # what write_case writes
    assert hashlib.sha256(text.encode()).hexdigest() == meta
    assert case.meta["generator_version"] == version


@pytest.mark.parametrize("version", ["2", "3"])
def test_hrct_protocol(version):
    assert PhantomOptions().validate().generator == "3"  # the default
    o = PhantomOptions(generator=version).validate()
    for seed in range(6):
        grid, *_ = _plan(case_rngs(seed, 0)[0], o)
        assert (grid.nx, grid.ny) == (512, 512)
        assert 0.6 <= grid.spacing <= 0.95 and grid.thickness <= 1.25
    grid1, *_ = _plan(case_rngs(0, 0)[0], PhantomOptions(generator="1"))
    assert grid1.nx == 256


def test_version_2_labels_and_meta(sick2):
    reg, sub, ct = sick2.regions.array, sick2.subtypes.array, sick2.ct.array
    assert ct.dtype == np.int16 and sub.dtype == np.uint8
    assert np.array_equal(reg > 0, sub > 0)
    assert set(np.unique(reg)) == {0, 1, 2, 3, 4, 5}
    counts = np.bincount(sub.ravel(), minlength=5)
    assert all(counts[k] > 100 for k in (labels.CLE, labels.PSE, labels.PLE)), counts
    m = sick2.meta
    assert m["generator_version"] == "2" and m["options"]["generator"] == "2"
    assert m["protocol"]["air_offset_hu"] == 0.0 and m["disease"]["cle_lobules"] > 0


def test_version_2_density(sick2):
    ct, sub, reg = sick2.ct.array.astype(float), sick2.subtypes.array, sick2.regions.array
    med = {k: np.median(ct[sub == k]) for k in (1, 2, 4)}
    # normal lung near real inspiratory HRCT, CLE darker, PLE darkest and homogeneous
    assert -915 < med[labels.NORMAL] < -860, med
    assert med[labels.NORMAL] > med[labels.CLE] > med[labels.PLE] - 5, med
    ple = ct[sub == labels.PLE]
    assert med[labels.PLE] < -945 and (ple > -500).mean() < 0.01
    # graded CLE, not punched-out holes: no pile-up at a floor, few voxels below -1000
    lung = ct[reg > 0]
    assert (lung <= -1024).mean() < 0.01
    assert (ct[sub == labels.CLE] < -1000).mean() < 0.2
    # air outside the body reads about -1000 HU
    assert abs(np.median(ct[:, 0, :]) + 1000) < 10


def test_version_2_pse_bullae_subpleural_and_large(sick2):
    reg, sub = sick2.regions.array, sick2.subtypes.array
    near = ndi.binary_dilation(ndi.binary_dilation(reg == 0) & (reg > 0), iterations=2)
    lab, n = ndi.label(sub == labels.PSE)
    assert n >= 3
    touching = ndi.maximum(near, lab, index=np.arange(1, n + 1))
    assert touching.mean() > 0.6  # most are subpleural (the rest perifissural)
    vox_ml = float(np.prod(sick2.ct.spacing))
    sizes = np.bincount(lab.ravel())[1:] * vox_ml
    # a 1-2 cm bulla is 0.5-4 ml; version 1 spaces were 0.07-1.4 ml
    assert np.median(sizes) > 300.0, np.median(sizes)


def test_version_2_zones(sick2):
    sub, reg = sick2.subtypes.array, sick2.regions.array
    zs = np.argwhere(reg > 0)[:, 0]

    def rel(k):
        return (np.argwhere(sub == k)[:, 0].mean() - zs.min()) / (zs.max() - zs.min())

    assert rel(labels.PSE) > rel(labels.PLE) + 0.15
    assert rel(labels.CLE) > rel(labels.PLE) + 0.1


def test_air_offset_shifts_every_voxel():
    opts = dict(size=(96, 96, 64), spacing=3.4, thickness=4.0, kernel="sharp", noise=25.0, vessel_points=300,
                healthy_fraction=0.0)
    a = generate_case(2, 1, PhantomOptions(**opts))
    b = generate_case(2, 1, PhantomOptions(air_offset=75.0, **opts))
    assert np.array_equal(a.subtypes.array, b.subtypes.array)
    d = b.ct.array.astype(int) - a.ct.array.astype(int)
    assert (d == 75).mean() > 0.999
    assert abs(np.median(b.ct.array[:, 0, :]) + 925) < 10
    assert b.meta["protocol"]["air_offset_hu"] == 75.0 and b.meta["options"]["air_offset"] == 75.0
    v1 = generate_case(2, 1, PhantomOptions(generator="1", air_offset=-50.0, **opts))
    assert v1.meta["options"]["air_offset"] == -50.0


@pytest.mark.parametrize("kw", [{"air_offset": 101.0}, {"air_offset": -150.0}, {"generator": "4"}])
def test_bad_options(kw):
    with pytest.raises(InputError):
        PhantomOptions(**kw).validate()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "drasclr", "phantom", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "DrasCLRSlicer"), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("bad", [["--air-offset", "150"], ["--generator", "4"], ["--spacing", "0.4"]])
def test_cli_bad_options_v2(tmp_path, bad):
    out = tmp_path / "o"
    r = _cli("-o", str(out), *bad)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_cli_records_version_and_offset(tmp_path):
    base = ["--n", "1", "--seed", "4", "--size", "64", "64", "48", "--spacing", "4.0", "--thickness", "5.0"]
    r = _cli("-o", str(tmp_path / "v2"), *base, "--air-offset", "-40")
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "v2" / "case_000" / "meta.json").read_text())
    assert meta["generator_version"] == "3" and meta["protocol"]["air_offset_hu"] == -40.0  # the default
    cohort = json.loads((tmp_path / "v2" / "meta.json").read_text())
    assert cohort["generator_version"] == "3" and cohort["air_offset_hu"] == -40.0
    ct = read_image(tmp_path / "v2" / "case_000" / "ct.nii.gz").array
    assert abs(np.median(ct[:, 0, :]) + 1040) < 10  # air outside the body moved by the offset
