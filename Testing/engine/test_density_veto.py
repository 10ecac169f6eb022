"""Density consistency (drasclr.dense.density): emphysema called where the lung has normal density turns normal,
emphysema on low-attenuation lung stays, and a model opts in through its card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drasclr.core import labels
from drasclr.core.image import CTImage
from drasclr.dense.density import DensityVeto, local_low_attenuation


def _lung_with_a_bulla():
    """A 40 x 80 x 80 block of lung at 1 x 1 x 2.5 mm: normal density (-860 HU) with a -980 HU focus on the left
    half; a subtype map that calls CLE on both halves (one call right, one wrong) and PLE on a thin strip."""
    ct = np.full((40, 80, 80), -860, np.int16)
    ct[10:30, 20:60, 5:35] = -980
    sub = np.full(ct.shape, labels.NORMAL, np.uint8)
    sub[10:30, 20:60, 5:35] = labels.CLE  # on the low-attenuation focus: kept
    sub[10:30, 20:60, 50:75] = labels.CLE  # on normal-density lung: vetoed
    sub[:, :, 0] = labels.OUTSIDE
    img = CTImage(ct, spacing=(1.0, 1.0, 2.5))
    return img, img.with_array(sub)


def test_local_low_attenuation_is_the_lung_fraction_below_950():
    ct, sub = _lung_with_a_bulla()
    laa = local_low_attenuation(ct, sub.array > 0)
    assert laa[20, 40, 20] == pytest.approx(1.0) and laa[20, 40, 62] == pytest.approx(0.0)
    assert 0.2 < laa[20, 40, 37] < 0.8  # the border of the focus: a share


def test_veto_turns_normal_density_emphysema_normal_and_counts_it():
    ct, sub = _lung_with_a_bulla()
    out, info = DensityVeto().apply(sub, ct)
    assert (out.array[12:28, 25:55, 8:30] == labels.CLE).all()  # inside the focus (its corners may go)
    assert (out.array[10:30, 20:60, 50:75] == labels.NORMAL).all()
    assert (out.array == labels.OUTSIDE).sum() == (sub.array == labels.OUTSIDE).sum()  # the lung is the lung
    changed = int((out.array != sub.array).sum())
    assert info["vetoed_voxels"] == {"cle": changed, "pse": 0, "ple": 0} and changed >= 20 * 40 * 25
    assert info["min_laa950"] == 0.15 and info["window_mm"] == [10.0, 20.0, 20.0]
    # the filter runs over the lung's bounding box only: the same map as over the whole volume
    padded_ct = CTImage(np.pad(ct.array, 12, constant_values=-1000), spacing=(1.0, 1.0, 2.5))
    padded_sub = padded_ct.with_array(np.pad(sub.array, 12))
    full = padded_sub.array.copy()
    emph = full >= labels.CLE
    full[emph & (local_low_attenuation(padded_ct, full > 0) < 0.15)] = labels.NORMAL
    np.testing.assert_array_equal(DensityVeto().apply(padded_sub, padded_ct)[0].array, full)


def test_the_card_decides_unless_told():
    card = {"inference": {"density_veto": {"min_laa950": 0.3, "window_mm": [5, 10, 10]}}}
    assert DensityVeto.from_card({}) is None and DensityVeto.from_card(None) is None
    assert DensityVeto.from_card(card) == DensityVeto(0.3, (5.0, 10.0, 10.0))
    assert DensityVeto.for_analysis(None, card) == DensityVeto(0.3, (5.0, 10.0, 10.0))
    assert DensityVeto.for_analysis(None, {}) is None  # a model without the rule in its card: untouched maps
    assert DensityVeto.for_analysis(False, card) is None
    assert DensityVeto.for_analysis(True, {}) == DensityVeto()


@pytest.mark.slow
def test_analyze_applies_the_cards_rule_and_records_it(tmp_path):
    import torch

    from drasclr.analysis.analyze import analyze, write_analysis
    from drasclr.analysis.loaded_model import LoadedModel
    from drasclr.core.settings import AnalysisSettings
    from drasclr.dense.segmenter import SubtypeSegmenter
    from synthetic import synthetic_chest

    torch.manual_seed(0)
    tiny = SubtypeSegmenter(encoder={"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1},
                            decoder=(8, 8, 8, 4, 4))
    with torch.no_grad():  # a model that calls PLE everywhere: on a healthy lung every call is false
        tiny.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0]))
    ct, _ = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0))  # normal-density lungs
    card = {"inference": {"density_veto": DensityVeto().card()}}
    settings = AnalysisSettings(tta=False, regions="zones")
    res = analyze(ct, model=LoadedModel(tiny, card, None, torch.device("cpu")), settings=settings)
    plain = analyze(ct, model=LoadedModel(tiny, {}, None, torch.device("cpu")), settings=settings)
    lung = res.subtypes.array > 0
    called = (plain.subtypes.array[lung] == labels.PLE).mean()
    assert called > 0.9  # without the rule: PLE everywhere
    assert (res.subtypes.array[lung] == labels.PLE).mean() < called / 2
    assert res.density_veto["vetoed_voxels"]["ple"] == int(((plain.subtypes.array == labels.PLE)
                                                              & (res.subtypes.array == labels.NORMAL)).sum())
    whole = next(r for r in res.rows if r["region"] == "whole_lung")
    assert whole["ple_pct"] == pytest.approx(100 * (res.subtypes.array[lung] == labels.PLE).mean(), abs=1e-3)
    write_analysis(res, tmp_path / "out", report=False)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["density_veto"]["vetoed_voxels"]["ple"] == res.density_veto["vetoed_voxels"]["ple"]
    assert "density_veto" not in plain.__dict__ or plain.density_veto is None
    np.testing.assert_array_equal(res.subtypes.array > 0, plain.subtypes.array > 0)


def _lung_with_a_faint_focus():
    """Normal-density lung (-860 HU) with a faint focus: 8 % of its voxels at -980 HU (a real mild CLE's share);
    a map calling CLE on one half of the focus and PLE on the other."""
    ct = np.full((40, 80, 80), -860, np.int16)
    rng = np.random.default_rng(0)
    focus = np.zeros(ct.shape, bool)
    focus[5:35, 10:70, 10:70] = True
    ct[focus & (rng.random(ct.shape) < 0.08)] = -980
    sub = np.full(ct.shape, labels.NORMAL, np.uint8)
    sub[12:28, 25:55, 15:40] = labels.CLE
    sub[12:28, 25:55, 40:65] = labels.PLE
    sub[:, :, 0] = labels.OUTSIDE
    img = CTImage(ct, spacing=(1.0, 1.0, 2.5))
    return img, img.with_array(sub)


def test_a_subtype_can_have_its_own_threshold():
    ct, sub = _lung_with_a_faint_focus()
    shipped = DensityVeto().apply(sub, ct)[0].array
    assert (shipped[12:28, 25:55, 15:65] == labels.NORMAL).all()  # 8 % < 15 %: every call turned normal
    loose = DensityVeto(by_subtype=(("cle", 0.04),))
    out, info = loose.apply(sub, ct)
    assert (out.array[12:28, 25:55, 15:40] == labels.CLE).all()  # CLE needs 4 % only: kept
    assert (out.array[12:28, 25:55, 40:65] == labels.NORMAL).all()  # PLE still needs 15 %
    assert info["min_laa950_by_subtype"] == {"cle": 0.04} and info["vetoed_voxels"]["cle"] == 0
    # the same thresholds for all: the same map as the single threshold
    same = DensityVeto(by_subtype=(("cle", 0.15), ("ple", 0.15), ("pse", 0.15))).apply(sub, ct)[0].array
    np.testing.assert_array_equal(same, shipped)
    # the card round trip, and a subtype the rule does not know is refused
    card = {"inference": {"density_veto": loose.card()}}
    assert DensityVeto.from_card(json.loads(json.dumps(card))) == loose
    with pytest.raises(ValueError, match="unknown subtype"):
        DensityVeto.from_card({"inference": {"density_veto": {"min_laa950_by_subtype": {"normal": 0.1}}}})


def test_map_to_ct_applies_a_subtype_threshold_as_the_rule_on_a_map_does():
    from drasclr.dense.predict import ProbabilityMap
    from drasclr.dense.uncertainty import map_to_ct

    ct, sub = _lung_with_a_faint_focus()
    probs = np.zeros((5, *ct.array.shape), np.float32)  # one-hot probabilities of the map, on the CT's own grid
    for c in range(1, 5):
        probs[c] = sub.array == c
    lungs = sub.with_array((sub.array > 0).astype(np.uint8))
    rule = DensityVeto(by_subtype=(("cle", 0.04),))
    mapped, _, info = map_to_ct(ProbabilityMap(probs, ct), ct, lungs, veto=rule, kind="entropy")
    np.testing.assert_array_equal(mapped.array, rule.apply(sub, ct)[0].array)
    assert info["vetoed_voxels"]["ple"] == int((sub.array == labels.PLE).sum()) and info["vetoed_voxels"]["cle"] == 0


def test_map_to_ct_counts_the_rule_on_the_scan_it_is_given():
    """``counted``: the rule's densities come from that scan (analyze: the scan harmonized by the bands alone when
    thin noisy slices were averaged), the labels' grid from ``ct``."""
    from drasclr.dense.predict import ProbabilityMap
    from drasclr.dense.uncertainty import map_to_ct

    ct, sub = _lung_with_a_faint_focus()
    probs = np.zeros((5, *ct.array.shape), np.float32)
    for c in range(1, 5):
        probs[c] = sub.array == c
    lungs = sub.with_array((sub.array > 0).astype(np.uint8))
    rule = DensityVeto()
    dark = ct.with_array(np.where(sub.array > 1, -1000, ct.array).astype(ct.array.dtype))  # every call dense enough
    on_ct, _, info_ct = map_to_ct(ProbabilityMap(probs, ct), ct, lungs, veto=rule, kind="entropy")
    on_dark, _, info_dark = map_to_ct(ProbabilityMap(probs, ct), ct, lungs, veto=rule, kind="entropy", counted=dark)
    assert sum(info_ct["vetoed_voxels"].values()) > 0 and sum(info_dark["vetoed_voxels"].values()) == 0
    np.testing.assert_array_equal(on_dark.array, sub.array)
    np.testing.assert_array_equal(on_ct.array, rule.apply(sub, ct)[0].array)


