"""Where the gateway's time goes: CPU per request, per step, and (``--cprofile``) per function.

Starts what ``bench/gateway.py`` starts (the 50 ms upstream stand-in, then one seawall server with
the gateway, guards off or moderation on, as ``seawall serve`` runs it), sends ``--requests``
sequential plain requests (after ``--warmup``), and prints per request:

* the gateway process's CPU time (user + system, every thread: ``/proc/PID/stat``) — a figure
  that, unlike wall-clock latency, hardly moves when other processes share the machine;
* the client's wall-clock latency (p50), and the direct call's for comparison;
* the median of each step of the audit record's ``latency_ms`` (wall clock inside the server);
* with ``--cprofile``: each server profiles its main thread (where the event loop and every step
  run; the thread pool's work shows only as the wait for it) with :mod:`cProfile` during the
  measured requests only (SIGUSR1 starts it, SIGUSR2 writes it), and the functions with the most
  own and cumulative time per request are listed. cProfile slows Python code about twofold, and
  the three targets are profiled in the same interleaved run: compare its figures with each
  other, not with the CPU time above.

Usage::

    python bench/gateway_profile.py [--guards off|on|both] [--requests 300] [--cprofile] [--top 25]
                                     [--baseline-src OTHER_CHECKOUT/src]

Every child process is stopped on exit, Ctrl-C and failures included.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway import (  # the sibling benchmark: the same stand-in, config and processes
    Processes,
    Target,
    _run,
    cpu_seconds,
    gateway_config,
    new_client,
    plain_request,
    plan_cpus,
    terminate_as_interrupt,
    wait_ready,
)
from moderation_api import free_port

#: The hidden option that runs a server (``uvicorn`` with the arguments after it) under the profiler.
SERVE = "--serve-profiled"


def serve_measured(out: str, profile: bool, uvicorn_args: list[str]) -> None:
    """Run uvicorn in this process. SIGUSR1 starts the measured window, SIGUSR2 ends it: it writes
    ``out`` + ``.threads.json`` (CPU seconds per thread name in the window, from each thread's own
    CPU clock) and, with ``profile``, ``out`` (cProfile of the main thread in the window)."""
    import threading

    import uvicorn.main

    profiler = cProfile.Profile()
    began: dict[int, tuple[str, float]] = {}

    def cpu_by_thread() -> dict[int, tuple[str, float]]:
        found = {}
        for thread in threading.enumerate():
            if thread.ident is None:
                continue
            try:
                clock = time.pthread_getcpuclockid(thread.ident)
                found[thread.ident] = (thread.name, time.clock_gettime(clock))
            except OSError:  # the thread ended meanwhile
                continue
        return found

    def start(*_: Any) -> None:
        began.clear()
        began.update(cpu_by_thread())
        if profile:
            profiler.enable()

    def stop(*_: Any) -> None:
        if profile:
            profiler.disable()
            profiler.dump_stats(out)
        spent: dict[str, float] = {}
        for ident, (name, seconds) in cpu_by_thread().items():
            name = name.rstrip("0123456789").rstrip("_-") or name  # asyncio_0, asyncio_1, ... as one
            spent[name] = spent.get(name, 0.0) + seconds - began.get(ident, (name, 0.0))[1]
        Path(out + ".threads.json").write_text(json.dumps(spent))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["uvicorn", *uvicorn_args]
    uvicorn.main.main()


async def measure(
    targets: list[Target], requests: int, warmup: int, profiled: list[int]
) -> dict[str, dict[str, Any]]:
    """Sequential plain requests, interleaved over ``targets``: latency p50 and server CPU/request;
    the ``profiled`` processes are told when the measured requests start and end."""
    clients = {t.name: new_client(1) for t in targets}
    latencies: dict[str, list[float]] = {t.name: [] for t in targets}
    cpu: dict[str, float] = {}
    try:
        for target in targets:
            await plain_request(clients[target.name], target, check=True)
            for _ in range(warmup):
                await plain_request(clients[target.name], target)
        for pid in profiled:
            os.kill(pid, signal.SIGUSR1)
        for target in targets:
            cpu[target.name] = -cpu_seconds(target.pid)
        for index in range(requests):
            shift = index % len(targets)
            for target in targets[shift:] + targets[:shift]:
                latencies[target.name].append(await plain_request(clients[target.name], target))
        for target in targets:
            cpu[target.name] += cpu_seconds(target.pid)
        for pid in profiled:
            os.kill(pid, signal.SIGUSR2)
    finally:
        for client in clients.values():
            await client.aclose()
    return {
        t.name: {
            "p50_ms": statistics.median(latencies[t.name]),
            "cpu_ms_per_request": cpu[t.name] * 1000 / requests,
        }
        for t in targets
    }


def step_medians(path: Path, skip: int) -> dict[str, float]:
    """The median of each ``latency_ms`` step in an audit file, past the first ``skip`` records."""
    found: dict[str, list[float]] = {}
    if not path.exists():
        return {}
    for line in path.read_text().splitlines()[skip:]:
        for name, value in (json.loads(line).get("latency_ms") or {}).items():
            found.setdefault(name, []).append(float(value))
    return {name: statistics.median(values) for name, values in found.items()}


def print_profile(path: Path, requests: int, top: int) -> None:
    """The functions with the most own, then cumulative, time in the profile, in ms per request."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in raw.items():
        where = filename.split("site-packages/")[-1].split("/src/")[-1]
        rows.append((own, cumulative, calls, f"{where}:{line}({name})"))
    packages: dict[str, float] = {}
    for own, _, _, where in rows:
        package = where.split("/")[0].split(":")[0] if "/" in where else "built-ins"
        if where.startswith("/"):  # the standard library, by module
            package = "stdlib " + where.rsplit("/", 1)[-1].split(":")[0]
        elif package == "seawall":
            package = "/".join(where.split("/")[:2]).split(":")[0]
        packages[package] = packages.get(package, 0.0) + own
    print("  own time by package or module (ms per request):")
    for package, own in sorted(packages.items(), key=lambda item: -item[1])[:top]:
        print(f"    {own * 1000 / requests:8.3f}  {package}")
    for title, key in (("own", 0), ("cumulative", 1)):
        print(f"  top {top} by {title} time (ms per request; calls per request):")
        for row in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            print(
                f"    {row[0] * 1000 / requests:8.3f} own {row[1] * 1000 / requests:8.3f} cum "
                f"{row[2] / requests:7.1f}  {row[3][:120]}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guards", choices=["off", "on", "both"], default="both")
    parser.add_argument("--requests", type=int, default=300, help="sequential plain requests per target")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up requests per target")
    parser.add_argument("--cprofile", action="store_true", help="run the servers under cProfile")
    parser.add_argument("--save", type=Path, default=None, help="copy the profiles into this folder")
    parser.add_argument("--top", type=int, default=25, help="functions listed per profile")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help=(
            "also run a guards-off gateway from this source tree (a checkout's src/, e.g. of main), "
            "interleaved with the others in the same run: a before/after comparison that other load "
            "on the machine affects alike"
        ),
    )
    if len(sys.argv) > 3 and sys.argv[1] == SERVE:
        serve_measured(sys.argv[2], sys.argv[3] == "profile", sys.argv[4:])
        return
    args = parser.parse_args()
    if args.requests < 1 or args.warmup < 0 or args.top < 1:
        parser.error("--requests and --top must be at least 1, --warmup at least 0")
    wanted = {"off": [False], "on": [True], "both": [False, True]}[args.guards]

    gateway_cpus, stand_in_cpus, client_cpus, pinning = plan_cpus()
    if args.no_pin:
        gateway_cpus = stand_in_cpus = client_cpus = None
        pinning = "nothing pinned (--no-pin)"
    here = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="seawall-bench-profile-") as tmp, terminate_as_interrupt():
        folder = Path(tmp)
        processes = Processes(folder)
        try:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            stand_in_port = free_port()
            stand_in = processes.start(
                "stand-in",
                [sys.executable, str(here / "gateway.py"), "--stand-in", str(stand_in_port)],
                stand_in_cpus,
            )
            upstream = f"http://127.0.0.1:{stand_in_port}/v1"
            wait_ready(f"{upstream}/models", processes, "stand-in", stand_in)
            targets = [Target("direct (stand-in)", upstream, stand_in.pid)]
            servers: dict[str, tuple[Any, Path, Path]] = {}
            runs: list[tuple[bool, Path | None]] = [(guards, None) for guards in wanted]
            if args.baseline_src is not None:
                if not (args.baseline_src / "seawall").is_dir():
                    parser.error(f"--baseline-src {args.baseline_src}: no seawall package there")
                runs.insert(0, (False, args.baseline_src.resolve()))
            for guards, source in runs:
                name = "moderation-on" if guards else "guards-off"
                name += "-baseline" if source is not None else ""
                port = free_port()
                config = gateway_config(folder, name, port, upstream, guards, "sentence")
                profile = folder / f"{name}.prof"
                command = [sys.executable, __file__, SERVE, str(profile)]
                command += ["profile" if args.cprofile else "threads", "seawall.server.app:create_app"]
                command += ["--factory"]
                command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
                command += ["--no-access-log"]
                env = {"SEAWALL_CONFIG": str(config)}
                if source is not None:
                    env["PYTHONPATH"] = str(source)
                process = processes.start(name, command, gateway_cpus, env)
                wait_ready(f"http://127.0.0.1:{port}/readyz", processes, name, process)
                label = "gateway, moderation on" if guards else "gateway, guards off"
                label += " (baseline)" if source is not None else ""
                targets.append(Target(label, f"http://127.0.0.1:{port}/v1", process.pid))
                servers[label] = (process, folder / f"{name}.audit.jsonl", profile)
            load = Path("/proc/loadavg").read_text().split()[0]
            print(f"cores: {os.cpu_count()} ({pinning}); load average {load}")
            began = time.monotonic()
            profiled = [process.pid for process, _, _ in servers.values()]
            figures = _run(measure(targets, args.requests, args.warmup, profiled))
            print(f"{args.requests} sequential plain requests per target in {time.monotonic() - began:.0f} s")
            direct = figures[targets[0].name]["p50_ms"]
            print(f"  {'':26}{'p50 ms':>9}{'ratio':>8}{'overhead':>11}{'server CPU/req':>16}")
            for target in targets:
                row = figures[target.name]
                print(
                    f"  {target.name:26}{row['p50_ms']:9.2f}{row['p50_ms'] / direct:7.3f}x"
                    f"{row['p50_ms'] - direct:+8.2f} ms{row['cpu_ms_per_request']:13.2f} ms"
                )
            print("  (server CPU: the stand-in's for direct, the gateway's otherwise, all threads)")
            time.sleep(1)  # the servers write their figures
            for label, (_, _, profile) in servers.items():
                path = Path(str(profile) + ".threads.json")
                if not path.exists():
                    print(f"{label}: no per-thread figures were written", file=sys.stderr)
                    continue
                spent = json.loads(path.read_text())
                split = sorted(spent.items(), key=lambda item: -item[1])
                text = ", ".join(f"{name} {s * 1000 / args.requests:.2f}" for name, s in split if s > 0)
                print(f"CPU ms per request by thread, {label}: {text}")
            for label, (_, audit, _) in servers.items():
                steps = step_medians(audit, 1 + args.warmup)
                text = ", ".join(f"{step} {value:.2f}" for step, value in steps.items())
                print(f"audit latency_ms p50, {label}: {text}")
            if args.cprofile:
                for label, (_, _, profile) in servers.items():
                    if not profile.exists():
                        print(f"{label}: no profile was written", file=sys.stderr)
                        continue
                    if args.save is not None:
                        args.save.mkdir(parents=True, exist_ok=True)
                        shutil.copy(profile, args.save / profile.name)
                    print(f"\ncProfile of {label} (main thread, the measured requests):")
                    print_profile(profile, args.requests, args.top)
        except KeyboardInterrupt:
            print("interrupted; stopping the servers", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            processes.stop_all()


if __name__ == "__main__":
    main()
