"""The gateway's upstream client: chat completions from any OpenAI-compatible model server.

:class:`Upstream` speaks OpenAI's wire format over one pooled ``httpx.AsyncClient`` (on the lean
HTTP/1.1 transport of :mod:`seawall.gateway.http1`) to OpenAI, vLLM, Ollama, llama.cpp's server or
anything else that serves ``{base_url}/chat/completions`` and ``{base_url}/models``:

* :meth:`Upstream.chat` sends a non-streaming request (``"stream": false`` is
  forced) and returns the completion as a dict.
* :meth:`Upstream.stream` sends a streaming request (``"stream": true`` is
  forced) and yields each chunk of the Server-Sent Events stream as a dict. The
  first ``__anext__`` sends the request, so every failure that happens before
  the stream starts (a 4xx, a 5xx after the retries) surfaces there, before any
  chunk, while the gateway can still answer with an error status. Consume it
  with ``contextlib.aclosing`` so that a client that goes away also closes the
  upstream connection (which stops the generation).
* :meth:`Upstream.models` lists the upstream's models.

Retries cover only failures from before the upstream could have started
generating, so that a retry never pays for a second answer: a connection that
could not be opened, and HTTP 429, 502, 503 and 504 (a gateway or load balancer
in front of the model server, or the server itself, turning the request away).
They wait ``retry_backoff_s``, doubled for each further retry, or the
``Retry-After`` (or ``retry-after-ms``) the upstream asked for when that is
longer; a ``Retry-After`` beyond :data:`MAX_RETRY_AFTER_S`, or a wait that would
cross ``total_timeout_s``, ends the retries at once. HTTP 500, a read timeout
and a connection that broke after the request was sent are never retried: the
upstream may have generated (and billed) an answer by then. Once a stream has
started, nothing is retried.

Timeouts: ``connect_timeout_s`` to open a connection; ``read_timeout_s``
between two reads of the reply, the wait for the first byte included (for a
non-streaming request that is the whole generation); ``total_timeout_s`` for
the whole call, retries, back-off and a whole stream included.

Server-Sent Events are parsed as the SSE specification and OpenAI's stream
define them: UTF-8 lines ended by ``\\n``, ``\\r\\n`` or ``\\r``, however the
bytes are split across reads; an event is dispatched at a blank line, its
``data:`` lines joined by ``\\n``; comment lines (``: keep-alive``) and the
``event``, ``id`` and ``retry`` fields are ignored; ``data: [DONE]`` ends the
stream. A stream that ends (or breaks) before ``[DONE]`` raises
``upstream_stream_interrupted``: a truncated answer never passes for a whole one.

Errors are :class:`~seawall.errors.UpstreamError`, each with the status, type
and code the gateway should answer its client with:

* an upstream 4xx with an OpenAI error body (the client's own request was bad:
  context length, unknown model, ...): the same status, and the upstream's
  message, type, param and code;
* 429 once the retries are spent: 429, the upstream's code (or
  ``rate_limit_exceeded``) and ``retry_after``;
* 401/403 (the upstream refuses the gateway's own key), a 4xx without an OpenAI
  error body (a wrong ``base_url``), 3xx, 5xx, an error event inside a stream:
  502 ``upstream_error``;
* a connect, read or total timeout: 504 ``upstream_timeout``;
* a refused connection or an unknown host: 502 ``upstream_unreachable``;
* a success reply that is not JSON or not OpenAI's shape: 502 ``upstream_malformed``;
* a stream that ends or breaks before ``[DONE]``: 502 ``upstream_stream_interrupted``.

Messages to clients never hold the upstream URL or the API key: an upstream
4xx message is passed on with both scrubbed, everything else gets a fixed
reason (the reasons of :mod:`seawall.backends.remote`). The details (URL,
status, the upstream's reply) go to the ``seawall.gateway`` log at warning
level, with the API key redacted. A 429 passes on the upstream's code but not
its message, which names the gateway's account (e.g. an OpenAI organisation).
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import json
import logging
import math
import re
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, cast

import certifi
import httpx
import orjson

from seawall.backends.remote import MALFORMED, TIMED_OUT, UNREACHABLE, http_status, redact
from seawall.errors import ConfigurationError, UpstreamError
from seawall.gateway.http1 import LeanTransport
from seawall.settings import UpstreamSettings

log = logging.getLogger("seawall.gateway")

#: Statuses that mean the request was turned away before any generation: retried.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Longest ``Retry-After`` honoured by waiting; a longer one ends the retries (and reaches the client).
MAX_RETRY_AFTER_S = 20.0
#: Largest non-streaming reply body read; a larger one is malformed.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Most of an error reply's body read, for the log and for the upstream's error message.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Longest SSE line, and most data in one event, in characters; more is malformed.
MAX_EVENT_CHARS = 8 * 1024 * 1024
#: The data of the event that ends an OpenAI stream.
DONE = "[DONE]"

#: Client-facing reasons beyond those of :mod:`seawall.backends.remote`.
INTERRUPTED = "the upstream's stream broke off before its end"
REFUSED_CREDENTIALS = "upstream refused the gateway's credentials"
STREAM_ERROR = "upstream reported an error in the middle of the stream"
RATE_LIMITED = "the upstream model server is rate limiting requests; retry later"
DROPPED = "upstream dropped the connection"
ERROR_BODY = "upstream answered with an error"

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Incremental Server-Sent Events parser: bytes in, the data of each complete event out.

    Feed it reads as they come (split anywhere, even inside a UTF-8 character or
    between ``\\r`` and ``\\n``); :meth:`feed` returns the data of every event a
    blank line completed. A :class:`ValueError` means the bytes are not UTF-8 or
    a line or event is longer than ``max_chars``.
    """

    def __init__(self, max_chars: int = MAX_EVENT_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()  # the spec drops a leading BOM
        self._buffer = ""
        self._after_cr = False
        self._data: list[str] = []
        self._data_chars = 0
        self._max_chars = max_chars

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        if self._after_cr and text:
            # The last read ended with "\r", already taken as a line end: a "\n" now is its other half.
            text = text.removeprefix("\n")
            self._after_cr = False
        text = self._buffer + text
        events: list[str] = []
        start = 0
        for match in _LINE_END.finditer(text):
            self._line(text[start : match.start()], events)
            start = match.end()
            self._after_cr = match.group() == "\r" and start == len(text)
        self._buffer = text[start:]
        if len(self._buffer) > self._max_chars:
            raise ValueError(f"an SSE line longer than {self._max_chars} characters")
        return events

    def close(self) -> str | None:
        """End of the stream: the data of the event left unfinished (no blank line after it), if any.

        The SSE specification drops such an event; the caller decides whether a
        trailing ``data: [DONE]`` without its blank line still counts as the end.
        """
        try:
            rest = self._decoder.decode(b"", final=True)
        except ValueError:  # the stream stopped inside a UTF-8 character
            rest = ""
        tail = self._buffer + (rest.removeprefix("\n") if self._after_cr else rest)
        events: list[str] = []
        for line in _LINE_END.split(tail):
            if line:
                self._line(line, events)
        if events:  # cannot happen (no blank line was fed), kept for clarity
            return events[-1]
        return "\n".join(self._data) if self._data else None

    def _line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data:
                events.append("\n".join(self._data))
            self._data, self._data_chars = [], 0
            return
        if line.startswith(":"):
            return  # a comment, e.g. a keep-alive
        field, _, value = line.partition(":")
        if field != "data":
            return  # event, id, retry: OpenAI's chat stream does not use them
        value = value.removeprefix(" ")
        self._data_chars += len(value) + 1
        if self._data_chars > self._max_chars:
            raise ValueError(f"an SSE event with more than {self._max_chars} characters of data")
        self._data.append(value)


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, which reads a reply's cookies only when it sets some: for every reply,
    set-cookie or not, httpx builds standard-library stand-ins of it and of its request for the jar,
    which cost more than the rest of the client's work on the reply."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:  # all the jar reads
            super().extract_cookies(response)


class _Client(httpx.AsyncClient):
    """httpx's client with a :class:`_Cookies` jar: it still sends back what the upstream set (a
    load balancer's affinity cookie, say)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._jar = _Cookies(super().cookies)  # the jar httpx's client built from ``cookies=``

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: Any) -> None:  # httpx's CookieTypes (in a private module)
        self._jar = _Cookies(cookies)


class Upstream:
    """Async client for one OpenAI-compatible model server; one connection pool, closed by :meth:`aclose`."""

    def __init__(self, settings: UpstreamSettings) -> None:
        if settings.base_url is None:
            raise ConfigurationError(
                "gateway.upstream.base_url is not set; set it, or start the bundled local model "
                "(seawall serve does that when the local-llm extra is installed)"
            )
        self.settings = settings
        self.base_url: str = settings.base_url
        self._key = settings.api_key.get_secret_value() if settings.api_key else None
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.total_timeout_s,
        )
        limits = httpx.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        )
        # Built once (as httpx would: certifi's CA bundle): a TLS context per client costs ~20 ms.
        tls = ssl.create_default_context(cafile=certifi.where())
        # httpx on seawall's lean HTTP/1.1 transport (seawall.gateway.http1) instead of httpcore:
        # the same requests, replies and exceptions at a fraction of the CPU per call. A proxy from
        # the environment (HTTPS_PROXY, ...) is still httpx's own transport, with these limits.
        transport = (
            LeanTransport(ssl_context=tls, max_connections=settings.max_connections)
            if settings.http_transport == "lean"
            else None  # httpx's own, built from ``limits`` and ``verify``
        )
        self._client = _Client(
            base_url=self.base_url + "/", timeout=timeout, limits=limits, verify=tls, transport=transport
        )
        #: Each path's absolute URL, parsed once (joining with ``base_url`` per request cost more).
        self._urls = {path: httpx.URL(f"{self.base_url}/{path}") for path in ("chat/completions", "models")}

    # ------------------------------------------------------------------ public API

    async def chat(
        self, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """``POST {base_url}/chat/completions`` without streaming; the completion as a dict.

        ``body`` is sent as given (it is not changed) except that ``stream`` is
        forced to false and ``stream_options`` (only allowed with streaming) is left out.
        """
        payload = {key: value for key, value in body.items() if key != "stream_options"}
        payload["stream"] = False
        return await self._json_call("POST", "chat/completions", payload, headers, required="choices")

    async def models(self, *, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``GET {base_url}/models``: OpenAI's model list (``{"object": "list", "data": [...]}``)."""
        return await self._json_call("GET", "models", None, headers, required="data")

    async def stream(
        self, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``POST {base_url}/chat/completions`` with ``"stream": true``; yields each chunk as a dict.

        Ends after ``data: [DONE]``; raises :class:`UpstreamError` rather than end
        early (``upstream_stream_interrupted``) or hang (``upstream_timeout``).
        """
        deadline = self._deadline()
        where = self._where("POST", "chat/completions")
        payload = {**body, "stream": True}
        response = await self._send("POST", "chat/completions", payload, headers, deadline, where, sse=True)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                # The server ignored "stream" or sent an error with a success status.
                content = await self._read(response, MAX_BODY_BYTES, deadline, where)
                raise self._unexpected_json(content, where)
            async with aclosing(self._chunks(response, deadline, where)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Upstream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ requests

    async def _json_call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        headers: Mapping[str, str] | None,
        *,
        required: str,
    ) -> dict[str, Any]:
        deadline = self._deadline()
        where = self._where(method, path)
        response = await self._send(method, path, payload, headers, deadline, where, sse=False)
        try:
            content = await self._read(response, MAX_BODY_BYTES, deadline, where)
        finally:
            await response.aclose()
        try:
            parsed = loads(content)
        except ValueError as exc:
            raise self._fail(
                MALFORMED, f"{where} sent a reply that is not JSON: {content[:300]!r}", "upstream_malformed"
            ) from exc
        if isinstance(parsed, dict) and isinstance(parsed.get(required), list):
            return parsed
        raise self._unexpected_json(content, where)

    async def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        headers: Mapping[str, str] | None,
        deadline: float,
        where: str,
        *,
        sse: bool,
    ) -> httpx.Response:
        """Send with retries; the open (unread) response once the status is a success."""
        client = self._client
        url = self._urls.get(path) or path
        outgoing = self._headers(headers, sse)
        content = None
        if payload is not None:
            # As httpx's json= would send it (compact UTF-8), by orjson: a fraction of the CPU.
            content = orjson.dumps(payload)
            outgoing["Content-Type"] = "application/json"
        request = client.build_request(method, url, content=content, headers=outgoing)
        attempt = 0
        while True:
            retry = attempt < self.settings.max_retries
            try:
                async with asyncio.timeout_at(deadline):
                    response = await client.send(request, stream=True)
            except TimeoutError as exc:
                raise self._total_timeout(where) from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                timed_out = isinstance(exc, httpx.ConnectTimeout)
                if retry and await self._pause(self._backoff(attempt), deadline, where, f"{exc!r}", attempt):
                    attempt += 1
                    continue
                if timed_out:
                    raise self._fail(
                        TIMED_OUT,
                        f"{where}: no connection within {self.settings.connect_timeout_s} s "
                        f"({attempt} retries)",
                        "upstream_timeout",
                        status=504,
                    ) from exc
                raise self._fail(
                    UNREACHABLE,
                    f"{where} could not be reached ({attempt} retries): {exc!r}",
                    "upstream_unreachable",
                ) from exc
            except httpx.TimeoutException as exc:
                raise self._fail(
                    TIMED_OUT, f"{where} timed out before answering: {exc!r}", "upstream_timeout", status=504
                ) from exc
            except httpx.HTTPError as exc:
                raise self._fail(DROPPED, f"{where} failed before answering: {exc!r}") from exc
            if response.status_code < 300:
                return response
            content = await self._error_body(response, deadline)
            if retry and response.status_code in RETRY_STATUSES:
                wait = self._retry_wait(attempt, response.headers)
                detail = f"HTTP {response.status_code}: {content[:200]!r}"
                if wait is not None and await self._pause(wait, deadline, where, detail, attempt):
                    attempt += 1
                    continue
            raise self._status_error(response, content, where, attempt)

    async def _read(self, response: httpx.Response, limit: int, deadline: float, where: str) -> bytes:
        """The whole body of a success reply, at most ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(deadline):
                async for part in response.aiter_bytes():
                    size += len(part)
                    if size > limit:
                        raise self._fail(
                            MALFORMED, f"{where} sent a reply over {limit} bytes", "upstream_malformed"
                        )
                    parts.append(part)
        except TimeoutError as exc:
            raise self._total_timeout(where) from exc
        except httpx.TimeoutException as exc:
            raise self._read_timeout(where) from exc
        except httpx.HTTPError as exc:
            raise self._fail(DROPPED, f"{where} broke off its reply: {exc!r}") from exc
        return b"".join(parts)

    async def _error_body(self, response: httpx.Response, deadline: float) -> bytes:
        """An error reply's body, at most :data:`MAX_ERROR_BODY_BYTES`; a failed read keeps what came."""
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout_at(deadline):
                async for part in response.aiter_bytes():
                    parts.append(part)
                    size += len(part)
                    if size >= MAX_ERROR_BODY_BYTES:
                        break
        except (TimeoutError, httpx.HTTPError):
            pass
        finally:
            await response.aclose()
        return b"".join(parts)[:MAX_ERROR_BODY_BYTES]

    async def _chunks(
        self, response: httpx.Response, deadline: float, where: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        decoder = SSEDecoder()
        # An async generator at run time; closed here, whichever way the stream ends.
        reads = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        received = 0
        async with aclosing(reads):
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        data = await anext(reads)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._total_timeout(where) from exc
                except httpx.TimeoutException as exc:
                    raise self._read_timeout(where, after=received) from exc
                except httpx.HTTPError as exc:
                    raise self._interrupted(
                        where, f"the connection broke after {received} bytes: {exc!r}"
                    ) from exc
                received += len(data)
                try:
                    events = decoder.feed(data)
                except ValueError as exc:
                    raise self._fail(
                        MALFORMED, f"{where} sent a malformed stream: {exc}", "upstream_malformed"
                    ) from exc
                for event in events:
                    if event == DONE:
                        return
                    yield self._chunk(event, where)
            if decoder.close() == DONE:  # "data: [DONE]" without its blank line
                return
            raise self._interrupted(where, f"the stream ended after {received} bytes without data: [DONE]")

    def _chunk(self, event: str, where: str) -> dict[str, Any]:
        try:
            chunk = loads(event)
        except ValueError as exc:
            raise self._fail(
                MALFORMED,
                f"{where} sent a stream event that is not JSON ({len(event)} characters)",
                "upstream_malformed",
            ) from exc
        if not isinstance(chunk, dict):
            raise self._fail(
                MALFORMED,
                f"{where} sent a stream event that is not an object: {describe_body(event)}",
                "upstream_malformed",
            )
        if chunk.get("error") or chunk.get("object") == "error":
            raise self._fail(STREAM_ERROR, f"{where} sent an error event: {describe_body(event)}")
        return chunk

    # ------------------------------------------------------------------ retries

    def _backoff(self, attempt: int) -> float:
        return float(self.settings.retry_backoff_s * 2**attempt)

    def _retry_wait(self, attempt: int, headers: httpx.Headers) -> float | None:
        """Back-off, or the upstream's longer Retry-After; None when that is beyond the cap."""
        asked = retry_after(headers)
        if asked is not None and asked > MAX_RETRY_AFTER_S:
            return None
        return max(self._backoff(attempt), asked or 0.0)

    async def _pause(self, wait: float, deadline: float, where: str, why: str, attempt: int) -> bool:
        """Sleep ``wait`` before retry ``attempt + 1``; False (no sleep) if that would cross the deadline."""
        if asyncio.get_running_loop().time() + wait >= deadline:
            return False
        log.warning(
            "%s failed (%s); retry %d of %d in %.2f s",
            where,
            redact(why, self._key),
            attempt + 1,
            self.settings.max_retries,
            wait,
        )
        await asyncio.sleep(wait)
        return True

    # ------------------------------------------------------------------ errors

    def _status_error(
        self, response: httpx.Response, content: bytes, where: str, attempt: int
    ) -> UpstreamError:
        status = response.status_code
        detail = f"{where} answered HTTP {status} ({attempt} retries): {describe_body(content)}"
        upstream = openai_error(content)
        wait = retry_after(response.headers)
        if status == 429:
            code = upstream["code"] if upstream and upstream["code"] else "rate_limit_exceeded"
            return self._fail(
                RATE_LIMITED,
                detail,
                code,
                status=429,
                error_type="rate_limit_error",
                retry_after=wait,
                raw=True,
            )
        if status in (401, 403, 407):
            return self._fail(f"{REFUSED_CREDENTIALS} (HTTP {status})", detail)
        if 400 <= status < 500 and upstream is not None:
            self._log(detail)
            error = UpstreamError(
                self._scrub(upstream["message"]),
                status_code=status,
                error_type=upstream["type"] or "invalid_request_error",
                param=upstream["param"],
            )
            error.code = upstream["code"]  # the upstream's, None included
            return error
        return self._fail(http_status(status), detail, retry_after=wait if status == 503 else None)

    def _unexpected_json(self, content: bytes, where: str) -> UpstreamError:
        if openai_error(content) is not None:
            return self._fail(ERROR_BODY, f"{where} answered a success status with {describe_body(content)}")
        return self._fail(
            MALFORMED,
            f"{where} sent a reply of the wrong shape: {describe_body(content)}",
            "upstream_malformed",
        )

    def _interrupted(self, where: str, detail: str) -> UpstreamError:
        return self._fail(INTERRUPTED, f"{where}: {detail}", "upstream_stream_interrupted")

    def _read_timeout(self, where: str, *, after: int | None = None) -> UpstreamError:
        when = f" after {after} bytes of the stream" if after is not None else ""
        return self._fail(
            TIMED_OUT,
            f"{where} sent nothing for {self.settings.read_timeout_s} s{when}",
            "upstream_timeout",
            status=504,
        )

    def _total_timeout(self, where: str) -> UpstreamError:
        return self._fail(
            TIMED_OUT,
            f"{where} did not finish within total_timeout_s={self.settings.total_timeout_s} s",
            "upstream_timeout",
            status=504,
        )

    def _fail(
        self,
        reason: str,
        detail: str,
        code: str = "upstream_error",
        *,
        status: int = 502,
        error_type: str | None = None,
        retry_after: float | None = None,
        raw: bool = False,
    ) -> UpstreamError:
        """Log ``detail`` (key redacted) and return the error the client sees, which gives only ``reason``."""
        self._log(detail)
        message = reason if raw else f"the upstream model server failed: {reason}"
        return UpstreamError(
            message, status_code=status, code=code, error_type=error_type, retry_after=retry_after
        )

    def _log(self, detail: str) -> None:
        log.warning("upstream failed: %s", redact(detail, self._key))

    def _scrub(self, message: str) -> str:
        """An upstream message fit for the client: no API key, no upstream address."""
        url = httpx.URL(self.base_url)
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        for secret in (self._key, self.base_url, origin, url.netloc.decode("ascii")):
            message = redact(message, secret)
        return message

    # ------------------------------------------------------------------ helpers

    def _headers(self, extra: Mapping[str, str] | None, sse: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if sse else "application/json"}
        headers.update(extra or {})
        if self._key:
            headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.settings.total_timeout_s

    def _where(self, method: str, path: str) -> str:
        return f"upstream {method} {self.base_url}/{path}"


def loads(content: bytes | str) -> Any:
    """JSON text parsed: by orjson, and what it refuses by :func:`json.loads` (which also takes
    ``NaN`` and ``Infinity``, as some model servers write them), so nothing parses differently;
    a :class:`ValueError` when neither can."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return json.loads(content)


def describe_body(content: bytes | str) -> str:
    """What the logs say of an upstream body: its shape, never its text, which may quote the
    request or the answer (an error's type, code and param are kept; its message is not)."""
    raw = content.encode("utf-8", "replace") if isinstance(content, str) else content
    error = openai_error(raw)
    if error is not None:
        fields = ", ".join(f"{name}={error[name]!r}" for name in ("type", "code", "param") if error[name])
        withheld = f"its message of {len(error['message'])} characters withheld"
        return f"an error ({fields or 'no type or code'}; {withheld})"
    try:
        payload = json.loads(raw)
    except ValueError:
        return f"{len(raw)} bytes that are not JSON"
    if isinstance(payload, dict):
        return f"a JSON object of {len(raw)} bytes with keys {sorted(payload)[:12]}"
    return f"a JSON {type(payload).__name__} of {len(raw)} bytes"


def openai_error(content: bytes) -> dict[str, Any] | None:
    """The error object of an OpenAI error body (``message``, ``type``, ``param``, ``code``), or None.

    Accepts OpenAI's ``{"error": {...}}`` (also what llama.cpp and Ollama send),
    vLLM's flat ``{"object": "error", "message": ...}`` and ``{"error": "text"}``.
    ``type``, ``param`` and ``code`` are kept only when they are strings (vLLM and
    llama.cpp send the status as an integer code).
    """
    try:
        payload = json.loads(content)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, str) and error:
        return {"message": error, "type": None, "param": None, "code": None}
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        source = error
    elif payload.get("object") == "error" and isinstance(payload.get("message"), str):
        source = payload
    else:
        return None

    def text(name: str) -> str | None:
        value = source.get(name)
        return value if isinstance(value, str) and value else None

    return {"message": source["message"], "type": text("type"), "param": text("param"), "code": text("code")}


def retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the upstream asked to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After``
    (seconds or an HTTP date); None if neither is there or readable."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
