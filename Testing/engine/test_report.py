"""report.html: files exist and are referenced, table values appear, no identifiers, and images are oriented
radiologically (patient's left on the image's right, superior at the top) with the true aspect ratio."""

import re

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv

from drasclr.analysis.report import LAA_COLOR, SUBTYPE_COLORS, overlay_png, write_report
from drasclr.analysis.stats import region_stats
from drasclr.anatomy.regions import zones_from_lungs
from drasclr.core import labels
from drasclr.core.image import CTImage
from synthetic import synthetic_chest


def _read_rgb(path):
    img = mpimg.imread(str(path))
    return (img[..., :3] * 255).round().astype(int)


def _pixels_of(rgb, color, tol=0.03):
    """Pixels with the hue of an overlay colour (blending with grey keeps the hue), strongly saturated."""
    hsv = rgb_to_hsv(rgb / 255.0)
    hue = rgb_to_hsv(np.asarray(color, float) / 255.0)[0]
    return (np.abs(hsv[..., 0] - hue) < tol) & (hsv[..., 1] > 0.5)


def _case(marker_side=labels.LEFT_LUNG):
    ct, truth = synthetic_chest(shape=(40, 80, 80), spacing=(3.0, 3.0, 5.0))
    sub = np.where(truth > 0, labels.NORMAL, 0).astype(np.uint8)
    zz = np.arange(truth.shape[0])[:, None, None]
    sub[(truth == marker_side) & (zz > 0.5 * truth.shape[0])] = labels.CLE  # upper half of one lung
    return ct, truth, ct.with_array(sub)


def test_report_references_existing_images_and_shows_table_values(tmp_path):
    ct, truth, sub = _case()
    regions = zones_from_lungs(ct.with_array(truth))
    rows = region_stats(ct, regions, sub)
    info = {"region_kind": "zones", "input": "/data/secret/PATIENT_0042.nii.gz", "patient_name": "DOE^JANE",
            "model": {"name": "demo", "version": "1.2", "sha256": "deadbeef"}, "note": "from PATIENT_0042.nii.gz"}
    path = write_report(tmp_path / "out", ct, sub, regions, rows, info)
    page = path.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 5  # 3 axial + 1 coronal + bar chart
    for s in srcs:
        assert "/" not in s and (path.parent / s).stat().st_size > 1000
    assert "http://" not in page and "https://" not in page  # nothing external
    whole = next(r for r in rows if r["region"] == "whole_lung")
    for col in ("laa950_pct", "cle_pct", "normal_pct"):
        assert f"{whole[col]:,.1f}" in page
    assert f"{whole['volume_ml']:,.0f}" in page
    for row in rows:
        assert row["region"].replace("_", " ").capitalize() in page
    assert "PATIENT_0042" not in page and "DOE" not in page and "/data/secret" not in page
    assert "deadbeef" in page and "1.2" in page  # model info is shown
    assert "Centrilobular emphysema" in page


def test_marker_in_left_lung_is_on_image_right_and_superior_on_top(tmp_path):
    ct, truth, sub = _case(labels.LEFT_LUNG)
    for plane in ("axial", "coronal"):
        index = 30 if plane == "axial" else None  # axial slice in the upper half
        png = overlay_png(ct, sub, tmp_path / f"{plane}.png", plane=plane, index=index)
        rgb = _read_rgb(png)
        orange = _pixels_of(rgb, SUBTYPE_COLORS[labels.CLE])
        assert orange.sum() > 50, plane
        cols = np.nonzero(orange)[1]
        assert cols.min() > rgb.shape[1] / 2, f"{plane}: CLE marker in the left lung must be on the image right"
        if plane == "coronal":
            rows = np.nonzero(orange)[0]
            assert rows.max() < rgb.shape[0] * 0.55, "coronal: the upper-half marker must be at the top"


