"""The fault matrix: what a client sees and what is audited when the upstream or the store fails.

Everything here is real: seawall's app on loopback (uvicorn), a loopback upstream stand-in
(:mod:`backend_standins`) scripted to fail in one way per case, raw HTTP clients, a real
PostgreSQL server stopped and started again, a SQLite file locked by another OS process, and
``seawall serve`` subprocesses killed with SIGKILL. The README's "Reliability and security"
section carries the matrix with the outcomes these tests hold.

Faults with a test elsewhere (at the upstream client's level, or end to end) are listed in
:data:`COVERED_ELSEWHERE`; the cases here run each fault through the whole gateway, plain and
streamed, and check the three things every fault must give: an error in OpenAI's shape, no
text the stream guard did not clear, and one audit record naming the fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.responses import Response, StreamingResponse

from backend_standins import Recorded, StandIn, stand_in
from conftest import (
    RunningServer,
    assert_openai_error,
    refusing_port,
    running_server,
    start_on_free_port,
    subprocess_env,
    wait_for,
)
from postgres_server import _bin_dir, _run, pg_ctl_start
from seawall.errors import StoreError
from seawall.gateway.audit_buffer import AuditBuffer, BufferedAuditWriter
from seawall.gateway.pipeline import REQUEST_ID_HEADER
from seawall.settings import StoreSettings
from seawall.store import open_store
from seawall.store.chain import verify
from test_gateway_pipeline import MODEL, gateway_settings
from test_gateway_replicas import Replica

#: Fault -> tests that already hold it elsewhere (the matrix below runs each through the gateway).
COVERED_ELSEWHERE = {
    "connection_refused": [
        "test_gateway_upstream.py::test_connection_refused_is_502_unreachable_after_retries",
        "test_gateway_upstream.py::test_a_server_that_comes_up_during_the_retries_is_reached",
    ],
    "timeout_before_headers": ["test_gateway_upstream.py::test_read_timeout_is_504_and_not_retried"],
    "status_500": [
        "test_gateway_upstream.py::test_500_is_not_retried_and_the_client_sees_no_details",
        "test_gateway_pipeline.py::test_upstream_500_is_an_openai_502",
    ],
    "malformed_json": [
        "test_gateway_upstream.py::test_malformed_success_is_502_malformed",
        "test_gateway_upstream.py::test_bad_events_mid_stream",
    ],
    "cut_mid_sentence": [
        "test_gateway_upstream.py::test_connection_broken_mid_stream_is_interrupted",
        "test_gateway_pipeline.py::test_cut_stream_ends_with_an_error_and_nothing_unscanned",
    ],
    "stall": [
        "test_gateway_upstream.py::test_stall_between_chunks_is_504",
        "test_gateway_upstream.py::test_total_timeout_bounds_a_stream_that_keeps_trickling",
    ],
}

#: The upstream's read timeout in these tests (a stall is twice as long).
READ_TIMEOUT_S = 1.0
STALL_S = 2 * READ_TIMEOUT_S + 1
HOLD_BACK = 200
#: What the stand-in streams: clean sentences, then one left unfinished (the fault strikes after it).
SENT = (
    "Paris is the capital of France. It lies on the river Seine in the north of the country. "
    "The city is known for its museums, its cafes and its long history. Many visitors come "
    "every year to see the Louvre and to walk along the river in the evening. The last "
    "sentence of this answer never reaches its"
)
#: The unfinished sentence the guard held back when the fault struck: it must never reach a client.
UNSCANNED_TAIL = "The last sentence of this answer never reaches its"
assert SENT.endswith(UNSCANNED_TAIL) and len(UNSCANNED_TAIL) < HOLD_BACK
PIECE = 7


# ----------------------------------------------------------------- the scripted upstream


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _completion(text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
        }
    ).encode()


class CutConnection(Exception):
    """Raised inside the stand-in's body: uvicorn drops the connection without ending the body."""


