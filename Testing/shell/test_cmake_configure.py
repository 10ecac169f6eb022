"""Configure the extension with real CMake against a stand-in Slicer package whose macros check their
arguments: every listed script and resource must exist, the module must ask for the generic tests, the
extension metadata must be set before Slicer's config/CPack includes. (A real Slicer build tree is gigabytes;
this catches CMake syntax errors, wrong paths and missing metadata in a second.)"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from shell_support import ROOT, load_update_cmake_lists

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("cc") is None,
                                reason="needs cmake and a C compiler")

SLICER_CONFIG = """
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/ExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake")
"""

USE_SLICER = """
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "unknown arguments: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  foreach(f IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${f}")
      message(FATAL_ERROR "listed file does not exist: ${f}")
    endif()
  endforeach()
  file(WRITE "${CMAKE_BINARY_DIR}/module.txt" "NAME=${MY_NAME}\\nGENERIC=${MY_WITH_GENERIC_TESTS}\\n")
  foreach(f IN LISTS MY_SCRIPTS)
    file(APPEND "${CMAKE_BINARY_DIR}/module.txt" "SCRIPT=${f}\\n")
  endforeach()
  foreach(f IN LISTS MY_RESOURCES)
    file(APPEND "${CMAKE_BINARY_DIR}/module.txt" "RESOURCE=${f}\\n")
  endforeach()
endmacro()
function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  file(APPEND "${CMAKE_BINARY_DIR}/module.txt" "UNITTEST=${MY_SCRIPT}\\n")
endfunction()
"""

CHECK_METADATA = """
foreach(v HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if(NOT DEFINED EXTENSION_${v} OR "${EXTENSION_${v}}" STREQUAL "")
    message(FATAL_ERROR "EXTENSION_${v} is not set")
  endif()
endforeach()
file(APPEND "${CMAKE_BINARY_DIR}/module.txt" "INCLUDED=${CMAKE_CURRENT_LIST_FILE}\\n")
"""


def test_extension_configures_against_a_checking_slicer(tmp_path):
    fake = tmp_path / "Slicer"
    fake.mkdir()
    (fake / "SlicerConfig.cmake").write_text(SLICER_CONFIG)
    (fake / "UseSlicer.cmake").write_text(USE_SLICER)
    (fake / "ExtensionGenerateConfig.cmake").write_text(CHECK_METADATA)
    (fake / "ExtensionCPack.cmake").write_text(CHECK_METADATA)
    build = tmp_path / "build"
    run = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={fake}", "-DBUILD_TESTING=ON"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    record = (build / "module.txt").read_text().splitlines()
    assert "NAME=DrasCLRSlicer" in record and "GENERIC=TRUE" in record
    assert "UNITTEST=DrasCLRSlicer.py" in record
    assert sum(line.startswith("INCLUDED=") for line in record) == 2
    listed = {line.split("=", 1)[1] for line in record if line.startswith(("SCRIPT=", "RESOURCE="))}
    on_disk = {f for files in load_update_cmake_lists().module_files().values() for f in files}
    assert listed == on_disk
