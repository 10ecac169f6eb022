"""Fixtures for the web shell tests: the module folder on sys.path; the browser, or a skip with the reason."""

from __future__ import annotations

import sys

import pytest
from web_support import MODULE_DIR, chromium_path

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="module")
def browser_env():
    """(playwright sync_api module, chromium path); skips with the reason when either is missing."""
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[web]')")
    path = chromium_path()
    if path is None:
        pytest.skip("Debian's chromium is not installed and could not be installed by scripts/setup.sh "
                    "(apt-get install chromium; or set DRASCLR_CHROMIUM)")
    return sync_api, path
