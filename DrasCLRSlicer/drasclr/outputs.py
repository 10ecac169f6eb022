"""Writing a set of outputs all-or-nothing: into a hidden temporary folder beside the target, then moved."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def staged_dir(target: str | os.PathLike):
    """Yield a temporary folder; on success its files are moved into ``target`` (created if needed).

    On any exception the temporary folder is removed and ``target`` is left as it was (not created).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not target.exists():
        os.replace(tmp, target)
        return
    for item in tmp.iterdir():
        dest = target / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(item, dest)
    shutil.rmtree(tmp, ignore_errors=True)
