"""What a session folder remembers (``session.json``): its owner, the CT it shows, its last result, its jobs.

Written atomically (temporary file + ``os.replace``) after every change, so a server killed at any moment leaves
the previous or the next record, never half of one. :func:`recover` runs when a session process starts on an
existing folder: a job the record still calls queued or running was cut off by a stopped server; it is marked
failed with a message the page shows, and its run folder is emptied (:func:`clean_run`; the engine moves a
finished output into place in one step, so an output folder is either complete or absent, but a killed engine
leaves its hidden staging folder).
No slicer import.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

NAME = "session.json"
INTERRUPTED = "the server stopped during this {kind}; nothing of it was kept. Run it again."


def read(folder: Path) -> dict:
    try:
        data = json.loads((Path(folder) / NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write(folder: Path, data: dict) -> None:
    folder = Path(folder)
    tmp = folder / f".{NAME}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, folder / NAME)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def update(folder: Path, **changes) -> dict:
    data = read(folder)
    data.update(changes)
    write(folder, data)
    return data


def create(folder: Path, session_id: str, user: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"id": session_id, "user": user, "created": time.time(), "ct": None, "result": None, "jobs": []}
    write(folder, data)
    return data


def job_started(folder: Path, kind: str, run_dir: Path) -> None:
    data = read(folder)
    jobs = data.get("jobs", [])
    jobs.append({"kind": kind, "run": Path(run_dir).name, "status": "running", "started": time.time()})
    data["jobs"] = jobs
    write(folder, data)


def job_ended(folder: Path, run: str, status: str, message: str) -> None:
    """Record how the job of run folder ``run`` ended."""
    data = read(folder)
    for job in data.get("jobs", []):
        if job.get("run") == run and job.get("status") in ("queued", "running"):
            job.update(status=status, message=message, ended=time.time())
            write(folder, data)
            return


def clean_run(run: Path) -> None:
    """Empty the run folder of a job that did not finish (its inputs, a killed engine's hidden staging folder):
    nothing half-written stays. The empty folder keeps its number, so run names are never reused."""
    if run.is_dir():
        for entry in list(run.iterdir()):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def recover(folder: Path) -> str:
    """Mark jobs cut off by a stopped server as failed and remove their staging folders; the page's message."""
    folder = Path(folder)
    data = read(folder)
    messages = []
    for job in data.get("jobs", []):
        if job.get("status") not in ("queued", "running"):
            continue
        job.update(status="failed", message=INTERRUPTED.format(kind=job.get("kind", "job")), ended=time.time())
        messages.append(job["message"])
        if job.get("run"):
            clean_run(folder / str(job["run"]))
    if messages:
        write(folder, data)
    return messages[-1] if messages else ""
