"""Acquisition harmonization (drasclr.acquisition.harmonize) and the bench's perturbations
(drasclr.acquisition.perturb): the noise and
texture measurement, a sharp/noisy scan brought back to the training noise look, a clean scan left alone, lower
dose with the scan's own texture, thicker slices, and the analyze flag."""

import json
import subprocess
import sys

import numpy as np
import pytest

from drasclr.acquisition import harmonize as H
from drasclr.acquisition.perturb import add_gradient, lower_dose, thicker_slices
from drasclr.analysis.stats import HARMONIZED_COLUMNS
from drasclr.core.image import CTImage
from drasclr.core.io import write_image
from drasclr.research.phantom.acquisition import blur, ct_noise

SP = 0.8  # mm in-plane
SOFT = (0.3, 0.0)  # fc lp/mm, edge enhancement: a soft kernel
LUNG = (0.85, 0.9)  # the sharp lung kernel


def chest(noise_sd: float = 0.0, kernel=SOFT, seed: int = 0, nz: int = 8,
          slice_mm: float = 2.0) -> tuple[CTImage, np.ndarray]:
    """A clean body (40 HU) with two lungs (-870 HU) and small vessels, blurred by ``kernel`` and given ``noise_sd``
    HU of that kernel's noise -> (ct, lung mask)."""
    ny = nx = 192
    y, x = np.mgrid[:ny, :nx].astype(np.float32)
    body = ((x - nx / 2) / 85) ** 2 + ((y - ny / 2) / 70) ** 2 < 1
    lung = np.zeros((ny, nx), bool)
    for cx in (0.3 * nx, 0.7 * nx):
        lung |= ((x - cx) / 30) ** 2 + ((y - ny / 2) / 45) ** 2 < 1
    sl = np.where(body, 40.0, -1000.0).astype(np.float32)
    sl[lung] = -870.0
    rng = np.random.default_rng(seed)
    for cy, cx in rng.uniform((60, 40), (130, 150), (40, 2)):
        dots = (x - cx) ** 2 + (y - cy) ** 2 < 4
        sl[dots & lung] = 40.0
    a = np.repeat(sl[None], nz, 0)
    a = blur(a, SP, *kernel)
    if noise_sd:
        a = a + ct_noise(a.shape, SP, *kernel, noise_sd, rng)
    ct = CTImage(np.rint(a).astype(np.int16), spacing=(SP, SP, slice_mm))
    return ct, np.repeat(lung[None], nz, 0)


def test_measure_noise_sd_and_texture():
    soft, lung = chest(20.0, SOFT)
    sharp, _ = chest(20.0, LUNG)
    ms, mh = H.measure(soft), H.measure(sharp)
    assert ms.tissue_sd_hu == pytest.approx(20.0, rel=0.25)
    assert mh.tissue_sd_hu == pytest.approx(20.0, rel=0.25)
    # texture: the soft kernel's grain is coarse (high lag-1 autocorrelation), the lung kernel's fine
    assert ms.autocorr > mh.autocorr + 0.3
    # the lung kernel puts its noise into the fine bands, the soft one into the coarse
    assert mh.band_sd_hu[0] / mh.band_sd_hu[2] > 2.5 * ms.band_sd_hu[0] / ms.band_sd_hu[2]
    clean = H.measure(chest(0.0, SOFT)[0])
    assert clean.tissue_sd_hu < 3.0


