"""A bench or helper script of the checkout (``bench/*.py``, ``scripts/*.py``) loaded as a module, for the tests
that check its measuring pieces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_repo_script(relative: str):
    """The script at ``REPO / relative`` as a module (named after its file)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
