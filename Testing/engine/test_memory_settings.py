"""The command line turns off numpy's huge-page advice (0.27 GiB of resident memory at 533 slices), unless the
user set it."""

import os
import subprocess
import sys

import pytest

PROBE = "import drasclr.cli, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"


@pytest.mark.parametrize("env, want", [(None, "False"), ("1", "True")])
def test_command_line_turns_off_hugepage_advice_unless_asked(env, want):
    numpy = pytest.importorskip("numpy")
    if not hasattr(numpy._core.multiarray, "_get_madvise_hugepage"):
        pytest.skip("this numpy has no huge-page switch")
    environ = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if env is not None:
        environ["NUMPY_MADVISE_HUGEPAGE"] = env
    out = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == want


def test_huge_page_zeros_are_writable_zeros_of_the_shape():
    import mmap

    import numpy as np

    from drasclr.core import memory

    small = memory.zeros((3, 4), np.uint8)
    assert small.dtype == np.uint8 and small.shape == (3, 4) and not small.any()
    big = memory.zeros((5, 64, 256, 128), np.float32)  # 40 MiB: on huge pages where the platform has them
    assert big.shape == (5, 64, 256, 128) and big.dtype == np.float32 and not big.any()
    big[2, 10:20] += 1.5
    assert big.sum() == 1.5 * 10 * 256 * 128 and big.flags.writeable
    if hasattr(mmap, "MADV_HUGEPAGE"):  # its own anonymous mapping, not numpy's allocator
        owner = big
        while owner.base is not None and isinstance(owner.base, np.ndarray):
            owner = owner.base
        assert isinstance(getattr(owner.base, "obj", owner.base), mmap.mmap)
