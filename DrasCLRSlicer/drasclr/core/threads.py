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
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="drasclr-slabs") as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


__all__ = ["cpu_workers", "for_each"]
