"""Micro-batching: concurrent callers share one model call.

Scoring 64 texts at once costs little more than scoring one, so requests that
arrive within a short window are queued and scored together on a worker
thread, and each caller gets its own slice back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[Item, Out]):
    items: Sequence[Item]
    future: asyncio.Future[list[Out]]


class MicroBatcher(Generic[Item, Out]):
    """Collects items from concurrent ``submit`` calls and runs ``fn`` on each batch in a thread."""

    def __init__(self, fn: Callable[[list[Item]], list[Out]], *, window_s: float, max_items: int) -> None:
        self._fn = fn
        self._window_s = window_s
        self._max_items = max_items
        self._queue: asyncio.Queue[_Pending[Item, Out]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Out]:
        if not items:
            return []
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(self._queue))
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def _run(self, queue: asyncio.Queue[_Pending[Item, Out]]) -> None:
        while True:
            batch = [await queue.get()]
            size = len(batch[0].items)
            deadline = asyncio.get_running_loop().time() + self._window_s
            while size < self._max_items:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and queue.empty():
                    break
                try:
                    pending = (
                        queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(pending)
                size += len(pending.items)
            await self._score(batch)

    async def _score(self, batch: list[_Pending[Item, Out]]) -> None:
        flat = [item for pending in batch for item in pending.items]
        try:
            outputs = await asyncio.to_thread(self._fn, flat)
        except Exception as exc:  # handed to every waiting caller, which re-raises it
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        offset = 0
        for pending in batch:
            count = len(pending.items)
            if not pending.future.done():
                pending.future.set_result(outputs[offset : offset + count])
            offset += count

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
