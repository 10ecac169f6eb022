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
