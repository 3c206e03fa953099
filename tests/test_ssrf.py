"""SSRF: image URLs and per-request review webhooks never reach the local network.

The far ends are real HTTP servers on 127.0.0.1 (an image host, a webhook receiver, a server that
redirects); what the test controls is DNS, at the resolver function the loader and the notifier
take (real DNS cannot be steered from a test). Every test checks the harm itself: the loopback
server that must not be reached got no request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import ImageHost, png_bytes, send_bytes
from seawall.errors import ImageError, InvalidRequestError
from seawall.images import ImageLoader
from seawall.netguard import is_public, literal_address
from seawall.review.notify import Notifier, check_webhook_url
from seawall.review.settings import NotifySettings
from seawall.settings import ImageSettings

#: A global unicast address (the deprecated 6to4 relay anycast block): DNS answers that look
#: public. Connections to it fail or time out within the tests' one-second limits.
PUBLIC = "192.88.99.1"

#: Hosts that are addresses, in the forms a URL may spell them, all of them not public.
NON_PUBLIC_LITERALS = [
    "127.0.0.1",
    "127.0.0.1.",
    "2130706433",  # decimal
    "0x7f000001",  # hex
    "0x7f.1",  # hex, short form
    "127.1",  # short form
    "0",  # 0.0.0.0
    "0.0.0.0",
    "10.0.0.1",
    "100.64.0.1",  # shared address space (carrier-grade NAT)
    "169.254.169.254",  # link-local: cloud metadata
    "224.0.0.1",  # multicast
    "[::]",
    "[::1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[fc00::1]",  # unique local
    "[fd12:3456::1]",
    "[fe80::1]",  # link-local
    "[fec0::1]",  # site-local
    "[ff02::1]",  # link-local multicast
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
]

#: DNS answers for a name that must make it refused.
NON_PUBLIC_ANSWERS = [
    ["127.0.0.1"],
    ["::1"],
    ["::ffff:127.0.0.1"],
    ["0.0.0.0"],
    ["::"],
    ["10.1.2.3"],
    ["192.168.1.1"],
    ["172.16.0.1"],
    ["169.254.169.254"],
    ["fd00::1"],
    ["fe80::1"],
    ["ff02::1"],
    [PUBLIC, "127.0.0.1"],  # any private answer refuses the host
]


class Resolver:
    """Async DNS chosen by the test: ``answers`` per host, or a list of answers, one per lookup."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = {host: list(turns) for host, turns in answers.items()}
        self.lookups: list[str] = []

    def answer(self, host: str) -> list[str]:
        self.lookups.append(host)
        turns = self.answers.get(host)
        if not turns:
            raise OSError(f"no such host: {host}")
        return list(turns.pop(0) if len(turns) > 1 else turns[0])

    async def __call__(self, host: str, port: int) -> list[str]:
        return self.answer(host)


class SyncResolver(Resolver):
    def __call__(self, host: str, port: int) -> list[str]:  # type: ignore[override]
        return self.answer(host)


def everything_is_public() -> Resolver:
    """A resolver that would wave any name through: literal addresses must never reach it."""

    class Anything(Resolver):
        def answer(self, host: str) -> list[str]:
            self.lookups.append(host)
            return [PUBLIC]

    return Anything({})


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageHost]:
    with ImageHost() as host:
        host.routes["/ok.png"] = send_bytes(png_bytes((8, 8)))
        yield host


def redirect_to(location: str) -> Any:
    def handler(request: Any) -> None:
        request.send_response(302)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()

    return handler


async def load(settings: ImageSettings, resolver: Resolver, url: str) -> bytes:
    loader = ImageLoader(settings, resolver=resolver)
    try:
        (data,) = await loader.load_all([url])
    finally:
        await loader.aclose()
    return data


# ------------------------------------------------------------------------------------- the rules


def test_non_public_addresses_in_every_form() -> None:
    for host in NON_PUBLIC_LITERALS:
        address = literal_address(host)
        assert address is not None, host
        assert not is_public(address), host
    for answers in NON_PUBLIC_ANSWERS:
        assert not all(is_public(ipaddress.ip_address(a)) for a in answers), answers
    assert str(literal_address("0177.0.0.1")) == "127.0.0.1"  # octal, as inet_aton reads it
    assert is_public(ipaddress.ip_address(PUBLIC)) and is_public(ipaddress.ip_address("2606:4700::1111"))
    for name in ("example.com", "cafe.dead", "0x7f.example", "localhost"):
        assert literal_address(name) is None, name