@dataclass
class Fault:
    """What the stand-in does to the next chat request; ``streamed`` counts stream pieces sent."""

    name: str = "none"
    streamed_chars: int = 0
    closed: asyncio.Event | None = None
    upstream_closed: list[bool] = field(default_factory=list)
    # Bumped by ``arm``: a stream counts and reports its close only while its arming is current, so a
    # stream left over from an earlier test, closed late, cannot pass for this test's stream.
    armed: int = 0

    def arm(self, name: str) -> None:
        self.name = name
        self.armed += 1
        self.streamed_chars = 0
        self.upstream_closed.clear()


def make_reply(fault: Fault) -> Any:
    async def reply(request: Recorded) -> Response:
        stream = bool(request.body and request.body.get("stream"))
        name = fault.name
        if name == "timeout_before_headers":
            await asyncio.sleep(STALL_S)
        if name == "status_500":
            return Response(b"internal meltdown on gpu-7 at 10.0.0.5", status_code=500)
        if not stream:
            return _plain(name)
        return StreamingResponse(_events(name, fault, fault.armed), media_type="text/event-stream")

    return reply


def _plain(name: str) -> Response:
    body = _completion(SENT)
    if name == "malformed_json":
        return Response(body[: len(body) // 2], media_type="application/json")

    async def parts() -> AsyncIterator[bytes]:
        if name == "timeout_after_headers":
            await asyncio.sleep(STALL_S)
        yield body[:40]
        if name == "stall":
            await asyncio.sleep(STALL_S)
        if name == "cut_mid_sentence":
            raise CutConnection("the stand-in drops the connection mid-body")
        yield body[40:]

    return StreamingResponse(parts(), media_type="application/json")


async def _events(name: str, fault: Fault, armed: int) -> AsyncIterator[bytes]:
    def count(chars: int) -> None:
        if armed == fault.armed:
            fault.streamed_chars += chars

    try:
        if name == "timeout_after_headers":
            await asyncio.sleep(STALL_S)
        yield _chunk({"role": "assistant", "content": ""})
        for start in range(0, len(SENT), PIECE):
            yield _chunk({"content": SENT[start : start + PIECE]})
            count(PIECE)
            await asyncio.sleep(0)
        if name == "malformed_json":
            yield b'data: {"id": "chatcmpl-upstream", "choices": [{"delta": {"content": "and th\n\n'
        elif name == "stall":
            await asyncio.sleep(STALL_S)
        elif name == "cut_mid_sentence":
            raise CutConnection("the stand-in drops the connection mid-sentence")
        elif name == "endless":  # for the slow client: clean text until the gateway hangs up
            while True:
                yield _chunk({"content": "and on. "})
                count(8)
                await asyncio.sleep(0)
        yield _chunk({}, "stop")
        yield b"data: [DONE]\n\n"
    finally:
        if armed == fault.armed:
            fault.upstream_closed.append(True)


# ----------------------------------------------------------------- the gateway under test


@dataclass
class Setup:
    server: RunningServer
    upstream: StandIn
    fault: Fault
    audit_file: Path

    def audit(self, request_id: str, timeout_s: float = 10) -> dict[str, Any]:
        """The one audit record of ``request_id`` (waits for it: a stream is audited as it ends)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.audit_file.read_text().splitlines() if self.audit_file.exists() else []
            found: list[dict[str, Any]] = [r for r in map(json.loads, lines) if r["request_id"] == request_id]
            if found or time.monotonic() > deadline:
                assert len(found) == 1, found
                return found[0]
            time.sleep(0.05)


def fault_settings(tmp: Path, upstream_url: str, **gateway: Any) -> Any:
    upstream = {
        "base_url": f"{upstream_url}/v1",
        "max_retries": 0,
        "read_timeout_s": READ_TIMEOUT_S,
        "total_timeout_s": 20,
    }
    return gateway_settings(tmp, upstream_url, upstream=upstream, **gateway)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("faults")
    fault = Fault()
    with stand_in(make_reply(fault)) as upstream:
        settings = fault_settings(tmp, upstream.url, client_send_timeout_s=1.0)
        with running_server(settings, send_buffer=16384) as server:
            yield Setup(server, upstream, fault, tmp / "audit.jsonl")


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A gateway whose upstream address refuses connections (nothing listens on the port)."""
    tmp = tmp_path_factory.mktemp("refused")
    with refusing_port() as port:  # held for the module: nothing can start listening there
        settings = fault_settings(tmp, f"http://127.0.0.1:{port}")
        with running_server(settings) as server:
            yield Setup(server, StandIn(reply=make_reply(Fault())), Fault(), tmp / "audit.jsonl")


# ----------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    """One fault, plain or streamed, and what the client must see: an HTTP error before any
    stream (``in_stream`` False) or an error event inside a 200 stream."""

    fault: str
    stream: bool
    status: int
    code: str
    in_stream: bool = False

    @property
    def id(self) -> str:
        return f"{self.fault}-{'stream' if self.stream else 'plain'}"


MATRIX = [
    Case("connection_refused", False, 502, "upstream_unreachable"),
    Case("connection_refused", True, 502, "upstream_unreachable"),
    Case("timeout_before_headers", False, 504, "upstream_timeout"),
    Case("timeout_before_headers", True, 504, "upstream_timeout"),
    Case("timeout_after_headers", False, 504, "upstream_timeout"),
    Case("timeout_after_headers", True, 504, "upstream_timeout"),
    Case("status_500", False, 502, "upstream_error"),
    Case("status_500", True, 502, "upstream_error"),
    Case("malformed_json", False, 502, "upstream_malformed"),
    Case("malformed_json", True, 502, "upstream_malformed", in_stream=True),
    Case("cut_mid_sentence", False, 502, "upstream_error"),
    Case("cut_mid_sentence", True, 502, "upstream_stream_interrupted", in_stream=True),
    Case("stall", False, 504, "upstream_timeout"),
    Case("stall", True, 504, "upstream_timeout", in_stream=True),
]


def _events_of(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


@pytest.mark.parametrize("case", MATRIX, ids=lambda case: case.id)
def test_upstream_fault(case: Case, request: pytest.FixtureRequest) -> None:
    gw: Setup = request.getfixturevalue("refused" if case.fault == "connection_refused" else "setup")
    gw.fault.arm(case.fault)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}]}
    began = time.monotonic()
    with (
        gw.server.http() as http,
        http.stream("POST", "/v1/chat/completions", json={**body, "stream": case.stream}) as response,
    ):
        request_id = response.headers[REQUEST_ID_HEADER]
        if case.in_stream:
            assert response.status_code == 200
            events = _events_of(response)
        else:
            response.read()
    took = time.monotonic() - began

    if case.in_stream:
        # The stream's end: one error event in OpenAI's shape, then [DONE]; before it, only text
        # the guard cleared, never the held-back tail.
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])
        assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}
        assert error["error"]["code"] == case.code
        released = "".join(
            choice["delta"].get("content") or ""
            for chunk in map(json.loads, events[:-2])
            for choice in chunk["choices"]
        )
        assert SENT.startswith(released)
        assert UNSCANNED_TAIL[:8] not in released
    else:
        error = assert_openai_error(response, case.status, case.code)
    for secret in ("127.0.0.1", "10.0.0.5", "meltdown", "gpu-7"):
        assert secret not in json.dumps(error)
    assert took < 15, f"the client waited {took:.1f} s"

    record = gw.audit(request_id)
    assert record["outcome"] == "upstream_error" and record["stream"] is case.stream
    assert record["error"] == {"status": case.status, "code": case.code}
    assert record["upstream"] == {"status": "error", "code": case.code}


@pytest.mark.parametrize(
    "case", [c for c in MATRIX if c.stream and c.fault != "connection_refused"], ids=lambda case: case.id
)
def test_upstream_fault_on_the_responses_api(case: Case, setup: Setup) -> None:
    """The same faults under ``POST /v1/responses``: an HTTP error before the stream, or a stream
    that ends with ``response.failed`` and an ``error`` event naming the code, with only text the
    guard cleared before it."""
    setup.fault.arm(case.fault)
    body = {"model": MODEL, "input": "Tell me about Paris.", "stream": True}
    with setup.server.http() as http, http.stream("POST", "/v1/responses", json=body) as response:
        request_id = response.headers[REQUEST_ID_HEADER]
        if case.in_stream:
            assert response.status_code == 200
            payloads = [json.loads(event) for event in _events_of(response)]
        else:
            response.read()
    if case.in_stream:
        assert [p["type"] for p in payloads[-2:]] == ["response.failed", "error"]
        assert payloads[-2]["response"]["error"]["code"] == case.code
        assert payloads[-1]["code"] == case.code and payloads[-1]["error"]["code"] == case.code
        released = "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta")
        assert SENT.startswith(released)
        assert UNSCANNED_TAIL[:8] not in released
    else:
        assert_openai_error(response, case.status, case.code)
    record = setup.audit(request_id)
    assert record["outcome"] == "upstream_error" and record["error"] == {
        "status": case.status,
        "code": case.code,
    }


#: A streamed request on each API the gateway serves: its path and body.
STREAMED = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me about Paris."}]}),
    "responses": ("/v1/responses", {"input": "Tell me about Paris."}),
}


@pytest.mark.parametrize("api", list(STREAMED))
def test_a_client_that_hangs_up_mid_stream_stops_the_upstream_and_is_audited(setup: Setup, api: str) -> None:
    setup.fault.arm("endless")
    path, request = STREAMED[api]
    body = {"model": MODEL, "stream": True, **request}
    with setup.server.http() as http, http.stream("POST", path, json=body) as response:
        request_id = response.headers[REQUEST_ID_HEADER]
        lines = response.iter_lines()
        while "and on." not in next(lines):  # read until text is flowing, then hang up
            pass
    wait_for(lambda: bool(setup.fault.upstream_closed), 30, "the gateway to close the upstream")
    record = setup.audit(request_id)
    assert record["outcome"] == "client_disconnected" and record["error"] is None
    [moderation] = [d for d in record["decisions"] if d["step"] == "output_moderation"]
    assert moderation["released_chars"] > 0


@pytest.mark.parametrize("api", list(STREAMED))
def test_a_slow_client_that_never_reads_is_cut_off_and_audited(setup: Setup, api: str) -> None:
    """A client that sends a stream request and never reads: once the socket's buffers are full
    and nothing moves for ``client_send_timeout_s``, the gateway closes the upstream, audits the
    request, and stops sending."""
    setup.fault.arm("endless")
    path, request = STREAMED[api]
    body = json.dumps({"model": MODEL, "stream": True, **request}).encode()
    port = int(setup.server.root.rsplit(":", 1)[1])
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills fast
    client.connect(("127.0.0.1", port))
    try:
        client.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while not setup.fault.upstream_closed and time.monotonic() < deadline:
            time.sleep(0.1)
        assert setup.fault.upstream_closed, (
            "the gateway kept reading the upstream for a client that never reads"
        )
        streamed = setup.fault.streamed_chars
        time.sleep(1)
        assert setup.fault.streamed_chars == streamed  # the generation stopped
        # The request's id is in the response head, the first thing in the socket.
        client.settimeout(5)
        head = client.recv(4096).decode("latin-1")
        request_id = head.split(REQUEST_ID_HEADER + ": ", 1)[1].split("\r\n", 1)[0]
    finally:
        client.close()
    record = setup.audit(request_id)
    assert record["outcome"] == "client_disconnected"
    assert record["error"] == {"status": None, "code": "client_too_slow"}
    [moderation] = [d for d in record["decisions"] if d["step"] == "output_moderation"]
    assert moderation["released_chars"] <= moderation["received_chars"]


# ----------------------------------------------------------------- the store


class PostgresCluster:
    """A private PostgreSQL server (initdb + pg_ctl) that a test may stop and start again on the
    same port and data: the session's shared server must stay up for every other test."""

    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            reason = "PostgreSQL is not installed (no initdb/pg_ctl)"
            if os.environ.get("CI"):  # as the session's server does: CI must run the store's faults
                pytest.fail(f"CI needs PostgreSQL for the store fault tests: {reason}")
            pytest.skip(reason)
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="seawall-pg-faults-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, user="postgres", group="postgres")
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port: int | None = None
        _run([str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"])
        self.running = False

    @property
    def url(self) -> str:
        assert self.port is not None, "the cluster's port is known once it was started"
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _start_on(self, port: int) -> bool:
        options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        return pg_ctl_start(self.bin, self.data, self.log, options)

    def start(self) -> None:
        """The first time on a free port; again on the same one (what the gateway was given)."""
        if self.port is None:
            self.port = start_on_free_port(self._start_on, "the private PostgreSQL server")
        elif not self._start_on(self.port):
            raise RuntimeError(f"another process took port {self.port} while PostgreSQL was stopped")
        self.running = True

    def stop(self) -> None:
        """Stop as an operator's fast shutdown would: open connections are cut."""
        _run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], self.log)
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class StoreSetup:
    server: RunningServer
    buffer: Path
    config: Path
    ids: list[str] = field(default_factory=list)

    def ask(self, *, stream: bool = False) -> httpx.Response:
        body = {
            "model": MODEL,
            "stream": stream,
            "messages": [{"role": "user", "content": "Tell me about Paris."}],
        }
        with self.server.http(timeout=60) as http:
            response = http.post("/v1/chat/completions", json=body)
        self.ids.append(response.headers[REQUEST_ID_HEADER])
        return response


def buffered(path: Path) -> int:
    """Records waiting in the audit buffer for the store (after its cursor)."""
    if not path.exists():
        return 0
    return AuditBuffer(path).pending()


def stored_records(store_url: str) -> list[dict[str, Any]]:
    """Every record in the store's audit chain, superseded ones included, in the chain's order."""
    store = open_store(StoreSettings(url=store_url))
    try:
        return [record for _, record in store.audit_chain()]
    finally:
        store.close()


def stored_request_ids(store_url: str) -> list[str]:
    return [str(record["request_id"]) for record in stored_records(store_url)]


def verify_store(config: Path) -> subprocess.CompletedProcess[str]:
    """``seawall audit verify store`` (the real CLI) on the store named in ``config``."""
    return subprocess.run(
        [sys.executable, "-m", "seawall.cli", "audit", "verify", "store", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )


@contextmanager
def store_gateway(tmp: Path, store_url: str) -> Iterator[StoreSetup]:
    """A gateway whose request path uses the store (a per-user rate limit), buffering its audit
    records in ``tmp/audit-buffer.jsonl`` and trying the store again every 0.3 s."""
    with stand_in(make_reply(Fault())) as upstream:
        settings = fault_settings(
            tmp, upstream.url, rate_limits={"per_user": {"requests": 1000, "window_s": 60}}
        )
        store = {"url": store_url, "audit_buffer_path": str(tmp / "audit-buffer.jsonl"), "audit_retry_s": 0.3}
        settings = settings.model_copy(update={"store": StoreSettings(**store)})
        config = tmp / "seawall.yaml"
        config.write_text(yaml.safe_dump({"store": {"url": store_url}}))
        with running_server(settings) as server:
            yield StoreSetup(server, tmp / "audit-buffer.jsonl", config)


def assert_store_unavailable(response: httpx.Response) -> None:
    error = assert_openai_error(response, 503, "store_unavailable")
    assert "password" not in error["message"]


def test_postgres_stopped_and_restarted_mid_run(tmp_path: Path) -> None:
    """While PostgreSQL is down the gateway answers 503 ``store_unavailable`` at once and buffers
    the audit records; when it is back, requests succeed again without restarting seawall, and
    the buffer is written through: every request once in the store, and the chain verifies."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        with store_gateway(tmp_path, cluster.url) as gw:
            for _ in range(3):
                assert gw.ask().status_code == 200
            assert gw.ask(stream=True).status_code == 200
            wait_for(lambda: len(stored_request_ids(cluster.url)) == 4, 30, "the first records in the store")

            cluster.stop()
            down = len(gw.ids)
            for stream in (False, True, False, False):
                began = time.monotonic()
                assert_store_unavailable(gw.ask(stream=stream))
                assert time.monotonic() - began < 5
            wait_for(lambda: buffered(gw.buffer) == 4, 30, "four records in the audit buffer")

            cluster.start()
            wait_for(lambda: gw.ask().status_code == 200, 30, "the gateway to answer again")
            assert gw.ask(stream=True).status_code == 200
            wait_for(lambda: buffered(gw.buffer) == 0, 30, "the buffer to be written through")
            wait_for(
                lambda: len(stored_request_ids(cluster.url)) == len(gw.ids), 10, "every record in the store"
            )
        records = stored_records(cluster.url)
        assert sorted(r["request_id"] for r in records) == sorted(gw.ids)  # none lost, none doubled
        by_id = {r["request_id"]: r for r in records}
        for request_id in gw.ids[down : down + 4]:  # what happened while the database was down
            assert by_id[request_id]["outcome"] == "error"
            assert by_id[request_id]["error"] == {"status": 503, "code": "store_unavailable"}
        verified = verify_store(gw.config)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "intact" in verified.stdout + verified.stderr
    finally:
        cluster.remove()


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
print("released", flush=True)
"""


def test_sqlite_file_locked_by_another_process(tmp_path: Path) -> None:
    """Another process holds the SQLite file's exclusive lock: requests that need the store wait
    out the busy timeout and get 503 ``store_unavailable``; the audit records wait in the buffer
    and reach the store once the lock is gone; the chain verifies."""
    database = tmp_path / "seawall.db"
    url = f"sqlite:///{database}"
    with store_gateway(tmp_path, url) as gw:
        assert gw.ask().status_code == 200
        wait_for(lambda: len(stored_request_ids(url)) == 1, 30, "the first record in the store")
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(database)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            with ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda _: gw.ask(), range(3)))
            for answer in answers:
                assert_store_unavailable(answer)
            # The writer waited out the busy timeout once, then buffers without waiting.
            wait_for(lambda: buffered(gw.buffer) == 3, 90, "three records in the audit buffer")
        finally:
            assert locker.stdin is not None
            locker.stdin.write("go\n")
            locker.stdin.flush()
            locker.wait(timeout=30)
        assert gw.ask().status_code == 200
        wait_for(lambda: buffered(gw.buffer) == 0, 60, "the buffer to be written through")
        wait_for(lambda: len(stored_request_ids(url)) == len(gw.ids), 30, "every record in the store")
    assert sorted(stored_request_ids(url)) == sorted(gw.ids)
    verified = verify_store(gw.config)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# ----------------------------------------------------------------- kill -9 of seawall serve

APP_KEY = "sw-faults-app-key-0123456789"
REVIEWER = "reviewer-token-faults-0123456789"
ANSWER = "Paris is the capital of France. " * 12


def _slow_stream_reply() -> Any:
    """Plain answers at once; streams of ANSWER in 4-character pieces, 50 ms apart (~5 s)."""

    async def reply(request: Recorded) -> Response:
        if request.path == "/v1/models":
            return Response(json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}))
        if not (request.body and request.body.get("stream")):
            return Response(_completion(ANSWER), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": ""})
            for start in range(0, len(ANSWER), 4):
                yield _chunk({"content": ANSWER[start : start + 4]})
                await asyncio.sleep(0.05)
            yield _chunk({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return reply


def _serve_config(tmp: Path, upstream_url: str, **extra: Any) -> Path:
    config = tmp / "seawall.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"log_level": "warning", "api_keys": [APP_KEY]},
                "gateway": {
                    "enabled": True,
                    "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0},
                    "secret_file": str(tmp / "secret"),
                    "audit_file": str(tmp / "audit.jsonl"),
                    "tenant": "acme",
                    "risk": {"enabled": False},
                    "rate_limits": {"per_user": None},
                    "stream_guard": {"hold_back_chars": 60, "scan_every_chars": 40},
                },
                "store": {
                    "url": f"sqlite:///{tmp / 'seawall.db'}",
                    "audit_buffer_path": str(tmp / "audit-buffer.jsonl"),
                    "audit_retry_s": 0.5,
                },
                **extra,
            }
        )
    )
    return config


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seawall.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )


