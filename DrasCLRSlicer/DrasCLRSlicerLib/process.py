"""Running the engine's command line in a child process: the command, its progress lines, cancelling.

No slicer import: the Slicer module and the tests use the same code. The engine prints
``progress: <desc> <i>/<n>`` on stderr when stderr is not a terminal (``drasclr.core.progress``), and
``progress: stage {json}`` when an analysis stage starts (``drasclr.core.stages``): :class:`ProgressReader` turns
both into :class:`Progress` objects, the loop lines of a stage carrying that stage's name and estimate.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from drasclr.core.settings import AnalysisSettings
from drasclr.core.stages import StageEvent, parse_stage_line, stage_text

PROGRESS_RE = re.compile(r"^progress:\s*(?P<desc>.*?)\s*(?P<i>\d+)/(?P<n>\d+|\?)\s*$")
MODULE_DIR = Path(__file__).resolve().parents[1]  # DrasCLRSlicer/, which holds the drasclr package


class Cancelled(Exception):
    """The user cancelled the child process."""


class EngineError(RuntimeError):
    """The engine exited with an error; ``str()`` is its ``error:`` line (or the tail of its output);
    ``returncode`` its exit status (negative: killed by that signal)."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class Progress:
    """One progress report: ``desc done/total`` (a loop of the engine, or a stage: its name, index and count) and,
    during an analysis, its ``stage`` (``Lobes``), ``index`` of ``count`` stages, ``seconds_left`` (estimated),
    ``elapsed`` seconds and ``overall`` (the estimated fraction of the whole run done)."""

    desc: str
    done: int
    total: int | None
    stage: str | None = None
    index: int | None = None
    count: int | None = None
    seconds_left: float | None = None
    elapsed: float | None = None
    overall: float | None = None
    finished: bool = False

    @property
    def fraction(self) -> float | None:
        """Of the whole analysis as estimated when a stage is known, else of this loop."""
        if self.overall is not None:
            return self.overall
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def text(self) -> str:
        """``Lobes (4 of 9) — about 25 s left`` during an analysis stage, else ``desc done/total``."""
        return self.headline if self.stage is not None else f"{self.desc} {self.done}/{self.total or '?'}"

    @property
    def headline(self) -> str:
        """The stage's line, or the loop's ``desc`` alone."""
        if self.stage is None:
            return self.desc
        return stage_text(self.stage, self.index, self.count, self.seconds_left, self.elapsed, self.finished)


def parse_progress(line: str) -> Progress | None:
    """``"progress: lung mask 3/10"`` -> ``Progress("lung mask", 3, 10)``; other lines -> ``None``."""
    m = PROGRESS_RE.match(line.strip())
    if not m:
        return None
    n = m.group("n")
    return Progress(m.group("desc"), int(m.group("i")), None if n == "?" else int(n))


class ProgressReader:
    """Engine output lines -> :class:`Progress` (None for other lines). A ``progress: stage`` line sets the current
    stage; the plain loop lines after it carry that stage, its elapsed time and its estimate counted down by the
    clock (never below the estimate of the stages after it). ``overall`` never goes back."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.stage: StageEvent | None = None
        self.at = 0.0
        self.overall = 0.0

    def read(self, line: str) -> Progress | None:
        event = parse_stage_line(line)
        if event is not None:
            self.stage, self.at = event, self.clock()
            return self._with_stage(Progress(event.name, event.index, event.count), 0.0)
        p = parse_progress(line)
        if p is None or self.stage is None or self.stage.finished:
            return p
        return self._with_stage(p, self.clock() - self.at)

    def _with_stage(self, p: Progress, since: float) -> Progress:
        ev = self.stage
        left = ev.left_s
        if left is not None and since > 0:
            left = max(left - since, left - (ev.stage_s or 0.0), 0.0)
        elapsed = ev.elapsed_s + since
        if ev.finished:
            self.overall = 1.0
        elif left is not None and elapsed + left > 0:
            self.overall = max(self.overall, min(0.99, elapsed / (elapsed + left)))
        return replace(p, stage=ev.name, index=ev.index, count=ev.count, seconds_left=left,
                       elapsed=round(elapsed, 1), overall=self.overall, finished=ev.finished)


def python_executable() -> str:
    """Slicer's ``PythonSlicer`` when running inside Slicer, else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def analyze_command(input_path, output_dir, settings: AnalysisSettings | None = None, lobes_path=None,
                    python: str | None = None, **overrides) -> list[str]:
    """The ``drasclr analyze`` command line for ``settings`` (``overrides``: settings fields, e.g. ``tta=False``),
    built by :meth:`AnalysisSettings.to_args` so the child runs exactly what the panel asked for (CLI contract:
    docs/contracts.md). ``lobes_path``: a lobe labelmap in LTRC values (the Logic writes it so)."""
    settings = AnalysisSettings.from_panel(overrides, base=settings, strict=True)
    if lobes_path:
        settings = settings.replace(lobes_convention="ltrc")
    cmd = [python or python_executable(), "-m", "drasclr", "analyze", str(input_path), "-o", str(output_dir),
           "--quiet", "--overwrite", *settings.to_args()]
    if lobes_path:
        cmd += ["--lobes", str(lobes_path)]
    return cmd


