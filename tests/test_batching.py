"""The micro-batcher: shared batches, bounded sizes, back-pressure, failures and shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from seawall.batching import MicroBatcher
from seawall.errors import OverloadedError


class Recorder:
    """A batch function that records the batch sizes it saw and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def __call__(self, items: list[int]) -> list[int]:
        self.release.wait(5)
        self.batches.append(list(items))
        if self.fail:
            raise ValueError("model exploded")
        return [item * 10 for item in items]


async def test_concurrent_submits_share_batches_and_get_their_own_slices() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0, max_items=1000)
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)  # the first batch is now being scored (held)
    rest = [asyncio.create_task(batcher.submit([i, i + 100])) for i in range(1, 30)]
    await asyncio.sleep(0.05)
    fn.release.set()
    assert await first == [0]
    results = await asyncio.gather(*rest)
    assert results == [[i * 10, (i + 100) * 10] for i in range(1, 30)]
    assert len(fn.batches) == 2, "the 29 requests that queued meanwhile share one batch"
    await batcher.aclose()


async def test_a_large_submission_is_split_into_bounded_batches() -> None:
    fn = Recorder()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0, max_items=64)
    out = await batcher.submit(list(range(1000)))
    assert out == [i * 10 for i in range(1000)]
    assert max(len(batch) for batch in fn.batches) <= 64
    await batcher.aclose()


async def test_a_full_queue_refuses_at_once() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0, max_items=10, max_queued_items=45)
    with pytest.raises(OverloadedError):
        await batcher.submit(list(range(50)))  # more than the queue can ever hold
    waiting = asyncio.create_task(batcher.submit(list(range(40))))
    await asyncio.sleep(0.05)  # 10 in flight (held), 30 queued
    with pytest.raises(OverloadedError):
        await batcher.submit(list(range(20)))
    fn.release.set()
    assert len(await waiting) == 40
    assert await batcher.submit([7]) == [70], "room again once the queue drained"
    await batcher.aclose()


async def test_a_failing_batch_fails_every_caller_in_it() -> None:
    fn = Recorder()
    fn.fail = True
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0.01, max_items=100)
    results = await asyncio.gather(batcher.submit([1]), batcher.submit([2]), return_exceptions=True)
    assert all(isinstance(result, ValueError) for result in results)
    fn.fail = False
    assert await batcher.submit([3]) == [30], "the worker survives a failed batch"
    await batcher.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0, max_items=100)
    head = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(batcher.submit([1]))
    kept = asyncio.create_task(batcher.submit([2]))
    await asyncio.sleep(0.01)
    doomed.cancel()
    fn.release.set()
    assert await head == [0]
    assert await kept == [20]
    assert fn.batches[-1] == [2], "the cancelled caller's items were not scored"
    await batcher.aclose()


async def test_closing_fails_waiting_callers_instead_of_hanging() -> None:
    fn = Recorder()
    fn.release.clear()
    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0, max_items=100)
    in_flight = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(batcher.submit([2]))
    await asyncio.sleep(0.01)
    await batcher.aclose()
    fn.release.set()
    for task in (in_flight, queued):
        with pytest.raises(OverloadedError):
            await asyncio.wait_for(task, 2)