def test_sharp_noisy_scan_is_brought_to_the_training_look():
    noisy, lung = chest(60.0, LUNG, seed=1)  # a real L kernel's noise level
    lung_img = noisy.with_array(lung.astype(np.uint8))
    out, rec = H.harmonize(noisy, lung_img, "auto")
    assert rec.applied and out.array.dtype == noisy.array.dtype
    assert rec.before.tissue_sd_hu > 45
    # every fine band ends near (at most about) its partial target: target^s x measured^(1-s), s = STRENGTH
    for got, before, target in zip(rec.after.band_sd_hu, rec.before.band_sd_hu, H.TARGET_BAND_SD):
        assert got < 1.3 * min(before, target ** H.STRENGTH * before ** (1 - H.STRENGTH))
    assert rec.band_gains == pytest.approx([min(1, t / b) ** H.STRENGTH for t, b in
                                            zip(H.TARGET_BAND_SD, rec.before.band_sd_hu)])
    assert rec.after.tissue_sd_hu < 0.5 * rec.before.tissue_sd_hu
    # LAA-950 of the normal lung: the noise's false low-attenuation area is gone, the density kept
    lv_raw, lv_h = noisy.array[lung], out.array[lung]
    assert (lv_raw < -950).mean() > 0.05 and (lv_h < -950).mean() < 0.02
    clean_h = H.apply_gains(chest(0.0, LUNG)[0], rec.band_gains).array[lung]  # the same filter without noise
    assert abs(float(np.median(lv_h)) - float(np.median(clean_h))) < 15
    json.dumps(rec.to_json())  # JSON-ready for stats.json


def test_how_many_thin_noisy_slices_are_averaged():
    m = lambda sd: H.NoiseMeasure(sd, [1.0, 1.0, 1.0], 0.0, None, 1000)  # noqa: E731
    assert H.THROUGH_NOISE_HU == 30.0 and H.THROUGH_MAX_MM == 3.2
    assert H.slices_to_average(m(105.0), 1.0) == 3  # three 1 mm slices fit in 3.2 mm
    assert H.slices_to_average(m(120.0), 0.625) == 5  # three leave it at 69 HU; five fit
    assert H.slices_to_average(m(150.0), 0.5) == 5  # six fit: odd, so five at most
    assert H.slices_to_average(m(45.0), 0.5) == 3  # the fewest that reach the limit
    assert H.slices_to_average(m(100.0), 1.25) == 1  # three would be 3.75 mm
    assert H.slices_to_average(m(150.0), 2.0) == 1  # thick slices: never
    assert H.slices_to_average(m(H.THROUGH_NOISE_HU), 0.6) == 1  # at the limit: not noisy
    assert H.slices_to_average(m(None), 0.6) == 1


def test_thin_noisy_slices_are_averaged_through_the_plane_before_the_bands(monkeypatch):
    noisy, lung = chest(100.0, LUNG, seed=3, nz=12, slice_mm=1.0)  # a low-dose lung-kernel 1 mm HRCT
    lung_img = noisy.with_array(lung.astype(np.uint8))
    out, rec = H.harmonize(noisy, lung_img, "auto")
    assert rec.applied and rec.slices_averaged == 3 and out.array.dtype == noisy.array.dtype
    # slice-to-slice independent noise falls with the square root of the count; the gains answer what is left
    assert rec.averaged.tissue_sd_hu == pytest.approx(rec.before.tissue_sd_hu / np.sqrt(3), rel=0.2)
    assert rec.band_gains == pytest.approx([min(1, t / b) ** H.STRENGTH for t, b in
                                            zip(H.TARGET_BAND_SD, rec.averaged.band_sd_hu)])
    tp = rec.to_json()["through_plane"]
    assert tp["slices_averaged"] == 3 and tp["averaged_mm"] == pytest.approx(3.0) and tp["max_mm"] == 3.2
    assert "averaged through the plane" in rec.reason
    json.dumps(rec.to_json())
    line = H.describe(rec.to_json())  # what the shells and the terminal show
    assert line.startswith("Harmonized for the model (soft-tissue noise 99 HU -> ") and "3 slices averaged" in line
    assert "(3.0 mm)" in line and "fine bands scaled x 0." in line
    # the density rule counts on the scan harmonized by the bands alone, as it was without the averaging
    box = H.lung_box(noisy, lung_img)
    expect = H.apply_gains(noisy, H.gains(rec.before, strength=H.STRENGTH), box)
    np.testing.assert_array_equal(rec.counted.array, expect.array)
    # the in-plane detail (vessels the same on every slice) is kept better than by the bands alone, which must cut
    # the fine bands further for the same noise
    monkeypatch.setattr(H, "THROUGH_NOISE_HU", 1e9)
    bands_only, rec_b = H.harmonize(noisy, lung_img, "auto")
    assert rec_b.slices_averaged == 1 and min(rec_b.band_gains) < min(rec.band_gains) and rec_b.counted is None
    np.testing.assert_array_equal(bands_only.array, rec.counted.array)
    clean = chest(0.0, LUNG, seed=3, nz=12, slice_mm=1.0)[0].array.astype(float)
    inner = (slice(2, -2),)  # away from the end slices (repeated past the scan's ends)
    err = lambda a: float(np.abs(a[inner].astype(float) - clean[inner])[lung[inner]].mean())  # noqa: E731
    assert err(out.array) < 0.85 * err(bands_only.array)
    # the same noise on 2 mm slices: three of them would be 6 mm, so the bands alone
    thick, lung2 = chest(100.0, LUNG, seed=3, nz=8)
    monkeypatch.undo()
    _, rec2 = H.harmonize(thick, thick.with_array(lung2.astype(np.uint8)), "auto")
    assert rec2.applied and rec2.slices_averaged == 1 and rec2.averaged is None