def _read_stream(url: str, into: list[str], started: threading.Event) -> BaseException | None:
    """Read one stream into ``into`` (content deltas, and "[DONE]" at a clean end); the error that
    ended it, if one did."""
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Tell me about Paris."}]}
    headers = {"authorization": f"Bearer {APP_KEY}"}
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    into.append(data)
                    continue
                for choice in json.loads(data).get("choices", []):
                    if choice["delta"].get("content"):
                        into.append(choice["delta"]["content"])
                        started.set()
    except httpx.HTTPError as exc:
        return exc
    return None


def test_kill_9_during_streams_then_a_restarted_server_carries_on(tmp_path: Path) -> None:
    """SIGKILL while three streams are half sent: each client's connection breaks (no [DONE], only
    text the guard cleared); a restarted ``seawall serve`` answers plain and streamed requests, and
    the audit file's and the store's chains verify, every finished request stored once."""
    with stand_in(_slow_stream_reply()) as upstream:
        config = _serve_config(tmp_path, upstream.url)
        first = Replica(config, tmp_path / "serve-1.log")
        try:
            first.wait_ready()
            finished = [_ask_serve(first) for _ in range(3)]
            wait_for(
                lambda: len(stored_request_ids(f"sqlite:///{tmp_path / 'seawall.db'}")) == 3, 10, "the store"
            )
            received: list[list[str]] = [[], [], []]
            started = [threading.Event() for _ in received]
            with ThreadPoolExecutor(3) as pool:
                ends = [
                    pool.submit(_read_stream, first.url, into, event)
                    for into, event in zip(received, started, strict=True)
                ]
                for event in started:
                    assert event.wait(30), "a stream never started"
                first.process.kill()  # SIGKILL: no shutdown, no flush, no goodbye
                first.process.wait(timeout=10)
                errors = [end.result(timeout=30) for end in ends]
        finally:
            first.stop()
        for into, error in zip(received, errors, strict=True):
            assert isinstance(error, httpx.HTTPError), "a stream ended cleanly although its server was killed"
            assert "[DONE]" not in into
            assert ANSWER.startswith("".join(into))

        second = Replica(config, tmp_path / "serve-2.log")
        try:
            second.wait_ready()
            finished += [_ask_serve(second) for _ in range(2)]
            whole: list[str] = []
            assert _read_stream(second.url, whole, threading.Event()) is None
            assert whole[-1] == "[DONE]" and "".join(whole[:-1]) == ANSWER
        finally:
            second.stop()
    url = f"sqlite:///{tmp_path / 'seawall.db'}"
    stored = stored_request_ids(url)
    assert all(stored.count(request_id) == 1 for request_id in finished)
    assert len(stored) == len(set(stored))
    for source in ("store", str(tmp_path / "audit.jsonl")):
        verified = _cli(config, "audit", "verify", source)
        assert verified.returncode == 0, verified.stdout + verified.stderr


