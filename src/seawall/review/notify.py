"""Notifications: webhooks and e-mail about held answers, decisions and user reports.

:class:`Notifier` delivers on one background thread, so no request ever waits for a webhook or
an SMTP server: :meth:`Notifier.send` only queues. A failed delivery is logged and retried
(``retries`` times, the delay doubling from ``backoff_s``); one that keeps failing is logged and
dropped. Deliveries are in memory: a server killed with deliveries queued loses them (the
decisions themselves are in the store; reviewers and pollers see them).

Webhook requests are ``POST`` with a JSON body ``{"type", "created", "data"}``, never follow
redirects, and carry ``x-seawall-event`` and, with ``signing_secret``, ``x-seawall-signature:
sha256=<HMAC-SHA256 hex of the body>``. Per-request webhooks must name an allowed host
(:func:`check_webhook_url`) and follow :mod:`seawall.netguard`'s rules: the host (an address in
any form, or a name resolved once at each delivery) must be public (unless
``allow_private_webhooks``), and the connection goes to the checked address, so neither a redirect
nor a DNS answer that changes after the check (rebinding) can point a delivery at the local
network. Such a refusal is final (no retries). The operator's own ``webhook_url`` is configuration,
not a caller's choice, and is posted to as configured. Logs name a webhook by its origin only
(scheme, host, port): its path and query often carry a token. E-mail goes through the standard
library's :mod:`smtplib`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from seawall.errors import InvalidRequestError
from seawall.netguard import (
    NonPublicAddress,
    SyncResolver,
    check_addresses,
    is_public,
    literal_address,
    resolve_host_sync,
)
from seawall.review.settings import NotifySettings, SmtpSettings

log = logging.getLogger("seawall.review.notify")

#: Header naming the event type of a webhook delivery.
EVENT_HEADER = "x-seawall-event"
#: Header carrying the body's HMAC when a signing secret is set.
SIGNATURE_HEADER = "x-seawall-signature"


def check_webhook_url(url: str, settings: NotifySettings, *, param: str) -> str:
    """``url`` if a request may ask for a webhook there, else 400 ``webhook_not_allowed``."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise InvalidRequestError("the webhook URL is not a valid URL", param=param) from None
    schemes = {"https", "http"} if settings.allow_http_webhooks else {"https"}
    if parts.scheme not in schemes:
        allowed = " or ".join(sorted(schemes))
        raise InvalidRequestError(
            f"the webhook URL must use {allowed}", param=param, code="webhook_not_allowed"
        )
    if not host or parts.username or parts.password:
        raise InvalidRequestError(
            "the webhook URL needs a host and no credentials", param=param, code="webhook_not_allowed"
        )
    literal = literal_address(host)
    if literal is not None and not settings.allow_private_webhooks and not is_public(literal):
        raise InvalidRequestError(
            "the webhook URL names a non-public address", param=param, code="webhook_not_allowed"
        )
    for pattern in settings.allowed_webhook_hosts:
        pattern = pattern.lower()
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return url
    raise InvalidRequestError(
        f"webhooks to {host} are not allowed (review.notify.allowed_webhook_hosts)",
        param=param,
        code="webhook_not_allowed",
    )


def webhook_origin(url: str) -> str:
    """``scheme://host[:port]`` of a webhook URL: what logs may say of it (its path and query
    often hold a token)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        host = parts.hostname or "?"
    except ValueError:
        return "<invalid webhook URL>"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}"


class WebhookRefused(Exception):
    """A per-request webhook's host is, or resolves to, a non-public address: never retried."""


@dataclass
class _Delivery:
    kind: str  # "webhook" or "email"
    event: str
    payload: dict[str, Any]
    target: str | None = None  # the webhook URL
    #: A caller chose the URL (a per-request webhook): netguard's rules apply.
    guarded: bool = False
    attempts: int = 0
    created: float = field(default_factory=time.time)


