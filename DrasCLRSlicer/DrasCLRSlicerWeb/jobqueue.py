"""The job queue all sessions share: at most ``slots`` heavy jobs (analysis, fine-tuning) run at once, the
others wait first come, first served, see their place, and can leave (Cancel).

- :class:`FairQueue` lives in the gateway process (asyncio, its event loop only).
- :class:`QueueClient` is what a session process uses: it talks to the gateway's ``/_queue`` endpoints over
  loopback HTTP (aiohttp) with the gateway's per-start token.
- :class:`LocalQueue` gives a single process (tests, one ReadingRoom without a gateway) the same interface.

``acquire(kind, on_place, should_cancel)`` returns a ticket once the job may start (raising
``DrasCLRSlicerLib.process.Cancelled`` when cancelled while waiting); ``release(ticket)`` frees the slot. When a
session process dies, the gateway drops its tickets (:meth:`FairQueue.leave_session`). No slicer import.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass

from DrasCLRSlicerLib.process import Cancelled

GB = 2**30
JOB_MEMORY = 3 * GB  # one analysis child of a 512x512x400 CT needs about 2-3 GB


def default_slots(cores: int | None = None, memory: int | None = None) -> int:
    """Heavy jobs at once from the machine: one per two cores and per 3 GB of memory (at least one)."""
    cores = cores or os.cpu_count() or 1
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            memory = 8 * GB
    return max(1, min(cores // 2, memory // JOB_MEMORY))


@dataclass
class Ticket:
    id: str
    session: str
    user: str
    kind: str
    granted: bool = False


class FairQueue:
    """First come, first served; ``place`` 0 means running, 1 the next to start."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.waiting: list[Ticket] = []
        self.running: dict[str, Ticket] = {}
        self._changed = asyncio.Event()

    def enter(self, session: str, user: str, kind: str) -> Ticket:
        ticket = Ticket(secrets.token_hex(8), session, user, kind)
        self.waiting.append(ticket)
        self._promote()
        return ticket

    def place(self, ticket_id: str) -> int | None:
        if ticket_id in self.running:
            return 0
        for i, t in enumerate(self.waiting):
            if t.id == ticket_id:
                return i + 1
        return None

    def owner(self, ticket_id: str) -> str | None:
        t = self.running.get(ticket_id) or next((t for t in self.waiting if t.id == ticket_id), None)
        return t.session if t else None

    def leave(self, ticket_id: str) -> None:
        self.running.pop(ticket_id, None)
        self.waiting = [t for t in self.waiting if t.id != ticket_id]
        self._promote()

    def leave_session(self, session: str) -> None:
        for t in [*self.running.values(), *self.waiting]:
            if t.session == session:
                self.leave(t.id)

    def busy_sessions(self) -> set[str]:
        return {t.session for t in [*self.running.values(), *self.waiting]}

    def _promote(self) -> None:
        while len(self.running) < self.slots and self.waiting:
            t = self.waiting.pop(0)
            t.granted = True
            self.running[t.id] = t
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, ticket_id: str, known: int | None, timeout: float) -> int | None:
        """The ticket's place once it differs from ``known`` (or after ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (place := self.place(ticket_id)) == known and place is not None:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                break
        return self.place(ticket_id)


async def _wait_turn(place_of, on_place, should_cancel, leave) -> None:
    """Poll ``place_of(known)`` until the place is 0; report places; leave and raise Cancelled on cancel."""
    known = None
    while True:
        if should_cancel():
            await leave()
            raise Cancelled()
        place = await place_of(known)
        if place is None:
            raise Cancelled()  # the gateway dropped the ticket
        if place == 0:
            return
        if place != known and on_place is not None:
            on_place(place)
        known = place


class LocalQueue:
    """A :class:`FairQueue` inside this process, with the client interface."""

    def __init__(self, slots: int = 1, session: str = "local", user: str = "local"):
        self.queue = FairQueue(slots)
        self.session, self.user = session, user

    async def acquire(self, kind, on_place=None, should_cancel=lambda: False) -> str:
        ticket = self.queue.enter(self.session, self.user, kind)

        async def leave():
            self.queue.leave(ticket.id)

        await _wait_turn(lambda known: self.queue.wait_change(ticket.id, known, 0.5), on_place, should_cancel,
                         leave)
        return ticket.id

    async def release(self, ticket: str) -> None:
        self.queue.leave(ticket)


class QueueClient:
    """The gateway's queue seen from a session process (loopback HTTP, token header)."""

    def __init__(self, url: str, token: str, session: str):
        self.url, self.session = url.rstrip("/"), session
        self.headers = {"X-DrasCLR-Token": token}

    async def _call(self, method: str, path: str, **kwargs):
        import aiohttp

        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.request(method, f"{self.url}{path}", **kwargs) as resp:
                if resp.status == 404:
                    return None
                resp.raise_for_status()
                return await resp.json()

    async def acquire(self, kind, on_place=None, should_cancel=lambda: False) -> str:
        got = await self._call("POST", "/_queue", json={"session": self.session, "kind": kind})
        ticket = got["ticket"]

        async def place_of(known):
            answer = await self._call("GET", f"/_queue/{ticket}", params={"known": "" if known is None else known,
                                                                           "timeout": "1"})
            return None if answer is None else answer["place"]

        async def leave():
            await self.release(ticket)

        await _wait_turn(place_of, on_place, should_cancel, leave)
        return ticket

    async def release(self, ticket: str) -> None:
        try:
            await self._call("DELETE", f"/_queue/{ticket}")
        except OSError:
            pass  # the gateway is gone: nothing to free