def _ask_serve(replica: Replica, **extra: Any) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Paris."}], **extra}
    response = httpx.post(
        f"{replica.url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {APP_KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    if "x-seawall-review-id" in response.headers:  # held: the placeholder completion (the default)
        return str(response.headers["x-seawall-review-id"])
    return response.headers[REQUEST_ID_HEADER]


def test_kill_9_during_review_decisions_leaves_no_partial_decision(tmp_path: Path) -> None:
    """SIGKILL while a reviewer claims and approves held answers as fast as the server takes them:
    afterwards every held item is there once, each either pending with no decision at all or
    decided with exactly one decision event and its completion; a restarted server decides the rest."""
    review = {
        "review": {
            "enabled": True,
            "uncertain_low": None,
            "reviewer_tokens": {"rita": REVIEWER},
        }
    }
    url = f"sqlite:///{tmp_path / 'seawall.db'}"
    held_body = {"seawall": {"review": {"domain": "law"}}}
    with stand_in(_slow_stream_reply()) as upstream:
        config = _serve_config(tmp_path, upstream.url, **review)
        first = Replica(config, tmp_path / "serve-1.log")
        try:
            first.wait_ready()
            items = [_ask_serve(first, **held_body) for _ in range(12)]
            assert len(set(items)) == 12 and all(item.startswith("rev_") for item in items)
            decided: list[str] = []

            def decide(item: str) -> None:
                with httpx.Client(
                    base_url=first.url, headers={"authorization": f"Bearer {REVIEWER}"}
                ) as http:
                    try:
                        http.post(f"/v1/seawall/reviews/{item}/claim", timeout=10).raise_for_status()
                        http.post(f"/v1/seawall/reviews/{item}/approve", timeout=10).raise_for_status()
                        decided.append(item)
                    except httpx.HTTPError:
                        pass  # the server died under it

            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(decide, item) for item in items]
                wait_for(lambda: len(decided) >= 3, 30, "the first decisions")
                first.process.kill()
                first.process.wait(timeout=10)
                for future in futures:
                    future.result(timeout=30)
        finally:
            first.stop()
        assert len(decided) < len(items), "every decision finished before the kill: nothing was tested"

        store = open_store(StoreSettings(url=url))
        try:
            assert sum(store.review_counts().values()) == len(items)  # none lost, none doubled
            pending: list[str] = []
            for item_id in items:
                item = store.get_review(item_id)
                assert item is not None
                actions = [event.action for event in store.list_review_events(item_id)]
                assert actions.count("held") == 1
                if item.status == "pending":
                    assert item.decision is None and item.decided_at is None and item.decided_by is None
                    assert "approved" not in actions
                    pending.append(item_id)
                else:
                    assert (item.status, item.decision, item.decided_by) == ("approved", "approve", "rita")
                    assert item.decided_at is not None and actions.count("approved") == 1
            assert set(decided) <= set(items) - set(pending)  # every acknowledged decision was kept
        finally:
            store.close()

        second = Replica(config, tmp_path / "serve-2.log")
        try:
            second.wait_ready()
            with httpx.Client(base_url=second.url, headers={"authorization": f"Bearer {REVIEWER}"}) as http:
                for item_id in pending:  # the same reviewer's claim (if any) is theirs to extend
                    http.post(f"/v1/seawall/reviews/{item_id}/claim", timeout=10).raise_for_status()
                    http.post(f"/v1/seawall/reviews/{item_id}/approve", timeout=10).raise_for_status()
            with httpx.Client(base_url=second.url, headers={"authorization": f"Bearer {APP_KEY}"}) as app:
                for item_id in items:
                    final = app.get(f"/v1/seawall/reviews/{item_id}", timeout=10).json()
                    assert final["status"] == "approved"
                    assert final["completion"]["choices"][0]["message"]["content"] == ANSWER
        finally:
            second.stop()


