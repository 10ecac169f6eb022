"""``drasclr web`` / ``drasclr serve``: the CLI contract (error line, exit 2) and the path check at start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from web_support import MODULE_DIR, free_port


def run(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(MODULE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-m", "drasclr", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_help_lists_web_and_serve():
    out = run("--help").stdout
    assert "web" in out and "serve" in out
    help_text = run("web", "--help").stdout
    assert "127.0.0.1" in help_text and "--data" in help_text


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "-1"], ["--finetune-seconds", "0"]])
def test_bad_options_exit_2_with_one_error_line(args, tmp_path):
    proc = run("web", "--data", str(tmp_path / "data"), *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "data").exists()  # nothing written


def test_ct_outside_the_data_folder_is_refused(tmp_path):
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    outside = tmp_path / "elsewhere.nii.gz"
    outside.write_bytes(b"not read")
    proc = run("serve", str(outside), "--data", str(tmp_path / "data"), "--port", str(free_port()))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors and "only files inside" in errors[-1], proc.stderr[-2000:]
    assert "reading room: http" not in proc.stdout  # it never started listening
