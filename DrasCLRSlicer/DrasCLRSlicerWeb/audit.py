"""The audit log: who opened, analyzed, corrected and exported what, one JSON line per event.

``DATA/audit.log`` (``--audit FILE`` elsewhere). A line: ``{"time", "user", "session", "action", "what"}`` where
``what`` names files (upload or path names inside the data folder), run folders and model versions: never a
patient name, never image content. The gateway (sign-in, sessions) and every session process append to the
same file; each line is one ``write`` on a file opened with ``O_APPEND``, so lines of several processes do not
interleave.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class AuditLog:
    def __init__(self, path: Path, user: str = "", session: str = ""):
        self.path = Path(path)
        self.user, self.session = user, session

    def write(self, action: str, what: str = "", user: str | None = None, session: str | None = None,
              **extra) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": self.user if user is None else user,
                "session": self.session if session is None else session, "action": action, "what": what, **extra}
        data = (json.dumps(line, sort_keys=False) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            pass  # a full disk must not stop the reading room; the event is lost

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
