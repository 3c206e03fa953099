"""The gateway's audit trail: one record per request, in a JSONL file, a log and the store.

A record holds decisions, categories, scores, the risk level, latencies and outcomes —
never message text or the raw user id. Before a request's answer leaves, its record is in the
audit buffer, an append-only file (``store.audit_buffer_path``; handed to the operating system, or
with ``store.audit_sync: fsync`` flushed to disk, concurrent requests sharing one ``fsync``): a
replica killed right after answering loses no record, and when
restarted on the same buffer it writes them to the store. The store itself is written from the
buffer by a background thread, so a slow or failing database never delays an answer; while it
cannot take records (down, restarting, locked) they wait in the buffer and go through, in order,
when it answers again (:mod:`seawall.gateway.audit_buffer`). :meth:`AuditLog.close` writes
through what is left.

Records are hash-chained per tenant (:mod:`seawall.store.chain`): each line of the file carries
``prev_hash`` (the tenant's previous line's ``hash``) and ``hash``. The file's chain is linear
because one lock serialises this process's writes, and it continues from the last line per
tenant already in the file when seawall starts; one file belongs to one process (replicas
writing one file would interleave two chains). The store keeps its own chain per tenant across
every replica (:meth:`seawall.store.base.AuditWriter.write_audit`). ``seawall audit verify`` checks both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.trace import Span

from seawall.errors import ContentPolicyError, GuardFailedError, SeawallError, UpstreamError
from seawall.gateway.audit_buffer import AuditBuffer, BufferedAuditWriter, GroupCommit
from seawall.store.base import DEFAULT_AUDIT_API, AuditAPI, AuditOutcome, AuditWriter
from seawall.store.chain import last_hashes, link
from seawall.telemetry import Tracer, finish_request_span

log = logging.getLogger("seawall.gateway")
audit_log = logging.getLogger("seawall.audit")

#: Scores kept per decision in the audit record (the highest ones).
AUDIT_TOP_SCORES = 3
#: Records queued for the store (without an audit buffer) before new ones are dropped (and logged).
STORE_QUEUE_SIZE = 10_000
#: How long records gather before the writer thread writes them through to the store: the request
#: that appended one sends its answer meanwhile instead of competing with the store write (or with
#: the thread's wake-up) for the interpreter (the gateway's CPU is often one core), and under load
#: one pass takes many records. The records are in the buffer already; only the store sees them
#: this late. On an event loop the wake-up itself waits this long (one timer per gathering, however
#: many records join it); from another thread the writer wakes at once and waits itself.
WRITE_THROUGH_DELAY_S = 0.01
#: The audit file's lines: ``json.dumps(ensure_ascii=False, separators=(",", ":"))``, built once.
_LINE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def decision(
    step: str,
    action: str,
    categories: list[str] | None = None,
    scores: Mapping[str, float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One decision as the audit record keeps it: the step, its action, the categories, the top
    scores (and every flagged category's), and anything else the step says."""
    top = sorted((scores or {}).items(), key=lambda item: item[1], reverse=True)[:AUDIT_TOP_SCORES]
    flagged = {name: scores[name] for name in categories or () if scores and name in scores}
    kept = {name: round(float(score), 4) for name, score in [*top, *flagged.items()]}
    return {"step": step, "action": action, "categories": list(categories or []), "scores": kept, **extra}


