"""Static checks of the Qt shell: the Slicer application (qt, ctk, slicer.app) is not available here, so
these tests read the sources (ast, XML) instead of importing the module."""

from __future__ import annotations

import ast

import pytest
from shell_support import SHELL


@pytest.fixture(scope="session")
def shell_tree() -> ast.Module:
    return ast.parse(SHELL.read_text(), filename=str(SHELL))