def test_orientation_survives_a_flipped_scan_direction(tmp_path):
    """Same patient stored with x running towards the patient's right: the picture must not change."""
    ct, truth, sub = _case(labels.LEFT_LUNG)
    flip = np.diag([-1.0, 1.0, 1.0])
    nx = ct.array.shape[2]
    origin = ct.index_to_lps([[nx - 1, 0, 0]])[0]
    ct2 = CTImage(ct.array[:, :, ::-1].copy(), ct.spacing, origin, flip)
    sub2 = ct2.with_array(sub.array[:, :, ::-1].copy())
    a = _read_rgb(overlay_png(ct, sub, tmp_path / "a.png", "axial", 30))
    b = _read_rgb(overlay_png(ct2, sub2, tmp_path / "b.png", "axial", 30))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1


def test_thick_slices_keep_their_physical_aspect(tmp_path):
    ct, truth, sub = _case()
    rgb = _read_rgb(overlay_png(ct, sub, tmp_path / "c.png", "coronal"))
    nz, _, nx = ct.array.shape
    expect = (nz * ct.spacing[2]) / (nx * ct.spacing[0])  # 200 mm tall / 240 mm wide
    assert rgb.shape[0] / rgb.shape[1] == pytest.approx(expect, rel=0.03)


def test_without_subtypes_the_report_shows_laa950(tmp_path):
    ct, truth, _ = _case()
    arr = ct.array.copy()
    arr[(truth == labels.RIGHT_LUNG)] = -990  # right lung all below -950 HU
    ct = ct.with_array(arr)
    regions = zones_from_lungs(ct.with_array(truth))
    rows = region_stats(ct, regions)
    path = write_report(tmp_path / "out", ct, None, regions, rows, {})
    page = path.read_text()
    assert "LAA-950" in page and "Centrilobular" not in page
    rgb = _read_rgb(path.parent / "report_axial_middle.png")
    gold = _pixels_of(rgb, LAA_COLOR)
    assert gold.sum() > 50
    assert np.nonzero(gold)[1].max() < rgb.shape[1] / 2  # right lung on the image left


@pytest.mark.real
def test_report_of_a_real_ct(real_ct_dir, tmp_path):
    from drasclr.analysis.analyze import analyze
    from drasclr.core.io import read_ct

    ct = read_ct(real_ct_dir / "lidc_idri_0001.nii.gz")
    result = analyze(ct)
    path = write_report(tmp_path, ct, None, result.regions, result.rows,
                        {"region_kind": result.region_kind, "input": str(real_ct_dir / "lidc_idri_0001.nii.gz")})
    page = path.read_text()
    assert "lidc" not in page.lower()
    names = re.findall(r'<img src="([^"]+)"', page)
    assert len(names) == 5
    coronal = _read_rgb(tmp_path / "report_coronal.png")
    # 133 slices x 2.5 mm: the coronal image is taller than the slice count, in proportion to the lung's extent
    assert coronal.shape[0] > 1.5 * 133 * 0.9 and coronal.dtype == int
    whole = next(r for r in result.rows if r["region"] == "whole_lung")
    assert f"{whole['laa950_pct']:,.1f}" in page


def test_slicer_terminology_uses_the_report_colours():
    """One colour table: the Slicer terminology JSON (when present) shows subtypes in the report's colours."""
    import json
    from pathlib import Path

    term = (Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "Resources"
            / "SegmentationCategoryTypeModifier-DrasCLR.term.json")
    if not term.exists():
        pytest.skip("terminology JSON not in this checkout")
    found = {}

    def walk(node):
        if isinstance(node, dict):
            if "DrasCLRLabelValue" in node and "recommendedDisplayRGBValue" in node:
                found[int(node["DrasCLRLabelValue"])] = tuple(node["recommendedDisplayRGBValue"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(term.read_text()))
    assert {v: found.get(v) for v in SUBTYPE_COLORS} == SUBTYPE_COLORS
