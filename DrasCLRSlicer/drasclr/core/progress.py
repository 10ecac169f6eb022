"""Progress reporting: a tqdm bar on a terminal, plain ``progress: desc i/n`` lines otherwise (logs, Slicer)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every: int | None = None,
             stream=None) -> Iterator[T]:
    """Iterate ``items`` and report progress on ``stream`` (stderr by default).

    On a terminal this is a tqdm bar; otherwise a line ``progress: <desc> <i>/<n>`` about every 10 %
    (or every ``every`` items), which the Slicer module parses to drive its progress bar.
    """
    stream = stream or sys.stderr
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if getattr(stream, "isatty", lambda: False)():
        yield from tqdm(items, total=total, desc=desc, file=stream, dynamic_ncols=True)
        return
    step = every or max(1, (total or 10) // 10)
    i = 0
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            print(f"progress: {desc} {i}/{total if total is not None else '?'}", file=stream, flush=True)
