"""The asyncio work queue: client-go's guarantees (dedupe, one worker per key, re-add while active)."""

from __future__ import annotations

import asyncio

import pytest

from securemodels.workqueue import BEHIND, WorkQueue

SHORT = 0.02


async def nothing_ready(queue: WorkQueue) -> bool:
    """True when get() would wait: no key is handed out within a short while."""
    try:
        await asyncio.wait_for(queue.get(), SHORT)
    except TimeoutError:
        return True
    return False


async def test_keys_come_out_in_order() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "c"):
        queue.add(key)

    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_queued_key_is_queued_once() -> None:
    queue = WorkQueue()
    for _ in range(3):
        queue.add("ml-prod/fraud")

    assert len(queue) == 1
    assert await queue.get() == "ml-prod/fraud"
    assert await nothing_ready(queue)


async def test_a_key_being_worked_on_is_not_handed_out_again() -> None:
    queue = WorkQueue()
    queue.add("k")
    assert await queue.get() == "k"

    queue.add("k")

    assert len(queue) == 1
    assert await nothing_ready(queue)


async def test_a_key_added_while_active_comes_back_once_done() -> None:
    queue = WorkQueue()
    queue.add("k")
    await queue.get()
    queue.add("k")
    queue.add("k")

    queue.done("k")

    assert await asyncio.wait_for(queue.get(), 1) == "k"
    queue.done("k")
    assert await nothing_ready(queue)
    assert len(queue) == 0


async def test_done_without_re_add_empties_the_queue() -> None:
    queue = WorkQueue()
    queue.add("k")
    await queue.get()

    queue.done("k")

    assert len(queue) == 0
    assert await nothing_ready(queue)


async def test_other_keys_are_served_while_one_is_active() -> None:
    queue = WorkQueue()
    queue.add("a")
    await queue.get()
    queue.add("a")
    queue.add("b")

    assert await asyncio.wait_for(queue.get(), 1) == "b"


async def test_add_after_delays_the_key() -> None:
    queue = WorkQueue()
    queue.add_after("k", SHORT)

    assert len(queue) == 0
    assert await asyncio.wait_for(queue.get(), 1) == "k"


@pytest.mark.parametrize(
    "delays", [(10.0, SHORT), (SHORT, 10.0)], ids=["earlier replaces later", "later is ignored"]
)
async def test_add_after_the_earliest_wins(delays: tuple[float, float]) -> None:
    queue = WorkQueue()
    for delay in delays:
        queue.add_after("k", delay)

    assert await asyncio.wait_for(queue.get(), 1) == "k"
    queue.done("k")
    assert await nothing_ready(queue)
    queue.forget("k")


async def test_forget_cancels_a_delayed_add() -> None:
    queue = WorkQueue()
    queue.add_after("k", SHORT)

    queue.forget("k")

    await asyncio.sleep(SHORT * 2)
    assert len(queue) == 0
    assert await nothing_ready(queue)


async def test_forget_leaves_other_keys_alone() -> None:
    queue = WorkQueue()
    queue.add_after("a", SHORT)
    queue.add_after("b", SHORT)

    queue.forget("a")

    assert await asyncio.wait_for(queue.get(), 1) == "b"
    assert await nothing_ready(queue)


async def test_a_delayed_add_of_a_queued_key_does_not_duplicate_it() -> None:
    queue = WorkQueue()
    queue.add("k")
    queue.add_after("k", 0)
    await asyncio.sleep(SHORT)

    assert len(queue) == 1
    assert await queue.get() == "k"
    assert await nothing_ready(queue)


async def test_workers_never_process_one_key_concurrently() -> None:
    """Adds while a key is being worked on hand it out once more afterwards, never to a second worker
    meanwhile; adds while it waits are merged."""
    queue = WorkQueue()
    running: set[str] = set()
    overlaps: list[str] = []
    processed: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def worker() -> None:
        while True:
            key = await queue.get()
            if key in running:
                overlaps.append(key)
            running.add(key)
            if len(running) == 2:
                started.set()
            await release.wait()
            processed.append(key)
            running.discard(key)
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    queue.add("a")
    queue.add("b")
    await asyncio.wait_for(started.wait(), timeout=5)
    for _ in range(5):  # both are being worked on: each becomes due once more, not five times
        queue.add("a")
        queue.add("b")
    release.set()
    while len(queue):
        await asyncio.sleep(0.001)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    assert overlaps == []
    assert sorted(processed) == ["a", "a", "b", "b"]


async def test_a_change_of_one_key_is_served_before_a_wake_up_of_many() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "c"):
        queue.add(key, BEHIND)
    queue.add("tampered")

    assert [await queue.get() for _ in range(4)] == ["tampered", "a", "b", "c"]


async def test_a_key_behind_that_changes_moves_to_the_first_lane_and_is_served_once() -> None:
    queue = WorkQueue()
    for key in ("a", "b"):
        queue.add(key, BEHIND)
    queue.add("b")
    queue.add("b", BEHIND)

    assert [await queue.get(), await queue.get()] == ["b", "a"]
    assert await nothing_ready(queue)
    assert len(queue) == 2  # both active, none queued


async def test_a_key_changed_while_active_comes_back_in_the_first_lane() -> None:
    queue = WorkQueue()
    queue.add("a")
    active = await queue.get()
    queue.add("a", BEHIND)
    queue.add("a")
    queue.add("z", BEHIND)

    queue.done(active)

    assert [await queue.get(), await queue.get()] == ["a", "z"]
