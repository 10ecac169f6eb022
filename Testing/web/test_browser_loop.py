"""The whole reading-room loop in a real browser (Playwright driving Debian's chromium) against ``drasclr web``.

Load the demo CT, Analyze, wait for the overlay, compare the table with the run's stats.csv, switch the uncertainty
heat overlay on and off, paint a stroke of another subtype, walk the first two regions of the review queue (the
views land on the centres review.json gives), Fine-tune (a new model version appears, trained with the painted
voxels and the reviewed regions), and check that the re-analysis changed the painted region towards the painted
subtype and that the fine-tuning received exactly the reviewed regions. Screenshots go to
``$DRASCLR_WEB_SCREENSHOTS`` (docs/images when the docs are refreshed) or the test's temporary folder, and are
checked to be non-blank.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from web_support import WebServer, open_room

from drasclr.core.versions import DEMO_MODEL, split_version

pytestmark = pytest.mark.slow

COLUMNS = ["region", "volume_ml", "mean_hu", "perc15_hu", "laa950_pct", "normal_pct", "cle_pct", "pse_pct",
           "ple_pct"]
HEADERS = ["Region", "Volume (mL)", "Mean HU", "Perc15 (HU)", "LAA-950 %", "Normal %", "CLE %", "PSE %", "PLE %"]
REGION_NAMES = {"left_upper_lobe": "Left upper lobe", "left_lower_lobe": "Left lower lobe",
                "right_upper_lobe": "Right upper lobe", "right_middle_lobe": "Right middle lobe",
                "right_lower_lobe": "Right lower lobe", "left_lung": "Left lung", "right_lung": "Right lung",
                "whole_lung": "Whole lung"}
DECIMALS = {"volume_ml": 0, "mean_hu": 0, "perc15_hu": 0}  # the rest: one decimal
PLE = 4
_NAME, _N = split_version(DEMO_MODEL)
NEXT = f"{_NAME}-v{_N + 1}"  # fine-tuning the bundled default writes its next version
# fine-tuning is bounded by wall time: 30 s learns the stroke on a quiet 2-core machine (bench_corrections: 39 s
# -> 0.99 accuracy on the corrected voxels); give more where the machine is shared
FINETUNE_SECONDS = float(os.environ.get("DRASCLR_WEB_FINETUNE_SECONDS", "30"))
ANALYSIS_TIMEOUT_MS = 1_500_000  # generous for a shared machine; a quiet 2-core run needs a few minutes in all


def cell(text: str, column: str) -> str:
    if text in ("", None) or math.isnan(float(text)):
        return "–"
    return f"{float(text):.{DECIMALS.get(column, 1)}f}"


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DRASCLR_WEB_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def assert_not_blank(png: Path) -> None:
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
    assert img.std() > 20, f"{png.name} looks blank (grey std {img.std():.1f})"
    assert len(np.unique(img)) > 64, f"{png.name} has too few grey levels"


def view_pixels(png: Path, box: dict) -> np.ndarray:
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    x0, y0 = int(box["x"]), int(box["y"])
    return rgb[y0:y0 + int(box["height"]), x0:x0 + int(box["width"])]


def changed_pixels(a: Path, b: Path, box: dict) -> int:
    """Pixels of a view that differ clearly between two screenshots."""
    return int((np.abs(view_pixels(a, box) - view_pixels(b, box)).max(-1) > 40).sum())


def slice_positions(page) -> dict[str, float]:
    """The slice views' positions as the page shows them: {"Axial": S mm, "Coronal": A mm}."""
    spans = page.eval_on_selector_all("#slice-positions .slice-pos",
                                      "ss => ss.map(s => [s.dataset.view, s.dataset.mm])")
    return {view: float(mm) for view, mm in spans}


def overlay_pixels(png: Path, box: dict) -> int:
    """Strongly coloured pixels inside a view of a screenshot: the subtype overlay (the CT itself is grey)."""
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    x0, y0 = int(box["x"]), int(box["y"])
    view = rgb[y0:y0 + int(box["height"]), x0:x0 + int(box["width"])]
    return int(((view.max(-1) - view.min(-1)) > 60).sum())


def ct_spacing_xyz() -> tuple[float, float, float]:
    import SimpleITK as sitk
    from web_support import MODULE_DIR

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(MODULE_DIR / "drasclr" / "data" / "demo_ct.nii.gz"))
    reader.ReadImageInformation()
    return reader.GetSpacing()