class Notifier:
    """Queues notifications and delivers them on a background thread; :meth:`close` when done."""

    def __init__(self, settings: NotifySettings, *, resolver: SyncResolver = resolve_host_sync) -> None:
        self.settings = settings
        self._resolve = resolver
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._client = httpx.Client(timeout=settings.timeout_s, follow_redirects=False)
        # Per-request webhooks: connections go to pinned addresses, so none is reused (a connection
        # made for one host name must not carry another's request) and no proxy is used.
        self._guarded_client = httpx.Client(
            timeout=settings.timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._thread = threading.Thread(target=self._run, name="seawall-notify", daemon=True)
        self._thread.start()
        self._closed = False
        #: Deliveries that failed for good (event, target, last error), newest last, for operators.
        self.failures: list[tuple[str, str, str]] = []

    # ------------------------------------------------------------------ queueing

    def send(self, event: str, payload: dict[str, Any], *, webhook: str | None = None) -> None:
        """Queue ``event`` for the operator's webhook and e-mail (if configured and subscribed to
        ``event``) and for ``webhook`` (a request's own, already checked). Never blocks on delivery."""
        if self._closed:
            log.warning("notifier closed; %s dropped", event)
            return
        deliveries: list[_Delivery] = []
        if webhook:
            deliveries.append(_Delivery("webhook", event, payload, webhook, guarded=True))
        if event in self.settings.on:
            if self.settings.webhook_url:
                deliveries.append(_Delivery("webhook", event, payload, self.settings.webhook_url))
            if self.settings.smtp is not None:
                deliveries.append(_Delivery("email", event, payload))
        for delivery in deliveries:
            with self._idle:
                self._pending += 1
            self._queue.put(delivery)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued delivery succeeded or was given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the thread."""
        if self._closed:
            return
        self.flush(timeout_s)
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)
        self._client.close()
        self._guarded_client.close()

    # ------------------------------------------------------------------ delivery

    def _run(self) -> None:
        while True:
            delivery = self._queue.get()
            if delivery is None:
                return
            self._attempt(delivery)

    def _attempt(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        try:
            if delivery.kind == "webhook":
                assert delivery.target is not None
                self._post(delivery)
            else:
                assert self.settings.smtp is not None
                self._mail(self.settings.smtp, delivery)
        except Exception as exc:  # every failure is logged and retried; none may kill the thread
            reason = f"{type(exc).__name__}: {exc}"
            where = webhook_origin(delivery.target) if delivery.target else "smtp"
            if delivery.attempts <= self.settings.retries and not isinstance(exc, WebhookRefused):
                delay = self.settings.backoff_s * 2 ** (delivery.attempts - 1)
                log.warning(
                    "%s delivery of %s to %s failed (attempt %d), retrying in %.1f s: %s",
                    delivery.kind,
                    delivery.event,
                    where,
                    delivery.attempts,
                    delay,
                    reason,
                )
                timer = threading.Timer(delay, self._queue.put, args=(delivery,))
                timer.daemon = True
                timer.start()
                return
            log.error(
                "%s delivery of %s to %s failed for good: %s", delivery.kind, delivery.event, where, reason
            )
            self.failures.append((delivery.event, where, reason))
        self._done()

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _body(self, delivery: _Delivery) -> bytes:
        envelope = {"type": delivery.event, "created": int(delivery.created), "data": delivery.payload}
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), default=str).encode()

    def _post(self, delivery: _Delivery) -> None:
        body = self._body(delivery)
        headers = {"content-type": "application/json", EVENT_HEADER: delivery.event}
        secret = self.settings.signing_secret
        if secret is not None:
            digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        assert delivery.target is not None
        if delivery.guarded:
            response = self._post_pinned(delivery.target, body, headers)
        else:
            response = self._client.post(delivery.target, content=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"the webhook answered {response.status_code}")

    def _post_pinned(self, target: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST to a public address of ``target``'s host, resolved and checked now (see the module)."""
        url = httpx.URL(target)
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = literal_address(host)
        try:
            addresses = [str(literal)] if literal is not None else list(self._resolve(host, port))
            if not addresses:
                raise OSError("no address")
            checked = check_addresses(addresses, allow_private=self.settings.allow_private_webhooks)
        except NonPublicAddress:
            raise WebhookRefused(f"{host} is or resolves to a non-public address") from None
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise RuntimeError(f"{host} could not be resolved") from exc
        refused: httpx.ConnectError | None = None
        for address in checked:
            try:
                return self._guarded_client.post(
                    url.copy_with(host=address),
                    content=body,
                    headers={**headers, "host": url.netloc.decode("ascii")},
                    extensions={"sni_hostname": host},
                )
            except httpx.ConnectError as exc:  # the next address, as browsers do
                refused = exc
        assert refused is not None
        raise refused

    def _mail(self, smtp: SmtpSettings, delivery: _Delivery) -> None:
        message = EmailMessage()
        message["From"] = smtp.sender
        message["To"] = ", ".join(smtp.recipients)
        message["Subject"] = _subject(delivery.event, delivery.payload)
        message.set_content(_mail_text(delivery.event, delivery.payload))
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if smtp.security == "tls":
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.username:
                password = smtp.password.get_secret_value() if smtp.password else ""
                client.login(smtp.username, password)
            client.send_message(message)


def _subject(event: str, payload: dict[str, Any]) -> str:
    if event == "review.held":
        return (
            f"[seawall] answer held for review ({payload.get('domain') or 'uncertain'}): {payload.get('id')}"
        )
    if event == "review.decided":
        return f"[seawall] review {payload.get('id')} {payload.get('status')}"
    if event == "report.created":
        return f"[seawall] new user report ({payload.get('category')}): {payload.get('id')}"
    return f"[seawall] {event}"


def _mail_text(event: str, payload: dict[str, Any]) -> str:
    lines = [f"Event: {event}", ""]
    lines += [f"{key}: {value}" for key, value in payload.items() if not isinstance(value, dict | list)]
    return "\n".join(lines) + "\n"


__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Notifier",
    "WebhookRefused",
    "check_webhook_url",
    "webhook_origin",
]
