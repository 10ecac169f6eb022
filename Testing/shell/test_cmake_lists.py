"""Slicer build files: the module CMakeLists lists every file under DrasCLRSlicer/; extension metadata is
complete and consistent across CMakeLists.txt, DrasCLRSlicer.s4ext and the ExtensionsIndex JSON entry."""

from __future__ import annotations

import json
import re
import struct

from shell_support import MODULE, ROOT, load_update_cmake_lists

update_cmake_lists = load_update_cmake_lists()

TOP = (ROOT / "CMakeLists.txt").read_text()
MOD = (MODULE / "CMakeLists.txt").read_text()


def cmake_var(name: str) -> str:
    m = re.search(rf'set\({name} "([^"]*)"\)', TOP)
    assert m, f"{name} not set in CMakeLists.txt"
    return m.group(1)


def s4ext() -> dict[str, str]:
    out = {}
    for line in (ROOT / "DrasCLRSlicer.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value.strip()
    return out


def test_module_cmakelists_lists_every_file():
    diff = update_cmake_lists.differences(MOD, update_cmake_lists.module_files())
    assert not diff, ("DrasCLRSlicer/CMakeLists.txt is stale (run: python scripts/update_cmake_lists.py):\n"
                      + "\n".join(diff))


def test_walk_sees_shell_bridge_engine_and_resources():
    lists = update_cmake_lists.module_files()
    assert "DrasCLRSlicer.py" in lists["MODULE_PYTHON_SCRIPTS"]
    assert "DrasCLRSlicerLib/geometry.py" in lists["MODULE_PYTHON_SCRIPTS"]
    assert "drasclr/core/image.py" in lists["ENGINE_PYTHON_SCRIPTS"]
    assert {"Resources/UI/DrasCLRSlicer.ui", "Resources/Icons/DrasCLRSlicer.png",
            "Resources/SegmentationCategoryTypeModifier-DrasCLR.term.json"} <= set(lists["MODULE_RESOURCES"])
    every = [f for v in lists.values() for f in v]
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in every)


def test_missing_file_is_named(tmp_path):
    """The check names exactly the file that is not listed (and nothing else)."""
    lists = update_cmake_lists.module_files()
    fake = {k: list(v) for k, v in lists.items()}
    fake["ENGINE_PYTHON_SCRIPTS"].append("drasclr/new_module.py")
    assert update_cmake_lists.differences(MOD, fake) == ["ENGINE_PYTHON_SCRIPTS: missing drasclr/new_module.py"]
    rendered = update_cmake_lists.render(MOD, fake)
    assert update_cmake_lists.differences(rendered, fake) == []


def test_module_cmakelists_builds_a_scripted_module_with_generic_tests():
    assert "set(MODULE_NAME DrasCLRSlicer)" in MOD
    call = re.search(r"slicerMacroBuildScriptedModule\((.*?)\n  \)", MOD, re.S).group(1)
    assert "NAME ${MODULE_NAME}" in call and "WITH_GENERIC_TESTS" in call
    assert "${MODULE_PYTHON_SCRIPTS}" in call and "${ENGINE_PYTHON_SCRIPTS}" in call
    assert "${MODULE_RESOURCES}" in call and "${ENGINE_RESOURCES}" in call
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in MOD
    assert "GLOB" not in MOD.upper().replace("(NO GLOB)", "")


def test_extension_cmakelists_metadata():
    assert re.search(r"cmake_minimum_required\(VERSION", TOP) and "project(DrasCLRSlicer)" in TOP
    assert cmake_var("EXTENSION_CATEGORY") == "Chest Imaging Platform"
    assert cmake_var("EXTENSION_DEPENDS") == "PyTorch"
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_var(name).startswith("https://")
    assert cmake_var("EXTENSION_CONTRIBUTORS") and "DrasCLR" in cmake_var("EXTENSION_DESCRIPTION")
    assert cmake_var("EXTENSION_ICONURL").endswith("/Resources/DrasCLRSlicer.png")
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(DrasCLRSlicer)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in TOP


def test_s4ext_has_every_field_and_agrees_with_cmake():
    fields = s4ext()
    assert set(fields) == {"scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage",
                           "contributors", "category", "iconurl", "status", "description", "screenshoturls",
                           "enabled"}
    assert fields["scm"] == "git" and fields["scmurl"].endswith(".git") and fields["enabled"] == "1"
    assert fields["category"] == cmake_var("EXTENSION_CATEGORY")
    assert fields["depends"] == cmake_var("EXTENSION_DEPENDS")
    assert fields["homepage"] == cmake_var("EXTENSION_HOMEPAGE")
    assert fields["iconurl"] == cmake_var("EXTENSION_ICONURL")
    assert fields["description"] == cmake_var("EXTENSION_DESCRIPTION")
    assert fields["contributors"] == cmake_var("EXTENSION_CONTRIBUTORS")


def test_extensions_index_entry():
    entry = json.loads((ROOT / "DrasCLRSlicer.json").read_text())
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type",
               "scm_url", "tier"}  # schema v1.0.1 has additionalProperties false
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert "slicer-extension-catalog-entry-schema-v1.0.1.json" in entry["$schema"]
    assert entry["category"] == cmake_var("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == [cmake_var("EXTENSION_DEPENDS")]
    assert entry["scm_url"] == s4ext()["scmurl"] and entry["scm_revision"] == s4ext()["scmrevision"]


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_icons_are_128_pngs():
    assert png_size(ROOT / "Resources" / "DrasCLRSlicer.png") == (128, 128)
    assert png_size(MODULE / "Resources" / "Icons" / "DrasCLRSlicer.png") == (128, 128)
