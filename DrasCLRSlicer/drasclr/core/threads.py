"""Threads for the per-voxel numpy/SciPy work of an analysis (SciPy's filters release the GIL).

An analysis runs one stage at a time; a stage that filters a thin-slice scan slab by slab uses as many threads as
torch would (``OMP_NUM_THREADS``, or ``torch.set_num_threads``), so two cores filter two slabs at once and a job
told to use one thread keeps to one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def cpu_workers() -> int:
    """Torch's thread count where torch is loaded, else ``OMP_NUM_THREADS``, else the CPU count."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.get_num_threads())
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, os.cpu_count() or 1)


def for_each(fn: Callable, items: Iterable) -> None:
    """``fn(item)`` for every item, on :func:`cpu_workers` threads (in this thread when that is one); the first
    error is raised after all have run."""
    items = list(items)
    workers = min(cpu_workers(), len(items))
    if workers <= 1:
        _all_then_raise([lambda item=item: fn(item) for item in items])
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="drasclr-slabs") as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _all_then_raise(jobs: list[Callable]) -> None:
    """Every job, in order, in this thread; then the first error, if any."""
    first = None
    for job in jobs:
        try:
            job()
        except Exception as exc:  # re-raised below, after the other jobs (an interrupt stops at once)
            first = first or exc
    if first is not None:
        raise first


def beside(foreground: Callable | None, background: Iterable[Callable]) -> None:
    """``foreground()`` in this thread (what must stay in the caller's thread: matplotlib, say) while the
    ``background`` jobs run on :func:`cpu_workers` - 1 threads; one after the other with one worker. The first error
    is raised after all have run."""
    background = list(background)
    if cpu_workers() <= 1 or not background:
        _all_then_raise(([foreground] if foreground is not None else []) + background)
        return
    with ThreadPoolExecutor(min(cpu_workers() - 1, len(background)), thread_name_prefix="drasclr-beside") as pool:
        futures = [pool.submit(job) for job in background]
        try:
            if foreground is not None:
                foreground()
        finally:
            for future in futures:
                future.exception()  # every job done before anything is raised
        for future in futures:
            future.result()


def slab(axis: int, start: int, stop: int, ndim: int = 3) -> tuple[slice, ...]:
    """The index of ``[start, stop)`` along ``axis``, everything along the other axes."""
    return tuple(slice(start, stop) if d == axis else slice(None) for d in range(ndim))


def in_slabs(fn: Callable, axis: int, *arrays) -> tuple:
    """``fn(*arrays)`` (a tuple of arrays shaped like the first) computed on :func:`cpu_workers` slabs of ``arrays``
    along ``axis`` at once and joined: the same result when nothing ``fn`` does reaches across ``axis`` (in-plane
    filters, say). None passes through as None."""
    n = arrays[0].shape[axis]
    k = max(1, min(cpu_workers(), n))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    parts: list = [None] * k

    def part(i: int) -> None:
        sl = slab(axis, edges[i], edges[i + 1], arrays[0].ndim)
        parts[i] = fn(*(None if x is None else x[sl] for x in arrays))

    for_each(part, range(k))
    return tuple(np.concatenate([p[j] for p in parts], axis=axis) for j in range(len(parts[0])))


__all__ = ["beside", "cpu_workers", "for_each", "in_slabs", "slab"]
