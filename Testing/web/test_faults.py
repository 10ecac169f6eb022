"""Faults a shared reading room must survive, with real processes (a tiny untrained model keeps the analyses short).

- The session's server killed (SIGKILL) during an analysis, then restarted on the same folder: the engine child
  died with it, no output or staging folder is left, the page shows the job as failed with the reason, the CT
  is back, and another user's session folder is untouched.
- The engine child killed (SIGKILL, as the out-of-memory killer does): a clear message, the run folder emptied.
- The data folder's disk full (a small tmpfs, mounted here as root; skipped with the reason elsewhere): the
  analysis and an upload fail with a clear message, nothing half-written stays, and the room keeps serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from web_support import MODULE_DIR

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
TINY = {"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    pytest.importorskip("trame_slicer", reason="trame-slicer is not installed (pip install '.[web]')")
    import torch

    from drasclr.dense.segmenter import SubtypeSegmenter
    from drasclr.dense.store import save_segmenter

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-v1"
    save_segmenter(SubtypeSegmenter(encoder=TINY, decoder=(8, 8, 8, 4, 4)), folder,
                   {"name": "tiny", "version": "tiny-v1"})
    return folder


def room(mode: str, data: Path, session: str, model: Path | str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(MODULE_DIR), str(HERE),
                                                      *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen([sys.executable, str(HERE / "fault_room.py"), mode, str(data), session, str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def result(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, out[-3000:]
    return json.loads(lines[-1])


def engine_child(folder: Path, timeout: float = 300) -> int:
    """The pid of the ``drasclr analyze`` process writing into ``folder`` (waits until it runs)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"analyze" in cmd and any(str(folder).encode() in c for c in cmd):
                return int(pid)
        time.sleep(0.2)
    raise TimeoutError("no engine child appeared")


def gone(pid: int, timeout: float = 30) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split()[2] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.2)
    return False


def test_server_killed_during_analysis_then_restarted(tiny_model, tmp_path):
    data = tmp_path / "data"
    other = data / "sessions" / "0therus3r0000000"  # another user's finished session
    (other / "analysis-001" / "output").mkdir(parents=True)
    (other / "analysis-001" / "output" / "stats.csv").write_text("region\nwhole_lung\n")
    (other / "session.json").write_text(json.dumps({"id": other.name, "user": "bob", "jobs": [{"status": "done"}]}))
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}

    server = room("analyze", data, "a11ce00000000000", tiny_model)
    session = data / "sessions" / "a11ce00000000000"
    child = engine_child(session / "analysis-001")
    time.sleep(3)  # the engine is at work
    server.send_signal(signal.SIGKILL)
    server.wait(30)
    assert gone(child), "the engine child outlived its server"
    record = json.loads((session / "session.json").read_text())
    assert record["jobs"][-1]["status"] == "running"  # what the killed server left behind

    shown = result(room("restore", data, "a11ce00000000000"))
    assert shown["job_status"] == "failed" and "server stopped during this analysis" in shown["job_message"], shown
    assert shown["has_ct"] and "demo" in shown["ct_name"].lower() and not shown["has_result"]
    assert list((session / "analysis-001").iterdir()) == []  # no output, no staging folder, no inputs
    assert json.loads((session / "session.json").read_text())["jobs"][-1]["status"] == "failed"
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before


def test_engine_child_killed(tiny_model, tmp_path):
    data = tmp_path / "data"
    server = room("analyze", data, "k111ed0000000000", tiny_model)
    run = data / "sessions" / "k111ed0000000000" / "analysis-001"
    child = engine_child(run)
    time.sleep(3)
    os.kill(child, signal.SIGKILL)
    shown = result(server)
    assert shown["job_status"] == "failed", shown
    assert "killed (SIGKILL" in shown["job_message"] and "nothing was written" in shown["job_message"], shown
    assert shown["has_ct"] and not shown["has_result"]
    assert list(run.iterdir()) == []


def test_disk_full_while_writing(tiny_model, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = tmp_path / "full"
    data.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN in this container)")
    try:
        session = data / "sessions" / "d15cf0110000000"
        session.mkdir(parents=True)
        ballast = data / "ballast"
        with open(ballast, "wb") as fh:  # leave about 200 KB: the CT (several MB) cannot be written
            fh.write(b"\0" * (os.statvfs(data).f_bavail * os.statvfs(data).f_frsize - 200_000))
        shown = result(room("disk-full", data, session.name, tiny_model))
        assert shown["analysis"]["job_status"] == "failed", shown
        assert "disk is full" in shown["analysis"]["job_message"], shown
        assert "disk is full" in shown["upload_error"], shown
        assert shown["after"]["has_ct"] and "opened" in shown["after"]["message"]  # still serving
        left = sorted(str(p.relative_to(session)) for p in session.rglob("*"))
        assert left == ["analysis-001", "session.json", "uploads"], left  # nothing half-written
    finally:
        subprocess.run(["umount", str(data)], check=False)
