#!/usr/bin/env python3
"""Rewrite the explicit file lists of DrasCLRSlicer/CMakeLists.txt from the files under DrasCLRSlicer/.

Slicer's template lists every script and resource by name (no GLOB). Run this after adding or removing files:

    python scripts/update_cmake_lists.py          # rewrite the lists
    python scripts/update_cmake_lists.py --check  # exit 1 and name the differences when the lists are stale

Testing/shell/test_cmake_lists.py uses the same walk (``module_files``) to fail when a file is missing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "DrasCLRSlicer"
CMAKE = MODULE / "CMakeLists.txt"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".orig", ".rej", "~")


def _kept(rel: Path) -> bool:
    parts = rel.parts
    if any(p in SKIP_DIRS or p.startswith(".") or p.endswith(".egg-info") for p in parts):
        return False
    return rel.name != "CMakeLists.txt" and not rel.name.endswith(SKIP_SUFFIXES)


def module_files(module: Path = MODULE) -> dict[str, list[str]]:
    """The four lists, each sorted, paths relative to DrasCLRSlicer/ with forward slashes:
    module scripts (shell + bridge), engine scripts (drasclr/), module resources, engine data files."""
    lists: dict[str, list[str]] = {k: [] for k in LISTS}
    for path in sorted(module.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(module)
        if not _kept(rel):
            continue
        engine = rel.parts[0] == "drasclr"
        key = ("ENGINE" if engine else "MODULE") + ("_PYTHON_SCRIPTS" if rel.suffix == ".py" else "_RESOURCES")
        lists[key].append(rel.as_posix())
    return lists


LISTS = ["MODULE_PYTHON_SCRIPTS", "ENGINE_PYTHON_SCRIPTS", "MODULE_RESOURCES", "ENGINE_RESOURCES"]
BLOCK = re.compile(r"set\((?P<name>[A-Z_]+)\n(?P<body>(?:  [^\n]*\n)*?)  \)", re.M)


def listed(text: str) -> dict[str, list[str]]:
    """The file lists as CMakeLists.txt has them (``${MODULE_NAME}`` expanded)."""
    out = {}
    for m in BLOCK.finditer(text):
        if m.group("name") in LISTS:
            items = [ln.strip() for ln in m.group("body").splitlines() if ln.strip()]
            out[m.group("name")] = [i.replace("${MODULE_NAME}", "DrasCLRSlicer") for i in items]
    return out


def render(text: str, lists: dict[str, list[str]]) -> str:
    def sub(m):
        name = m.group("name")
        if name not in lists:
            return m.group(0)
        body = "".join(f"  {item}\n" for item in lists[name])
        return f"set({name}\n{body}  )"

    return BLOCK.sub(sub, text)


def differences(text: str, lists: dict[str, list[str]]) -> list[str]:
    have = listed(text)
    lines = []
    for name in LISTS:
        got, want = set(have.get(name, [])), set(lists[name])
        lines += [f"{name}: missing {f}" for f in sorted(want - got)]
        lines += [f"{name}: listed but absent {f}" for f in sorted(got - want)]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    args = parser.parse_args(argv)
    text = CMAKE.read_text()
    lists = module_files()
    diff = differences(text, lists)
    if args.check:
        print("\n".join(diff) if diff else "CMakeLists.txt lists every file")
        return 1 if diff else 0
    missing_blocks = [n for n in LISTS if n not in listed(text)]
    if missing_blocks:
        print(f"error: {CMAKE} has no set(...) block for {missing_blocks}", file=sys.stderr)
        return 2
    CMAKE.write_text(render(text, lists))
    print(f"updated {CMAKE.relative_to(ROOT)}: " + ", ".join(f"{n} {len(lists[n])}" for n in LISTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
