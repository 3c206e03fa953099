"""The gateway's audit journal: every answered request's record is in the buffer before its answer leaves.

:class:`seawall.gateway.audit.AuditLog` hands each audit record to a :class:`GroupCommit`, which
appends it to an :class:`AuditBuffer` (one JSON line per record, ``store.audit_buffer_path``)
before the request's answer leaves. With ``store.audit_sync: write`` (the default) the record is
appended on the request's own thread and the flush is left to the OS: it survives a killed
process, not a power loss. With ``audit_sync: fsync`` it is also flushed to disk (``fsync``) and
the answer waits for that; records that arrive while one append is on its way are written
together by the next, with one ``fsync`` for all of them (group commit), so a busy gateway pays
about one ``fsync`` per group rather than per request. A writer thread then takes the records
from the file to the store (:class:`BufferedAuditWriter`). So a replica killed the instant after an
answer still has that answer's record in its buffer, and the same replica, restarted on the same
buffer path, writes it through before anything newer.

**When the store fails** (PostgreSQL down or restarting, a SQLite file locked by another process,
a full disk) with :class:`~seawall.errors.StoreError`, the records simply stay in the buffer, and
every ``store.audit_retry_s`` the writer tries again; when the store answers, they go through in
the order they were written. Records from before a restart go through first, before any newer.

**The hash chain.** Buffered records carry no store links: the store chains each record when it
is written (:meth:`seawall.store.sql.SqlStore.write_audit` links it to the tenant's last stored
hash under its per-tenant lock), so records join the tenant's chain in the order they reach the
store, after whatever other replicas stored meanwhile, and ``seawall audit verify`` still finds
one linear chain per tenant. A record keeps its own ``time`` (when the request ended), so in the
store a record written through late can sit after newer ones.

**Once, in order, across crashes.** Writing through moves a cursor (the byte offset of the next
record, in ``<buffer>.offset``, replaced atomically) after each group of records the store took,
and after the last one it took when the store fails mid-group. The file is emptied when the
cursor reaches its end and the writer is idle (or the file has grown past :data:`TIDY_BYTES`).
The cursor carries the buffer's generation (a random token in the buffer's first line, new each
time the buffer is emptied), so a cursor from an older generation is never applied to a newer
buffer. A writer killed between the store's commits and the cursor's move leaves at most one
group (:data:`GROUP_RECORDS`) that the store may already hold: the next writer compares each of
those records with the stored record of its request and skips the ones stored already. (A
cursor written shortly before a power loss may come back older: records between it and the
lost one are written again, and the store keeps the later copy, marking the earlier one
``superseded``, still in the chain: nothing is lost, searches show it once.)

**Several processes on one buffer.** Appends take an exclusive ``flock`` on the buffer file, held
only while appending or reading. One process at a time writes through: the one holding the
``flock`` on ``<buffer>.lock``, which it keeps until it stops; the others only append, and their
records reach the store through it. Give every replica its own buffer all the same (its own
``data_dir``), so a replica that dies is the one that, restarted, writes its records through.
"""

from __future__ import annotations

import fcntl
import io
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

import orjson

from seawall.errors import StoreError
from seawall.store.base import AuditWriter

log = logging.getLogger("seawall.gateway")

