"""Stage progress of a long run: the stage's human name, its place among the stages that will run, the seconds
elapsed and an estimate of the seconds left, reported when each stage starts.

A :class:`StageTracker` is made active for one run with :func:`tracking`; the run's code marks its stages with
:func:`reported` (``drasclr.analysis.analyze``'s ``_stage`` does) and, when known, the size of the work with
:func:`note_lungs`. Without an active tracker both do nothing. Each stage start is sent to the tracker's sink as a
:class:`StageEvent`; the default sink prints one stderr line, ``progress: stage {json}`` (keys ``name``, ``index``,
``count``, ``left_s``, ``stage_s``, ``elapsed_s``, ``finished``), or a readable line on a terminal. The shells'
Logic parses the JSON line (``DrasCLRSlicerLib.process``); the plain ``progress: <desc> i/n`` lines stay as they are.

Estimate: each stage costs ``seconds = base + rate * units`` (the plan's built-in curve) where units are the scan's
voxels or its lungs' volume (known after the lung mask; before it, the voxels times the lung fraction seen before),
scaled by how much faster or slower this machine ran that kind of stage before (:class:`History`, a small JSON file
in the user cache folder, written atomically; never fatal). The history holds stage names, model
names, devices and sizes only: no input names, no patient identifiers.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

HISTORY_VERSION = 1
KEEP = 12  # samples kept per stage kind
NATIVE_STAGES = {"stats", "writing"}  # on the CT's own grid, whatever grid the stages before them ran on
DEFAULT_LUNG_FRACTION = 0.1  # lung voxels / voxels before any run was seen (demo CT 0.11, lidc_idri_0001 0.09)


@dataclass(frozen=True)
class Stage:
    """One planned stage: ``key`` as the code names it (``lung_mask``), ``name`` for people (``Lung mask``),
    ``units`` what its cost scales with (``voxels`` or ``lung``), ``kind`` what its history is kept under (the key
    and the variant that changes its cost, e.g. the model and device), ``default``: (seconds, seconds per unit)
    when no history exists."""

    key: str
    name: str
    units: str = "voxels"  # "voxels" (counted in millions) or "lung_ml" (the lungs' volume, in litres)
    kind: str = ""
    default: tuple[float, float] = (0.5, 0.5)

    @property
    def history_key(self) -> str:
        return self.kind or self.key


@dataclass(frozen=True)
class StageEvent:
    """A stage starts (``finished``: the whole run ended; ``name`` is then the last stage's)."""

    name: str
    index: int  # 1-based, among ``count`` stages
    count: int
    left_s: float | None  # this stage and the rest, estimated
    stage_s: float | None  # this stage alone, estimated
    elapsed_s: float
    finished: bool = False

    def line(self) -> str:
        """The machine-readable stderr line (the Logic's parser reads it)."""
        return "progress: stage " + json.dumps(asdict(self), separators=(", ", ": "))

    def text(self) -> str:
        """``Lobes (4 of 9) — about 25 s left``."""
        return stage_text(self.name, self.index, self.count, self.left_s, self.elapsed_s, self.finished)


def stage_text(name: str, index: int, count: int, left_s: float | None, elapsed_s: float | None = None,
               finished: bool = False) -> str:
    """``Lobes (4 of 9) — about 25 s left``; ``Finished in 38 s`` at the end."""
    if finished:
        return "Finished" + (f" in {describe_seconds(elapsed_s)}" if elapsed_s is not None else "")
    left = f" — {describe_left(left_s)}" if left_s is not None else ""
    return f"{name} ({index} of {count}){left}"


def describe_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def describe_left(seconds: float) -> str:
    """``about 25 s left`` (5 s steps above 20 s, minutes above 90 s), ``a few seconds left`` under 5 s."""
    if seconds < 5:
        return "a few seconds left"
    if seconds < 20:
        return f"about {seconds:.0f} s left"
    if seconds < 90:
        return f"about {5 * round(seconds / 5):.0f} s left"
    return f"about {max(2, round(seconds / 60)):.0f} min left"


def parse_stage_line(line: str) -> StageEvent | None:
    """The event of a ``progress: stage {json}`` line; None for any other line."""
    line = line.strip()
    if not line.startswith("progress: stage {"):
        return None
    try:
        d = json.loads(line[len("progress: stage "):])
        return StageEvent(str(d["name"]), int(d["index"]), int(d["count"]), _num(d.get("left_s")),
                          _num(d.get("stage_s")), float(d["elapsed_s"]), bool(d.get("finished", False)))
    except (ValueError, KeyError, TypeError):
        return None


def _num(v) -> float | None:
    return None if v is None else float(v)


def print_event(event: StageEvent, stream=None) -> None:
    """The default sink: the JSON line, or on a terminal ``progress: Lobes (4 of 9) — about 25 s left, 12 s
    elapsed``."""
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        print(f"progress: {event.text()}, {describe_seconds(event.elapsed_s)} elapsed", file=stream, flush=True)
    else:
        print(event.line(), file=stream, flush=True)


def cache_dir() -> Path:
    """``$DRASCLR_CACHE_DIR``, else the user cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``; on Windows
    ``%LOCALAPPDATA%``) ``/drasclr``."""
    if os.environ.get("DRASCLR_CACHE_DIR"):
        return Path(os.environ["DRASCLR_CACHE_DIR"])
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "drasclr" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "drasclr"


@dataclass
class History:
    """This machine's earlier stage times: ``samples[kind]`` = recent ``[units, seconds]``; ``lung_fraction``:
    recent lung voxels / voxels."""

    samples: dict[str, list[list[float]]] = field(default_factory=dict)
    lung_fraction: list[float] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> History:
        try:
            doc = json.loads(Path(path).read_text())
            if doc.get("version") != HISTORY_VERSION:
                return cls()
            samples = {str(k): [[float(u), float(s)] for u, s in v if u > 0 and s >= 0]
                       for k, v in doc.get("samples", {}).items()}
            return cls(samples, [float(f) for f in doc.get("lung_fraction", []) if 0 < f <= 1])
        except (OSError, ValueError, TypeError, AttributeError):
            return cls()

    def add(self, kind: str, units: float, seconds: float) -> None:
        if units > 0 and seconds >= 0:
            self.samples[kind] = [*self.samples.get(kind, []), [float(units), round(float(seconds), 4)]][-KEEP:]

    def predict(self, kind: str, units: float, curve: Callable[[float], float]) -> float | None:
        """Seconds for ``units`` from the samples of ``kind``: each sample says how much faster or slower than
        ``curve`` (the built-in seconds for a size) this machine ran, at the sample's size; nearer sizes and later
        runs weigh more. None without samples."""
        samples = self.samples.get(kind)
        if not samples or units <= 0:
            return None
        num = den = 0.0
        for age, (u, s) in enumerate(reversed(samples)):
            w = math.exp(-abs(math.log(units / u))) * 0.8 ** age
            num += w * s / max(curve(u), 1e-3)
            den += w
        return curve(units) * num / den

    def fraction(self) -> float:
        return self.lung_fraction[-1] if self.lung_fraction else DEFAULT_LUNG_FRACTION

    def save(self, path: Path, new: History) -> None:
        """Merge ``new`` into the file as it is now (another run may have written it) and replace it atomically;
        an unwritable cache is logged, never raised."""
        path = Path(path)
        try:
            merged = History.load(path)
            for kind, pairs in new.samples.items():
                for u, s in pairs:
                    merged.add(kind, u, s)
            merged.lung_fraction = (merged.lung_fraction + new.lung_fraction)[-KEEP:]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({"version": HISTORY_VERSION, "samples": merged.samples,
                                       "lung_fraction": merged.lung_fraction}, indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("stage history not saved to %s: %s", path, exc)
            with contextlib.suppress(OSError, UnboundLocalError):
                tmp.unlink(missing_ok=True)


def history_path() -> Path:
    return cache_dir() / "stage_times.json"


class StageTracker:
    """Tracks one run's ``plan`` (the stages that will run, in order) and reports each start to ``sink``.

    ``voxels``: the scan's size, ``voxel_ml`` one voxel's volume; ``started``: ``time.perf_counter()`` when the run
    began (reading included). When the stage before ``writing`` ends, ``writing`` starts: it ends with the run
    (:func:`tracking`)."""

    def __init__(self, plan: list[Stage], voxels: int, voxel_ml: float,
                 sink: Callable[[StageEvent], None] | None = None, started: float | None = None,
                 history: History | None = None, path: Path | None = None):
        self.plan = list(plan)
        self.voxels = int(voxels)
        self.voxel_ml = float(voxel_ml)
        self.sink = sink or print_event
        self.started = time.perf_counter() if started is None else started
        self.path = history_path() if path is None else Path(path)
        self.history = History.load(self.path) if history is None else history
        self.lung_voxels: int | None = None
        self.grid_voxels: int | None = None  # the grid the analysis runs on when it is not the scan's (slabs)
        self.grid_voxel_ml: float | None = None
        self.done = History()  # this run's samples
        self.current: tuple[Stage, float] | None = None
        self.events: list[StageEvent] = []

    # --- estimates --------------------------------------------------------------------------------------
    def units(self, stage: Stage) -> float:
        voxels, voxel_ml = self.voxels, self.voxel_ml
        if self.grid_voxels is not None and stage.key not in NATIVE_STAGES:
            voxels, voxel_ml = self.grid_voxels, self.grid_voxel_ml
        if stage.units == "lung_ml":
            lung = self.lung_voxels if self.lung_voxels is not None else voxels * self.history.fraction()
            return lung * voxel_ml / 1000.0
        return voxels / 1e6

    def estimate(self, stage: Stage) -> float:
        base, per_unit = stage.default

        def curve(units: float) -> float:
            return base + per_unit * units

        units = self.units(stage)
        seen = self.history.predict(stage.history_key, units, curve)
        return curve(units) if seen is None else seen

    def left(self, index: int) -> float:
        """Estimated seconds of the plan's stages from ``index`` (0-based) on."""
        return sum(self.estimate(s) for s in self.plan[index:])

    # --- stage marks ------------------------------------------------------------------------------------
    def _position(self, key: str) -> int:
        for i, s in enumerate(self.plan):
            if s.key == key:
                return i
        start = 0 if self.current is None else self._position(self.current[0].key) + 1
        self.plan.insert(start, Stage(key, key.replace("_", " ").capitalize()))  # a stage the plan did not know
        return start

    def begin(self, key: str) -> None:
        if self.current is not None:
            self.end()
        i = self._position(key)
        stage = self.plan[i]
        self.current = (stage, time.perf_counter())
        self._emit(StageEvent(stage.name, i + 1, len(self.plan), round(self.left(i), 1),
                              round(self.estimate(stage), 1), self._elapsed()))

    def end(self) -> None:
        """The current stage ended: its time is this run's sample; the plan's follow-on stage starts."""
        if self.current is None:
            return
        stage, t0 = self.current
        self.current = None
        self.done.add(stage.history_key, self.units(stage), time.perf_counter() - t0)
        i = self._position(stage.key)
        if i + 1 < len(self.plan) and self.plan[i + 1].key == "writing":
            self.begin("writing")

    def lungs(self, count: int) -> None:
        self.lung_voxels = int(count)

    def grid(self, voxels: int, voxel_ml: float) -> None:
        """The stages from here on (but statistics and writing) run on another grid: ``voxels`` of ``voxel_ml``."""
        self.grid_voxels, self.grid_voxel_ml = int(voxels), float(voxel_ml)

    def finish(self, save: bool = True) -> None:
        self.end()
        voxels = self.grid_voxels or self.voxels  # the lungs were counted on the grid the analysis ran on
        if self.lung_voxels and voxels:
            self.done.lung_fraction.append(round(self.lung_voxels / voxels, 5))
        if save:
            self.history.save(self.path, self.done)
        last = self.events[-1] if self.events else None
        self._emit(StageEvent(last.name if last else "", len(self.plan), len(self.plan), 0.0, 0.0, self._elapsed(),
                              finished=True))

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def _emit(self, event: StageEvent) -> None:
        self.events.append(event)
        try:
            self.sink(event)
        except (OSError, ValueError) as exc:  # a closed stream never fails the run
            log.debug("stage event not reported: %s", exc)


_active: contextvars.ContextVar[StageTracker | None] = contextvars.ContextVar("drasclr_stage_tracker", default=None)


@contextlib.contextmanager
def tracking(tracker: StageTracker) -> Iterator[StageTracker]:
    """Make ``tracker`` the active one for the ``with`` block; on a normal exit the last stage ends, the history is
    saved and a ``finished`` event sent (on an error nothing is saved)."""
    token = _active.set(tracker)
    try:
        yield tracker
    finally:
        _active.reset(token)
    tracker.finish()


@contextlib.contextmanager
def reported(key: str) -> Iterator[None]:
    """Mark the ``with`` block as stage ``key`` of the active tracker (nothing without one)."""
    tracker = _active.get()
    if tracker is None:
        yield
        return
    tracker.begin(key)
    yield
    if tracker.current is not None and tracker.current[0].key == key:
        tracker.end()


def note_grid(image) -> None:
    """The analysis runs on ``image``'s grid (thin slices as slabs: drasclr.analysis.thin_slices), not the scan's:
    the estimates of its stages scale with that grid's voxels (statistics and writing stay on the scan's)."""
    tracker = _active.get()
    if tracker is not None:
        tracker.grid(image.array.size, image.voxel_volume_ml)


def note_lungs(lungs) -> None:
    """The lung mask is known (an image or array, non-zero = lung): later estimates scale with its voxels."""
    tracker = _active.get()
    if tracker is not None:
        import numpy as np

        tracker.lungs(int(np.count_nonzero(getattr(lungs, "array", lungs))))
