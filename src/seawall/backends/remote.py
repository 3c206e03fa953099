"""Helpers for backends that call remote services (``openai``, ``llamaguard``).

Two jobs, shared so that every remote backend behaves the same way:

* **Failing safely.** What went wrong upstream (the URL that was called, the
  HTTP status, the error's type and code, the exception) is for operators:
  :func:`upstream_error` writes it to the ``seawall.backends`` log at warning
  level, with the API key redacted, and returns a
  :class:`~seawall.errors.BackendError` whose message — the one API clients see
  in the 502/504 body — names only the backend and what kind of failure it was
  (the upstream HTTP status, a timeout, an unreachable server, a malformed
  reply). Internal addresses and upstream text never reach clients. **Text the
  upstream sent is never logged either**: an error message or a malformed reply
  can quote the moderated input, so the log gets only its length and a short
  hash (:func:`fingerprint`), enough to tell two failures apart or match a
  reply an operator captured elsewhere.
* **Running requests together.** :func:`gather_or_cancel` runs a batch's
  upstream requests concurrently, optionally at most as many at a time as a
  semaphore allows, and cancels the rest as soon as one fails, so a failed
  batch stops costing upstream requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import re
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


#: An error type or code an upstream sends that the log may name: a short identifier, nothing more.
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def fingerprint(text: str) -> str:
    """What the log may say of ``text`` an upstream sent (which may quote the moderated input): its
    length and the first 12 hex digits of its SHA-256, never the text."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"<{len(text)} chars, sha256 {digest}>"


def identifier(value: object) -> str | None:
    """``value`` if it is a short identifier (an error ``type`` or ``code``), else its :func:`fingerprint`
    (None for no value): an upstream could put anything in those fields."""
    if value is None or value == "":
        return None
    text = str(value)
    return text if _IDENTIFIER.fullmatch(text) else fingerprint(text)


def redact(message: str, secret: str | None) -> str:
    """``message`` with ``secret`` replaced: upstream error bodies can echo the API key back."""
    return message.replace(secret, "[redacted]") if secret else message


def upstream_error(
    backend: str, reason: str, detail: str, *, secret: str | None = None, timeout: bool = False
) -> BackendError:
    """Log ``detail`` for operators and return the error API clients see.

    ``reason`` is one of the constants above or :func:`http_status`; ``detail`` may hold URLs,
    statuses and error codes and is only ever logged, with ``secret`` redacted. Text the upstream
    sent goes into ``detail`` only as its :func:`fingerprint`.
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
