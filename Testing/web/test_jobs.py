"""One background job at a time per server, progress from a real child process, Cancel kills the child."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from DrasCLRSlicerLib import process
from DrasCLRSlicerWeb.jobs import JobBusy, JobRunner

CHILD = """
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
n = int(sys.argv[2])
for i in range(1, n + 1):
    print(f"progress: step {i}/{n}", file=sys.stderr, flush=True)
    time.sleep(float(sys.argv[3]))
if sys.argv[4] == "fail":
    print("error: the CT has no lungs", file=sys.stderr, flush=True)
    sys.exit(2)
print("done")
"""


def job(tmp_path, steps=3, pause=0.05, outcome="ok", name="pid"):
    pid_file = tmp_path / name
    cmd = [sys.executable, "-c", CHILD, str(pid_file), str(steps), str(pause), outcome]

    def prepare():
        return cmd

    def work(ctx, on_progress, should_cancel):
        return process.run_engine(ctx, on_progress=on_progress, should_cancel=should_cancel, env=dict(os.environ))

    def finish(_ctx, lines):
        return lines[-1]

    return pid_file, prepare, work, finish


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead
        return fh.read().split()[2] != "Z"


def test_progress_and_result(tmp_path):
    states = []
    runner = JobRunner(states.append)
    _, *parts = job(tmp_path, steps=4)
    result = asyncio.run(runner.run("analysis", *parts))
    assert result == "done"
    assert runner.state.status == "done" and not runner.busy
    fractions = [s.fraction for s in states if s.running and s.fraction is not None]
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any(s.desc == "step" for s in states)


def test_second_job_is_refused_while_one_runs(tmp_path):
    runner = JobRunner()

    async def main():
        first = asyncio.create_task(runner.run("analysis", *job(tmp_path, steps=10, pause=0.1, name="a")[1:]))
        await asyncio.sleep(0.3)
        assert runner.busy
        with pytest.raises(JobBusy, match="already running"):
            await runner.run("fine-tuning", *job(tmp_path, name="b")[1:])
        assert not (tmp_path / "b").exists()  # the refused job started nothing
        return await first

    assert asyncio.run(main()) == "done"
    assert runner.state.kind == "analysis" and runner.state.status == "done"


def test_cancel_kills_the_child(tmp_path):
    runner = JobRunner()
    pid_file, *parts = job(tmp_path, steps=600, pause=0.1)

    async def main():
        task = asyncio.create_task(runner.run("analysis", *parts))
        t0 = time.monotonic()
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.05)
            assert time.monotonic() - t0 < 30
        assert runner.cancel()
        return await task

    assert asyncio.run(main()) is None
    assert runner.state.status == "cancelled" and not runner.busy
    assert not alive(int(pid_file.read_text()))
    assert not runner.cancel()  # nothing left to cancel


def test_engine_error_is_reported(tmp_path):
    runner = JobRunner()
    _, *parts = job(tmp_path, outcome="fail")
    assert asyncio.run(runner.run("analysis", *parts)) is None
    assert runner.state.status == "failed"
    assert "the CT has no lungs" in runner.state.message
    assert asyncio.run(runner.run("analysis", *job(tmp_path, name="c")[1:])) == "done"  # the runner is free again
