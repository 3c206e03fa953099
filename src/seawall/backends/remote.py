"""Helpers for backends that call remote services (``openai``, ``llamaguard``).

Two jobs, shared so that every remote backend behaves the same way:

* **Failing safely.** What went wrong upstream (the reply's body, the URL that
  was called, the exception) is for operators: :func:`upstream_error` writes it
  to the ``seawall.backends`` log at warning level, with the API key redacted,
  and returns a :class:`~seawall.errors.BackendError` whose message — the one
  API clients see in the 502/504 body — names only the backend and what kind
  of failure it was (the upstream HTTP status, a timeout, an unreachable
  server, a malformed reply). Internal addresses and upstream text never reach
  clients.
* **Running requests together.** :func:`gather_or_cancel` runs a batch's
  upstream requests concurrently, optionally at most as many at a time as a
  semaphore allows, and cancels the rest as soon as one fails, so a failed
  batch stops costing upstream requests.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import TypeVar

from seawall.errors import BackendError, BackendTimeoutError

log = logging.getLogger("seawall.backends")

T = TypeVar("T")

#: Client-facing reasons; the details go to the log.
TIMED_OUT = "upstream did not answer in time"
UNREACHABLE = "upstream could not be reached"
MALFORMED = "upstream sent a malformed reply"


def http_status(status_code: int) -> str:
    """The client-facing reason for an upstream reply with a non-success status."""
    return f"upstream answered HTTP {status_code}"


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` replaced: upstream error bodies can echo the API key back."""
    return message.replace(secret, "[redacted]") if secret else message


def upstream_error(
    backend: str, reason: str, detail: str, *, secret: str | None = None, timeout: bool = False
) -> BackendError:
    """Log ``detail`` for operators and return the error API clients see.

    ``reason`` is one of the constants above or :func:`http_status`; ``detail`` may hold
    URLs and upstream text and is only ever logged, with ``secret`` redacted.
    """
    log.warning("%s backend failed: %s", backend, redact(detail, secret))
    error = BackendTimeoutError if timeout else BackendError
    return error(f"the {backend} backend failed: {reason}")


async def gather_or_cancel(calls: Iterable[Awaitable[T]], slots: asyncio.Semaphore | None = None) -> list[T]:
    """``asyncio.gather`` in order; the first failure cancels the calls still running or queued.

    With ``slots``, each call holds the semaphore while it runs, so several
    ``moderate`` calls sharing one semaphore share its limit.
    """

    async def run(call: Awaitable[T]) -> T:
        if slots is None:
            return await call
        async with slots:
            return await call

    pending = list(calls)
    tasks = [asyncio.ensure_future(run(call)) for call in pending]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in pending:  # cancelled before they started: close them, or Python warns at exit
            if inspect.iscoroutine(call) and inspect.getcoroutinestate(call) == inspect.CORO_CREATED:
                call.close()
        raise