def test_the_rule_can_count_below_another_attenuation():
    """``laa_hu``: a focus at -960 HU holds no lung below -970 HU, so a rule counted there turns the call on it that
    the -950 HU rule keeps; a focus at -990 HU passes both. The card carries the cut only when it is not -950 (the
    default rule's record is as it always was) and refuses one that is not a low attenuation."""
    ct, sub = _lung_with_a_bulla()
    arr = ct.array.copy()
    arr[10:30, 20:60, 5:35] = -960
    mid = ct.with_array(arr)
    focus = (slice(12, 28), slice(25, 55), slice(8, 30))
    assert (DensityVeto().apply(sub, mid)[0].array[focus] == labels.CLE).all()
    out, info = DensityVeto(laa_hu=-970.0).apply(sub, mid)
    assert (out.array[focus] == labels.NORMAL).all() and info["laa_hu"] == -970.0
    assert (DensityVeto(laa_hu=-970.0).apply(sub, ct)[0].array[focus] == labels.CLE).all()  # -980 HU: kept
    assert "laa_hu" not in DensityVeto().card()
    card = {"inference": {"density_veto": DensityVeto(0.02, laa_hu=-970.0).card()}}
    assert DensityVeto.from_card(json.loads(json.dumps(card))) == DensityVeto(0.02, laa_hu=-970.0)
    with pytest.raises(ValueError, match="laa_hu"):
        DensityVeto.from_card({"inference": {"density_veto": {"min_laa950": 0.02, "laa_hu": -400}}})


