"""Scanner HU calibration: outside/tracheal air and blood measured, an air offset corrected before lung masking,
densitometry and the model (drasclr.anatomy.hu_calibration), on phantoms with a simulated offset and on real CTs."""

from __future__ import annotations

import numpy as np
import pytest

from drasclr.analysis.stats import region_stats
from drasclr.anatomy import hu_calibration as C
from drasclr.anatomy.lungs import segment_lungs
from drasclr.anatomy.regions import zones_from_lungs
from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import read_ct
from drasclr.research.phantom import PhantomOptions, generate_case
from realdata import REAL_CTS, real_ct_path

# small but with all three subtypes, so the lung holds plenty of voxels near -950 HU
SICK = PhantomOptions(size=(112, 112, 80), spacing=3.0, thickness=3.2, kernel="soft", noise=15.0,
                      subtypes=("cle", "pse", "ple"), severity=0.8, vessel_points=500)


def shifted(ct: CTImage, offset: float) -> CTImage:
    """A miscalibrated twin: every voxel read ``offset`` HU too high (what phantom --air-offset simulates)."""
    return ct.with_array((ct.array.astype(np.int32) + int(offset)).astype(np.int16))


@pytest.fixture(scope="module")
def phantom() -> CTImage:
    return generate_case(31, 0, SICK).ct


def whole_lung(ct: CTImage, lungs: CTImage) -> dict:
    return region_stats(ct, zones_from_lungs(lungs))[-1]


def test_outside_air_on_phantom_and_its_shifted_twin(phantom):
    m = C.measure_outside_air(phantom)
    assert m is not None and m.usable
    assert abs(m.median_hu - C.AIR_HU) <= 3.0
    assert m.volume_ml > 100
    for off in (75, -60):
        s = C.measure_outside_air(shifted(phantom, off))
        assert abs(s.median_hu - (m.median_hu + off)) <= 1.0


@pytest.mark.parametrize("offset", [75, -60])
def test_auto_restores_the_calibrated_twin(phantom, offset):
    """+75 / -60 HU off: auto mode corrects before lung masking; lungs and LAA-950 equal the calibrated twin's."""
    ref_ct, ref_lungs, ref_cal = C.calibrate_and_segment(phantom, "auto")
    assert not ref_cal.corrected and ref_cal.warnings == [] and ref_ct is phantom
    used, lungs, cal = C.calibrate_and_segment(shifted(phantom, offset), "auto")
    assert cal.reference == "outside_air" and cal.corrected
    assert abs(cal.applied_hu - offset) <= 1.0 and abs(cal.agreement_hu) <= C.AGREE_HU
    diff = np.abs(used.array.astype(np.int32) - phantom.array.astype(np.int32))
    assert diff.max() <= 1  # the corrected image is the twin (to the rounding of a fractional median)
    assert np.count_nonzero(lungs.array != ref_lungs.array) <= 1e-4 * ref_lungs.array.size
    a, b = whole_lung(used, lungs), whole_lung(phantom, ref_lungs)
    assert a["laa950_pct"] > 5.0  # a lung with emphysema: the comparison means something
    for col in ("laa950_pct", "laa910_pct", "laa856_pct"):
        assert abs(a[col] - b[col]) <= 0.5, col
    assert abs(a["perc15_hu"] - b["perc15_hu"]) <= 1.5
    # the blood pool is found on both and reads the offset higher on the miscalibrated scan (reported as read)
    assert ref_cal.blood is not None and cal.blood is not None
    assert abs(cal.blood.median_hu - ref_cal.blood.median_hu - offset) <= 5
    assert cal.blood.note == ref_cal.blood.note


