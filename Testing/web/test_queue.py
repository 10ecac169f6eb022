"""The job queue all sessions share: at most N heavy jobs at once, the others wait in order with their place, Cancel
leaves the queue, and a job's slot is freed whether it finishes, fails or is cancelled (real child processes)."""

from __future__ import annotations

import asyncio

import pytest
from test_jobs import job

from DrasCLRSlicerWeb.jobqueue import FairQueue, LocalQueue, default_slots
from DrasCLRSlicerWeb.jobs import JobRunner


def test_default_slots_follow_cores_and_memory():
    assert default_slots(cores=2, memory=8 * 2**30) == 1
    assert default_slots(cores=16, memory=128 * 2**30) == 8
    assert default_slots(cores=64, memory=12 * 2**30) == 4  # memory bound
    assert default_slots(cores=1, memory=1 * 2**30) == 1  # never zero


def test_first_come_first_served_and_places():
    async def main():
        q = FairQueue(2)
        a, b, c, d = (q.enter(s, s, "analysis") for s in "abcd")
        assert [q.place(t.id) for t in (a, b, c, d)] == [0, 0, 1, 2]
        q.leave(c.id)  # cancelled while waiting: d moves up
        assert q.place(d.id) == 1 and q.place(c.id) is None
        q.leave(a.id)  # a finished: d runs
        assert q.place(d.id) == 0 and q.busy_sessions() == {"b", "d"}
        q.leave_session("b")  # b's process died
        assert q.busy_sessions() == {"d"}

    asyncio.run(main())


def test_sessions_wait_in_order_and_are_never_refused(tmp_path):
    """Three sessions press Analyze together on a one-slot queue: all three run, one after the other, in order."""
    shared = LocalQueue(slots=1)
    started, places = [], {}

    def runner(name):
        def on_update(state):
            if state.status == "queued" and "place" in state.desc:
                places.setdefault(name, state.desc)
            if state.status == "running" and name not in started:
                started.append(name)
        return JobRunner(on_update, queue=shared)

    async def main():
        tasks = []
        for name in ("a", "b", "c"):
            tasks.append(asyncio.create_task(runner(name).run("analysis", *job(tmp_path, steps=4, pause=0.1,
                                                                                  name=name)[1:])))
            await asyncio.sleep(0.05)
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == ["done", "done", "done"]
    assert started == ["a", "b", "c"]
    assert places == {"b": "waiting in the queue, place 1 (next)", "c": "waiting in the queue, place 2"}
    assert not shared.queue.running and not shared.queue.waiting


def test_cancel_while_queued_leaves_the_queue(tmp_path):
    shared = LocalQueue(slots=1)
    first, second = JobRunner(queue=shared), JobRunner(queue=shared)

    async def main():
        t1 = asyncio.create_task(first.run("analysis", *job(tmp_path, steps=10, pause=0.1, name="a")[1:]))
        await asyncio.sleep(0.2)
        t2 = asyncio.create_task(second.run("analysis", *job(tmp_path, name="b")[1:]))
        await asyncio.sleep(0.3)
        assert second.state.status == "queued" and second.cancel()
        assert await t2 is None
        return await t1

    assert asyncio.run(main()) == "done"
    assert second.state.status == "cancelled" and not (tmp_path / "b").exists()  # it never started
    assert not shared.queue.running and not shared.queue.waiting


@pytest.mark.parametrize("outcome", ["fail", "cancel"])
def test_a_failed_or_cancelled_job_frees_its_slot(outcome, tmp_path):
    shared = LocalQueue(slots=1)
    runner = JobRunner(queue=shared)

    async def main():
        steps = 600 if outcome == "cancel" else 2
        task = asyncio.create_task(runner.run("analysis", *job(tmp_path, steps=steps, outcome=outcome)[1:]))
        await asyncio.sleep(0.5)
        if outcome == "cancel":
            runner.cancel()
        await task
        return await JobRunner(queue=shared).run("analysis", *job(tmp_path, name="next")[1:])

    assert asyncio.run(main()) == "done"
    assert runner.state.status == ("failed" if outcome == "fail" else "cancelled")


def test_the_next_job_may_start_as_soon_as_one_is_shown_done(tmp_path):
    """The page enables Analyze when the job shows done; a click at that moment is not refused, even while the
    finished job's slot is still being handed back to a (slow) gateway."""

    class SlowRelease(LocalQueue):
        async def release(self, ticket):
            await asyncio.sleep(0.5)
            await super().release(ticket)

    shared = SlowRelease(slots=1)
    second: list = []

    def on_update(state):
        if state.status == "done" and not second:
            second.append(asyncio.ensure_future(runner.run("analysis", *job(tmp_path, name="b")[1:])))

    runner = JobRunner(on_update, queue=shared)

    async def main():
        first = await runner.run("analysis", *job(tmp_path, name="a")[1:])
        return first, await second[0]

    assert asyncio.run(main()) == ("done", "done")