#: The key of the buffer's first line, which holds its generation.
HEADER_KEY = "seawall_audit_buffer"
#: Most records written through between two moves of the cursor.
GROUP_RECORDS = 256
#: Most bytes of the buffer read at once.
READ_BYTES = 1 << 20
#: A buffer this large is emptied as soon as the writer has caught up with it, idle or not.
TIDY_BYTES = 4 << 20
#: The fields of a stored record that the store adds (its chain's links).
_LINKS = ("prev_hash", "hash")
#: orjson's options for a buffered record: datetimes and dataclasses go to ``default`` (``str``),
#: as :func:`json.dumps` with ``default=str`` writes them.
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class AuditBuffer:
    """An append-only JSON-lines file of audit records on their way to the store, and its cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.cursor_path = self.path.with_name(self.path.name + ".offset")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: The open ``<buffer>.lock`` while this object is the one writing through (see :meth:`claim`).
        self._claim: IO[bytes] | None = None
        #: Whether the first group after taking over was checked against the store.
        self._checked = False
        #: The buffer file as :meth:`append` keeps it open, its (device, inode), and their lock.
        self._appending: io.FileIO | None = None
        self._appending_identity: tuple[int, int] | None = None
        self._append_lock = threading.Lock()

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

    def append(self, records: list[dict[str, Any]], *, sync: bool = True) -> None:
        """Append ``records`` (one JSON line each); with ``sync``, ``fsync`` before returning.

        The file stays open between appends (opening it per record cost more than the write) and
        is opened again when it is no longer the one at :attr:`path` (removed or replaced)."""
        if not records:
            return
        data = b"".join(_line(record) for record in records)
        with self._append_lock:
            fd = self._append_file().fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    data = json.dumps({HEADER_KEY: uuid.uuid4().hex}).encode() + b"\n" + data
                elif os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # end a line torn by a killed writer, so this one stays whole
                while data:  # unbuffered: one write, unless the OS takes less
                    data = data[os.write(fd, data) :]
                if sync:
                    os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _append_file(self) -> io.FileIO:
        """The buffer file open for appending (unbuffered), opened again if the one at :attr:`path`
        is no longer the one kept open."""
        try:
            found = os.stat(self.path)
            identity: tuple[int, int] | None = (found.st_dev, found.st_ino)
        except FileNotFoundError:
            identity = None
        if self._appending is not None and identity == self._appending_identity:
            return self._appending
        self._close_append_file()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        file = io.FileIO(fd, "r+")  # closes the descriptor when closed, or when collected
        opened = os.fstat(fd)
        self._appending, self._appending_identity = file, (opened.st_dev, opened.st_ino)
        return file

    def _close_append_file(self) -> None:
        if self._appending is not None:
            self._appending.close()
            self._appending = None

    def close(self) -> None:
        """Close the file :meth:`append` keeps open (the next append opens it again)."""
        with self._append_lock:
            self._close_append_file()

    def pending(self) -> int:
        """How many records wait to be written through (for logs and tests)."""
        count = 0
        with self._locked() as file:
            _, at = self._start(file)
            while True:
                records, at = self._records(self._chunk(file, at), at)
                if not records:
                    return count
                count += sum(record is not None for _, record in records)

    def claim(self) -> bool:
        """Become the one process writing this buffer through (an exclusive ``flock`` on
        ``<buffer>.lock``, kept until :meth:`release`); False while another holds it."""
        if self._claim is not None:
            return True
        file = self.lock_path.open("a+b")
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        except BaseException:
            file.close()
            raise
        self._claim = file
        self._checked = False  # a writer before this one may have died with a group half stored
        return True

    def release(self) -> None:
        """Let another process write this buffer through."""
        if self._claim is not None:
            self._claim.close()  # closing the file releases its flock
            self._claim = None

    def write_through(
        self,
        write: Callable[[dict[str, Any]], None],
        *,
        stored: Callable[[dict[str, Any]], bool] | None = None,
        tidy: bool = True,
    ) -> int:
        """Give every waiting record to ``write``, oldest first, moving the cursor after each group;
        with ``tidy`` (or once the file is past :data:`TIDY_BYTES`) empty the file when all went
        through. The number written; 0 without writing when another process writes through
        (:meth:`claim`).

        ``stored(record)`` says whether the store holds ``record`` already; it is asked only of the
        first group after this object took over, the one a killed writer may have half stored. A
        :class:`StoreError` from ``write`` stops there (the cursor stays before that record) and is
        raised; any other error means the record itself is bad: it goes to ``<buffer>.rejected``
        (it is in the audit file and log too) and the rest go on."""
        if not self.claim():
            return 0
        written = 0
        generation, at = "", -1
        while True:
            with self._locked() as file:
                if at < 0:  # where to start, read under the same lock as the first chunk: an empty
                    # buffer read apart from it could meet a header appended in between as a record
                    generation, at = self._start(file)
                data = self._chunk(file, at)
            records, _ = self._records(data, at)
            if not records:
                self._checked = True  # caught up: nothing a killed writer may have half stored
                break
            check = stored if not self._checked else None
            try:
                for end, record in records:
                    if record is not None and not (check is not None and check(record)):
                        written += self._write_one(write, record)
                    at = end
            finally:
                self._move_cursor(generation, at)
            self._checked = True
        with self._locked() as file:
            size = os.fstat(file.fileno()).st_size
            if at == size and size and (tidy or size > TIDY_BYTES):
                # Everything went through: a new generation starts with the next append.
                file.truncate(0)
                os.fsync(file.fileno())
                self.cursor_path.unlink(missing_ok=True)
        return written

    def _write_one(self, write: Callable[[dict[str, Any]], None], record: dict[str, Any]) -> int:
        """Write one record: 1, or 0 when it is bad and was set aside. A :class:`StoreError` is raised."""
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
            return 0
        return 1

    def _start(self, file: IO[bytes]) -> tuple[str, int]:
        """The buffer's generation and the offset of its first waiting record (the cursor's, or
        just after the header line)."""
        file.seek(0)
        first = file.readline()
        generation = ""
        position = 0
        if first.endswith(b"\n"):
            try:
                header = json.loads(first)
            except ValueError:
                header = None
            if isinstance(header, dict) and HEADER_KEY in header:
                generation = str(header[HEADER_KEY])
                position = len(first)
        return generation, max(position, self._cursor(generation))

    @staticmethod
    def _chunk(file: IO[bytes], start: int) -> bytes:
        """The bytes from ``start``: about :data:`READ_BYTES`, ending with a whole line if any."""
        file.seek(start)
        data = file.read(READ_BYTES)
        if data and not data.endswith(b"\n"):
            data += file.readline()  # finish a long record cut by the read
        return data

    def _records(self, data: bytes, start: int) -> tuple[list[tuple[int, dict[str, Any] | None]], int]:
        """Up to :data:`GROUP_RECORDS` whole records of ``data`` (read from ``start``), each with the
        offset after it (None for a line that is not a JSON object: a write torn by a crash), and the
        offset after the last. Parsed outside the file's lock, so appends never wait for it."""
        records: list[tuple[int, dict[str, Any] | None]] = []
        at = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n") or len(records) == GROUP_RECORDS:
                break  # an unfinished last line: its writer was killed mid-write, or is writing it
            at += len(line)
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                log.error("audit buffer %s: a line that is not a record at byte %d, skipped", self.path, at)
                value = None
            records.append((at, value))
        return records, at

    def _cursor(self, generation: str) -> int:
        try:
            saved_generation, _, offset = self.cursor_path.read_text().partition(" ")
            return int(offset) if saved_generation == generation and generation else 0
        except (OSError, ValueError):
            return 0

    def _move_cursor(self, generation: str, offset: int) -> None:
        """Replace the cursor file atomically. Not ``fsync``'d: it survives a killed process, and
        after a power loss an older cursor only means records written again (see the module)."""
        temporary = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        temporary.write_text(f"{generation} {offset}")
        os.replace(temporary, self.cursor_path)

    def _reject(self, record: dict[str, Any]) -> None:
        with self.rejected_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            file.flush()
            os.fsync(file.fileno())