def test_clean_soft_scan_is_left_unchanged_and_off_only_measures():
    ct, lung = chest(8.0, SOFT)
    out, rec = H.harmonize(ct, None, "auto")
    assert not rec.applied and out is ct and rec.before.tissue_sd_hu is not None and H.describe(rec.to_json()) == ""
    noisy, _ = chest(60.0, LUNG)
    out, rec = H.harmonize(noisy, None, "off")
    assert out is noisy and not rec.applied and rec.before.tissue_sd_hu > 45


def test_lower_dose_doubles_the_noise_sd_with_the_scans_texture():
    for kernel in (SOFT, LUNG):
        ct, _ = chest(20.0, kernel)
        before = H.measure(ct)
        after = H.measure(lower_dose(ct, 4.0, seed=3))
        assert after.tissue_sd_hu / before.tissue_sd_hu == pytest.approx(2.0, rel=0.2)
        for b0, b1 in zip(before.band_sd_hu, after.band_sd_hu):  # the same spectrum, band by band
            assert b1 / b0 == pytest.approx(2.0, rel=0.25)


def test_thicker_slices_and_gradient():
    ct, lung = chest(10.0, SOFT, nz=10)
    thick = thicker_slices(ct, 4.0)
    assert thick.array.shape[0] == 5 and thick.spacing[2] == 4.0
    expect = ct.array[:2].astype(np.float32).mean(0)
    assert np.abs(thick.array[0] - np.rint(expect)).max() <= 1
    g = add_gradient(ct, lung, 60.0)
    d = (g.array.astype(np.int32) - ct.array)[lung.astype(bool)]
    assert d.min() >= 0 and d.max() >= 59 and not np.any((g.array != ct.array) & ~lung)


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_analyze_flag(tmp_path, mode):
    ct, _ = chest(60.0, LUNG, nz=40)  # a sharp-kernel scan at a real L kernel's noise
    write_image(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, "-m", "drasclr", "analyze", str(tmp_path / "ct.nii.gz"), "-o", str(out),
                           "--no-model", "--regions", "zones", "--quiet", "--harmonize", mode],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.load(open(out / "stats.json"))
    h = doc["harmonization"]
    assert h["mode"] == mode and h["before"]["tissue_sd_hu"] > 45 and h["applied"] == (mode == "auto")
    assert h["summary"].startswith("Harmonized for the model") == (mode == "auto")
    assert "slices averaged" not in h["summary"]  # 2 mm slices: the bands alone
    whole = {r["region"]: r for r in doc["regions"]}["whole_lung"]
    if mode == "auto":  # the raw contract columns, then the harmonized ones
        assert doc["columns"][-len(HARMONIZED_COLUMNS):] == HARMONIZED_COLUMNS
        assert "harmonized_laa950_pct" in open(out / "stats.csv").readline()
        assert whole["laa950_pct"] > 5 and whole["harmonized_laa950_pct"] < 2
    else:
        assert not any(c.startswith("harmonized_") for c in doc["columns"])


