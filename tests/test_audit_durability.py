"""Every answered request's audit record is durable before the answer leaves.

:meth:`seawall.gateway.audit.AuditLog.commit` returns once the record is in the audit buffer
(:mod:`seawall.gateway.audit_buffer`), flushed to disk, whatever the store is doing; the store is
written from the buffer. Real SQLite stores, real files, real processes killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.gateway.audit_buffer import AuditBuffer, BufferedAuditWriter, GroupCommit
from seawall.settings import StoreSettings
from seawall.store import open_store

CHILD = """
import asyncio, sys
from pathlib import Path
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.settings import StoreSettings
from seawall.store import open_store

folder = Path(sys.argv[1])
store = open_store(StoreSettings(url=f"sqlite:///{folder / 'seawall.db'}"))
buffer = None if sys.argv[2] == "queue" else folder / "audit-buffer.jsonl"
log = AuditLog(folder / "audit.jsonl", store, buffer_path=buffer, sync=sys.argv[2] == "fsync")
print("ready", flush=True)
sys.stdin.readline()  # the test locks the store first

async def answer(number):
    record = AuditRecord(f"req-{number}", "acme", stream=False)
    record.outcome = "answered"
    await log.commit(record)
    print(record.request_id, flush=True)  # the answer leaves: after the commit

async def main():
    number = 0
    while True:
        await asyncio.gather(*(answer(number + i) for i in range(4)))
        number += 4

