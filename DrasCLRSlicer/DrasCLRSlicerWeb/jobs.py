"""Background jobs of the web shell: one at a time per server process, with progress and Cancel.

A job has three parts, so that MRML/VTK objects are touched only on the server's event-loop thread:

1. ``prepare()`` on the loop thread (write the CT from its volume node, build the command),
2. ``work(on_progress, should_cancel)`` in a worker thread (``DrasCLRSlicerLib.process.run_engine``: the child
   process ``python -m drasclr ...``; no MRML),
3. ``finish(result)`` on the loop thread (load the outputs as nodes).

A second job of the same session while one runs is refused with :class:`JobBusy` (the page disables its buttons
meanwhile). With a ``queue`` (:mod:`.jobqueue`, shared by all sessions of a gateway) a job first waits for a slot
(status ``queued``, its place in ``desc``; Cancel leaves the queue) and frees it when done, failed or cancelled.
Progress from the worker reaches ``on_update`` on the loop thread through ``loop.call_soon_threadsafe``.
No slicer import.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from DrasCLRSlicerLib.process import Cancelled, EngineError, Progress

FULL_BYTES = 16 * 2**20  # less free space than this where a job writes: the disk is full


class JobBusy(RuntimeError):
    """Another job is running on this server."""


@dataclass(frozen=True)
class JobState:
    kind: str = ""  # "analysis", "fine-tuning"
    status: str = "idle"  # idle, queued, running, done, failed, cancelled
    desc: str = ""
    fraction: float | None = None  # None: indeterminate
    message: str = ""
    started: float = 0.0
    seconds: float = 0.0

    @property
    def running(self) -> bool:
        """Queued or running: the session's job buttons stay disabled, Cancel enabled."""
        return self.status in ("queued", "running")


class JobRunner:
    """Runs at most one job at a time; ``on_update(JobState)`` is called on the loop thread."""

    def __init__(self, on_update: Callable[[JobState], None] | None = None, queue=None, folder=None):
        self.state = JobState()
        self.finished = JobState()
        self.queue = queue
        self.folder = folder  # where jobs write: a failure there with no space left is named a full disk
        self._on_update = on_update
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._worker_idle = threading.Event()
        self._worker_idle.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def wait_worker(self, timeout: float) -> bool:
        """Wait (any thread) until no worker runs; True when none does. For shutdown: after :meth:`cancel` the
        worker kills its child process and returns even when the event loop has stopped."""
        return self._worker_idle.wait(timeout)

    def cancel(self) -> bool:
        """Ask the running job to stop (its child process is killed); False when nothing runs."""
        if not self.busy:
            return False
        self._cancel.set()
        self._set(desc="cancelling")
        return True

    def _set(self, **changes) -> None:
        self.state = replace(self.state, **changes)
        if self.state.status in ("done", "failed", "cancelled"):
            self.finished = self.state  # how the last job ended, even once the session's next job has begun
        if self.state.started and self.state.running:
            self.state = replace(self.state, seconds=time.monotonic() - self.state.started)
        if self._on_update is not None:
            self._on_update(self.state)

    def _on_place(self, place: int) -> None:
        self._set(desc=f"waiting in the queue, place {place}" + (" (next)" if place == 1 else ""))

    async def run(self, kind: str, prepare: Callable[[], object], work: Callable[..., object],
                  finish: Callable[[object, object], object | Awaitable[object]]) -> object | None:
        """Run one job; returns ``finish``'s value, or None when cancelled or failed (the state says which).

        ``prepare()`` -> ``ctx``; ``work(ctx, on_progress, should_cancel)`` -> ``result`` in a thread;
        ``finish(ctx, result)``. Raises :class:`JobBusy` when another job runs (nothing is started)."""
        if not self._lock.acquire(blocking=False):
            raise JobBusy(f"another job ({self.state.kind or 'job'}) is already running in this session; "
                          "wait for it or cancel it")
        loop = asyncio.get_running_loop()
        self._cancel.clear()
        started = time.monotonic()
        self.state = JobState(kind=kind, status="queued" if self.queue else "running",
                              desc="waiting for a free slot" if self.queue else "starting", started=started)
        self._set()
        ticket = None

        def guarded(ctx, on_progress, should_cancel):
            try:
                return work(ctx, on_progress, should_cancel)
            finally:
                self._worker_idle.set()

        def on_progress(p: Progress):
            loop.call_soon_threadsafe(lambda: self.state.running and self._set(desc=p.headline, fraction=p.fraction))

        try:
            if self.queue is not None:
                ticket = await self.queue.acquire(kind, self._on_place, self._cancel.is_set)
                started = time.monotonic()  # the run time counts from the slot, not from the click
                self.state = replace(self.state, started=started)
                self._set(status="running", desc="starting")
            ctx = prepare()
            self._worker_idle.clear()
            result = await loop.run_in_executor(None, guarded, ctx, on_progress, self._cancel.is_set)
            value = finish(ctx, result)
            if asyncio.iscoroutine(value):
                value = await value
            seconds = time.monotonic() - started
            self.state = replace(self.state, seconds=seconds)  # done before the slot is handed on
            self._set(status="done", desc="", fraction=1.0, message=f"{kind} finished in {seconds:.0f} s")
            return value
        except Cancelled:
            self._set(status="cancelled", desc="", fraction=None, message=f"{kind} cancelled")
            return None
        except (EngineError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: ITK/VTK writers
            self._set(status="failed", desc="", fraction=None,
                      message=f"{kind} failed: {failure_text(exc, self.folder)}")
            return None
        finally:
            self._lock.release()  # first: the session may start its next job while the slot is being handed on
            if ticket is not None:
                await self.queue.release(ticket)


def disk_full(exc: BaseException, folder=None) -> bool:
    """ENOSPC, or a writer's error (ITK, VTK: no errno) while the folder it wrote to has (almost) no space left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        return True
    try:
        return folder is not None and shutil.disk_usage(folder).free < FULL_BYTES
    except OSError:
        return False


def failure_text(exc: BaseException, folder=None) -> str:
    """What the page says about a failed job: a killed child and a full disk in plain words."""
    code = getattr(exc, "returncode", None)
    if isinstance(code, int) and code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return (f"the engine process was killed ({name}: out of memory, or stopped by the system); "
                "nothing was written")
    if disk_full(exc, folder):
        return "the disk is full (no space left on the server's data folder); nothing was kept"
    return str(exc)