@dataclass
class AuditRecord:
    """What the audit log keeps about one request; message text only when the settings say so
    (``content``), never the raw user id."""

    request_id: str
    tenant: str
    stream: bool
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    key_id: str | None = None
    safety_identifier: str | None = None
    user_source: str | None = None
    #: The user's trust tier (the policy's ``tiers``); in the written record only when the policy has tiers.
    tier: str | None = None
    #: The API the request came through: ``chat.completions`` or ``responses``.
    api: AuditAPI = DEFAULT_AUDIT_API
    model: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: What controls in shadow mode would have done (``gateway.modes``): one entry per step that
    #: would have acted (step, would, code, categories, its decisions). Never counted in ``risk``,
    #: the ledger or review; in the written record only when not empty.
    shadow: list[dict[str, Any]] = field(default_factory=list)
    #: ``low``, ``medium`` or ``high`` (None until judged: the request ended before moderation).
    risk: str | None = None
    #: The user's escalation state when it changed because of this request.
    escalation: dict[str, Any] | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    upstream: dict[str, Any] | None = None
    #: What became of the request (:data:`~seawall.store.base.AuditOutcome` lists every value).
    outcome: AuditOutcome = "error"
    error: dict[str, Any] | None = None
    #: The messages and the answer, only when ``gateway.audit_content`` is on.
    content: dict[str, Any] | None = None
    #: The request's trace span and the tracer of its steps (no-ops without telemetry).
    tracer: Tracer = field(default_factory=lambda: Tracer(None), repr=False)
    span: Span | None = field(default=None, repr=False)
    _began: float = field(default_factory=lambda: time.perf_counter(), repr=False)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            if self.span is None:  # no telemetry: no child span (the common case, kept cheap)
                yield
            else:
                with self.tracer.step(self.span, f"seawall.{name}"):
                    yield
        finally:
            self.latency_ms[name] = round((time.perf_counter() - began) * 1000, 3)

    def decide(
        self,
        step: str,
        action: str,
        categories: list[str] | None = None,
        scores: Mapping[str, float] | None = None,
        **extra: Any,
    ) -> None:
        self.decisions.append(decision(step, action, categories, scores, **extra))

    def failed(self, exc: SeawallError) -> None:
        self.error = {"status": exc.status_code, "code": exc.code}
        if isinstance(exc, UpstreamError):
            self.upstream = {"status": "error", "code": exc.code}
            self.outcome = "upstream_error"
        elif isinstance(exc, GuardFailedError):
            self.outcome = "guard_failed"
        elif isinstance(exc, ContentPolicyError) or exc.code == "untrusted_content_rejected":
            self.outcome = "refused_input"
        elif exc.status_code == 401 or exc.code == "api_key_scope":  # a feedback-only key
            self.outcome = "unauthorized"
        elif exc.status_code == 403 and exc.code != "model_not_allowed_for_tier":
            self.outcome = "user_blocked"
        elif exc.status_code == 429:
            self.outcome = "rate_limited"
        elif 400 <= exc.status_code < 500:
            self.outcome = "invalid_request"
        else:  # seawall's own failure (a store that is down, a bug in a guard)
            self.outcome = "error"

    def to_dict(self) -> dict[str, Any]:
        self.latency_ms["total"] = round((time.perf_counter() - self._began) * 1000, 3)
        return {
            "time": self.time,
            "request_id": self.request_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "safety_identifier": self.safety_identifier,
            "user_source": self.user_source,
            **({"tier": self.tier} if self.tier is not None else {}),
            "api": self.api,
            "model": self.model,
            "stream": self.stream,
            "outcome": self.outcome,
            "risk": self.risk,
            "escalation": self.escalation,
            "error": self.error,
            "decisions": self.decisions,
            **({"shadow": self.shadow} if self.shadow else {}),
            "upstream": self.upstream,
            "latency_ms": self.latency_ms,
            **({"content": self.content} if self.content is not None else {}),
        }


