"""The audit trail's hash chain: written by real gateway requests (the real app on loopback, a
loopback upstream stand-in, a real SQLite store), checked by ``seawall audit verify``, and every
kind of tampering (an edited, a deleted, a reordered record) found at that record; the store's
chain on SQLite and PostgreSQL, also with concurrent writers."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from backend_standins import stand_in
from conftest import running_server
from seawall.cli import app as cli_app
from seawall.gateway.audit import AuditLog, AuditRecord
from seawall.settings import StoreSettings
from seawall.store import SqlStore, open_store
from seawall.store.chain import read_jsonl, record_hash, verify
from seawall.store.schema import audit_events
from test_gateway_pipeline import MODEL, THREAT, Behaviour, gateway_settings, make_reply, question

runner = CliRunner()


@dataclass
class Written:
    audit_file: Path
    store_url: str
    config: Path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    """A chain written by real requests: plain, streamed, refused and invalid ones."""
    tmp = tmp_path_factory.mktemp("audit_chain")
    behaviour = Behaviour()
    with stand_in(make_reply(behaviour)) as upstream:
        settings = gateway_settings(tmp, upstream.url)
        with running_server(settings) as server, server.http() as http:
            bodies: list[dict[str, Any]] = [
                {"model": MODEL, "messages": question()},
                {"model": MODEL, "messages": question(), "stream": True},
                {"model": MODEL, "messages": question(THREAT)},
                {"model": MODEL, "messages": question(), "temperature": "hot"},
                {"model": MODEL, "messages": question(), "user": "bob"},
                {"model": MODEL, "messages": question(), "stream": True, "user": "carol"},
                {"model": MODEL, "messages": question()},
            ]
            for body in bodies:
                assert http.post("/v1/chat/completions", json=body).status_code < 500
    # The server stopped: the audit log was closed, so the store has every record.
    store_url = f"sqlite:///{tmp / 'seawall.db'}"
    config = tmp / "seawall.yaml"
    config.write_text(json.dumps({"store": {"url": store_url}}))
    yield Written(tmp / "audit.jsonl", store_url, config)


def _verify_file(path: Path, *extra: str) -> Any:
    return runner.invoke(cli_app, ["audit", "verify", "--file", str(path), *extra])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_chain_written_by_the_gateway_verifies(written: Written) -> None:
    records = [json.loads(line) for line in _lines(written.audit_file)]
    assert len(records) == 7
    assert records[0]["prev_hash"] is None
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    assert all(record_hash(record) == record["hash"] for record in records)
    result = _verify_file(written.audit_file)
    assert result.exit_code == 0, result.output
    assert "intact (7 records, 1 tenants)" in result.output
    # The store's chain (its own, per tenant across replicas) verifies too.
    stored = runner.invoke(cli_app, ["audit", "verify", "store", "--config", str(written.config)])
    assert stored.exit_code == 0, stored.output
    assert "intact (7 records" in stored.output


def _tampered(written: Written, tmp_path: Path, lines: list[str]) -> Any:
    path = tmp_path / "tampered.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return _verify_file(path)


@pytest.mark.parametrize("at", [0, 3, 6])
def test_an_edited_record_is_found_at_that_record(written: Written, tmp_path: Path, at: int) -> None:
    lines = _lines(written.audit_file)
    record = json.loads(lines[at])
    record["outcome"] = "ok" if record["outcome"] != "ok" else "refused_input"
    lines[at] = json.dumps(record)
    result = _tampered(written, tmp_path, lines)
    assert result.exit_code == 1
    assert f"broken at record {at + 1} ({record['request_id']}" in result.output
    assert "edited" in result.output


def test_a_record_whose_hash_was_recomputed_breaks_the_next_link(written: Written, tmp_path: Path) -> None:
    lines = _lines(written.audit_file)
    record = json.loads(lines[2])
    record["risk"] = "low"
    record["hash"] = record_hash(record)
    lines[2] = json.dumps(record)
    result = _tampered(written, tmp_path, lines)
    assert result.exit_code == 1
    assert "broken at record 4 " in result.output
    assert "deleted, or records were reordered" in result.output


@pytest.mark.parametrize("at", [1, 4, 6])
def test_a_deleted_record_is_found_where_it_was(written: Written, tmp_path: Path, at: int) -> None:
    lines = _lines(written.audit_file)
    del lines[at]
    result = _tampered(written, tmp_path, lines)
    if at == 6:  # the last record: nothing follows it, so the chain alone cannot tell
        assert result.exit_code == 0
        return
    assert result.exit_code == 1
    assert f"broken at record {at + 1} " in result.output


def test_deleting_the_first_record_is_found_unless_the_file_was_rotated(
    written: Written, tmp_path: Path
) -> None:
    lines = _lines(written.audit_file)[1:]
    result = _tampered(written, tmp_path, lines)
    assert result.exit_code == 1
    assert "broken at record 1 " in result.output and "first record points at a previous one" in result.output
    assert _verify_file(tmp_path / "tampered.jsonl", "--continued").exit_code == 0


@pytest.mark.parametrize("at", [0, 2, 5])
def test_reordered_records_are_found_at_the_first_moved_one(
    written: Written, tmp_path: Path, at: int
) -> None:
    lines = _lines(written.audit_file)
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    result = _tampered(written, tmp_path, lines)
    assert result.exit_code == 1
    assert f"broken at record {at + 1} " in result.output


def test_a_line_that_is_not_json_is_a_break(written: Written, tmp_path: Path) -> None:
    lines = _lines(written.audit_file)
    lines[3] = lines[3][:-5]
    result = _tampered(written, tmp_path, lines)
    assert result.exit_code == 1
    assert "broken at record 4 (line 4" in result.output


def test_tampering_in_the_store_is_found_at_that_row(written: Written, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(written.store_url.removeprefix("sqlite:///")).read_bytes())
    url = f"sqlite:///{copy}"
    config = tmp_path / "seawall.yaml"
    config.write_text(json.dumps({"store": {"url": url}}))
    store = open_store(StoreSettings(url=url))
    try:
        with store.engine.begin() as connection:
            rows = connection.execute(
                select(audit_events.c.id, audit_events.c.record).order_by(audit_events.c.id)
            ).all()
            edited = dict(rows[2].record) | {"outcome": "ok"}
            connection.execute(
                update(audit_events).where(audit_events.c.id == rows[2].id).values(record=edited)
            )
        result = runner.invoke(cli_app, ["audit", "verify", "store", "--config", str(config)])
        assert result.exit_code == 1
        assert f"broken at record 3 ({edited['request_id']}" in result.output and "edited" in result.output

        with store.engine.begin() as connection:
            connection.execute(
                update(audit_events).where(audit_events.c.id == rows[2].id).values(record=rows[2].record)
            )
            connection.execute(delete(audit_events).where(audit_events.c.id == rows[4].id))
        result = runner.invoke(cli_app, ["audit", "verify", "store", "--config", str(config)])
        assert result.exit_code == 1
        assert "broken at record 5 " in result.output and "deleted" in result.output
    finally:
        store.close()


# ----------------------------------------------------------------------------- the store's chain


def _record(request_id: str, tenant: str | None = "acme", **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "tenant": tenant, "outcome": "ok", "decisions": [], **fields}


def test_store_chains_per_tenant_and_keeps_replaced_records_in_the_chain(store: SqlStore) -> None:
    for number in range(5):
        store.write_audit(_record(f"a{number}"))
        store.write_audit(_record(f"g{number}", "globex", latency_ms={"total": 1.5 + number}))
    store.write_audit(_record("n0", None))
    store.write_audit(_record("a1", outcome="filtered_output"))  # replaces a1 in searches
    chain = list(store.audit_chain())
    assert len(chain) == 12
    result = verify(chain)
    assert result.intact and result.records == 12 and result.tenants == 3
    acme = [record for _, record in chain if record["tenant"] == "acme"]
    assert acme[0]["prev_hash"] is None
    assert all(after["prev_hash"] == before["hash"] for before, after in itertools.pairwise(acme))
    assert [r["request_id"] for r in store.search_audit("acme")].count("a1") == 1
    assert store.search_audit("acme")[0]["outcome"] == "filtered_output"
    assert verify(store.audit_chain("globex")).records == 5


def test_concurrent_writers_keep_one_linear_chain(store_url: str) -> None:
    """Two stores (two engines, as two replicas would have) and several threads each, one tenant."""
    stores = [open_store(StoreSettings(url=store_url)) for _ in range(2)]
    try:

        def write(which: int, thread: int) -> None:
            for number in range(15):
                stores[which].write_audit(_record(f"r{which}-{thread}-{number}"))

        threads = [threading.Thread(target=write, args=(which, t)) for which in range(2) for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        chain = list(stores[0].audit_chain())
        assert len(chain) == 90
        result = verify(chain)
        assert result.intact, result.broken
        assert len({record["prev_hash"] for _, record in chain}) == 90  # no fork: each hash followed once
    finally:
        for opened in stores:
            opened.close()


def test_the_audit_file_chain_continues_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for _ in range(2):
        log = AuditLog(path)
        for number in range(3):
            log.write(
                AuditRecord(request_id=f"r{number}", tenant="acme" if number % 2 else "globex", stream=False)
            )
        log.close()
    with path.open() as lines:
        result = verify(read_jsonl(lines))
    assert result.intact and result.records == 6 and result.tenants == 2
