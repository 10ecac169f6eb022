"""Helpers of the web shell tests and benchmark: the browser's path, a ``drasclr web`` server in a child process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = ROOT / "DrasCLRSlicer"


def chromium_path() -> str | None:
    """Debian's chromium (installed by scripts/setup.sh), or ``$DRASCLR_CHROMIUM``."""
    for candidate in (os.environ.get("DRASCLR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_room(pw, chromium: str, url: str, timeout_ms: int):
    """(browser, page): Chromium with a 1500 x 950 page on the reading room at ``url``, its controls loaded."""
    browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    page.set_default_timeout(timeout_ms)
    page.goto(url)
    page.wait_for_selector("#btn-demo")
    return browser, page


class WebServer:
    """``drasclr web`` in a child process on 127.0.0.1 and a free port, with its own data folder (``args``: more
    options, e.g. ``--users FILE``)."""

    def __init__(self, data: Path, log: Path, finetune_seconds: float = 15.0, args: tuple = (), host: str = ""):
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(MODULE_DIR), *filter(None, [env.get("PYTHONPATH")])])
        env.pop("DRASCLR_MODEL", None)
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drasclr", "web", "--port", str(self.port), "--data", str(data),
             "--finetune-seconds", f"{finetune_seconds:g}", *(["--host", host] if host else []), *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT))

    def wait_ready(self, timeout: float = 240.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the web server exited ({self.proc.returncode}): {self.tail()}")
            try:
                urllib.request.urlopen(self.url + "_health", timeout=2).read(100)  # the gateway; no session
                return time.monotonic() - t0
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the web server did not answer within {timeout:.0f} s: {self.tail()}")

    def __enter__(self) -> WebServer:
        """``with WebServer(...) as server``: ready when entered; stopped on leaving, its logs printed on a failure."""
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:
            print(self.tail())
        self.stop()

    def tail(self, n: int = 3000) -> str:
        """The end of the gateway's log and of each session process' log (``DATA/run/logs``)."""
        self._log.flush()
        parts = [self.log.read_text(errors="replace")[-n:]]
        for log in sorted((self.data / "run" / "logs").glob("*.txt")):
            parts.append(f"--- session log {log.name}\n" + log.read_text(errors="replace")[-n:])
        return "\n".join(parts)

    def session_dir(self) -> Path:
        sessions = sorted((self.data / "sessions").iterdir())
        assert len(sessions) == 1, sessions
        return sessions[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the server kills a running child and exits
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