@pytest.mark.parametrize("offset", [40.0, 75.0])
def test_phantom_air_offset_option_is_undone(offset):
    """The generator's own miscalibrated scanner (`drasclr phantom --air-offset 40 / 75`, generator 2: no -1024
    floor; outside and tracheal air both off): auto calibration gives back the calibrated phantom of the same seed,
    LAA-950 within 0.5 points."""
    import dataclasses

    twin = generate_case(31, 0, SICK).ct
    off = generate_case(31, 0, dataclasses.replace(SICK, air_offset=offset)).ct
    assert abs(float(np.median(off.array)) - float(np.median(twin.array)) - offset) <= 1
    used, lungs, cal = C.calibrate_and_segment(off, "auto")
    assert cal.reference == "outside_air" and abs(cal.applied_hu - offset) <= 1 and cal.warnings == []
    assert abs(cal.tracheal_air.median_hu - (C.AIR_HU + offset)) <= C.AGREE_HU
    assert np.abs(used.array.astype(np.int32) - twin.array).max() <= 1
    ref_lungs = segment_lungs(twin)
    a, b = whole_lung(used, lungs), whole_lung(twin, ref_lungs)
    assert abs(a["laa950_pct"] - b["laa950_pct"]) <= 0.5 and b["laa950_pct"] > 1.0


def test_none_mode_measures_but_keeps_the_offset(phantom):
    """The same +75 scan without correction: flagged, and LAA-950 far from the twin's (the test above can fail)."""
    off = shifted(phantom, 75)
    used, lungs, cal = C.calibrate_and_segment(off, "none")
    assert used is off and not cal.corrected
    assert abs(cal.offset_hu - 75) <= 1.0
    assert [w["code"] for w in cal.warnings] == ["hu_offset_uncorrected"]
    ref_lungs = segment_lungs(phantom)
    assert whole_lung(phantom, ref_lungs)["laa950_pct"] - whole_lung(off, lungs)["laa950_pct"] > 3.0


def test_tolerance_and_air_mode(phantom):
    """10 HU off: within tolerance -> auto leaves it; air mode corrects any offset."""
    off = shifted(phantom, 10)
    used, _, cal = C.calibrate_and_segment(off, "auto")
    assert used is off and not cal.corrected and abs(cal.offset_hu - 10) <= 1 and cal.warnings == []
    used, _, cal = C.calibrate_and_segment(off, "air")
    assert abs(cal.applied_hu - 10) <= 1 and cal.applied_hu == round(cal.applied_hu)  # whole HU: one shift for all
    assert np.abs(used.array.astype(np.int32) - phantom.array).max() <= 1


def coronal(ct: CTImage) -> CTImage:
    """The same scan stored as coronal slices: array axes (y, z, x), geometry unchanged (a real permutation)."""
    d = ct.direction[:, [0, 2, 1]]
    sp = (ct.spacing[0], ct.spacing[2], ct.spacing[1])
    return CTImage(np.ascontiguousarray(np.transpose(ct.array, (1, 0, 2))), sp, ct.origin, d)


def test_coronal_storage_measures_the_same(phantom):
    """A coronally stored scan is measured like the axial one (outside air, trachea, blood, the correction)."""
    ref = C.calibrate_and_segment(shifted(phantom, 75), "auto")[2]
    cor = coronal(shifted(phantom, 75))
    assert cor.superior_axis()[0] == 1
    assert C._axial(cor).same_grid(shifted(phantom, 75))
    used, _, cal = C.calibrate_and_segment(cor, "auto")
    assert cal.applied_hu == ref.applied_hu == 75.0
    for key in ("outside_air", "tracheal_air", "blood"):
        a, b = getattr(cal, key), getattr(ref, key)
        assert a is not None and abs(a.median_hu - b.median_hu) <= 1.0, key
    assert np.array_equal(np.transpose(used.array, (1, 0, 2)), phantom.array)


def _slices(ct: CTImage):
    for z in range(ct.array.shape[0]):
        yield z, ct.crop((z, 0, 0), (z + 1, *ct.array.shape[1:]))


