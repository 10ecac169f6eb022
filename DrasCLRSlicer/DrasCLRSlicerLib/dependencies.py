"""Python packages the engine needs inside Slicer, and which of them are missing. No slicer import.

torch comes through Slicer's PyTorch extension (PyTorchUtils, which picks the CUDA/CPU build); numpy and
SimpleITK ship with Slicer. Everything else is listed in ``Resources/requirements.txt``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
IMPORT_NAMES = {"scikit-learn": "sklearn"}  # distribution name -> import name where they differ
PROVIDED_BY_SLICER = ("torch", "numpy", "SimpleITK")


def requirements(path: str | Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement strings of the file (comments and blank lines dropped)."""
    lines = (ln.split("#", 1)[0].strip() for ln in Path(path).read_text().splitlines())
    return [ln for ln in lines if ln]


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def missing(reqs: list[str] | None = None) -> list[str]:
    """The requirements whose module cannot be imported (versions are left to pip)."""
    reqs = requirements() if reqs is None else reqs
    out = []
    for r in reqs:
        name = distribution_name(r)
        if importlib.util.find_spec(IMPORT_NAMES.get(name, name).replace("-", "_")) is None:
            out.append(r)
    return out
