"""One process per browser session, started and stopped with wslink's launcher.

:class:`SessionRegistry` (in the gateway process) owns the sessions of all users. A session is a folder
``DATA/sessions/<id>/`` (its ``session.json`` names the owner, see :mod:`.records`) and, while someone uses it, a
process ``python -m DrasCLRSlicerWeb.room`` with its own trame server, MRML scene and views on a loopback port.
Processes are started, watched and stopped by ``wslink.launcher`` (``SessionManager``: the port pool and the
command template with its sanitizing; ``ProcessManager``: start, ready line, ended processes, stop) — the
launcher that trame/ParaView Web deployments use; the gateway adds what the launcher leaves to Apache: the
owner check and the proxying (:mod:`.gateway`).

Idle sessions (no page connected and no job queued or running for ``idle_seconds``) are stopped: their process
exits and its memory goes back to the system; the folder stays, so the owner can reopen the session later (its
process restores the CT and the last result). No slicer/trame import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from wslink import launcher

from . import records
from .paths import _SESSION_ID

log = logging.getLogger(__name__)
READY = "DrasCLR session ready"
RELAY_CHUNK = 2 * 2**20
_NAME_RE = {"type": "regexp", "regexp": r"^[A-Za-z0-9._-]{1,64}$", "default": "invalid"}


class SessionDenied(LookupError):
    """No such session for this user (another user's sessions look the same as missing ones)."""


@dataclass
class Live:
    id: str
    user: str
    launcher_id: str
    port: int
    connections: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    ready: asyncio.Future | None = None


class SessionRegistry:
    def __init__(self, data_root: Path, room_args: list[str], ports: tuple[int, int], idle_seconds: float,
                 start_timeout: float = 240.0, on_end=None):
        self.data_root = Path(data_root)
        self.sessions_root = self.data_root / "sessions"
        self.run_dir = self.data_root / "run"
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.idle_seconds, self.start_timeout = idle_seconds, start_timeout
        self.on_end = on_end  # called with the session id when its process ends (the queue drops its tickets)
        self.config = {
            "configuration": {"log_dir": str(self.run_dir / "logs"), "timeout": start_timeout,
                              "sessionURL": "ws://${host}:${port}/ws",
                              "sanitize": {"session": _NAME_RE, "user": _NAME_RE}},
            "resources": [{"host": "127.0.0.1", "port_range": list(ports)}],
            "properties": {},
            "apps": {"room": {"cmd": [sys.executable, "-m", "DrasCLRSlicerWeb.room", "--port", "${port}",
                                      "--session", "${session}", "--user", "${user}", *room_args],
                              "ready_line": READY}},
        }
        self.launcher = launcher.SessionManager(
            self.config, launcher.ProxyMappingManagerTXT(str(self.run_dir / "proxy-mapping.txt")))
        self.processes = launcher.ProcessManager(self.config)
        self.live: dict[str, Live] = {}

    # --- folders and owners --------------------------------------------------------------------------------
    def owner(self, session_id: str) -> str | None:
        if not _SESSION_ID.match(session_id or ""):
            return None
        return records.read(self.sessions_root / session_id).get("user")

    def check(self, session_id: str, user: str) -> None:
        if self.owner(session_id) != user:
            raise SessionDenied(session_id)

    def of_user(self, user: str) -> list[dict]:
        """The user's sessions, newest first."""
        found = []
        if self.sessions_root.is_dir():
            for folder in self.sessions_root.iterdir():
                rec = records.read(folder)
                if rec.get("user") == user:
                    found.append({**rec, "id": folder.name, "live": folder.name in self.live})
        return sorted(found, key=lambda r: r.get("created", 0), reverse=True)

    def new(self, user: str) -> str:
        session_id = secrets.token_hex(8)
        records.create(self.sessions_root / session_id, session_id, user)
        return session_id

    def last_or_new(self, user: str) -> str:
        """The user's live session, else their newest one (reopened), else a new one."""
        mine = self.of_user(user)
        live = [r for r in mine if r["live"]]
        return (live or mine)[0]["id"] if mine else self.new(user)

    # --- processes -----------------------------------------------------------------------------------------
    async def ensure(self, session_id: str, user: str) -> Live:
        """The session's running process (started, and waited for, when it is not running)."""
        self.check(session_id, user)
        live = self.live.get(session_id)
        if live is None:
            live = self._start(session_id, user)
        await asyncio.shield(live.ready)
        live.last_seen = time.monotonic()
        return live

    def _start(self, session_id: str, user: str) -> Live:
        options = self.launcher.createSession({"application": "room", "session": session_id, "user": user})
        if options is None:
            raise RuntimeError("no free port for another session: raise --max-sessions")
        proc = self.processes.startProcess(options)  # on this (the loop's) thread: the child's parent-death signal
        if proc is None:
            self.launcher.deleteSession(options["id"])
            raise RuntimeError("the session process could not be started")
        live = Live(session_id, user, options["id"], options["port"])
        live.ready = asyncio.ensure_future(self._wait_ready(live, options))
        self.live[session_id] = live
        return live

    async def _wait_ready(self, live: Live, options: dict) -> None:
        t0 = time.monotonic()
        while not self.processes.isReady(options):
            if not self.processes.isRunning(live.launcher_id):
                self._forget(live.id)
                raise RuntimeError(f"the session process exited while starting (log: {self.log_path(live)})")
            if time.monotonic() - t0 > self.start_timeout:
                self.stop(live.id)
                raise TimeoutError(f"the session did not start within {self.start_timeout:.0f} s")
            await asyncio.sleep(0.2)

    def log_path(self, live: Live) -> Path:
        return self.run_dir / "logs" / f"{live.launcher_id}.txt"

    def pid(self, session_id: str) -> int | None:
        live = self.live.get(session_id)
        proc = self.processes.processes.get(live.launcher_id) if live else None
        return proc.pid if proc else None

    def stop(self, session_id: str, wait: bool = False) -> None:
        """SIGTERM to the session's process (it kills its engine child and exits); SIGKILL if it still runs after
        30 s. ``wait``: block until it has exited (shutdown), else a thread waits (the event loop goes on)."""
        live = self.live.get(session_id)
        if live is None:
            return
        if live.launcher_id in self.processes.processes:
            proc = self.processes.processes[live.launcher_id]
            self.processes.stopProcess(live.launcher_id)
            if wait:
                _reap(proc)
            else:
                threading.Thread(target=_reap, args=(proc,), daemon=True).start()
        self._forget(session_id)

    def _forget(self, session_id: str) -> None:
        live = self.live.pop(session_id, None)
        if live is None:
            return
        self.processes.processes.pop(live.launcher_id, None)
        if live.launcher_id in self.launcher.sessions:
            self.launcher.deleteSession(live.launcher_id)
        if self.on_end is not None:
            self.on_end(session_id)

    def stop_all(self) -> None:
        """Stop every session process (SIGTERM to all first, then wait for each)."""
        procs = [self.processes.processes.get(live.launcher_id) for live in self.live.values()]
        for session_id in list(self.live):
            self.stop(session_id, wait=False)
        for proc in filter(None, procs):
            _reap(proc)

    # --- idle and ended sessions ---------------------------------------------------------------------------
    def connected(self, session_id: str, delta: int) -> None:
        live = self.live.get(session_id)
        if live is not None:
            live.connections += delta
            live.last_seen = time.monotonic()

    def sweep(self, busy: set[str]) -> list[str]:
        """Forget ended processes; stop idle sessions (no page, no job in ``busy``). The ids stopped."""
        ended = set(self.processes.listEndedProcess())
        stopped = []
        for live in list(self.live.values()):
            if live.launcher_id in ended and live.ready is not None and live.ready.done():
                log.warning("session %s: its process ended", live.id)
                self._forget(live.id)
                stopped.append(live.id)
            elif (live.connections <= 0 and live.id not in busy and live.ready is not None and live.ready.done()
                  and time.monotonic() - live.last_seen > self.idle_seconds):
                self.stop(live.id)
                stopped.append(live.id)
        return stopped

    async def sweep_forever(self, busy_of, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                self.sweep(busy_of())
            except Exception:  # noqa: BLE001 - the sweeper must keep running
                log.exception("session sweep failed")


def _reap(proc, timeout: float = 30.0) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def session_environment(token: str, gateway_url: str) -> None:
    """What every session process inherits (wslink's ProcessManager starts them with this environment)."""
    os.environ["DRASCLR_GATEWAY_TOKEN"] = token
    os.environ["DRASCLR_GATEWAY_URL"] = gateway_url
    # the sessions' wslink cuts messages (uploads, images) into chunks of this size; the gateway's forwarder
    # (wslink's relay, read at import with the default 4 MiB) must take a chunk plus its header
    os.environ["WSLINK_MAX_MSG_SIZE"] = str(RELAY_CHUNK)