def finetune_command(ct_path, prediction_path, corrected_path, model=None, output_root=None, device: str = "auto",
                     max_seconds: float = 30.0, python: str | None = None, reviewed_path=None) -> list[str]:
    """The ``drasclr finetune corrections`` command line: a new model version from corrected labels
    (``reviewed_path``: the mask of reviewed voxels, ``--reviewed``)."""
    cmd = [python or python_executable(), "-m", "drasclr", "finetune", "corrections", str(ct_path),
           str(prediction_path), str(corrected_path), "--device", device, "--max-seconds", f"{max_seconds:g}"]
    if model:
        cmd += ["--model", str(model)]
    if output_root:
        cmd += ["-o", str(output_root)]
    if reviewed_path:
        cmd += ["--reviewed", str(reviewed_path)]
    return cmd


def last_json(lines: list[str]) -> dict:
    """The last JSON object printed over one or several lines (the engine's result summary)."""
    import json

    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith("{"):
            for end in range(len(lines), start, -1):
                try:
                    return json.loads("\n".join(lines[start:end]))
                except ValueError:
                    continue
    raise EngineError("the engine printed no result summary")


def engine_environment(base: dict | None = None) -> dict:
    """Environment for the child: the module folder first on PYTHONPATH (the bundled ``drasclr``)."""
    env = dict(os.environ if base is None else base)
    parts = [str(MODULE_DIR)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill the child and everything it started (``PythonSlicer`` is a launcher that starts the real Python)."""
    if proc.poll() is None:
        if os.name == "posix":
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session/process group
            except ProcessLookupError:
                pass
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
            proc.kill()
    proc.wait()


def die_with_parent() -> None:
    """In a child before it starts (Linux): SIGKILL it when the process that started it dies, so a killed
    shell or web session never leaves an engine child running on."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_engine(cmd: list[str], on_progress: Callable[[Progress], None] | None = None,
               on_line: Callable[[str], None] | None = None, should_cancel: Callable[[], bool] | None = None,
               on_idle: Callable[[], None] | None = None, env: dict | None = None, poll_s: float = 0.1) -> list[str]:
    """Run ``cmd``, report its progress lines, return all its output lines.

    ``on_idle`` is called about every ``poll_s`` seconds (the GUI passes ``slicer.app.processEvents``);
    when ``should_cancel()`` turns true the child is killed and :class:`Cancelled` is raised. A non-zero
    exit raises :class:`EngineError` with the engine's ``error:`` line.
    """
    group = {"start_new_session": True, "preexec_fn": die_with_parent} if os.name == "posix" else {
        "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=engine_environment() if env is None else env, **group)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump():
        for raw in proc.stdout:
            lines.put(raw.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    progress_lines = ProgressReader()
    out: list[str] = []
    try:
        finished = False
        while not finished:
            if should_cancel is not None and should_cancel():
                raise Cancelled()
            deadline = time.monotonic() + poll_s
            while time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if line is None:
                    finished = True
                    break
                out.append(line)
                if on_line is not None:
                    on_line(line)
                p = progress_lines.read(line)
                if p is not None and on_progress is not None:
                    on_progress(p)
            if on_idle is not None:
                on_idle()
        rc = proc.wait()
    except BaseException:
        kill_tree(proc)
        raise
    finally:
        reader.join(timeout=5)
    if rc != 0:
        errors = [ln[len("error:"):].strip() for ln in out if ln.startswith("error:")]
        raise EngineError(errors[-1] if errors else f"engine exited with status {rc}: " + " | ".join(out[-5:]),
                          returncode=rc)
    return out