class GroupCommit:
    """Appends submitted records to an :class:`AuditBuffer` from one thread, in groups.

    :meth:`submit` queues a record and returns at once; ``done`` is called (on the commit thread)
    once the record is in the buffer (``fsync``'d with ``sync``). Records submitted while an append
    is under way go together into the next one, with one ``fsync``. Without ``sync`` there is no
    flush to share: :meth:`submit` appends on the caller's thread (a write to the OS, about a tenth
    of a millisecond) and calls ``done`` before it returns. If the buffer cannot be
    written (a full disk, a read-only file system), the error is logged, the records go to
    ``failed`` (the audit writer stores them from memory) and ``done`` is still called: a broken
    buffer never holds an answer back.
    """

    def __init__(
        self,
        buffer: AuditBuffer,
        *,
        sync: bool = True,
        committed: Callable[[], None] = lambda: None,
        failed: Callable[[list[dict[str, Any]]], None] = lambda records: None,
    ) -> None:
        self.buffer = buffer
        self.sync = sync
        self._committed = committed
        self._failed = failed
        self._pending: list[tuple[dict[str, Any], Callable[[], None] | None]] = []
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="seawall-audit-commit", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any], done: Callable[[], None] | None = None) -> None:
        with self._condition:
            if self._closed:
                raise RuntimeError("the audit buffer's commit thread was closed")
            if self.sync:
                self._pending.append((record, done))
                self._condition.notify()
                return
        self._append([(record, done)])

    def wait(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted record was appended; False if ``timeout_s`` passed first."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and not self._busy, timeout_s)

    def close(self) -> None:
        """Append what was submitted, then stop the thread (and close the buffer file)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout=30)
        self.buffer.close()

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending:
                    return
                group, self._pending = self._pending, []
                self._busy = True
            try:
                self._append(group)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _append(self, group: list[tuple[dict[str, Any], Callable[[], None] | None]]) -> None:
        """Append a group, tell its waiters, and the writer."""
        records = [record for record, _ in group]
        try:
            self.buffer.append(records, sync=self.sync)
        except Exception as exc:  # OSError, or a record that is not JSON at all
            log.error(
                "cannot write %d audit record(s) to the audit buffer %s (%s): storing them from memory",
                len(records),
                self.buffer.path,
                exc,
            )
            self._failed(records)
        finally:
            for _, done in group:
                if done is not None:
                    try:
                        done()
                    except Exception:  # a waiter's loop that has gone away
                        log.debug("an audit commit waiter could not be told", exc_info=True)
        self._committed()


class BufferedAuditWriter:
    """Writes the buffer through to the store, waiting ``retry_s`` between tries while it fails.

    Used from one thread (the audit writer's): :meth:`tick` after records were appended and when
    there is nothing new, :meth:`close` at the end.
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
        #: Whether the store refused the last write (the records wait in the buffer).
        self.buffering = False
        self._next_try = self._clock()
        get_audit = getattr(store, "get_audit", None)
        self._stored = _already_stored(get_audit) if callable(get_audit) else None

    def tick(self, *, force: bool = False, tidy: bool = False) -> None:
        """Write the buffer through, unless the store failed less than ``retry_s`` ago (``force``:
        now); ``tidy``: empty the file if everything went through (the writer is idle)."""
        if self.buffering and not force and self._clock() < self._next_try:
            return
        try:
            written = self.buffer.write_through(
                self.store.write_audit, stored=self._stored, tidy=tidy or force
            )
        except StoreError as exc:
            if not self.buffering:
                log.warning(
                    "the store cannot take audit records (%s); they wait in %s", exc.message, self.buffer.path
                )
            else:
                log.debug("the store still cannot take audit records: %s", exc.message)
            self.buffering = True
            self._next_try = self._clock() + self.retry_s
            return
        except OSError as exc:
            log.error("cannot read the audit buffer %s: %s", self.buffer.path, exc)
            self._next_try = self._clock() + self.retry_s
            return
        if self.buffering:
            log.warning("the store is back: %d buffered audit records written through", written)
        self.buffering = False

    def close(self) -> None:
        """A last try at writing the buffer through (what the store does not take stays in the
        file for the next start), then let another process write it through."""
        try:
            self.tick(force=True)
        finally:
            self.buffer.release()


def _line(record: dict[str, Any]) -> bytes:
    """One buffered record: compact UTF-8 JSON and a newline, anything else as ``str``, a NaN or
    infinity as null (orjson, several times cheaper; :func:`json.dumps` for what orjson refuses:
    integers past 64 bits, keys that are not text)."""
    try:
        return orjson.dumps(record, default=str, option=_ORJSON | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode() + b"\n"


def _already_stored(get_audit: Callable[[str], dict[str, Any] | None]) -> Callable[[dict[str, Any]], bool]:
    """Whether the store holds ``record`` already: its request's stored record, links aside, is it."""

    def stored(record: dict[str, Any]) -> bool:
        request_id = record.get("request_id")
        if not request_id:
            return False
        current = get_audit(str(request_id))
        if current is None:
            return False
        mine = {key: value for key, value in record.items() if key not in _LINKS}
        return {key: value for key, value in current.items() if key not in _LINKS} == mine

    return stored


__all__ = ["GROUP_RECORDS", "AuditBuffer", "BufferedAuditWriter", "GroupCommit"]
