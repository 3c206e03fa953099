"""What the gateway (``/v1/chat/completions``) costs over calling the model server directly, in one run.

Starts, on loopback, each as its own process:

* an OpenAI-compatible upstream stand-in (this file with ``--stand-in PORT``, plain asyncio) that
  answers every chat request after a fixed 50 ms: a plain completion, or a stream whose first chunk
  comes at 50 ms and the rest of a short benign answer in a few more chunks, 5 ms apart;
* the seawall server (uvicorn on ``seawall.server.app:create_app``, as ``seawall serve`` runs it)
  with the gateway on, twice: guards off (``gateway.input_moderation`` and
  ``gateway.output_moderation`` false) and moderation on (the defaults: the embedded model judges
  the user's message and the answer, streams included); both write an audit file and keep their
  other settings at the defaults (store in a temporary SQLite file, per-user rate limit, risk ledger);
  requests name 1,000 end users in turn, so no one user reaches the rate limit;

then measures the same requests three ways - straight to the stand-in ("direct"), through the gateway
with guards off, and through the gateway with moderation on - with one client (httpx, async):

* sequential plain requests: p50 and p95 latency, the p50 ratio to direct and the overhead in ms
  (targets: guards off at most 1.05x, moderation on at most 1.3x direct at p50);
* sequential streams: time to the first token (the first non-empty content delta) and to the end;
* ``--concurrency`` clients (50) for ``--load-seconds`` each: requests/s and p50/p95 under load,
  and the gateway's CPU time per request.

Sequential requests are interleaved (one to each target in turn, the order rotating), so noise from
other processes falls on all three alike. On 2 cores the gateways get CPU 0 and the stand-in and
this client CPU 1; the cores and the pinning are printed. Every child process is stopped on exit,
Ctrl-C and failures included.

Usage: python bench/gateway.py [--requests N] [--concurrency 50] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from moderation_api import free_port, rss_mb  # the sibling benchmark

UPSTREAM_DELAY_S = 0.050
CHUNK_GAP_S = 0.005
STREAM_CHUNKS = 9
QUESTION = "How do I make a sourdough starter at home?"
ANSWER = (
    "A sourdough starter needs only flour, water and a little patience. Mix equal weights of whole "
    "wheat flour and lukewarm water in a clean jar, cover it loosely and keep it at room temperature. "
    "Every day, discard about half and feed it again with fresh flour and water. After five to seven "
    "days it should double within a few hours of a feeding and smell pleasantly sour; then it is "
    "ready to bake with. Between bakes, keep it in the fridge and feed it once a week."
)
MODEL = "stand-in-model"
#: LiteLLM's own published figure (https://docs.litellm.ai/docs/benchmarks): the median of its
#: "LiteLLM Overhead Duration" metric, 2 ms with 4 proxy instances and 12 ms with 2, at about
#: 1,000 requests/s against a fake OpenAI endpoint. Quoted for comparison, not measured here.
LITELLM_PUBLISHED = "2-12 ms median proxy overhead (LiteLLM's docs, ~1,000 req/s; not measured here)"


# ---------------------------------------------------------------------------------- the stand-in


def _pieces(text: str, count: int) -> list[str]:
    """``text`` cut at word boundaries into ``count`` pieces of about equal length."""
    words = text.split(" ")
    per = -(-len(words) // count)
    pieces = [" ".join(words[i : i + per]) for i in range(0, len(words), per)]
    return [piece if i == len(pieces) - 1 else piece + " " for i, piece in enumerate(pieces)]


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(payload: dict[str, Any]) -> bytes:
    return _http_chunk(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


def _stand_in_replies(stream_chunks: int) -> tuple[bytes, bytes, list[bytes], bytes, bytes]:
    """Prebuilt bytes: the plain reply, the stream's head, its chunks, its end, the model list."""
    created = int(time.time())
    completion = {
        "id": "chatcmpl-stand-in",
        "object": "chat.completion",
        "created": created,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 90, "total_tokens": 150},
    }

    def reply(content: bytes) -> bytes:
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(content)}\r\n\r\n"
        return head.encode() + content

    plain = reply(json.dumps(completion, separators=(",", ":")).encode())
    models = reply(json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse(
            {
                "id": "chatcmpl-stand-in",
                "object": "chat.completion.chunk",
                "created": created,
                "model": MODEL,
                "choices": [choice],
            }
        )

    texts = _pieces(ANSWER, stream_chunks)
    chunks = [chunk({"role": "assistant", "content": texts[0]})]
    chunks += [chunk({"content": text}) for text in texts[1:]]
    end = chunk({}, "stop") + _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return plain, head, chunks, end, models


async def _stand_in(port: int, gap_s: float, stream_chunks: int) -> None:
    """A minimal HTTP/1.1 keep-alive server: cheap enough that it is never the bottleneck."""
    plain, head, chunks, end, models = _stand_in_replies(stream_chunks)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in request.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                if request.split(b" ", 2)[1].endswith(b"/models"):
                    writer.write(models)
                    continue
                stream = bool(json.loads(body).get("stream")) if body else False
                await asyncio.sleep(UPSTREAM_DELAY_S)
                if not stream:
                    writer.write(plain)
                    continue
                writer.write(head + chunks[0])
                await writer.drain()
                for chunk in chunks[1:]:
                    await asyncio.sleep(gap_s)
                    writer.write(chunk)
                    await writer.drain()
                writer.write(end)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _run(coroutine: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed (uvicorn uses it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# ---------------------------------------------------------------------------------- processes


def _child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """Runs in each child before exec: pin it, and have it killed if this process dies."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        with contextlib.suppress(Exception):  # PR_SET_PDEATHSIG (Linux): SIGTERM when we die
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)

    return setup


class Processes:
    """The child processes; :meth:`stop_all` ends every one (terminate, then kill)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, command: list[str], cpus: set[int] | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | (env or {})
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup(cpus),
            start_new_session=True,  # Ctrl-C reaches only this script, which stops them in order
        )
        log.close()
        self.started.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_all(self) -> None:
        for _, process in self.started:
            if process.poll() is None:
                process.terminate()
        for _, process in self.started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(url: str, processes: Processes, name: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"{name} exited early with code {process.returncode}:\n{processes.log_tail(name)}"
            )
        try:
            if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready:\n{processes.log_tail(name)}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan_cpus() -> tuple[set[int] | None, set[int] | None, set[int] | None, str]:
    """CPUs for the gateways, the stand-in and this client, and a line that says so."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 3:
        gateway, stand_in, client = {cpus[0]}, {cpus[1]}, set(cpus[2:])
        text = f"gateways on CPU {cpus[0]}, stand-in on CPU {cpus[1]}, this client on the rest"
    elif len(cpus) == 2:
        gateway, stand_in, client = {cpus[0]}, {cpus[1]}, {cpus[1]}
        text = f"gateways on CPU {cpus[0]}; stand-in and this client share CPU {cpus[1]}"
    else:
        return None, None, None, "one CPU: nothing pinned"
    return gateway, stand_in, client, text


# ---------------------------------------------------------------------------------- the client


@dataclass
class Target:
    name: str
    base: str  # up to and including /v1
    pid: int
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"{self.base}/chat/completions"


HEADERS = {"content-type": "application/json"}
#: Each request names one of this many end users in turn (OpenAI's ``user`` field), so the gateway's
#: per-user rate limit and risk ledger stay on at their defaults without one user hitting the limit.
USERS = 1000


def _bodies(stream: bool) -> Iterator[bytes]:
    bodies = [
        json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": QUESTION}],
                "max_tokens": 256,
                "user": f"bench-user-{index:04d}",
                **({"stream": True} if stream else {}),
            }
        ).encode()
        for index in range(USERS)
    ]
    return itertools.cycle(bodies)


PLAIN_BODIES = _bodies(stream=False)
STREAM_BODIES = _bodies(stream=True)


async def plain_request(client: httpx.AsyncClient, target: Target, check: bool = False) -> float:
    """One plain request; its latency in ms."""
    began = time.perf_counter()
    response = await client.post(target.url, content=next(PLAIN_BODIES), headers=HEADERS)
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{target.name} answered {response.status_code}: {response.text[:300]}")
    if check:
        content = response.json()["choices"][0]["message"]["content"]
        if content != ANSWER:
            raise SystemExit(f"{target.name} changed the answer: {content[:200]!r}")
    return elapsed


async def stream_request(client: httpx.AsyncClient, target: Target) -> tuple[float, float, list[float]]:
    """One streamed request: time to the first non-empty content delta and to the end, and the gaps
    between consecutive content deltas, in ms."""
    began = time.perf_counter()
    first: float | None = None
    arrivals: list[float] = []
    parts: list[str] = []
    async with client.stream("POST", target.url, content=next(STREAM_BODIES), headers=HEADERS) as response:
        if response.status_code != 200:
            await response.aread()
            raise SystemExit(f"{target.name} answered {response.status_code}: {response.text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise SystemExit(f"{target.name} sent an error event: {data[:300]}")
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    arrivals.append(time.perf_counter())
                    if first is None:
                        first = arrivals[-1]
                    parts.append(content)
    ended = time.perf_counter()
    if "".join(parts) != ANSWER:
        raise SystemExit(f"{target.name} streamed a different answer: {''.join(parts)[:200]!r}")
    assert first is not None
    gaps = [(later - earlier) * 1000 for earlier, later in itertools.pairwise(arrivals)]
    return (first - began) * 1000, (ended - began) * 1000, gaps


def new_client(connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=30, limits=limits, trust_env=False)


async def sequential(targets: list[Target], rounds: int, warmup: int, streams: int) -> dict[str, Any]:
    """Plain requests and streams, one at a time, interleaved over the targets."""
    clients = {t.name: new_client(1) for t in targets}
    plain: dict[str, list[float]] = {t.name: [] for t in targets}
    ttft: dict[str, list[float]] = {t.name: [] for t in targets}
    total: dict[str, list[float]] = {t.name: [] for t in targets}
    gaps: dict[str, list[float]] = {t.name: [] for t in targets}
    longest: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for target in targets:  # warm-up: connections open, model and code paths hot; answers checked
            await plain_request(clients[target.name], target, check=True)
            for _ in range(warmup):
                await plain_request(clients[target.name], target)
                await stream_request(clients[target.name], target)
        for index in range(rounds):
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                plain[target.name].append(await plain_request(clients[target.name], target))
        for index in range(streams):
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                first, end, between = await stream_request(clients[target.name], target)
                ttft[target.name].append(first)
                total[target.name].append(end)
                gaps[target.name].extend(between)
                longest[target.name].append(max(between, default=0.0))
    finally:
        for client in clients.values():
            await client.aclose()
    return {"plain": plain, "ttft": ttft, "stream_total": total, "gaps": gaps, "longest_gap": longest}


async def under_load(target: Target, concurrency: int, seconds: float) -> dict[str, Any]:
    """``concurrency`` clients sending plain requests back to back for ``seconds``.

    Each client is its own ``httpx.AsyncClient`` with one keep-alive connection: one shared pool of
    50 connections costs httpx (httpcore 1.x) about 8 ms of CPU per request here and caps the
    direct run near 110 requests/s, which would measure the client instead of the gateway.
    """
    clients = [new_client(1) for _ in range(concurrency)]
    try:
        for _ in range(2):  # open every connection first
            await asyncio.gather(*(plain_request(client, target) for client in clients))
        timings: list[float] = []
        deadline = time.monotonic() + seconds

        async def worker(client: httpx.AsyncClient) -> None:
            while time.monotonic() < deadline:
                timings.append(await plain_request(client, target))

        server_cpu, own_cpu = cpu_seconds(target.pid), time.process_time()
        began = time.monotonic()
        await asyncio.gather(*(worker(client) for client in clients))
        elapsed = time.monotonic() - began
        server_cpu, own_cpu = cpu_seconds(target.pid) - server_cpu, time.process_time() - own_cpu
    finally:
        for client in clients:
            await client.aclose()
    return {
        "requests": len(timings),
        "requests_per_s": len(timings) / elapsed,
        "p50_ms": pct(timings, 50),
        "p95_ms": pct(timings, 95),
        "p99_ms": pct(timings, 99),
        "server_cpu_ms_per_request": server_cpu * 1000 / len(timings),
        "server_cpu_share": server_cpu / elapsed,
        "client_cpu_share": own_cpu / elapsed,
    }


# ---------------------------------------------------------------------------------- figures


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def audit_breakdown(path: Path) -> dict[str, dict[str, float]]:
    """p50 of each ``latency_ms`` step in an audit file, plain and streamed requests apart."""
    steps: dict[str, dict[str, list[float]]] = {"plain": {}, "stream": {}}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        kind = "stream" if record.get("stream") else "plain"
        for name, value in (record.get("latency_ms") or {}).items():
            steps[kind].setdefault(name, []).append(float(value))
    return {
        kind: {name: round(statistics.median(values), 3) for name, values in found.items()}
        for kind, found in steps.items()
        if found
    }


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target:.2f}x: {'met' if ratio <= target else 'MISSED'}"


def report(figures: dict[str, Any], names: list[str]) -> None:
    direct = names[0]
    seq = figures["sequential_plain"]
    print(f"\nsequential plain requests (n={seq[direct]['n']} per target, interleaved)")
    print(f"  {'':28}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}{'overhead p50':>14}")
    for name in names:
        row = seq[name]
        extra = f"   ({verdict(row['ratio'], figures['targets'][name])})" if name != direct else ""
        print(
            f"  {name:28}{row['p50_ms']:9.2f}{row['p95_ms']:9.2f}{row['ratio']:10.3f}x"
            f"{row['overhead_ms']:+11.2f} ms{extra}"
        )
    stream = figures["streaming"]
    print(f"\nsequential streams (n={stream[direct]['n']} per target, interleaved)")
    print(
        f"  {'':28}{'TTFT p50':>9}{'TTFT p95':>9}{'ratio':>8}{'overhead':>11}"
        f"{'total p50':>11}{'overhead':>11}"
    )
    for name in names:
        row = stream[name]
        print(
            f"  {name:28}{row['ttft_p50_ms']:9.2f}{row['ttft_p95_ms']:9.2f}{row['ttft_ratio']:7.2f}x"
            f"{row['ttft_overhead_ms']:+8.2f} ms{row['total_p50_ms']:11.2f}"
            f"{row['total_overhead_ms']:+8.2f} ms"
        )
    print(f"  {'':28}{'gap p50':>9}{'gap p95':>9}{'longest p50':>13}{'deltas':>8}   (between content deltas)")
    for name in names:
        row = stream[name]
        print(
            f"  {name:28}{row['gap_p50_ms']:9.2f}{row['gap_p95_ms']:9.2f}{row['longest_gap_p50_ms']:13.2f}"
            f"{row['deltas_per_stream']:8.1f}"
        )
    if figures["release"] == "sentence":
        print(
            "  (with moderation on, each sentence goes out once a scan cleared it whole "
            "(stream_guard.release: sentence), so TTFT there includes the first sentence and one scan)"
        )
    else:
        print(
            "  (with moderation on and release: hold_back, text goes out once 200 newer characters exist "
            "or the answer ended)"
        )
    load = figures["load"]
    print(
        f"\n{figures['concurrency']} concurrent clients, plain requests, {figures['load_seconds']:g} s each"
    )
    print(
        f"  {'':28}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}"
        f"{'server CPU/req':>16}{'server CPU':>12}{'client CPU':>12}"
    )
    for name in names:
        row = load[name]
        print(
            f"  {name:28}{row['requests_per_s']:9.0f}{row['p50_ms']:9.2f}{row['p95_ms']:9.2f}"
            f"{row['p50_ratio']:10.3f}x{row['server_cpu_ms_per_request']:13.2f} ms"
            f"{row['server_cpu_share']:11.0%}{row['client_cpu_share']:12.0%}"
        )
    print(
        "  (server CPU: the stand-in's for direct, the gateway's otherwise; 100 % = one core. "
        "client CPU: this process.)"
    )
    print(
        f"\nabsolute overhead at p50, sequential plain: guards off {seq[names[1]]['overhead_ms']:+.2f} ms, "
        f"moderation on {seq[names[2]]['overhead_ms']:+.2f} ms; published comparison: {LITELLM_PUBLISHED}"
    )
    for name, breakdown in figures["audit_p50_ms"].items():
        for kind, steps in breakdown.items():
            text = ", ".join(f"{step} {value:.2f}" for step, value in steps.items())
            print(f"audit latency_ms p50, {name}, {kind}: {text}")


def summarise(raw: dict[str, Any], load: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    direct = names[0]
    base = pct(raw["plain"][direct], 50)
    base_ttft, base_total = pct(raw["ttft"][direct], 50), pct(raw["stream_total"][direct], 50)
    base_load = load[direct]["p50_ms"]
    figures: dict[str, Any] = {"sequential_plain": {}, "streaming": {}, "load": {}}
    for name in names:
        p50 = pct(raw["plain"][name], 50)
        figures["sequential_plain"][name] = {
            "n": len(raw["plain"][name]),
            "p50_ms": p50,
            "p95_ms": pct(raw["plain"][name], 95),
            "ratio": p50 / base,
            "overhead_ms": p50 - base,
        }
        ttft, total = pct(raw["ttft"][name], 50), pct(raw["stream_total"][name], 50)
        figures["streaming"][name] = {
            "n": len(raw["ttft"][name]),
            "ttft_p50_ms": ttft,
            "ttft_p95_ms": pct(raw["ttft"][name], 95),
            "ttft_ratio": ttft / base_ttft,
            "ttft_overhead_ms": ttft - base_ttft,
            "total_p50_ms": total,
            "total_overhead_ms": total - base_total,
            "gap_p50_ms": pct(raw["gaps"][name], 50) if raw["gaps"][name] else 0.0,
            "gap_p95_ms": pct(raw["gaps"][name], 95) if raw["gaps"][name] else 0.0,
            "longest_gap_p50_ms": pct(raw["longest_gap"][name], 50),
            "deltas_per_stream": len(raw["gaps"][name]) / len(raw["ttft"][name]) + 1,
        }
        figures["load"][name] = {**load[name], "p50_ratio": load[name]["p50_ms"] / base_load}
    return figures


# ---------------------------------------------------------------------------------- main


def gateway_config(folder: Path, name: str, port: int, upstream: str, guards: bool, release: str) -> Path:
    config = {
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
        "store": {"url": f"sqlite:///{folder / f'{name}.db'}"},
        "gateway": {
            "enabled": True,
            "upstream": {"base_url": upstream},
            "secret_file": str(folder / "secret"),
            "audit_file": str(folder / f"{name}.audit.jsonl"),
            "input_moderation": guards,
            "output_moderation": guards,
            "stream_guard": {"release": release},
        },
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the run the way Ctrl-C does, so the clean-up below runs either way."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="sequential plain requests per target")
    parser.add_argument("--streams", type=int, default=None, help="sequential streams per target (N/2)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent clients in the load test")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="length of each load test")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests (and streams) per target")
    parser.add_argument("--quick", action="store_true", help="a short run, for smoke-checking")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument(
        "--chunk-gap-ms",
        type=float,
        default=CHUNK_GAP_S * 1000,
        help="time between the stand-in's stream chunks after the first",
    )
    parser.add_argument(
        "--stream-chunks",
        type=int,
        default=STREAM_CHUNKS,
        help=(
            f"chunks the stand-in cuts its {len(ANSWER)}-character answer into (at word boundaries); "
            "one per word with a 30-60 ms gap is a small model's real generation speed"
        ),
    )
    parser.add_argument(
        "--realistic",
        action="store_true",
        help="stream one word per chunk, 40 ms apart (about 25 tokens/s), instead of 9 chunks 5 ms apart",
    )
    parser.add_argument(
        "--release",
        choices=["sentence", "hold_back"],
        default="sentence",
        help="the stream guard's release rule (gateway.stream_guard.release) for the moderation-on gateway",
    )
    parser.add_argument("--stand-in", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stand_in is not None:  # the child that plays the model server
        with contextlib.suppress(KeyboardInterrupt):
            _run(_stand_in(args.stand_in, args.chunk_gap_ms / 1000, args.stream_chunks))
        return
    if args.quick:
        args.requests, args.load_seconds, args.warmup = 30, 3.0, 5
    if args.realistic:
        args.stream_chunks, args.chunk_gap_ms = len(ANSWER.split(" ")), 40.0
    streams = args.streams if args.streams is not None else max(10, args.requests // 2)

    gateway_cpus, stand_in_cpus, client_cpus, pinning = plan_cpus()
    if args.no_pin:
        gateway_cpus = stand_in_cpus = client_cpus = None
        pinning = "nothing pinned (--no-pin)"
    with tempfile.TemporaryDirectory(prefix="seawall-bench-gateway-") as tmp, terminate_as_interrupt():
        folder = Path(tmp)
        processes = Processes(folder)
        try:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            stand_in_port = free_port()
            stand_in = processes.start(
                "stand-in",
                [
                    sys.executable,
                    __file__,
                    "--stand-in",
                    str(stand_in_port),
                    "--chunk-gap-ms",
                    str(args.chunk_gap_ms),
                    "--stream-chunks",
                    str(args.stream_chunks),
                ],
                stand_in_cpus,
            )
            upstream = f"http://127.0.0.1:{stand_in_port}/v1"
            wait_ready(f"{upstream}/models", processes, "stand-in", stand_in)
            targets = [Target("direct (stand-in)", upstream, stand_in.pid)]
            for name, guards in (("guards-off", False), ("moderation-on", True)):
                port = free_port()
                config = gateway_config(folder, name, port, upstream, guards, args.release)
                # What `seawall serve --config` runs: uvicorn (uvloop, httptools) on create_app().
                command = [sys.executable, "-m", "uvicorn", "seawall.server.app:create_app", "--factory"]
                command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
                command += ["--no-access-log"]
                process = processes.start(name, command, gateway_cpus, {"SEAWALL_CONFIG": str(config)})
                wait_ready(f"http://127.0.0.1:{port}/readyz", processes, name, process)
                label = "gateway, guards off" if not guards else "gateway, moderation on"
                targets.append(Target(label, f"http://127.0.0.1:{port}/v1", process.pid))
            names = [t.name for t in targets]
            print(f"cores: {os.cpu_count()} ({pinning}); stream guard release: {args.release}")
            print(
                f"stand-in upstream: answers after {UPSTREAM_DELAY_S * 1000:.0f} ms; plain answer "
                f"{len(ANSWER)} chars; streams: {args.stream_chunks} chunks, the first at "
                f"{UPSTREAM_DELAY_S * 1000:.0f} ms, then {args.chunk_gap_ms:g} ms apart"
            )
            for target in targets[1:]:
                print(f"{target.name}: pid {target.pid}, RSS after start {rss_mb(target.pid):.0f} MB")

            raw = _run(sequential(targets, args.requests, args.warmup, streams))
            audits = {  # the sequential requests only (warm-up included), not the load tests
                t.name: audit_breakdown(folder / f"{key}.audit.jsonl")
                for t, key in zip(targets[1:], ("guards-off", "moderation-on"), strict=True)
            }
            load = {t.name: _run(under_load(t, args.concurrency, args.load_seconds)) for t in targets}
            figures = summarise(raw, load, names)
            figures.update(
                cores=os.cpu_count(),
                pinning=pinning,
                release=args.release,
                concurrency=args.concurrency,
                load_seconds=args.load_seconds,
                upstream={
                    "delay_ms": UPSTREAM_DELAY_S * 1000,
                    "chunks": args.stream_chunks,
                    "chunk_gap_ms": args.chunk_gap_ms,
                    "answer_chars": len(ANSWER),
                },
                targets={names[1]: 1.05, names[2]: 1.3},
                audit_p50_ms=audits,
                litellm_published=LITELLM_PUBLISHED,
                gateway_rss_mb={t.name: rss_mb(t.pid) for t in targets[1:]},
            )
            report(figures, names)
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
                print(f"figures written to {args.json}")
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