def test_record_evaluation_writes_the_cut_into_the_card_and_refuses_a_bad_one(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "record_evaluation.py"
    card = tmp_path / "model.json"
    card.write_text(json.dumps({"name": "m", "inference": {}}))

    def run(*args):
        return subprocess.run([sys.executable, str(script), str(tmp_path), *args], capture_output=True, text=True,
                              timeout=120)

    assert run("--density-veto", "0.02", "--density-veto-hu=-970").returncode == 0
    rule = json.loads(card.read_text())["inference"]["density_veto"]
    assert rule["laa_hu"] == -970.0 and rule["min_laa950"] == 0.02
    before = card.read_text()
    bad = run("--density-veto", "0.02", "--density-veto-hu=-300")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and card.read_text() == before


def test_map_to_ct_counts_below_the_cards_attenuation_as_the_rule_on_a_map_does():
    from drasclr.dense.predict import ProbabilityMap
    from drasclr.dense.uncertainty import map_to_ct

    ct, sub = _lung_with_a_bulla()
    arr = ct.array.copy()
    arr[10:30, 20:60, 5:35] = -960  # kept at -950 HU, turned at -970 HU
    mid = ct.with_array(arr)
    probs = np.zeros((5, *arr.shape), np.float32)
    for c in range(1, 5):
        probs[c] = sub.array == c
    lungs = sub.with_array((sub.array > 0).astype(np.uint8))
    rule = DensityVeto(0.02, laa_hu=-970.0)
    mapped, _, info = map_to_ct(ProbabilityMap(probs, mid), mid, lungs, veto=rule, kind="entropy")
    np.testing.assert_array_equal(mapped.array, rule.apply(sub, mid)[0].array)
    assert info["laa_hu"] == -970.0 and info["vetoed_voxels"]["cle"] == int((sub.array == labels.CLE).sum())


def _noisy_normal_lung_with_a_focus(seed: int = 0):
    """Normal lung at -860 HU with white noise of SD 60 HU (a sharp kernel at low dose puts single voxels below
    -950 HU everywhere), a -1000 HU focus (a true low-attenuation area, 20 x 20 mm), CLE called on both."""
    rng = np.random.default_rng(seed)
    ct = np.rint(rng.normal(-860, 60, (20, 80, 80))).astype(np.int16)
    ct[5:15, 20:40, 5:25] = np.rint(rng.normal(-1000, 60, (10, 20, 20))).astype(np.int16)
    sub = np.full(ct.shape, labels.CLE, np.uint8)
    sub[:, :, 0] = labels.OUTSIDE
    img = CTImage(ct, spacing=(1.0, 1.0, 2.5))  # x y z: 1 mm in-plane, 2.5 mm slices
    return img, img.with_array(sub)


def test_a_rule_on_the_smoothed_scan_does_not_count_noise_as_low_attenuation():
    """``smooth_mm``: on noisy normal lung about 7 % of voxels fall below -950 HU by noise alone, so the unsmoothed
    share there passes a low threshold; smoothed in-plane at 1 mm the noise no longer reaches -950 HU, while the
    -1000 HU focus stays below it. Only the smoothed rule keeps the call on the focus and turns the one beside it."""
    ct, sub = _noisy_normal_lung_with_a_focus()
    lung = sub.array > 0
    raw = local_low_attenuation(ct, lung, hu=-950.0)
    smooth = local_low_attenuation(ct, lung, hu=-950.0, smooth_mm=1.0)
    normal, focus = (10, 60, 60), (10, 30, 15)
    assert 0.04 < raw[normal] < 0.12 and smooth[normal] < 0.01
    assert raw[focus] > 0.7 and smooth[focus] > 0.85  # the focus edge blurs into the lung beside it
    rule = DensityVeto(0.04, smooth_mm=1.0)
    out = rule.apply(sub, ct)[0].array
    assert out[focus] == labels.CLE and out[normal] == labels.NORMAL
    assert DensityVeto(0.04).apply(sub, ct)[0].array[normal] == labels.CLE  # unsmoothed: noise passes
    # smoothing stays within each slice: a slice's share does not depend on the slices beside it
    from drasclr.dense.density import smoothed_below

    one = CTImage(np.ascontiguousarray(ct.array[3:4]), spacing=ct.spacing)
    np.testing.assert_array_equal(smoothed_below(one, -950.0, 1.0)[0], smoothed_below(ct, -950.0, 1.0)[3])


def test_the_smoothing_travels_in_the_card_and_is_checked():
    assert "smooth_mm" not in DensityVeto().card()  # the default rule's record as it always was
    rule = DensityVeto(0.08, smooth_mm=1.0)
    card = {"inference": {"density_veto": rule.card()}}
    assert DensityVeto.from_card(json.loads(json.dumps(card))) == rule and rule.card()["smooth_mm"] == 1.0
    for bad in (-1.0, 50.0):
        with pytest.raises(ValueError, match="smooth_mm"):
            DensityVeto.from_card({"inference": {"density_veto": {"min_laa950": 0.08, "smooth_mm": bad}}})