APPENDER = """
import sys
from pathlib import Path
from seawall.gateway.audit_buffer import AuditBuffer

buffer = AuditBuffer(Path(sys.argv[1]))
number = 0
while True:
    buffer.append([{"request_id": f"req-{number}", "tenant": "acme", "outcome": "error", "time": None}])
    print(number, flush=True)  # after the fsync: this record is durable
    number += 1
"""


def test_the_audit_buffer_survives_kill_9_and_a_write_through_cut_short(tmp_path: Path) -> None:
    """A process appending to the buffer is killed with SIGKILL: every record it acknowledged is
    written through. A write-through that the store cuts short resumes at its cursor: each record
    reaches the store once, and the store's chain verifies."""
    path = tmp_path / "audit-buffer.jsonl"
    appender = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    acknowledged: list[str] = []
    assert appender.stdout is not None
    for line in appender.stdout:
        acknowledged.append(f"req-{line.strip()}")
        if len(acknowledged) == 60:
            appender.kill()
            break
    appender.wait(timeout=10)
    acknowledged += [f"req-{line.strip()}" for line in appender.stdout if line.strip()]

    buffer = AuditBuffer(path)
    store = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    try:
        calls = 0

        def drops_after_twenty(record: dict[str, Any]) -> None:
            nonlocal calls
            calls += 1
            if calls > 20:
                raise StoreError("the database went away")
            store.write_audit(record)

        with pytest.raises(StoreError):
            buffer.write_through(drops_after_twenty)
        assert buffer.pending() >= len(acknowledged) - 20
        writer = BufferedAuditWriter(store, buffer)  # as a restarted seawall finds it
        writer.tick(force=True)
        assert not writer.buffering and buffer.pending() == 0 and not buffer.cursor_path.exists()
        assert buffer.path.stat().st_size == 0  # emptied: the next record starts a new generation
        stored = [str(record["request_id"]) for _, record in store.audit_chain()]
        assert len(stored) == len(set(stored))  # none doubled
        assert set(acknowledged) <= set(stored)  # none lost
        assert len(stored) <= len(acknowledged) + 1  # at most the one appended as the kill came
        assert verify(store.audit_chain()).intact
    finally:
        store.close()
