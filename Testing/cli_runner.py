"""The command line as users meet it: ``python -m drasclr`` in a child process, and the refusal contract."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args, cwd=None, env=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m drasclr ARGS`` in a child process, stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-m", "drasclr", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def assert_refused(proc, out_dir, match=""):
    """Exit 2, one ``error:`` line (containing ``match``), no output folder and no temporary left beside it."""
    assert proc.returncode == 2, proc.stderr
    # progress lines (the stage that was running when the input was refused) may come first; one message
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not ln.startswith("progress:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert match.lower() in lines[0].lower(), lines[0]
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if ".tmp-" in p.name]
