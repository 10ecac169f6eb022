"""What the model read, shown where the reader looks: a thin (1 mm) lung-kernel CT at 90 HU of noise uploaded into
the reading room (a real browser: Playwright driving Debian's chromium) is analysed, and the line above the table
says it was harmonized and how (slices averaged through the plane, bands scaled), as stats.json records it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from web_support import WebServer, open_room

pytestmark = pytest.mark.slow


def thin_noisy_ct(path) -> None:
    from drasclr.core.io import write_image
    from drasclr.research.phantom.acquisition import ct_noise
    from DrasCLRSlicerLib.phantom import chest_phantom

    clean = chest_phantom((80, 256, 256), (0.8, 0.8, 1.0))
    noise = ct_noise(clean.array.shape, 0.8, 0.85, 0.9, 90.0, np.random.default_rng(3))
    write_image(clean.with_array(np.clip(np.rint(clean.array + noise), -1024, 3000).astype(np.int16)), path)


def test_the_harmonization_line_above_the_table(browser_env, tmp_path):
    sync_api, chromium = browser_env
    ct = tmp_path / "thin_lung_kernel.nii.gz"
    thin_noisy_ct(ct)
    server = WebServer(tmp_path / "data", tmp_path / "server.log")
    with server:
        with sync_api.sync_playwright() as pw:
            browser, page = open_room(pw, chromium, server.url, 900_000)
            page.set_input_files("#upload", str(ct))
            page.wait_for_function("document.querySelector('#ct-name').textContent.includes('thin_lung_kernel')")
            page.get_by_label("Mirror augmentation").uncheck()
            page.click("#btn-analyze")
            page.wait_for_selector("#stats-table tr.stats-row")
            page.wait_for_selector("#harmonization-line", timeout=30_000)  # shown with the table, not later
            line = page.inner_text("#harmonization-line")
            browser.close()
    stats = json.loads((server.session_dir() / "analysis-001" / "output" / "stats.json").read_text())
    h = stats["harmonization"]
    assert h["applied"] and h["through_plane"]["slices_averaged"] == 3
    assert line.strip() == h["summary"]
    assert line.startswith("Harmonized for the model") and "3 slices averaged through the plane (3.0 mm)" in line