def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_analyze_correct_finetune_reanalyze(browser_env, tmp_path):
    sync_api, chromium = browser_env
    server = WebServer(tmp_path / "data", tmp_path / "server.log", finetune_seconds=FINETUNE_SECONDS)
    shots = shots_dir(tmp_path)
    with server:
        with sync_api.sync_playwright() as pw:
            browser, page = open_room(pw, chromium, server.url, 120_000)
            page.wait_for_selector("img.image-display-area")  # the views stream images

            # 1. demo CT
            page.click("#btn-demo")
            page.wait_for_function("document.querySelector('#ct-name').textContent.includes('demo')")
            page.click("#btn-reset-views")
            page.wait_for_timeout(2000)
            page.screenshot(path=shots / "web_1_loaded.png")

            # 2. analyze (mirrored TTA off: half the time; the checkbox is part of the page)
            page.get_by_label("Mirror augmentation").uncheck()
            page.click("#btn-analyze")
            # while it runs, the page names the stage, its place and the time left (drasclr.core.stages)
            page.wait_for_function("/ \\(\\d+ of \\d+\\)/.test(document.querySelector('#job-message').textContent)",
                                   timeout=ANALYSIS_TIMEOUT_MS)
            stage_line = page.inner_text("#job-message")
            assert re.search(r"analysis: (Lung mask|Harmonization|Atlas registration|Lobes|Subtype map|Labels and "
                             r"uncertainty|Review queue|Patient embedding|Statistics|Writing report) \(\d+ of \d+\)",
                             stage_line), stage_line
            page.wait_for_function("document.querySelector('#analysis-count').textContent.includes('1')",
                                   timeout=ANALYSIS_TIMEOUT_MS)
            page.wait_for_selector("#stats-table tr.stats-row")
            assert "finished" in page.inner_text("#job-message"), page.inner_text("#job-message")
            page.wait_for_timeout(2000)
            page.screenshot(path=shots / "web_2_analyzed.png")
            axial = page.locator(".remote-controlled-area").first.bounding_box()
            assert overlay_pixels(shots / "web_1_loaded.png", axial) < 200  # grey CT, no overlay yet
            assert overlay_pixels(shots / "web_2_analyzed.png", axial) > 1000  # the subtype overlay is drawn

            # the table shows stats.csv of that run
            session = server.session_dir()
            with open(session / "analysis-001" / "output" / "stats.csv", newline="") as fh:
                expected = [[cell(r[c], c) if c != "region" else REGION_NAMES[r[c]] for c in COLUMNS]
                            for r in csv.DictReader(fh)]
            headers = page.eval_on_selector_all("#stats-table th", "hs => hs.map(h => h.textContent.trim())")
            shown = page.eval_on_selector_all(
                "#stats-table tr.stats-row", "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent.trim()))")
            assert headers == HEADERS
            assert shown == expected and len(shown) >= 3
            assert page.locator("#chart .d-flex").count() >= len(expected)

            # 2b. the uncertainty heat overlay: on changes the views, off restores them
            page.get_by_label("Uncertainty").check()
            page.wait_for_timeout(3000)
            page.screenshot(path=shots / "uncertainty_on.png")
            page.get_by_label("Uncertainty").uncheck()
            page.wait_for_timeout(3000)
            page.screenshot(path=shots / "uncertainty_off.png")
            heat = changed_pixels(shots / "web_2_analyzed.png", shots / "uncertainty_on.png", axial)
            back = changed_pixels(shots / "web_2_analyzed.png", shots / "uncertainty_off.png", axial)
            assert heat > 500, f"the uncertainty overlay changed only {heat} pixels of the axial view"
            assert back < heat / 10, f"switching it off left {back} pixels changed (on: {heat})"

            # 3. paint a PLE stroke across both lungs on the axial view
            page.click("#btn-paint")
            page.wait_for_timeout(1500)
            axial = page.locator(".remote-controlled-area").first.bounding_box()
            y = axial["y"] + axial["height"] * 0.47
            page.mouse.move(axial["x"] + axial["width"] * 0.2, y)
            page.mouse.down()
            page.mouse.move(axial["x"] + axial["width"] * 0.8, y, steps=40)
            page.mouse.up()
            page.wait_for_timeout(4000)  # the stroke's image reaches the page
            page.screenshot(path=shots / "web_3_painted.png")
            page.click("#btn-effect-none")

            # 3b. review: uncertainty on, then the first two regions of the queue; the views land on their centres
            review = json.loads((session / "analysis-001" / "output" / "review.json").read_text())
            units = review["units"]
            assert len(units) >= 2
            page.get_by_label("Uncertainty").check()
            spacing = ct_spacing_xyz()
            for k, unit in enumerate(units[:2], start=1):
                page.click("#btn-next-review")
                page.wait_for_function(f"document.querySelector('#review-unit').textContent.includes('Region {k}/')")
                lps = unit["centre_lps"]
                want = {"Axial": lps[2], "Coronal": -lps[1]}  # LPS -> RAS: S = S, A = -P
                shown = slice_positions(page)  # pushed before the unit's text
                assert abs(shown["Axial"] - want["Axial"]) <= spacing[2], (shown, want)
                assert abs(shown["Coronal"] - want["Coronal"]) <= spacing[1], (shown, want)
                text = page.inner_text("#review-unit")
                assert f"Region {k}/{len(units)}" in text and unit["region"].replace("_", " ") in text, text
                top = max(unit["predicted"], key=unit["predicted"].get)
                assert f"{top} {100 * unit['predicted'][top]:.0f}%" in text, text
                assert f"reviewed {k} of {len(units)}" in page.inner_text("#review-count")
                page.wait_for_timeout(2500)
                page.screenshot(path=shots / f"review_{k}.png")
            if any(abs(a - b) > 1.0 for a, b in zip(units[0]["centre_lps"], units[1]["centre_lps"])):
                moved = changed_pixels(shots / "review_1.png", shots / "review_2.png", axial)
                assert moved > 500, f"the axial view hardly changed between regions 1 and 2 ({moved} pixels)"
            page.screenshot(path=shots / "web_5_review.png")
            page.get_by_label("Uncertainty").uncheck()
            page.wait_for_timeout(1500)

            # 4. fine-tune; a new version appears and the CT is analysed again with it
            page.click("#btn-finetune")
            page.wait_for_function("document.querySelector('#analysis-count').textContent.includes('2')",
                                   timeout=ANALYSIS_TIMEOUT_MS)
            page.wait_for_function(f"document.querySelector('#results').textContent.includes('model {NEXT}')")
            page.wait_for_timeout(2000)
            page.screenshot(path=shots / "web_4_finetuned.png")
            assert overlay_pixels(shots / "web_4_finetuned.png", axial) > 1000  # the new overlay is drawn
            message = page.inner_text("#message")
            assert NEXT in message and "2 reviewed regions" in message, message
            browser.close()

    new = server.data / "models" / NEXT
    card = json.loads((new / "model.json").read_text())
    assert card["parent"]["folder"] == DEMO_MODEL.name and (new / "model.safetensors").is_file()

    # the stroke turned lung voxels into PLE in the corrections, and the re-analysis moved them towards PLE
    ft = session / "finetune-001"
    pred, corr = read(ft / "prediction.nrrd"), read(ft / "corrected.nrrd")
    painted = (corr != pred) & (pred > 0)
    assert painted.sum() > 50, painted.sum()
    assert (corr[painted] == PLE).all()
    first = read(session / "analysis-001" / "output" / "subtypes.nii.gz")
    second = read(session / "analysis-002" / "output" / "subtypes.nii.gz")
    assert (first[painted] == PLE).mean() == 0.0
    after = (second[painted] == PLE).mean()
    # the re-analysis with the new version labels part of the stroke PLE (none before). How much depends on the
    # training steps the time budget allows (observed 2-9 %): a stroke of PLE painted over normal-looking lung is a
    # correction the texture cannot support, and the corrections trainer is known to spread it over the lung
    # instead (docs/guided_correction.md, "Limits"); this test checks the loop, not that recipe.
    assert after > 0.0, "no painted voxel is PLE after fine-tuning: the new version did not change the region"
    (tmp_path / "painted_ple_fraction.txt").write_text(f"{after:.3f}\n")
    print(f"painted voxels {int(painted.sum())}: PLE before 0.00, after {after:.2f}")
    for png in sorted(shots.glob("web_*.png")):
        assert_not_blank(png)
    # the fine-tuning received the two reviewed regions as its --reviewed mask, and the card counts them
    units = read(session / "analysis-001" / "output" / "review_units.nii.gz")
    reviewed = read(ft / "reviewed.nrrd")
    np.testing.assert_array_equal(reviewed > 0, np.isin(units, [1, 2]))
    lung = (pred > 0) | (corr > 0)  # the trainer's lung without a mask: where either labelmap is non-zero
    changed = (corr != pred) & lung & (corr > 0)
    confirmed_only = (reviewed > 0) & lung & (corr > 0) & ~changed
    assert card["finetune"]["reviewed_voxels"] == int(confirmed_only.sum()) > 0, card["finetune"]
    # the analysis ran in the session's own folder; besides it only the models, the gateway's run folder (session
    # logs, cookie secret) and the audit log were written into the data folder
    assert sorted(p.name for p in server.data.iterdir()) == ["audit.log", "models", "run", "sessions"]


