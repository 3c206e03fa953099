"""The upstream's lean HTTP/1.1 transport (seawall.gateway.http1) under httpx, against real loopback
servers written at the socket level, so each test controls the bytes and the connection: replies
with a length, chunked or ended by the close; connections kept alive, closed while idle, cut mid
reply; a pool with no free connection; TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from conftest import refusing_port
from seawall.gateway.http1 import LeanTransport
from test_images import GOOD_TEST_CERT, GOOD_TEST_KEY

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """A loopback server that runs ``handler`` for each connection and counts them."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed_by_client = asyncio.Event()
        #: Set when a connection's handler ended (its client went away, or it returned).
        self.ended = asyncio.Event()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test ended with the connection open
        finally:
            writer.close()
            self.ended.set()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and Content-Length body); None when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client.set()
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length) if length else b""
        self.requests.append(head + body)
        return head + body


@asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield server


def reply(body: bytes, *, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
    """Answers every request on the connection with its own request line as the body."""
    while (request := await server.read_request(reader)) is not None:
        writer.write(reply(request.split(b"\r\n", 1)[0]))
        await writer.drain()


def client(transport: LeanTransport, **timeouts: float) -> httpx.AsyncClient:
    timeout = httpx.Timeout(timeouts.get("all", 5.0), **{k: v for k, v in timeouts.items() if k != "all"})
    return httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)


async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    async with serving(keep_alive) as server, client(LeanTransport(max_connections=4)) as http:
        for index in range(5):
            response = await http.post(f"http://127.0.0.1:{server.port}/v1/x?n={index}", json={"i": index})
            assert response.status_code == 200
            assert response.content == f"POST /v1/x?n={index} HTTP/1.1".encode()
        assert server.connections == 1
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        assert body == b'{"i":0}'
        assert b"\r\nhost: 127.0.0.1:" in head.lower() and b"\r\ncontent-length: 7" in head.lower()


async def test_a_chunked_reply_and_one_ended_by_the_close_are_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while (request := await server.read_request(reader)) is not None:
            if b"/chunked" in request:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for piece in (b"Hello, ", b"chunked ", b"world"):
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
            else:  # no length, not chunked: the body ends when the connection does
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the ")
                await writer.drain()
                await asyncio.sleep(0.01)
                writer.write(b"end")
                await writer.drain()
                return

    async with serving(handler) as server, client(LeanTransport()) as http:
        base = f"http://127.0.0.1:{server.port}"
        assert (await http.get(f"{base}/chunked")).text == "Hello, chunked world"
        assert (await http.get(f"{base}/chunked")).text == "Hello, chunked world"
        assert server.connections == 1  # the chunked replies kept the connection
        assert (await http.get(f"{base}/close")).text == "until the end"
        assert (await http.get(f"{base}/chunked")).text == "Hello, chunked world"
        assert server.connections == 2  # the closed one was not used again


async def test_an_idle_connection_the_server_closed_is_replaced_not_failed() -> None:
    async def one_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await server.read_request(reader)
        writer.write(reply(b"ok"))  # keep-alive by HTTP/1.1's default, then closed anyway
        await writer.drain()

    async with serving(one_per_connection) as server, client(LeanTransport()) as http:
        for _ in range(3):
            assert (await http.get(f"http://127.0.0.1:{server.port}/")).text == "ok"
            # The close arrives while the connection is idle: the server's handler ended, then its
            # close and the client's reading of it each take a turn of this loop (the one both run
            # in; a fixed sleep could end first on a loaded machine).
            await asyncio.wait_for(server.ended.wait(), 10)
            server.ended.clear()
            for _ in range(10):
                await asyncio.sleep(0)
        assert server.connections == 3


@pytest.mark.parametrize("cut", ["before_the_status", "mid_body", "not_http"])
async def test_a_reply_cut_short_or_not_http_is_a_protocol_error(cut: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        if cut == "mid_body":
            writer.write(reply(b"0123456789")[:-4])
        elif cut == "not_http":
            writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with serving(handler) as server, client(LeanTransport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_refused_connections_and_silent_servers_time_out_as_httpx_says() -> None:
    with refusing_port() as port:  # bound, never listening: nobody else can listen there meanwhile
        async with client(LeanTransport()) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/")

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    async with serving(silent) as server, client(LeanTransport(), read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{server.port}/")


async def test_a_full_pool_waits_for_a_connection_then_times_out() -> None:
    release = asyncio.Event()

    async def streaming(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"4\r\nlast\r\n0\r\n\r\n")
            await writer.drain()

    async with serving(streaming) as server, client(LeanTransport(max_connections=1), pool=0.2) as http:
        url = f"http://127.0.0.1:{server.port}/"
        async with http.stream("GET", url) as held:
            with pytest.raises(httpx.PoolTimeout):
                await http.get(url)
            # Its own pool timeout is long: a loaded machine may take a while to hand the connection
            # over, and this request is to get it then, not to time out (the one above did).
            waiting = asyncio.create_task(http.get(url, timeout=httpx.Timeout(5.0)))
            await asyncio.sleep(0.05)
            release.set()
            assert await held.aread() == b"firstlast"
        assert (await waiting).text == "firstlast"  # it got the connection the stream gave back
        assert server.connections == 1


async def test_abandoning_a_reply_half_way_closes_its_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        if server.connections > 1:  # the second connection: a short whole reply
            writer.write(b"2\r\nok\r\n0\r\n\r\n")
            await writer.drain()
            return
        while True:
            writer.write(b"4\r\ntick\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with serving(endless) as server, client(LeanTransport()) as http:
        async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as response:
            async for piece in response.aiter_bytes():
                assert piece.startswith(b"tick")
                break
        # The server's writes fail soon: the client closed the connection (the generation stops).
        await asyncio.wait_for(server.ended.wait(), 5)
        assert (await http.get(f"http://127.0.0.1:{server.port}/")).status_code == 200
        assert server.connections == 2  # a new connection for the next request


async def test_tls_with_a_trusted_certificate_and_not_with_an_unknown_one(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text(GOOD_TEST_CERT)
    (tmp_path / "key.pem").write_text(GOOD_TEST_KEY)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    trusting.check_hostname = False  # the certificate names good.test; the server is 127.0.0.1
    async with serving(keep_alive, tls=server_side) as server:
        url = f"https://127.0.0.1:{server.port}/v1/models"
        async with client(LeanTransport(ssl_context=trusting)) as http:
            assert (await http.get(url)).content == b"GET /v1/models HTTP/1.1"
            assert (await http.get(url)).status_code == 200
        assert server.connections == 1
        async with client(LeanTransport(ssl_context=ssl.create_default_context())) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(url)


async def test_an_informational_reply_is_skipped_and_a_head_reply_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        while (request := await server.read_request(reader)) is not None:
            if request.startswith(b"HEAD"):  # a length, but no body: the reply to HEAD
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n")
                writer.write(reply(b"after the hints", extra=b"x-final: yes\r\n"))
            await writer.drain()

    async with serving(handler) as server, client(LeanTransport()) as http:
        url = f"http://127.0.0.1:{server.port}/"
        response = await http.get(url)
        assert (response.status_code, response.text, response.headers["x-final"]) == (
            200,
            "after the hints",
            "yes",
        )
        assert "link" not in response.headers
        head = await http.head(url, timeout=10)  # waiting for 42 body bytes, it would time out
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "42")
        assert (await http.get(url)).text == "after the hints"