asyncio.run(main())
"""


def stored_ids(folder: Path) -> list[str]:
    store = open_store(StoreSettings(url=f"sqlite:///{folder / 'seawall.db'}"))
    try:
        return [str(record["request_id"]) for _, record in store.audit_chain()]
    finally:
        store.close()


@pytest.mark.parametrize("sync", ["fsync", "write", "queue"])
def test_a_process_killed_right_after_answering_loses_no_record(tmp_path: Path, sync: str) -> None:
    """While the store is locked (so nothing reaches it), a process answers requests, each after its
    commit, and is killed with SIGKILL. Every answered request's record is in the buffer; a new
    process on the same buffer writes them all to the store, once each. Without a buffer ("queue",
    the store written from memory after the answer) the same kill loses them: the test can fail."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path), sync],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    answered: list[str] = []
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "ready"
    locker = sqlite3.connect(tmp_path / "seawall.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # the store cannot take a record until this ends
    try:
        child.stdin.write("go\n")
        child.stdin.flush()
        for line in child.stdout:
            answered.append(line.strip())
            if len(answered) == 40:
                child.kill()  # SIGKILL: no shutdown, no flush
                break
        child.wait(timeout=10)
        answered += [line.strip() for line in child.stdout if line.strip()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        locker.execute("ROLLBACK")
        locker.close()
    assert stored_ids(tmp_path) == []  # nothing reached the store before the kill
    if sync == "queue":
        assert not (tmp_path / "audit-buffer.jsonl").exists()
        assert len(answered) >= 40  # answered, and lost with the process
        return
    assert AuditBuffer(tmp_path / "audit-buffer.jsonl").pending() >= len(answered)

    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    restarted = AuditLog(None, store, buffer_path=tmp_path / "audit-buffer.jsonl")
    try:
        restarted.flush(30)
    finally:
        restarted.close()
        store.close()
    stored = stored_ids(tmp_path)
    assert set(answered) <= set(stored), sorted(set(answered) - set(stored))
    assert len(stored) == len(set(stored))
    assert AuditBuffer(tmp_path / "audit-buffer.jsonl").pending() == 0


class SlowBuffer(AuditBuffer):
    """A real buffer whose appends take at least ``delay_s`` and are counted; the first one also
    waits for ``opened`` (so what arrives meanwhile is known to have arrived while it was on its
    way, however slowly a loaded machine runs the submitting side)."""

    def __init__(self, path: Path, delay_s: float) -> None:
        super().__init__(path)
        self.delay_s = delay_s
        self.appends: list[int] = []
        self.opened = threading.Event()

    def append(self, records: list[dict[str, Any]], *, sync: bool = True) -> None:
        assert self.opened.wait(30), "the test never let the first append through"
        time.sleep(self.delay_s)
        super().append(records, sync=sync)
        self.appends.append(len(records))


def test_concurrent_commits_share_one_flush(tmp_path: Path) -> None:
    """Records that arrive while an append is on its way go together into the next: 64 concurrent
    commits take two appends, and each commit returns only after its record's append."""
    buffer = SlowBuffer(tmp_path / "audit-buffer.jsonl", delay_s=0.05)
    log = AuditLog(None, open_store(StoreSettings(url="memory://")), buffer_path=buffer.path)
    assert log._commit is not None
    log._commit.buffer = buffer  # appends go through the counting buffer (same file)

    async def run() -> list[float]:
        began = time.perf_counter()
        finished: list[float] = []

        async def one(number: int) -> None:
            await log.commit(AuditRecord(f"req-{number}", "acme", stream=False))
            finished.append(time.perf_counter() - began)

        commits = [asyncio.ensure_future(one(number)) for number in range(64)]
        await asyncio.sleep(0)  # each commit ran up to its wait: all 64 records are submitted
        buffer.opened.set()
        await asyncio.gather(*commits)
        return finished

    try:
        finished = asyncio.run(run())
        assert sum(buffer.appends) == 64
        # One append for what the commit thread found when it woke (the first record, or a few),
        # one for all that were submitted while that append was on its way.
        assert len(buffer.appends) <= 2, buffer.appends
        assert min(finished) >= 0.05  # nobody answered before an append was done
        log.flush(10)
    finally:
        buffer.opened.set()
        log.close()


def test_commit_waits_for_the_append(tmp_path: Path) -> None:
    """A commit whose append has not happened yet has not returned."""
    gate = threading.Event()

    class GatedBuffer(AuditBuffer):
        def append(self, records: list[dict[str, Any]], *, sync: bool = True) -> None:
            gate.wait(10)
            super().append(records, sync=sync)

    log = AuditLog(None, open_store(StoreSettings(url="memory://")), buffer_path=tmp_path / "b.jsonl")
    assert log._commit is not None
    log._commit.buffer = GatedBuffer(tmp_path / "b.jsonl")

    async def run() -> None:
        task = asyncio.ensure_future(log.commit(AuditRecord("req-1", "acme", stream=False)))
        await asyncio.sleep(0.3)
        assert not task.done()
        gate.set()
        await asyncio.wait_for(task, 5)

    try:
        asyncio.run(run())
    finally:
        gate.set()
        log.close()


def test_a_group_the_store_already_took_is_not_stored_again(tmp_path: Path) -> None:
    """A writer killed after the store took some records but before its cursor moved: the next one
    skips the records the store holds, and stores the rest, each once."""
    buffer = AuditBuffer(tmp_path / "audit-buffer.jsonl")
    records = [
        {"request_id": f"req-{n}", "tenant": "acme", "outcome": "answered", "time": None} for n in range(10)
    ]
    buffer.append(records)
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    try:
        for record in records[:6]:  # what the killed writer got into the store
            store.write_audit(dict(record))
        writer = BufferedAuditWriter(store, buffer)
        writer.tick(force=True)
        stored = [str(r["request_id"]) for _, r in store.audit_chain()]
        assert sorted(stored) == sorted(r["request_id"] for r in records)
        assert buffer.pending() == 0
        writer.close()
    finally:
        store.close()


def test_a_record_of_the_same_request_that_differs_is_still_stored(tmp_path: Path) -> None:
    """The check compares whole records: another record that reuses a request id is not taken for
    the buffered one."""
    buffer = AuditBuffer(tmp_path / "audit-buffer.jsonl")
    buffer.append([{"request_id": "req-1", "tenant": "acme", "outcome": "answered", "time": None}])
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    try:
        store.write_audit({"request_id": "req-1", "tenant": "acme", "outcome": "error", "time": None})
        BufferedAuditWriter(store, buffer).close()
        current = store.get_audit("req-1")
        assert current is not None and current["outcome"] == "answered"
    finally:
        store.close()


def test_a_buffer_that_cannot_be_written_never_holds_an_answer_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The buffer's path is a folder (as a broken disk would refuse writes): the commit still
    returns, the error is logged, and the record reaches the store from memory."""
    path = tmp_path / "audit-buffer.jsonl"
    path.mkdir()
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    log = AuditLog(None, store, buffer_path=path, retry_s=0.2)
    try:

        async def run() -> None:
            await asyncio.wait_for(log.commit(AuditRecord("req-1", "acme", stream=False)), 5)

        asyncio.run(run())
        wait_for(lambda: store.get_audit("req-1") is not None, 30, "the record in the store, from memory")
        assert "cannot write 1 audit record(s) to the audit buffer" in caplog.text
    finally:
        log.close()
        store.close()


def test_the_buffer_is_emptied_once_written_through_and_idle(tmp_path: Path) -> None:
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    log = AuditLog(None, store, buffer_path=tmp_path / "audit-buffer.jsonl", retry_s=0.2)
    try:

        async def run() -> None:
            await asyncio.gather(*(log.commit(AuditRecord(f"r{n}", "acme", stream=False)) for n in range(20)))

        asyncio.run(run())
        cursor = tmp_path / "audit-buffer.jsonl.offset"
        wait_for(
            lambda: not ((tmp_path / "audit-buffer.jsonl").stat().st_size or cursor.exists()),
            30,
            "the buffer emptied and its cursor removed",
        )
        assert (tmp_path / "audit-buffer.jsonl").stat().st_size == 0
        assert not cursor.exists()
        assert len(list(store.audit_chain())) == 20
    finally:
        log.close()
        store.close()


def test_group_commit_appends_what_was_submitted_before_it_closes(tmp_path: Path) -> None:
    buffer = AuditBuffer(tmp_path / "audit-buffer.jsonl")
    done: list[int] = []
    commit = GroupCommit(buffer)
    for number in range(50):
        commit.submit({"request_id": f"r{number}", "tenant": "acme"}, lambda n=number: done.append(n))
    commit.close()
    assert sorted(done) == list(range(50))
    assert buffer.pending() == 50
    with pytest.raises(RuntimeError, match="closed"):
        commit.submit({"request_id": "late"})


def test_an_in_memory_store_has_no_buffer_unless_one_is_named(tmp_path: Path) -> None:
    """``memory://`` ends with its process, and one default file would be shared by every process's
    in-memory store: no default buffer for it."""
    assert StoreSettings(url="memory://").audit_buffer_file() is None
    named = StoreSettings(url="memory://", audit_buffer_path=tmp_path / "b.jsonl")
    assert named.audit_buffer_file() == tmp_path / "b.jsonl"
    sqlite = StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}").audit_buffer_file()
    assert sqlite is not None and sqlite.name.startswith("audit-buffer-")


def test_records_appended_while_the_buffer_is_written_through_are_stored_once(tmp_path: Path) -> None:
    """Another appender (its own file, as another process's) appends while the buffer is written
    through and emptied again and again: a record never goes to ``.rejected`` (once, a new
    generation's header line appended between the writer's start and its first read was taken for
    a record without a request_id), and each record reaches the store once."""
    path = tmp_path / "audit-buffer.jsonl"
    buffer = AuditBuffer(path)
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    count = 300

    def appender() -> None:
        other = AuditBuffer(path)
        try:
            for number in range(count):
                record = {"request_id": f"req-{number}", "tenant": "acme", "outcome": "ok", "time": None}
                other.append([record], sync=False)
        finally:
            other.close()

    thread = threading.Thread(target=appender)
    thread.start()
    try:
        while thread.is_alive():
            buffer.write_through(store.write_audit, tidy=True)
        thread.join()
        buffer.write_through(store.write_audit, tidy=True)
        assert not buffer.rejected_path.exists()
        stored = [str(record["request_id"]) for _, record in store.audit_chain()]
        assert sorted(stored) == sorted(f"req-{number}" for number in range(count))
    finally:
        buffer.release()
        buffer.close()
        store.close()