def test_upload_path_check_and_cancel(browser_env, tmp_path):
    """Upload a CT, refuse a path outside the data folder, and Cancel a running analysis (nothing kept)."""
    sync_api, chromium = browser_env
    from web_support import MODULE_DIR

    server = WebServer(tmp_path / "data", tmp_path / "server.log")
    with server:
        with sync_api.sync_playwright() as pw:
            browser, page = open_room(pw, chromium, server.url, 180_000)

            page.fill("#ct-path", "/etc/passwd")
            page.click("#btn-open")
            page.wait_for_function("document.querySelector('#error').textContent.includes('only files inside')")

            page.set_input_files("#upload", str(MODULE_DIR / "drasclr" / "data" / "demo_ct.nii.gz"))
            page.wait_for_function("document.querySelector('#ct-name').textContent.includes('demo_ct')")
            session = server.session_dir()
            assert (session / "uploads" / "demo_ct.nii.gz").is_file()

            page.click("#btn-analyze")
            page.wait_for_function("!document.querySelector('#btn-cancel').disabled")
            page.wait_for_timeout(1500)
            page.click("#btn-cancel")
            page.wait_for_function("document.querySelector('#job-message').textContent.includes('cancelled')")
            assert page.locator("#stats-table").count() == 0
            browser.close()
    assert not (session / "analysis-001" / "output").exists()