# ------------------------------------------------------------------------------------ image URLs


@pytest.mark.parametrize("host", NON_PUBLIC_LITERALS)
async def test_image_hosts_that_are_addresses_are_refused_without_asking_dns(
    image_host: ImageHost, host: str
) -> None:
    resolver = everything_is_public()
    before = len(image_host.hits)
    with pytest.raises(ImageError, match="non-public"):
        await load(ImageSettings(allow_http=True), resolver, f"http://{host}:{image_host.port}/ok.png")
    assert resolver.lookups == []  # the address was read, not looked up
    assert len(image_host.hits) == before


@pytest.mark.parametrize("answers", NON_PUBLIC_ANSWERS, ids=lambda answers: ",".join(answers))
async def test_image_names_resolving_to_non_public_addresses_are_refused(
    image_host: ImageHost, answers: list[str]
) -> None:
    resolver = Resolver({"images.test": [answers]})
    before = len(image_host.hits)
    with pytest.raises(ImageError, match="non-public"):
        await load(ImageSettings(allow_http=True), resolver, f"http://images.test:{image_host.port}/ok.png")
    assert len(image_host.hits) == before


async def test_an_image_redirect_is_never_followed(image_host: ImageHost) -> None:
    """Loopback is allowed here, explicitly, for the first hop; the redirect to the private target
    (the image host's /ok.png, which would answer) is still not followed."""
    target = f"http://127.0.0.1:{image_host.port}/ok.png"
    image_host.routes["/moved.png"] = redirect_to(target)
    image_host.routes["/to-metadata.png"] = redirect_to("http://169.254.169.254/latest/meta-data/")
    settings = ImageSettings(allow_http=True, allow_private_hosts=True, fetch_timeout_s=2)
    for path in ("/moved.png", "/to-metadata.png"):
        before = list(image_host.hits)
        with pytest.raises(ImageError, match="without redirects"):
            await load(settings, Resolver({}), f"http://127.0.0.1:{image_host.port}{path}")
        assert image_host.hits[len(before) :] == [path]  # the first hop only
    assert await load(settings, Resolver({}), target) == png_bytes((8, 8))  # the target itself works