def test_single_slice_needs_the_bronchus_to_confirm_outside_air(phantom):
    """One axial slice (what `--model cip-lh` reads): corrected where the slice shows the trachea or a main
    bronchus that agrees with outside air; where it shows none, warned and left as read."""
    from drasclr.anatomy.lungs import segment_lung_slices

    seen = set()
    for z, one in list(_slices(phantom))[24:64:3]:
        used, lungs, cal = C.calibrate_and_segment(shifted(one, 40), "auto", segment=segment_lung_slices)
        assert cal.reference == "outside_air" and abs(cal.offset_hu - 40) <= 3, z
        if cal.corrected:
            assert abs(cal.tracheal_air.median_hu - cal.outside_air.median_hu) <= C.AGREE_HU
            assert abs(cal.applied_hu - 40) <= 3 and np.abs(used.array.astype(np.int32) - one.array).max() <= 3
            seen.add("corrected")
        else:
            assert used.array is not None and np.array_equal(used.array, shifted(one, 40).array)
            assert [w["code"] for w in cal.warnings] in (["single_air_reference"], ["air_disagree"]), z
            seen.add(cal.warnings[0]["code"])
    assert {"corrected", "single_air_reference"} <= seen


def test_outside_air_alone_off_is_warned_not_corrected(phantom):
    """A field-of-view edge or a reconstruction artefact: outside air +40 HU, the trachea and lungs as calibrated.
    The references disagree: nothing applied, an `air_disagree` warning; `air` mode still follows outside air."""
    body = C._hull(C._body(phantom.array))
    edge = phantom.with_array(np.where(body, phantom.array, phantom.array + 40).astype(np.int16))
    used, lungs, cal = C.calibrate_and_segment(edge, "auto")
    assert used is edge and not cal.corrected
    assert abs(cal.outside_air.median_hu - (-960)) <= 5 and abs(cal.tracheal_air.median_hu - C.AIR_HU) <= 15
    assert [w["code"] for w in cal.warnings] == ["air_disagree"]
    assert abs(cal.agreement_hu) > C.AGREE_HU and cal.to_json()["agreement_hu"] == cal.agreement_hu
    assert C.calibrate_and_segment(edge, "air")[2].applied_hu == 40.0


def test_no_outside_air_is_not_corrected_on_the_trachea_alone(phantom):
    """A field of view cropped inside the body: only the trachea measures air; auto mode warns and leaves the
    scan, air mode corrects from the trachea (the lungs masked on the corrected scan)."""
    lungs = segment_lungs(phantom)
    zs, ys, xs = np.nonzero(lungs.array)
    lo = [zs.min(), ys.min() + 2, xs.min() + 2]
    hi = [zs.max() + 1, ys.max() - 1, xs.max() - 1]
    inner = shifted(phantom.crop(lo, hi), 75)
    assert C.measure_outside_air(inner) is None or not C.measure_outside_air(inner).usable
    used, _, cal = C.calibrate_and_segment(inner, "auto")
    assert used is inner and not cal.corrected and cal.reference == "tracheal_air"
    assert [w["code"] for w in cal.warnings] == ["single_air_reference"]
    assert cal.tracheal_air.usable and abs(cal.tracheal_air.median_hu - (-1000 + 75)) <= 25
    used, _, cal = C.calibrate_and_segment(inner, "air")
    assert cal.corrected and abs(cal.applied_hu - 75) <= 25


def test_blood_vetoes_a_correction_it_contradicts(phantom):
    """Both air references agree on +40 HU but the blood pool reads as unenhanced blood only uncorrected: the
    correction would put it at about -30 HU, so auto mode leaves the scan and warns."""
    cal = C.Calibration(mode="auto", applied_hu=40.0)
    cal.blood = C.Measurement(median_hu=10.0, iqr_hu=10.0, p5_hu=0.0, p95_hu=20.0, volume_ml=50.0, n=1000)
    C._blood_veto(cal)
    assert not cal.corrected and [w["code"] for w in cal.warnings] == ["blood_disagree"]
    cal = C.Calibration(mode="auto", applied_hu=40.0)
    cal.blood = C.Measurement(median_hu=90.0, iqr_hu=10.0, p5_hu=80.0, p95_hu=100.0, volume_ml=50.0, n=1000)
    C._blood_veto(cal)
    assert cal.applied_hu == 40.0 and cal.warnings == []


