"""The engine is laid out by role with no import loop between its packages, and the old flat module paths that
scripts and users name still import the very same modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "drasclr"


def package_imports() -> dict[str, set[str]]:
    """Top-level package of the engine -> the engine packages its modules import (module level or in functions)."""
    edges: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        here = parts[:-1] if is_init else parts
        if len(here) < 2 or (len(here) == 2 and not (ENGINE / here[1]).is_dir()):
            continue  # drasclr/__init__.py, __main__.py and flat modules
        source = here[1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = (here if is_init else here[:-1])[: len(here if is_init else here[:-1]) - node.level + 1]
                    targets = [".".join(base + ([node.module] if node.module else [a.name for a in node.names][:1]))]
                elif node.module and node.module.startswith("drasclr."):
                    targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("drasclr.")]
            for t in targets:
                parts_t = t.split(".")
                if len(parts_t) > 1 and (ENGINE / parts_t[1]).is_dir() and parts_t[1] != source:
                    edges.setdefault(source, set()).add(parts_t[1])
    return edges


def test_no_import_loop_between_packages():
    edges = package_imports()
    assert {"core", "checks", "anatomy", "analysis", "research", "dense", "model", "cli"} <= set(edges) | {"core"}
    assert "core" not in edges or edges["core"] <= set(), f"core imports {edges.get('core')}"

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(p for p in edges if p in reach(p))
    assert not loops, f"packages in an import loop: {loops} ({ {p: sorted(edges[p]) for p in loops} })"


@pytest.mark.parametrize("old, new", [
    ("drasclr.analyze", "drasclr.analysis.analyze"), ("drasclr.calibration", "drasclr.anatomy.hu_calibration"),
    ("drasclr.lobes.source", "drasclr.anatomy.lobes.source"), ("drasclr.phantom", "drasclr.research.phantom"),
    ("drasclr.validate", "drasclr.core.input_files"), ("drasclr.image", "drasclr.core.image"),
])
def test_old_paths_are_the_same_modules(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
