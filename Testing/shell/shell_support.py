"""Helpers for the static checks of the Qt shell: the Slicer application (qt, ctk, slicer.app) is not available here, so
these tests read the sources (ast, XML) instead of importing the module."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "DrasCLRSlicer"
SHELL = MODULE / "DrasCLRSlicer.py"
UI = MODULE / "Resources" / "UI" / "DrasCLRSlicer.ui"


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def methods(cls: ast.ClassDef) -> set[str]:
    out = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def attribute_uses(node: ast.AST, *chain: str) -> set[str]:
    """Names ``X`` in expressions ``<chain[0]>.<chain[1]>...X`` (e.g. chain ("self", "ui") -> self.ui.X)."""
    found = set()
    for n in ast.walk(node):
        if not isinstance(n, ast.Attribute):
            continue
        parts, cur = [], n.value
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name):
            parts.append(cur.id)
            if tuple(reversed(parts)) == chain:
                found.add(n.attr)
    return found


def load_update_cmake_lists():
    """scripts/update_cmake_lists.py as a module (the walk and the list parser the tests share)."""
    from repo_scripts import load_repo_script

    return load_repo_script("scripts/update_cmake_lists.py")