async def test_dns_rebinding_cannot_turn_an_image_fetch_to_loopback(image_host: ImageHost) -> None:
    """The name is public when checked and loopback on every later lookup: the fetch goes to the
    checked address (and fails, nothing answers there), never to loopback."""
    resolver = Resolver({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    settings = ImageSettings(allow_http=True, fetch_timeout_s=1)
    before = len(image_host.hits)
    with pytest.raises(ImageError, match="could not be fetched"):
        await load(settings, resolver, f"http://rebind.test:{image_host.port}/ok.png")
    assert resolver.lookups == ["rebind.test"]  # one lookup: httpx never resolved the name itself
    with pytest.raises(ImageError, match="non-public"):  # the next fetch sees the new answer, and refuses
        await load(settings, resolver, f"http://rebind.test:{image_host.port}/ok.png")
    assert len(image_host.hits) == before


# -------------------------------------------------------------------------------------- webhooks


def notify_settings(**values: Any) -> NotifySettings:
    base: dict[str, Any] = {
        "allowed_webhook_hosts": ["*.test", "*"],
        "allow_http_webhooks": True,
        "retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 1,
    }
    return NotifySettings(**{**base, **values})


@pytest.fixture(scope="module")
def receiver() -> Iterator[StandIn]:
    """A webhook receiver on loopback: every request it gets is a request that got through."""

    async def reply(request: Recorded) -> Response:
        if request.path == "/moved":
            return Response(status_code=307, headers={"location": "/hook"})
        return json_reply({"ok": True})

    with stand_in(reply) as running:
        yield running


def deliver(notifier: Notifier, url: str) -> None:
    try:
        notifier.send("review.decided", {"id": "rev_1", "status": "approved"}, webhook=url)
        assert notifier.flush(20)
    finally:
        notifier.close()


@pytest.mark.parametrize("host", NON_PUBLIC_LITERALS)
def test_webhook_urls_naming_non_public_addresses_are_refused_with_the_request(host: str) -> None:
    settings = notify_settings(allowed_webhook_hosts=[host.strip("[]").lower(), "*"])
    with pytest.raises(InvalidRequestError) as refused:
        check_webhook_url(f"https://{host}/hook", settings, param="seawall.review.webhook")
    assert refused.value.code == "webhook_not_allowed" and refused.value.status_code == 400
    # Allowed on purpose (a receiver inside the operator's network), they pass.
    allowed = notify_settings(allowed_webhook_hosts=[host.strip("[]").lower()], allow_private_webhooks=True)
    check_webhook_url(f"https://{host}/hook", allowed, param="seawall.review.webhook")


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f.1", "127.1", "[::ffff:127.0.0.1]"])
def test_webhook_deliveries_to_loopback_addresses_are_refused_for_good(
    receiver: StandIn, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Checked at delivery too (whatever queued it), without asking DNS, and never retried."""
    resolver = SyncResolver({})
    notifier = Notifier(notify_settings(), resolver=resolver)
    before = len(receiver.requests)
    with caplog.at_level(logging.WARNING, logger="seawall.review.notify"):
        deliver(notifier, f"http://{host}:{receiver.url.rsplit(':', 1)[1]}/hook?token=hook-secret-123")
    assert len(receiver.requests) == before
    assert resolver.lookups == []
    [(event, where, reason)] = notifier.failures
    assert event == "review.decided" and "non-public" in reason
    assert "hook-secret-123" not in where and "/hook" not in where  # only the origin is kept
    assert "failed for good" in caplog.text and "retrying" not in caplog.text
    assert "hook-secret-123" not in caplog.text


@pytest.mark.parametrize("answers", NON_PUBLIC_ANSWERS, ids=lambda answers: ",".join(answers))
def test_webhook_names_resolving_to_non_public_addresses_are_refused(
    receiver: StandIn, answers: list[str]
) -> None:
    resolver = SyncResolver({"hooks.test": [answers]})
    notifier = Notifier(notify_settings(), resolver=resolver)
    before = len(receiver.requests)
    deliver(notifier, f"http://hooks.test:{receiver.url.rsplit(':', 1)[1]}/hook")
    assert len(receiver.requests) == before
    assert resolver.lookups == ["hooks.test"]  # refused once, not retried
    assert "non-public" in notifier.failures[0][2]


def test_a_webhook_goes_to_the_checked_address_under_its_host_name(receiver: StandIn) -> None:
    """Loopback allowed explicitly: the name is resolved once and the POST goes to that address,
    with the name in the Host header."""
    port = receiver.url.rsplit(":", 1)[1]
    resolver = SyncResolver({"hooks.test": [["127.0.0.1"]]})
    notifier = Notifier(notify_settings(allow_private_webhooks=True), resolver=resolver)
    before = len(receiver.requests)
    deliver(notifier, f"http://hooks.test:{port}/hook")
    [got] = receiver.requests[before:]
    assert got.method == "POST" and got.path == "/hook" and got.headers["host"] == f"hooks.test:{port}"
    assert got.body["type"] == "review.decided"
    assert resolver.lookups == ["hooks.test"] and notifier.failures == []


def test_a_webhook_redirect_is_never_followed(receiver: StandIn) -> None:
    """Loopback allowed explicitly for the first hop; its 307 to /hook is not followed."""
    notifier = Notifier(notify_settings(allow_private_webhooks=True, retries=0), resolver=SyncResolver({}))
    before = len(receiver.requests)
    deliver(notifier, f"{receiver.url}/moved")
    assert [r.path for r in receiver.requests[before:]] == ["/moved"]
    assert "307" in notifier.failures[0][2]


def test_dns_rebinding_cannot_turn_a_webhook_to_loopback(receiver: StandIn) -> None:
    """Public when checked, loopback afterwards: the first attempt connects to the checked public
    address (and fails); the retry looks the name up again, sees loopback and gives up."""
    resolver = SyncResolver({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    notifier = Notifier(notify_settings(retries=3), resolver=resolver)
    before = len(receiver.requests)
    deliver(notifier, f"http://rebind.test:{receiver.url.rsplit(':', 1)[1]}/hook")
    assert len(receiver.requests) == before
    assert resolver.lookups == ["rebind.test", "rebind.test"]  # once per attempt; the refusal is final
    assert "non-public" in notifier.failures[0][2]


def test_the_resolvers_here_are_the_only_dns() -> None:
    """Guard for the tests above: a name no resolver knows is an error, never a real lookup."""
    with pytest.raises(OSError):
        SyncResolver({})("unknown.test", 80)
    with pytest.raises(OSError):
        asyncio.run(Resolver({})("unknown.test", 80))
