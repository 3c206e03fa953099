"""Audit records that the store cannot take right now wait in an append-only file, then go through.

:class:`BufferedAuditWriter` is what the gateway's audit writer thread
(:class:`seawall.gateway.audit.AuditLog`) stores records with. Normally a record goes straight to
:meth:`Store.write_audit <seawall.store.base.Store.write_audit>`. When the store fails with
:class:`~seawall.errors.StoreError` (PostgreSQL down or restarting, a SQLite file locked by another
process, a full disk), the record — and every record after it, so that their order holds — is
appended to an :class:`AuditBuffer` instead: one JSON line each, flushed and ``fsync``'d before
the writer moves on. Every ``store.audit_retry_s`` the writer tries the store again; when it
answers, the buffered records are written through in the order they were buffered, and the
writer goes back to writing straight to the store. A buffer left behind by a stopped (or killed)
seawall is written through at the next start, before any newer record.

**The hash chain.** Buffered records carry no store links: the store chains each record when it
is written (:meth:`seawall.store.sql.SqlStore.write_audit` links it to the tenant's last stored
hash under its per-tenant lock), so records written through later join the tenant's chain in
the order they reach the store, after whatever other replicas stored meanwhile, and
``seawall audit verify`` still finds one linear chain per tenant. A record keeps its own ``time``
(when the request ended), so in the store a written-through record can sit after newer ones.

**Once, in order, across crashes.** Write-through moves a cursor (the byte offset of the next
record, in ``<buffer>.offset``, replaced atomically and ``fsync``'d) after each record the store
took; the buffer is emptied only when the cursor reaches its end. A seawall killed mid-way
resumes at the cursor. The cursor carries the buffer's generation (a random token in the
buffer's first line, new each time the buffer is emptied), so a cursor from an older generation
is never applied to a newer buffer. The one window left: a kill between the store's commit and
the cursor's move writes that one record again at the next start; the store keeps the later copy
and marks the earlier one ``superseded`` (still in the chain), so a search never shows it twice
and nothing is lost. A lock on the buffer file (``flock``) lets replicas on one machine share a
buffer: one writes through at a time, the others append meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from seawall.errors import StoreError
from seawall.store.base import AuditWriter

log = logging.getLogger("seawall.gateway")

#: The key of the buffer's first line, which holds its generation.
HEADER_KEY = "seawall_audit_buffer"


class AuditBuffer:
    """An append-only JSON-lines file of audit records waiting for the store, and its cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.cursor_path = self.path.with_name(self.path.name + ".offset")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        """The buffer file, open for reading and appending, under an exclusive ``flock``."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                yield file
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (one JSON line each) and ``fsync`` before returning."""
        if not records:
            return
        lines = [
            json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) for record in records
        ]
        with self._locked() as file:
            size = os.fstat(file.fileno()).st_size
            prefix = b""
            if size == 0:
                lines.insert(0, json.dumps({HEADER_KEY: uuid.uuid4().hex}))
            else:
                file.seek(size - 1)
                if file.read(1) != b"\n":
                    prefix = b"\n"  # end a line torn by a killed writer, so this one stays whole
            file.write(prefix + ("\n".join(lines) + "\n").encode())
            file.flush()
            os.fsync(file.fileno())

    def pending(self) -> int:
        """How many records wait to be written through (for logs and tests)."""
        with self._locked() as file:
            return sum(record is not None for _, record in self._read(file)[2])

    def write_through(self, write: Callable[[dict[str, Any]], None]) -> int:
        """Give every waiting record to ``write``, oldest first, moving the cursor after each; empty
        the buffer when all went through. The number written. A :class:`StoreError` from ``write``
        stops there (the record stays first in line) and is raised; any other error means the
        record itself is bad: it goes to ``<buffer>.rejected`` (it is in the audit file and log too)
        and the rest go on."""
        written = 0
        with self._locked() as file:
            generation, _, records = self._read(file)
            for end, record in records:
                if record is not None:
                    try:
                        write(record)
                    except StoreError:
                        raise
                    except Exception as exc:
                        log.error(
                            "audit record %s cannot be stored (%s): kept in %s",
                            record.get("request_id"),
                            exc,
                            self.rejected_path,
                        )
                        self._reject(record)
                    else:
                        written += 1
                self._move_cursor(generation, end)
            if records or os.fstat(file.fileno()).st_size:
                # Everything went through: a new generation starts with the next append.
                file.truncate(0)
                os.fsync(file.fileno())
                self.cursor_path.unlink(missing_ok=True)
        return written

    def _read(self, file: IO[bytes]) -> tuple[str, int, list[tuple[int, dict[str, Any] | None]]]:
        """The buffer's generation, the cursor, and each waiting record with the offset after it
        (None for a line that is not a JSON object: a write torn by a crash)."""
        file.seek(0)
        data = file.read()
        generation = ""
        position = 0
        first, newline, _ = data.partition(b"\n")
        if newline:
            try:
                header = json.loads(first)
            except ValueError:
                header = None
            if isinstance(header, dict) and HEADER_KEY in header:
                generation = str(header[HEADER_KEY])
                position = len(first) + 1
        start = max(position, self._cursor(generation))
        records: list[tuple[int, dict[str, Any] | None]] = []
        at = start
        for line in data[start:].splitlines(keepends=True):
            at += len(line)
            if not line.endswith(b"\n"):
                break  # an unfinished last line: its writer was killed mid-write and never returned
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                log.error("audit buffer %s: a line that is not a record at byte %d, skipped", self.path, at)
                value = None
            records.append((at, value))
        return generation, start, records

    def _cursor(self, generation: str) -> int:
        try:
            saved_generation, _, offset = self.cursor_path.read_text().partition(" ")
            return int(offset) if saved_generation == generation and generation else 0
        except (OSError, ValueError):
            return 0

    def _move_cursor(self, generation: str, offset: int) -> None:
        temporary = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        with temporary.open("w") as file:
            file.write(f"{generation} {offset}")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.cursor_path)

    def _reject(self, record: dict[str, Any]) -> None:
        with self.rejected_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            file.flush()
            os.fsync(file.fileno())