def test_padding_is_never_air_and_never_shifted(phantom):
    """-2048 outside a scan circle (as in LIDC) is ignored by the measurement and left as it is."""
    a = phantom.array.copy()
    z, y, x = np.ogrid[: a.shape[0], : a.shape[1], : a.shape[2]]
    r = np.hypot(y - a.shape[1] / 2, x - a.shape[2] / 2)
    a[np.broadcast_to(r > 0.48 * a.shape[1], a.shape)] = -2048
    padded = phantom.with_array(a)
    m = C.measure_outside_air(shifted(padded, 75).with_array(np.where(a == -2048, -2048, a + 75).astype(np.int16)))
    assert abs(m.median_hu - (-1000 + 75)) <= 3.0
    out = C.apply_offset(padded, 75.0)
    assert np.all(out.array[a == -2048] == -2048)
    assert np.all(out.array[a > -1500] == a[a > -1500] - 75)


def test_no_reference_is_a_warning_not_an_error():
    """A uniform soft-tissue block has neither outside nor tracheal air: warned, nothing applied."""
    ct = CTImage(np.full((20, 40, 40), 40, np.int16), (2.0, 2.0, 2.0))

    def segment(_):
        return ct.with_array(np.zeros(ct.array.shape, np.uint8))

    used, _, cal = C.calibrate_and_segment(ct, "auto", segment=segment)
    assert used is ct and cal.reference is None and cal.offset_hu is None
    assert [w["code"] for w in cal.warnings] == ["no_air_reference"]
    assert cal.to_json()["corrected"] is False


def test_bad_mode():
    with pytest.raises(InputError, match="hu-calibration"):
        C.calibrate_and_segment(CTImage(np.zeros((4, 4, 4), np.int16)), "twopoint")


# --- real scans (skipped without ../shared/data/real) ---------------------------------------------------------
@pytest.mark.real
@pytest.mark.parametrize("name", REAL_CTS + ["copdgene_10002K_ct64"])
def test_real_outside_air(name):
    """Every real CT: outside air usable and within ±15 HU of -1000 (the tolerance is 20), LIDC's -2048 padding
    ignored; the table's foam mattress (about -950 HU on the COPDGene scan) not taken for air."""
    ct = read_ct(real_ct_path(name))
    m = C.measure_outside_air(ct)
    assert m is not None and m.usable, m
    assert abs(m.median_hu - C.AIR_HU) <= 15.0, m
    assert m.volume_ml > 500


@pytest.mark.real
@pytest.mark.slow
def test_real_scans_need_no_correction_and_blood_is_judged():
    """On real scans auto mode changes nothing; the contrast-free COPDGene scan's blood pool reads 0-100 HU,
    LIDC (IV contrast) is recognised as enhanced."""
    ct = read_ct(real_ct_path("copdgene_10002K_ct64"))
    used, lungs, cal = C.calibrate_and_segment(ct, "auto")
    assert used is ct and not cal.corrected and cal.warnings == []
    assert cal.blood is not None and cal.blood.usable and 0 <= cal.blood.median_hu <= 100
    assert cal.tracheal_air is not None and abs(cal.tracheal_air.median_hu - C.AIR_HU) <= 40
    ct = read_ct(real_ct_path("lidc_idri_0001"))
    assert (ct.array == -2048).mean() > 0.1
    used, lungs, cal = C.calibrate_and_segment(ct, "auto")
    assert used is ct and not cal.corrected
    assert cal.blood is not None and not cal.blood.usable and "contrast" in cal.blood.note
