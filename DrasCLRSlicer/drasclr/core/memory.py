"""Large arrays on transparent huge pages, where they pay.

The command line turns numpy's own huge-page advice off (``NUMPY_MADVISE_HUGEPAGE=0``, ``drasclr.cli``): for the
many short-lived per-voxel temporaries of a thin-slice scan it held a quarter of a GiB more for no speed. The few
long-lived arrays that are read and written all over at random (the dense step's probability accumulators, into
which every patch is added) are the exception: on 4 KiB pages every patch added walks thousands of TLB entries, and
the dense step ran 0.9 s slower on lidc_idri_0001. :func:`zeros` gives those their huge pages back.
"""

from __future__ import annotations

import mmap

import numpy as np

MIN_BYTES = 32 << 20  # below this the 2 MiB pages do not matter


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """``np.zeros(shape, dtype)`` in anonymous memory advised for huge pages (Linux; elsewhere, or for small arrays,
    plain ``np.zeros``). The memory is returned to the system when the array (and every view of it) is gone."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < MIN_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.zeros(shape, dtype)
    buf = mmap.mmap(-1, size)  # anonymous: zero-filled by the kernel, page by page as it is first touched
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:  # a kernel without transparent huge pages: ordinary pages
        pass
    return np.frombuffer(buf, dtype).reshape(shape)


__all__ = ["zeros"]
