"""Writing outputs all-or-nothing, refusing to clobber, one writer at a time.

- ``check_output_location``: before any heavy work, the output path is checked to be creatable and writable
  (not a file, not a device, its parent a writable folder with some free space), and an existing non-empty
  folder is refused unless the user passed ``--overwrite``.
- ``claimed_output``: holds a lock beside the target (``.NAME.lock``, ``fcntl.flock``) for the whole run, so two
  runs writing the same output fail fast instead of racing, and records whether this process may replace it.
- ``staged_dir``: files are written into a hidden temporary folder beside the target and moved into place at the
  end; on any failure (exceptions, SIGTERM via ``terminate_on_signals``, a failing final move) the temporary
  folder is removed and the target is left as it was. Replacing (``--overwrite``) swaps the whole folder: old and
  new files are never merged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .errors import InputError, Terminated

MIN_FREE_BYTES = 64 * 2**20  # an output folder smaller than this is not worth starting
_CLAIMS: dict[str, bool] = {}  # resolved target -> may be replaced (held by this process)
_LOCKS: dict[str, int] = {}  # lock file path -> open descriptor (held by this process)


def _key(target: Path) -> str:
    return os.path.abspath(target)


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def is_bookkeeping(name: str) -> bool:
    """Hidden bookkeeping entries drasclr itself makes (temporary folders, locks, probes)."""
    return name.startswith(".") and any(t in name for t in (".tmp-", ".lock", ".old-", ".drasclr-probe-"))


def is_nonempty_dir(path: Path) -> bool:
    """A folder holding anything besides drasclr's own hidden bookkeeping entries."""
    return path.is_dir() and any(not is_bookkeeping(p.name) for p in path.iterdir())


def check_output_location(target: str | os.PathLike, overwrite: bool = False, resumable=None,
                          need_bytes: int = MIN_FREE_BYTES, what: str = "output folder") -> None:
    """Refuse an output path that cannot be written, before any work is done.

    ``resumable``: a function ``(folder) -> bool`` saying whether an existing non-empty folder may be continued
    (batch analysis, resumed pretraining); otherwise such a folder needs ``overwrite``."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise InputError(f"{what} {target} exists and is not a folder (a file or device)")
    if target.is_dir() and is_nonempty_dir(target) and not overwrite:
        if resumable is None or not resumable(target):
            raise InputError(f"{what} {target} exists and is not empty; pass --overwrite to replace it "
                             "(or choose a new folder)")
    base = _nearest_existing(target if target.exists() else target.parent)
    if not base.is_dir():
        raise InputError(f"cannot create {what} {target}: {base} is a file, not a folder")
    probe_dir = target if target.is_dir() else base
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {what} {target}: {probe_dir} is not writable")
    try:
        fd, probe = tempfile.mkstemp(prefix=".drasclr-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write {what} {target}: {exc.strerror or exc}") from None
    free = shutil.disk_usage(probe_dir).free
    if free < need_bytes:
        raise InputError(f"not enough free disk space for {what} {target}: {free / 2**20:.0f} MiB free, about "
                         f"{need_bytes / 2**20:.0f} MiB needed")


@contextlib.contextmanager
def output_lock(target: str | os.PathLike):
    """Hold ``.NAME.lock`` beside ``target`` (non-blocking ``flock``); re-entrant within one process.

    Another process holding it -> ``InputError``. Where ``fcntl`` is missing (Windows) no lock is taken."""
    target = Path(os.path.abspath(target))
    lock = target.parent / f".{target.name}.lock"
    key = str(lock)
    if key in _LOCKS:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise InputError(f"another drasclr run is writing {target} (lock {lock.name} is held); wait for it or "
                         "choose another output") from None
    _LOCKS[key] = fd
    try:
        yield
    finally:
        _LOCKS.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


@contextlib.contextmanager
def claimed_output(target: str | os.PathLike, overwrite: bool = False, resumable=None,
                   need_bytes: int = MIN_FREE_BYTES, what: str = "output folder"):
    """Check the output location, then hold its lock for the whole ``with`` block; ``staged_dir`` calls inside
    it on the same target replace an existing folder when ``overwrite`` is set (and refuse it otherwise)."""
    target = Path(target)
    check_output_location(target, overwrite, resumable, need_bytes, what)
    created_parent = _nearest_existing(target.parent)
    try:
        with output_lock(target):
            _CLAIMS[_key(target)] = overwrite
            try:
                yield target
            finally:
                _CLAIMS.pop(_key(target), None)
    finally:
        _remove_empty_parents(target.parent, created_parent)


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Remove folders this run created above its output when they ended up empty (nothing left behind)."""
    folder, stop = Path(os.path.abspath(folder)), Path(os.path.abspath(stop))
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike, overwrite: bool | None = None):
    """Yield a temporary folder beside ``target``; on success it becomes ``target``.

    ``target`` may not exist or be an empty folder; an existing non-empty folder is replaced as a whole when
    ``overwrite`` (default: what ``claimed_output`` recorded for this target, else False) and refused otherwise.
    On any failure, SIGTERM included, the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    if overwrite is None:
        overwrite = _CLAIMS.get(_key(target), False)
    if target.exists() and not target.is_dir():
        raise InputError(f"output {target} exists and is not a folder")
    if is_nonempty_dir(target) and not overwrite:
        raise InputError(f"output folder {target} exists and is not empty; pass --overwrite to replace it")
    stop = _nearest_existing(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {target.parent}: {exc.strerror or exc}") from None
    with output_lock(target):
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as exc:
            _remove_empty_parents(target.parent, stop)
            raise InputError(f"cannot write output folder {target}: {exc.strerror or exc}") from None
        try:
            yield tmp
            _commit(tmp, target, overwrite)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_empty_parents(target.parent, stop)
            if isinstance(exc, OSError):
                raise InputError(f"cannot write output {target}: {exc.strerror or exc}") from None
            raise


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``target``; an existing folder is swapped out first and removed after (restored on error)."""
    old = None
    if target.exists():
        if not target.is_dir() or (is_nonempty_dir(target) and not overwrite):
            raise InputError(f"output {target} appeared while this run was writing (another program?); "
                             "nothing was written")
        if not any(target.iterdir()):
            target.rmdir()
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / "x")
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old / "x", target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- signals ----------------------------------------------------------------------------------------------------
def terminate_on_signals(signals=(signal.SIGTERM,)) -> None:
    """Turn SIGTERM (and SIGHUP where given) into a :class:`Terminated` exception in this process, so every
    ``staged_dir`` cleans up on the way out; forked children (data loader workers) keep the default action."""
    owner = os.getpid()

    def handler(signum, _frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signal.Signals(signum).name)

    for sig in signals:
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):  # not the main thread (embedded use): leave signals alone
            return


@contextlib.contextmanager
def set_aside(out: Path):
    """Move an existing folder ``out`` aside for the ``with`` block: it is removed when the block succeeds and put
    back (replacing whatever the block wrote) when it fails — ``--overwrite`` that loses nothing on a failed run."""
    out = Path(out)
    if not out.is_dir():
        yield
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        yield
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
