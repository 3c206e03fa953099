"""Three ``seawall serve`` replicas on one PostgreSQL database with their hot state on Redis, behind
nginx as the load balancer (``examples/deploy/nginx.conf``), all real servers, exercised through
nginx with the OpenAI SDK: per-user limits exact across replicas, a block through one replica
refused by the others at once, streams through nginx not held back by proxy buffering, Redis
stopped mid-run, and one replica killed mid-run without a lost audit record.

Needs nginx and redis-server (Debian packages; CI installs them): skipped without them, except
under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis as redis_client
import yaml
from sqlalchemy import create_engine, make_url, text
from starlette.responses import Response, StreamingResponse

from backend_standins import Recorded, json_reply, stand_in
from conftest import ADDRESS_IN_USE, start_on_free_port
from redis_server import RedisServer
from seawall.gateway.audit_buffer import AuditBuffer
from test_faults import stored_request_ids
from test_gateway_pipeline import MODEL, QUESTION, THREAT, _completion, _stream_chunk
from test_gateway_replicas import Replica

ROOT = Path(__file__).resolve().parent.parent
USER_LIMIT = 10
#: Two high-risk requests block a user (nothing before that).
RISK = {"warn_at": None, "throttle_at": None, "block_at": 2, "review_at": None}
#: The streamed answer: its first sentence, then a pause the client must not wait through.
FIRST_SENTENCE = "The first sentence arrives at once. "
REST = "The rest comes after a long pause. And then it ends."
#: Long enough that the first sentence's way through nginx, a replica and its input moderation fits
#: well inside it on a loaded machine: a buffering proxy would hold it back at least this long.
PAUSE_S = 4.0


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if found is None:
        reason = f"{binary} not found (Debian: apt-get install {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the topology test must run")
        pytest.skip(reason)
    return found


async def _reply(request: Recorded) -> Response:
    """The model server: plain answers at once; streams send one sentence, pause, then the rest."""
    if request.path == "/v1/models":
        return json_reply({"object": "list", "data": [{"id": MODEL, "object": "model"}]})
    if not request.body.get("stream"):
        return json_reply(_completion("Paris is the capital of France."))

    async def events() -> AsyncIterator[bytes]:
        yield _stream_chunk({"role": "assistant", "content": FIRST_SENTENCE})
        await asyncio.sleep(PAUSE_S)
        yield _stream_chunk({"content": REST})
        yield _stream_chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@dataclass
class Topology:
    nginx_url: str
    replicas: list[Replica]
    redis: RedisServer
    store_url: str
    config: Path

    def client(self, replica: Replica | None = None) -> openai.OpenAI:
        base = replica.url if replica is not None else self.nginx_url
        return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)


def _nginx_conf(prefix: Path, port: int, replicas: list[Replica]) -> Path:
    template = (ROOT / "examples" / "deploy" / "nginx.conf").read_text()
    servers = "\n        ".join(f"server 127.0.0.1:{r.port} max_fails=1 fail_timeout=5s;" for r in replicas)
    conf = template.replace("@PREFIX@", str(prefix)).replace("@LISTEN@", f"127.0.0.1:{port}")
    path = prefix / "nginx.conf"
    path.write_text(conf.replace("@REPLICAS@", servers))
    return path


def _start_nginx(
    nginx: str, folder: Path, port: int, replicas: list[Replica], started: list[subprocess.Popen[bytes]]
) -> bool:
    """nginx in front of ``replicas`` on ``port`` (appended to ``started``), once it answers
    ``/healthz`` from a replica: True; False when the port was taken (nginx could not bind it)."""
    out = folder / "nginx.out"
    (folder / "error.log").unlink(missing_ok=True)  # what it says, this time only
    process = subprocess.Popen(
        [nginx, "-c", str(_nginx_conf(folder, port, replicas)), "-g", "daemon off;"],
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            said = out.read_text(errors="replace")
            if (folder / "error.log").exists():  # the config's error_log
                said += (folder / "error.log").read_text(errors="replace")
            if ADDRESS_IN_USE in said:
                return False
            raise RuntimeError(f"nginx exited: {said}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                started.append(process)
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"nginx did not start: {out.read_text(errors='replace')}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Topology]:
    nginx = _require("nginx", "nginx")
    _require("redis-server", "redis-server")
    folder = tmp_path_factory.mktemp("topology")
    schema = "seawall_topology"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    store_url = (
        make_url(postgres_url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    redis = RedisServer(folder)
    redis.start()
    nginx_process: subprocess.Popen[bytes] | None = None
    replicas: list[Replica] = []
    try:
        with stand_in(_reply) as upstream:
            config = folder / "seawall.yaml"
            for n in (1, 2, 3):
                # One config per replica, the same but for each replica's own audit file and buffer.
                (folder / f"replica-{n}.yaml").write_text(
                    yaml.safe_dump(
                        {
                            "gateway": {
                                "enabled": True,
                                "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
                                "secret_file": str(folder / "secret"),
                                "audit_file": str(folder / f"audit-{n}.jsonl"),
                                "tenant": "acme",
                                "rate_limits": {"per_user": {"requests": USER_LIMIT, "window_s": 600}},
                                "risk": {
                                    "warn_at": None,
                                    "throttle_at": None,
                                    "block_at": 2,
                                    "review_at": None,
                                },
                            },
                            "store": {
                                "url": store_url,
                                "cache_url": redis.url,
                                "cache_retry_s": 1.0,
                                "audit_buffer_path": str(folder / f"audit-buffer-{n}.jsonl"),
                            },
                            "server": {"log_level": "warning"},
                        }
                    )
                )
            config = folder / "replica-1.yaml"
            replicas = [Replica(folder / f"replica-{n}.yaml", folder / f"replica-{n}.log") for n in (1, 2, 3)]
            for replica in replicas:
                replica.wait_ready()
            started: list[subprocess.Popen[bytes]] = []
            port = start_on_free_port(
                lambda port: _start_nginx(nginx, folder, port, replicas, started), "nginx"
            )
            nginx_process = started[-1]
            url = f"http://127.0.0.1:{port}"
            yield Topology(url, replicas, redis, store_url, config)
    finally:
        if nginx_process is not None:
            nginx_process.terminate()
            nginx_process.wait(timeout=10)
        for replica in replicas:
            if replica.process.poll() is None:
                replica.stop()
        redis.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _ask(client: openai.OpenAI, user: str, content: str = QUESTION) -> int:
    try:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], user=user
        )
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


def test_per_user_limits_are_exact_across_replicas_behind_nginx(topology: Topology) -> None:
    client = topology.client()
    with ThreadPoolExecutor(max_workers=9) as pool:
        statuses = list(pool.map(lambda _: _ask(client, "eve"), range(3 * USER_LIMIT)))
    assert statuses.count(200) == USER_LIMIT, statuses
    assert statuses.count(429) == 2 * USER_LIMIT
    # Counted on Redis: nothing of it in PostgreSQL's counters.
    keys = redis_client.Redis.from_url(topology.redis.url).keys("seawall:rl:*")
    assert keys and not any(b"eve" in key for key in keys)  # buckets name the hashed identifier
    engine = create_engine(topology.store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM rate_counters")).scalar() == 0
    engine.dispose()


def test_a_block_through_one_replica_is_refused_by_the_others_at_once(topology: Topology) -> None:
    one, two, three = (topology.client(replica) for replica in topology.replicas)
    # Every replica has served the user: its standing ("ok") is cached on Redis.
    assert [_ask(client, "frank") for client in (one, two, three)] == [200, 200, 200]
    assert _ask(one, "frank", THREAT) == 400
    assert _ask(one, "frank", THREAT) == 400  # block_at 2: blocked now, through replica one
    began = time.monotonic()
    assert _ask(two, "frank") == 403
    assert _ask(three, "frank") == 403
    assert time.monotonic() - began < 5  # stated bound with Redis up: the next request
    assert _ask(topology.client(), "frank") == 403


def test_streams_through_nginx_are_not_held_back(topology: Topology) -> None:
    """The first sentence reaches the client while the model still pauses: nothing buffers it."""
    client = topology.client()
    began = time.monotonic()
    first_at: float | None = None
    parts: list[str] = []
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], user="grace", stream=True
    )
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                first_at = first_at if first_at is not None else time.monotonic() - began
                parts.append(choice.delta.content)
    total = time.monotonic() - began
    assert "".join(parts) == FIRST_SENTENCE + REST
    assert first_at is not None and first_at < PAUSE_S - 0.5, (first_at, total)
    assert total >= PAUSE_S


def test_losing_redis_mid_run_keeps_serving_within_the_stated_bound(topology: Topology) -> None:
    client = topology.client()
    assert _ask(client, "heidi") == 200
    assert [_ask(client, "ivan", THREAT) for _ in range(2)] == [400, 400]  # block_at 2: blocked
    topology.redis.stop()
    try:
        statuses = [_ask(client, "heidi") for _ in range(3 * USER_LIMIT)]
        # Served from PostgreSQL: no request fails because Redis is gone, and the limit holds
        # within its bound (at most twice the limit in the window Redis failed in).
        assert set(statuses) <= {200, 429}, statuses
        assert USER_LIMIT <= statuses.count(200) + 1 <= 2 * USER_LIMIT
        assert _ask(client, "ivan") == 403  # the block is in PostgreSQL
    finally:
        topology.redis.start()


def test_a_replica_killed_mid_run_loses_no_audit_record(topology: Topology) -> None:
    """SIGKILL of a replica while requests flow through nginx: every answered request's record was
    in that replica's audit buffer before its answer left, so once the replica is restarted on the
    same buffer, every answered request is in the store, once."""
    client = topology.client()
    answered: list[str] = []
    lock = threading.Lock()

    def ask(index: int) -> None:
        try:
            response = client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": QUESTION}], user=f"user-{index}"
            )
        except openai.APIError:
            return  # in flight on the killed replica: the client sees an error, never an answer
        with lock:
            answered.append(response.headers["x-seawall-request-id"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        first = [pool.submit(ask, index) for index in range(20)]
        while sum(future.done() for future in first) < 5:
            time.sleep(0.01)
        victim = topology.replicas[2]
        victim.process.kill()  # SIGKILL: no shutdown, no flush
        victim.process.wait(timeout=10)
        rest = [pool.submit(ask, index) for index in range(20, 40)]
        for future in first + rest:
            future.result()
    assert len(answered) >= 30  # nginx skips the dead replica: requests after the kill are answered
    folder = topology.config.parent
    left = AuditBuffer(folder / "audit-buffer-3.jsonl").pending()
    # The replica comes back on the same configuration (the same buffer) and writes through what
    # its buffer still holds before anything newer.
    restarted = Replica(folder / "replica-3.yaml", folder / "replica-3-restarted.log")
    topology.replicas[2] = restarted
    restarted.wait_ready()
    deadline = time.monotonic() + 30
    while not set(answered) <= set(stored_request_ids(topology.store_url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    stored = stored_request_ids(topology.store_url)
    assert set(answered) <= set(stored), (left, sorted(set(answered) - set(stored)))
    assert len(stored) == len(set(stored))  # none stored twice, the killed replica's last ones included
    assert AuditBuffer(folder / "audit-buffer-3.jsonl").pending() == 0