def test_analyze_counts_the_density_rule_on_the_band_only_scan(tmp_path, monkeypatch):
    """End to end with a subtype model and its card's rule on a thin noisy scan: the model reads the averaged scan,
    the rule counts on the scan harmonized by the bands alone, and stats.json says what was done."""
    import torch

    from drasclr.analysis.analyze import analyze, write_analysis
    from drasclr.analysis.loaded_model import LoadedModel
    from drasclr.core.settings import AnalysisSettings
    from drasclr.dense import uncertainty
    from drasclr.dense.density import DensityVeto
    from drasclr.dense.segmenter import SubtypeSegmenter

    torch.manual_seed(0)
    tiny = SubtypeSegmenter(encoder={"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1},
                            decoder=(8, 8, 8, 4, 4))
    seen = {}
    real = uncertainty.map_to_ct

    def spy(probabilities, ct, lungs, *args, **kw):
        seen.update(ct=ct, lungs=lungs, counted=kw.get("counted"))
        return real(probabilities, ct, lungs, *args, **kw)

    monkeypatch.setattr(uncertainty, "map_to_ct", spy)
    ct, _ = chest(90.0, LUNG, seed=5, nz=60, slice_mm=1.0)
    card = {"inference": {"density_veto": DensityVeto().card()}}
    res = analyze(ct, model=LoadedModel(tiny, card, None, torch.device("cpu")),
                  settings=AnalysisSettings(tta=False, regions="zones"))
    assert res.harmonization["through_plane"]["slices_averaged"] == 3 and res.density_veto is not None
    assert seen["counted"] is not None and seen["counted"].array.shape == seen["ct"].array.shape
    # the rule's scan is the calibrated scan harmonized by the bands alone (as before the averaging existed); the
    # model's is the averaged one, less noisy
    monkeypatch.setattr(H, "THROUGH_NOISE_HU", 1e9)
    bands_only, rec = H.harmonize(res.ct, res.lungs, "auto")
    assert rec.slices_averaged == 1
    np.testing.assert_array_equal(seen["counted"].array, bands_only.array)
    assert H.measure(seen["ct"], seen["lungs"]).tissue_sd_hu < H.measure(bands_only, seen["lungs"]).tissue_sd_hu
    write_analysis(res, tmp_path / "out", report=False)
    h = json.loads((tmp_path / "out" / "stats.json").read_text())["harmonization"]
    assert "3 slices averaged through the plane" in h["summary"] and h["through_plane"]["averaged_mm"] == 3.0


def test_analyze_flag_refuses_a_bad_mode(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "drasclr", "analyze", str(tmp_path / "x.nii.gz"), "-o",
                           str(tmp_path / "r"), "--harmonize", "strong"], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "r").exists()


def test_noise_measure_in_slabs_on_two_threads_is_one_threads(monkeypatch):
    """measure() runs its in-plane steps in slabs on the analysis' threads: the very same numbers as in one piece."""
    from drasclr.core import threads

    ct, lungs = chest(noise_sd=60.0, kernel=LUNG, nz=12)
    lung_image = ct.with_array(lungs.astype(np.uint8))
    got = {}
    for n in (1, 2):
        monkeypatch.setattr(threads, "cpu_workers", lambda n=n: n)
        got[n] = H.measure(ct, lung_image).to_json()
    assert got[1] == got[2] and got[1]["band_sd_hu"] is not None
