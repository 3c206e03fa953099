"""A lean HTTP/1.1 transport for httpx: the gateway's calls to its upstream, with less machinery.

httpx's own transport goes through httpcore, anyio and h11: about a millisecond of CPU per call
to the model server, a fifth of what the gateway costs with its guards off. :class:`LeanTransport`
does the same job on asyncio's protocols and ``httptools`` (the C parser uvicorn uses): pooled
keep-alive connections, TLS, ``Content-Length`` and chunked bodies, streamed reads.

It is an :class:`httpx.AsyncBaseTransport`, so everything above it is still httpx's (the client,
its request building, content decoding, proxies from the environment, which httpx mounts on their
own transports) and its failures are httpx's exceptions, as httpx's transport raises them:

* :class:`httpx.ConnectTimeout`, :class:`httpx.ConnectError`: no connection (refused, unknown host,
  TLS handshake failed) within the ``connect`` timeout; nothing was sent;
* :class:`httpx.PoolTimeout`: every connection stayed busy for the ``pool`` timeout;
* :class:`httpx.ReadTimeout`: no byte of the reply for the ``read`` timeout (the wait for the
  status line included);
* :class:`httpx.RemoteProtocolError`: the server closed the connection before its reply ended,
  or sent something that is not HTTP/1.1.

The request is written at once (asyncio buffers it; a model request is small), so the ``write``
timeout is not used. A connection goes back to the pool only after a whole reply was read and both sides allow
keep-alive; a reply abandoned half way (a stream the client hung up on) closes its connection,
which tells the server to stop. An idle connection the server closed, or one idle longer than
``keepalive_expiry_s``, is not used again.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

#: Body bytes buffered from the server before reading from the socket pauses (a slow consumer).
HIGH_WATER_BYTES = 256 * 1024


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, its reply parsed as it comes."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._parser: Any = None
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done: asyncio.Future[None] = self._loop.create_future()
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self.complete = False
        self._error: Exception | None = None
        self._wake: asyncio.Future[None] | None = None
        self._delimited = True  # Content-Length or chunked: the end is in the bytes, not the close
        self._informational = False
        self._has_body = True
        self._keep_alive = False  # both sides allow another request (read with the head: the
        # parser forgets it once the message is complete)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the server sent something that is not HTTP/1.1: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport: the server will send nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done.done() and not self.complete and not self._delimited and self._error is None:
            self.complete = True  # a body that ends with the connection (no length, not chunked)
            self._signal()
        elif not self.complete:
            self._fail(httpx.RemoteProtocolError("the server closed the connection before its reply ended"))

    # ------------------------------------------------------------------ httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an informational reply (103 Early Hints): the real one follows
            self.headers = []
            self._informational = True
            return
        self.status = status
        names = {name.lower() for name, _ in self.headers}
        self._delimited = b"content-length" in names or b"transfer-encoding" in names
        self._keep_alive = bool(self._parser.should_keep_alive()) and self._has_body
        if not self._has_body:  # the reply to HEAD: no body, whatever its headers say; the
            self.complete = True  # parser would wait for one, so the connection is not used again
            self._signal()
        if not self.headers_done.done():
            self.headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._signal()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._signal()

    # ------------------------------------------------------------------ the request's side

    def _signal(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if not self.headers_done.done():
            self.headers_done.set_exception(error)
            self.headers_done.exception()  # retrieved: nobody may be waiting any more
        self._signal()

    @property
    def usable(self) -> bool:
        """Whether this idle connection can take another request."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes, *, has_body: bool = True) -> None:
        self._reset()
        self._has_body = has_body
        assert self.transport is not None
        self.transport.write(data)

    async def next_body(self, timeout: float | None) -> bytes:
        """The next piece of the body; ``b""`` at its end."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._wake = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake
            except TimeoutError:
                raise httpx.ReadTimeout("the server sent nothing within the read timeout") from None
            finally:
                self._wake = None
        data = self._body.popleft()
        self._buffered -= len(data)
        if self._paused and self._buffered <= HIGH_WATER_BYTES // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """Whether the reply was read to its end and both sides keep the connection open."""
        return self.complete and self._error is None and self.usable and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    """A reply's body as httpx reads it; gives the connection back to the pool at its end."""

    def __init__(self, pool: LeanTransport, connection: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while data := await connection.next_body(self._timeout):
                yield data
        except BaseException:
            await self.aclose()
            raise
        await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)


class LeanTransport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 connections (at most ``max_connections``, to any origins) for httpx."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._ssl = ssl_context
        self._max = max_connections
        self._expiry = keepalive_expiry_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._origins: dict[_Connection, tuple[str, str, int]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"{scheme!r} is not http or https")
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host, port)
        if isinstance(request.stream, httpx.AsyncByteStream):
            body = b"".join([part async for part in request.stream])
        else:
            body = request.read()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        connection = await self._acquire(origin, timeouts)
        try:
            connection.send(b"".join(head) + body, has_body=request.method != "HEAD")
            async with asyncio.timeout(timeouts.get("read")):
                await connection.headers_done
        except TimeoutError:
            self._discard(connection)
            raise httpx.ReadTimeout("no reply within the read timeout", request=request) from None
        except httpx.HTTPError as exc:
            self._discard(connection)
            exc.request = request
            raise
        except BaseException:
            self._discard(connection)
            raise
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=_Body(self, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _acquire(self, origin: tuple[str, str, int], timeouts: dict[str, float | None]) -> _Connection:
        """An idle connection to ``origin`` still open, else a new one once fewer than the most are open."""
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.usable and now - connection.idle_since < self._expiry:
                return connection
            self._discard(connection)
        if self._closed:
            raise RuntimeError("the transport was closed")
        if len(self._origins) >= self._max:
            await self._wait_for_room(timeouts.get("pool"))
            return await self._acquire(origin, timeouts)
        placeholder = _Connection.__new__(_Connection)  # holds the slot while connecting
        self._origins[placeholder] = origin
        try:
            connection = await self._connect(origin, timeouts.get("connect"))
        finally:
            del self._origins[placeholder]
        self._origins[connection] = origin
        return connection

    async def _wait_for_room(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise httpx.PoolTimeout("no connection to the upstream became free in time") from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self, origin: tuple[str, str, int], timeout: float | None) -> _Connection:
        scheme, host, port = origin
        tls = (self._ssl or ssl.create_default_context()) if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from None
        except OSError as exc:  # refused, unreachable, unknown host, TLS handshake failed
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection

    def release(self, connection: _Connection) -> None:
        """A reply ended (or was abandoned): keep its connection for the next request, or close it."""
        origin = self._origins.get(connection)
        if origin is not None and connection.reusable and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(connection)
            self._wake_one()
            return
        self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        if self._origins.pop(connection, None) is not None:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                self._discard(connection)
        self._idle.clear()


__all__ = ["HIGH_WATER_BYTES", "LeanTransport"]
