"""Per-voxel work split over threads gives the same numbers as one pass in one thread."""

import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from drasclr.acquisition import harmonize
from drasclr.core import threads
from drasclr.core.image import CTImage
from drasclr.dense import density


@pytest.fixture(params=[1, 2])
def workers(request, monkeypatch):
    monkeypatch.setattr(threads, "cpu_workers", lambda: request.param)
    return request.param


def test_for_each_runs_every_item_and_raises_the_first_error(workers):
    seen, names = [], set()
    both = threading.Barrier(2, timeout=10)  # with two workers the first two items must run at once

    def record(i):
        if workers > 1 and i < 2:
            both.wait()
        seen.append(i)
        names.add(threading.current_thread().name)

    threads.for_each(record, range(10))
    assert sorted(seen) == list(range(10))
    if workers == 1:
        assert names == {threading.current_thread().name}
    else:
        assert len(names) == 2 and threading.current_thread().name not in names

    def boom(i):
        if i == 3:
            raise ValueError("three")

    with pytest.raises(ValueError, match="three"):
        threads.for_each(boom, range(6))


def test_threaded_box_filter_is_scipys(workers):
    rng = np.random.default_rng(1)
    a = (rng.random((37, 41, 29)) < 0.3).astype(np.float32)
    want = ndi.uniform_filter(a, (5, 9, 8))
    assert np.array_equal(density._box_mean(a.copy(), (5, 9, 8)), want)


def test_threaded_harmonization_is_slab_for_slab_the_same(monkeypatch):
    rng = np.random.default_rng(2)
    ct = CTImage(rng.normal(-800, 80, (30, 64, 64)).astype(np.int16), (0.7, 0.7, 0.625))
    monkeypatch.setattr(harmonize, "SLAB_VOXELS", 64 * 64 * 4)  # eight slabs
    out = {}
    for n in (1, 2):
        monkeypatch.setattr(threads, "cpu_workers", lambda n=n: n)
        out[n] = harmonize.apply_gains(ct, [0.5, 0.7, 0.9]).array
    assert np.array_equal(out[1], out[2])
    assert not np.array_equal(out[1], ct.array)  # the gains did something


def test_beside_keeps_the_foreground_in_this_thread_and_runs_every_job(workers):
    here = threading.current_thread().name
    ran, where = [], {}

    def fg():
        where["fg"] = threading.current_thread().name

    def job(i):
        ran.append(i)
        where[i] = threading.current_thread().name

    threads.beside(fg, [lambda i=i: job(i) for i in range(5)])
    assert sorted(ran) == list(range(5)) and where["fg"] == here
    assert all((where[i] != here) == (workers > 1) for i in range(5))

    done = []

    def bad():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        threads.beside(fg, [bad, lambda: done.append(1)])
    assert done == [1]  # the other job still ran before the error was raised