class BufferedAuditWriter:
    """Stores audit records, buffering them (:class:`AuditBuffer`) while the store fails.

    Used from one thread (the audit writer's): :meth:`write` for each record, :meth:`tick` when
    there is nothing to write, :meth:`close` at the end.
    """

    def __init__(
        self,
        store: AuditWriter,
        buffer: AuditBuffer,
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.buffer = buffer
        self.retry_s = retry_s
        self._clock = clock
        self._lock = threading.Lock()
        # Records a previous run left behind go through first, before any newer record.
        self.buffering = buffer.path.exists() and buffer.path.stat().st_size > 0
        self._next_try = self._clock()

    def write(self, record: dict[str, Any]) -> None:
        if not self.buffering:
            try:
                self.store.write_audit(record)
                return
            except StoreError as exc:
                log.warning(
                    "the store cannot take audit records (%s); buffering them in %s",
                    exc.message,
                    self.buffer.path,
                )
                self.buffering = True
                self._next_try = self._clock() + self.retry_s
            except Exception as exc:  # a bad record: the file and log have it
                log.error("cannot store the audit record of %s: %s", record.get("request_id"), exc)
                return
        self.buffer.append([record])
        self.tick()

    def spill(self, record: dict[str, Any]) -> None:
        """Buffer ``record`` without trying the store (the writer's queue is full); any thread."""
        with self._lock:
            self.buffer.append([record])
            self.buffering = True

    def tick(self, *, force: bool = False) -> None:
        """Write the buffer through when it is time to try the store again (``force``: now)."""
        if not self.buffering or (not force and self._clock() < self._next_try):
            return
        with self._lock:
            self._write_through()

    def _write_through(self) -> None:
        try:
            written = self.buffer.write_through(self.store.write_audit)
        except StoreError as exc:
            log.debug("the store still cannot take audit records: %s", exc.message)
            self._next_try = self._clock() + self.retry_s
            return
        except OSError as exc:
            log.error("cannot read the audit buffer %s: %s", self.buffer.path, exc)
            self._next_try = self._clock() + self.retry_s
            return
        if written:
            log.warning("the store is back: %d buffered audit records written through", written)
        self.buffering = False

    def close(self) -> None:
        """A last try at writing the buffer through; what the store does not take stays in the file."""
        self.tick(force=True)


__all__ = ["AuditBuffer", "BufferedAuditWriter"]
