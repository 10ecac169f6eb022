"""Shared fixtures: real CT location (../shared/data/real beside the checkout), helpers on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import REAL_DIR  # noqa: E402


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    if not (REAL_DIR / "lidc_idri_0001.nii.gz").exists():
        pytest.skip(f"real CTs not found in {REAL_DIR}")
    return REAL_DIR


@pytest.fixture(scope="session", autouse=True)
def stage_history_cache(tmp_path_factory):
    """Analyses in tests keep their stage times (drasclr.core.stages) in a temporary cache, not the user's; child
    processes inherit it."""
    import os

    old = os.environ.get("DRASCLR_CACHE_DIR")
    os.environ["DRASCLR_CACHE_DIR"] = str(tmp_path_factory.mktemp("drasclr-cache"))
    yield Path(os.environ["DRASCLR_CACHE_DIR"])
    if old is None:
        os.environ.pop("DRASCLR_CACHE_DIR", None)
    else:
        os.environ["DRASCLR_CACHE_DIR"] = old


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with pytest's exit status once every report is written, without the interpreter's teardown of the native
    libraries the tests load in this one process (slicer-core's MRML, VTK, ITK, torch, Playwright): their static
    destructors and thread pools race at exit and crashed it now and then after every test had passed (the CLI leaves
    the same way, drasclr/__main__.py). A crash during the tests still shows, with its traceback (PYTHONFAULTHANDLER
    in the Makefile's test target)."""
    if not _EXIT_STATUS or os.environ.get("DRASCLR_TEST_TEARDOWN") == "1":  # set it to run the full teardown
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
