"""Peak resident memory and time of each stage of ``drasclr analyze`` in this process (Linux).

    PYTHONPATH=DrasCLRSlicer python bench/bench_stage_memory.py CT OUT_DIR

Before each stage the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``, value 5) and read again after
it (``VmHWM``), so each line is that stage's own peak: the stage that sets the whole analysis's peak is the one to
work on. The model is loaded first (its memory is in every line's start). Prints one line per stage, with the
minor page faults it took (fresh memory from the kernel: each large temporary allocated anew is paid for again).
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    import drasclr.analysis.analyze as A
    from drasclr.analysis.loaded_model import load_for_analysis
    from drasclr.core.settings import AnalysisSettings

    peaks: dict[str, tuple[float, float, float]] = {}

    @contextlib.contextmanager
    def stage(timings, name):
        _reset_peak()
        start, t0, f0 = _status("VmRSS"), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        yield
        timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)
        peaks[name] = (start, _status("VmHWM"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)

    A._stage = stage  # analyze times its stages through this context manager
    model = load_for_analysis(AnalysisSettings())
    print(f"model loaded: {_status('VmRSS'):.2f} GiB")
    result = A.analyze_file(argv[0], argv[1], AnalysisSettings(), model)
    print(f"stats + writing: peak {_status('VmHWM'):.2f} GiB (since the last stage began)")
    for name, (start, peak, faults) in peaks.items():
        print(f"{name:14s} start {start:.2f} GiB  peak {peak:.2f} GiB  {result.timings.get(name + '_s', 0):6.1f} s  "
              f"{faults / 1000:7.0f}k page faults")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