class AuditLog:
    """Writes each record as one JSON line to a file (if configured), the ``seawall.audit`` log,
    and the store (if given): through the audit buffer at ``buffer_path`` (:meth:`commit` waits
    until the record is in it; ``sync``: ``fsync``'d), or, without a buffer, from an in-memory
    queue (a killed process loses what the queue held)."""

    def __init__(
        self,
        path: Path | None,
        store: AuditWriter | None = None,
        *,
        observer: Callable[[dict[str, Any]], None] | None = None,
        buffer_path: Path | None = None,
        retry_s: float = 5.0,
        sync: bool = True,
    ) -> None:
        self._observer = observer
        self.path = path.expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        #: The last hash per tenant in the file (read from it at the first write).
        self._chain: dict[str | None, str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._retry_s = retry_s
        #: With a buffer: writes it through to the store (None: no buffer).
        self._stored: BufferedAuditWriter | None = None
        #: With a buffer: appends records to it, in groups (one fsync each).
        self._commit: GroupCommit | None = None
        #: Set when records were appended (the writer thread takes them to the store).
        self._appended = threading.Event()
        #: The event loop whose timer will wake the writer (None: no wake-up is scheduled).
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        #: Set by that timer: the records have gathered, the writer need not wait for more.
        self._gathered = False
        self._closing = False
        #: Records the buffer could not take (a full disk): stored from memory.
        self._unbuffered: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        #: Without a buffer: the records on their way to the store.
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(STORE_QUEUE_SIZE)
        self._writer: threading.Thread | None = None
        if store is not None and buffer_path is not None:
            buffer = AuditBuffer(buffer_path)
            self._stored = BufferedAuditWriter(store, buffer, retry_s=retry_s)
            self._commit = GroupCommit(buffer, sync=sync, committed=self._wake_writer, failed=self._spill)
            self._writer = threading.Thread(target=self._write_through, name="seawall-audit", daemon=True)
            self._writer.start()
        elif store is not None:
            self._writer = threading.Thread(target=self._drain, name="seawall-audit", daemon=True)
            self._writer.start()

    def write(self, record: AuditRecord) -> None:
        """Write ``record`` everywhere; with a buffer, it is in the buffer soon after (see :meth:`commit`)."""
        self._write(record, None)

    async def commit(self, record: AuditRecord) -> None:
        """Write ``record`` everywhere, and return once it is in the audit buffer (with a buffer):
        what a request awaits before its answer leaves. Concurrent requests share one ``fsync``."""
        if self._commit is None or not self._commit.sync:
            self._write(record, None)  # without a flush to wait for, the record is in the buffer now
            return
        loop = asyncio.get_running_loop()
        durable = loop.create_future()

        def done() -> None:  # on the commit thread
            loop.call_soon_threadsafe(_resolve, durable)

        self._write(record, done)
        await durable

    def _write(self, record: AuditRecord, done: Callable[[], None] | None) -> None:
        data = record.to_dict()
        finish_request_span(record.span, data)
        record.span = None
        if self._observer is not None:
            try:
                self._observer(data)
            except Exception:  # metrics must never cost a request its audit record
                log.exception("the audit observer failed for %s", record.request_id)
        # The store chains the record itself (its chain spans replicas), so it gets a copy without
        # the file's links.
        if self._commit is not None:
            self._commit.submit(dict(data), done)
        elif self._writer is not None:
            try:
                self._queue.put_nowait(dict(data))
            except queue.Full:
                log.error("audit queue full: %s not stored (the file and log have it)", record.request_id)
        with self._lock:
            if self.path is not None:
                chain = self._file_chain()
                tenant = data.get("tenant")
                tenant = None if tenant is None else str(tenant)
                chain[tenant] = link(data, chain.get(tenant))
            line = _LINE.encode(data)
            audit_log.info("%s", line)
            if self.path is None:
                return
            try:
                # Kept open (append mode): opening per record cost more than the write. Rotate
                # the file with copy-and-truncate, or restart seawall after moving it.
                if self._file is None:
                    self._file = self.path.open("a", encoding="utf-8")
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                log.error("cannot write the audit record of %s to %s: %s", record.request_id, self.path, exc)
                self._file = None

    def _file_chain(self) -> dict[str | None, str]:
        """The last hash per tenant in the file, read once (under the lock)."""
        if self._chain is None:
            assert self.path is not None
            try:
                with self.path.open(encoding="utf-8", errors="replace") as existing:
                    self._chain = last_hashes(existing)
            except FileNotFoundError:
                self._chain = {}
            except OSError as exc:
                log.error("cannot read the audit file %s to continue its chain: %s", self.path, exc)
                self._chain = {}
        return self._chain

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every record written so far reached the store (or ``timeout_s`` passed; with a
        buffer, or until the store failed: the records then wait in the buffer)."""
        deadline = time.monotonic() + timeout_s
        if self._commit is not None and self._stored is not None:
            self._commit.wait(timeout_s)
            self._appended.set()
            while (
                self._stored.buffer.pending() and not self._stored.buffering and time.monotonic() < deadline
            ):
                time.sleep(0.005)
            return
        while self._writer is not None and self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Store what is written (what the store does not take stays in the buffer for the next
        start), then stop the writer thread and close the file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._writer is None:
            return
        if self._commit is not None:
            self._commit.close()
            self._closing = True
            self._appended.set()
        else:
            self._queue.put(None)
        self._writer.join(timeout=30)
        self._writer = None

    def _wake_writer(self) -> None:
        """Records were appended: wake the writer thread, :data:`WRITE_THROUGH_DELAY_S` later when
        called on an event loop (the request's answer goes out first, and the next requests' steps
        run, without a thread switch in the middle of them; records appended meanwhile share the
        wake-up)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the commit thread (audit_sync: fsync), or a caller without a loop
            self._appended.set()
            return
        if self._wake_loop is loop:
            return  # a wake-up is on its way
        self._wake_loop = loop
        loop.call_later(WRITE_THROUGH_DELAY_S, self._wake_gathered, loop)

    def _wake_gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        """The timer of :meth:`_wake_writer`: the records gathered; wake the writer."""
        if self._wake_loop is loop:
            self._wake_loop = None
        self._gathered = True
        self._appended.set()

    def _spill(self, records: list[dict[str, Any]]) -> None:
        """Records the buffer could not take: the writer thread stores them from memory."""
        for record in records:
            self._unbuffered.put(record)

    def _write_through(self) -> None:
        """The writer thread with a buffer: what a previous run left first, then each group of
        appended records as it comes, and every ``retry_s / 2`` s (emptying the file when idle)."""
        stored = self._stored
        assert stored is not None and self._store is not None
        stored.tick(force=True)
        while True:
            appended = self._appended.wait(timeout=self._retry_s / 2)
            if appended and not self._closing and not self._gathered:
                time.sleep(WRITE_THROUGH_DELAY_S)  # woken at once (not by the loop's timer)
            self._gathered = False
            self._appended.clear()
            while not self._unbuffered.empty():
                record = self._unbuffered.get()
                try:
                    self._store.write_audit(record)
                except Exception as exc:  # the file and log still have it; never kill the writer
                    log.error("cannot store the audit record of %s: %s", record.get("request_id"), exc)
            if self._closing:
                stored.close()
                return
            try:
                stored.tick(tidy=not appended)
            except Exception:  # never kill the writer: the records stay in the buffer
                log.exception("writing the audit buffer %s through failed", stored.buffer.path)

    def _drain(self) -> None:
        """The writer thread without a buffer: each queued record to the store."""
        assert self._store is not None
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            try:
                self._store.write_audit(item)
            except Exception as exc:  # the file and log still have it; never kill the writer
                log.error("cannot store the audit record of %s: %s", item.get("request_id"), exc)
            finally:
                self._queue.task_done()

    @property
    def buffering(self) -> bool:
        """Whether records are waiting in the audit buffer for the store to come back."""
        return self._stored is not None and self._stored.buffering


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the request may have been cancelled meanwhile
        future.set_result(None)


__all__ = ["AUDIT_TOP_SCORES", "AuditLog", "AuditRecord", "decision"]
