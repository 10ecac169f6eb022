"""The engine must import without slicer, qt, ctk or vtk (it runs on clusters and in plain Python)."""

import subprocess
import sys


def test_engine_imports_pull_in_no_gui_or_slicer():
    code = (
        "import sys, pkgutil, importlib, drasclr\n"
        "for m in pkgutil.walk_packages(drasclr.__path__, 'drasclr.'):\n"
        "    m.name.endswith('__main__') or importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in {'slicer', 'qt', 'ctk', 'vtk', 'vtkmodules'})\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
