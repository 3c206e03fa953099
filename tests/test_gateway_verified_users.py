"""Verified end users and trust tiers, against a real OpenID Connect provider on loopback.

The provider is npm's ``oidc-provider`` (tests/oidc/server.js; ``npm ci --prefix tests/oidc``), run
with node and with signing keys these tests generate, so they can also rotate its keys (restart it
with a new key first) and mint the tokens a provider would never issue (expired, not yet valid,
unsigned) with its own key. Tokens the tests need from it come from its real flows: ID tokens from
the authorization-code flow with PKCE, JWT access tokens from the client-credentials grant.

Without node or the installed package these tests skip (fail under CI).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from joserfc.jws import JWSRegistry
from starlette.responses import Response

from backend_standins import Recorded, StandIn, json_reply, stand_in
from conftest import ImageHost, RunningServer, running_server, send_bytes, wait_for
from seawall.errors import ConfigurationError, IdentityProviderError, UserTokenError
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.audit import AuditRecord
from seawall.gateway.policy import policy_from_dict
from seawall.gateway.risk import RiskLedger
from seawall.gateway.runner import RequestContext
from seawall.gateway.steps import Identity
from seawall.gateway.tiers import Tiers
from seawall.gateway.user_tokens import MAX_DOCUMENT_BYTES, ProviderKeys, UserTokenVerifier
from seawall.settings import RiskSettings, StoreSettings, UserTokenSettings, load_settings
from seawall.store import open_store
from seawall.store.memory import MemoryStore
from test_ui_support import missing

OIDC_DIR = Path(__file__).parent / "oidc"
APP = "seawall-app"
APP_SECRET = "test-only-app-secret-0123456789abcdef"
OTHER = "other-app"
OTHER_SECRET = "test-only-other-secret-0123456789abcd"
CALLBACK = "http://127.0.0.1:9/callback"  # never fetched: the flow stops at the redirect to it
RESOURCE = "https://api.example.test"
MODEL, BIG_MODEL = "gpt-test", "gpt-big"
ANSWER = "Paris is the capital of France."


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing("node is not installed (apt-get install nodejs npm)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        missing("the test OIDC provider is not installed: run `npm ci --prefix tests/oidc`")
    assert node is not None
    return node


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


class Provider:
    """tests/oidc/server.js with our keys, on one port across restarts (so the issuer stays)."""

    def __init__(self, node: str, keys: list[RSAKey]) -> None:
        self.node = node
        self.port = 0  # the first start: a port the OS picks when node binds (its "ready" line)
        self.issuer = ""
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.start(keys)

    def start(self, keys: list[RSAKey]) -> None:
        self.keys = keys
        clients = [
            {
                "client_id": OTHER,
                "client_secret": OTHER_SECRET,
                "redirect_uris": [CALLBACK],
                "response_types": ["code"],
                "grant_types": ["authorization_code", "client_credentials"],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PORT": str(self.port),
            "CLIENT_ID": APP,
            "CLIENT_SECRET": APP_SECRET,
            "REDIRECT_URI": CALLBACK,
            "NODE_ENV": "test",
            "JWKS": json.dumps({"keys": [key.as_dict(private=True) for key in keys]}),
            "EXTRA_CLIENTS": json.dumps(clients),
            "ID_TOKEN_CLAIMS": "all",
            "RESOURCE": RESOURCE,
        }
        process = subprocess.Popen(
            [self.node, "server.js"],
            cwd=OIDC_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        self.process = process
        try:
            while not (line := lines.get(timeout=30)).startswith("ready "):
                pass
        except queue.Empty:
            self.stop()
            raise RuntimeError("the OIDC provider did not start: " + "".join(self.output)) from None
        issuer = line.split(" ", 1)[1].strip()
        # A restart is on the port of the first start, so the issuer stays what the gateway was given.
        assert not self.issuer or issuer == self.issuer, (issuer, self.issuer)
        self.issuer, self.port = issuer, int(issuer.rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None

    def id_token(self, who: str, *, client: str = APP, secret: str = APP_SECRET) -> str:
        """An ID token for ``who`` from the authorization-code flow with PKCE (scopes openid, email,
        verification), issued to ``client``."""
        verifier = secrets.token_urlsafe(32)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        with httpx.Client(base_url=self.issuer, timeout=30) as http:
            response = http.get(
                "/auth",
                params={
                    "client_id": client,
                    "response_type": "code",
                    "scope": "openid email verification",
                    "redirect_uri": CALLBACK,
                    "login_hint": who,
                    "nonce": secrets.token_urlsafe(8),
                    "state": secrets.token_urlsafe(8),
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                },
            )
            for _ in range(10):
                location = response.headers.get("location", "")
                if location.startswith(CALLBACK):
                    break
                assert response.status_code in (302, 303), response.text
                response = http.get(location)
            code = parse_qs(urlsplit(location).query)["code"][0]
            tokens = http.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": CALLBACK,
                    "code_verifier": verifier,
                },
                auth=(client, secret),
            )
            tokens.raise_for_status()
            return str(tokens.json()["id_token"])

    def access_token(self) -> str:
        """A JWT access token for the API ``RESOURCE`` (client credentials of the other app)."""
        with httpx.Client(base_url=self.issuer, timeout=30) as http:
            tokens = http.post(
                "/token",
                data={"grant_type": "client_credentials", "resource": RESOURCE, "scope": "api"},
                auth=(OTHER, OTHER_SECRET),
            )
            tokens.raise_for_status()
            return str(tokens.json()["access_token"])

    def mint(
        self,
        claims: dict[str, Any],
        *,
        key: Any = None,
        alg: str = "RS256",
        strict: bool = True,
        **header: Any,
    ) -> str:
        """A token signed with the provider's current key (or ``key``): what the provider would
        sign, with the claims the test wants (``strict=False``: header members of one's own)."""
        key = key if key is not None else self.keys[0]
        base = {"iss": self.issuer, "aud": APP, "sub": "minted", "iat": int(time.time())}
        registry = JWSRegistry(strict_check_header=strict, algorithms=[alg])
        return jwt.encode({"alg": alg, "kid": key.kid, **header}, {**base, **claims}, key, registry=registry)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    started = Provider(_node(), [rsa_key("key-1")])
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def fresh(provider: Provider) -> Provider:
    """The provider serving its first key again (a rotation test may have replaced it)."""
    if provider.keys[0].kid != "key-1" or provider.process is None:
        provider.stop()
        provider.start([rsa_key("key-1")])
    return provider


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token_settings(provider: Provider, tmp: Path, **extra: Any) -> UserTokenSettings:
    values: dict[str, Any] = {
        "issuer": provider.issuer,
        "audiences": [APP],
        "allow_private_hosts": True,  # the provider is on loopback
        "cache_file": str(tmp / "jwks.json"),
        **extra,
    }
    return UserTokenSettings.model_validate(values)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def verify(verifier: UserTokenVerifier, token: str) -> Any:
    return asyncio.run(verifier.verify(token))


def refused(verifier: UserTokenVerifier, token: str) -> UserTokenError:
    with pytest.raises(UserTokenError) as caught:
        verify(verifier, token)
    assert caught.value.status_code == 401
    return caught.value


# ---------------------------------------------------------------------------------- verification


def test_a_real_id_token_is_verified_with_keys_from_discovery(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path))
    user = verify(verifier, fresh.id_token("pia"))
    assert user.id == "pia"
    assert user.claims["email_verified"] is True and user.claims["payment_verified"] is True
    assert verifier.keys.fetches == 1
    cached = json.loads((tmp_path / "jwks.json").read_text())
    assert cached["issuer"] == fresh.issuer and cached["jwks_url"] == f"{fresh.issuer}/jwks"
    assert [key["kid"] for key in cached["jwks"]["keys"]] == ["key-1"]
    assert all("d" not in key for key in cached["jwks"]["keys"])  # public keys only
    verify(verifier, fresh.id_token("ada"))
    assert verifier.keys.fetches == 1  # the cached keys serve every later token


def test_a_jwt_access_token_for_the_api_is_verified(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path, audiences=[RESOURCE]))
    token = fresh.access_token()
    user = verify(verifier, token)
    assert user.id == OTHER and user.claims["client_id"] == OTHER
    assert user.claims["scope"] == "api"


def test_a_token_for_another_audience_is_refused(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path))
    error = refused(verifier, fresh.id_token("ada", client=OTHER, secret=OTHER_SECRET))
    assert "audience 'other-app'" in error.message and "'seawall-app'" in error.message
    assert error.code == "invalid_user_token"
    assert "x-seawall-user-token" in error.message


def test_an_expired_token_is_refused_after_the_leeway(fresh: Provider, tmp_path: Path) -> None:
    clock = Clock()
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path, leeway_s=30), clock=clock)
    token = fresh.id_token("ada")
    expires = jwt.decode(token, fresh.keys[0]).claims["exp"]
    clock.now = expires + 20  # within the leeway: still good
    assert verify(verifier, token).id == "ada"
    clock.now = expires + 31
    error = refused(verifier, token)
    assert error.code == "user_token_expired" and "expired at" in error.message and "ago" in error.message


def test_a_token_not_yet_valid_or_from_another_issuer_is_refused(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path))
    later = int(time.time()) + 3600
    error = refused(verifier, fresh.mint({"nbf": later, "exp": later + 600}))
    assert "not valid before" in error.message
    error = refused(verifier, fresh.mint({"iss": "https://evil.example", "exp": later}))
    assert "issued by 'https://evil.example'" in error.message
    error = refused(verifier, fresh.mint({}))  # no exp: a token that never expires is not accepted
    assert "no 'exp' claim" in error.message
    assert verify(verifier, fresh.mint({"exp": later})).id == "minted"  # the same key, good claims
    # A header member the library does not know (providers add their own) is no reason to refuse.
    assert verify(verifier, fresh.mint({"exp": later}, x_provider_hint="eu-1", strict=False)).id == "minted"
    # But one marked critical must be understood (signed by hand: joserfc will not sign it).
    header = {"alg": "RS256", "kid": "key-1", "crit": ["x_provider_hint"], "x_provider_hint": "eu"}
    claims = {"iss": fresh.issuer, "aud": APP, "sub": "minted", "exp": later}
    signing_input = f"{b64(header)}.{b64(claims)}".encode()
    private = fresh.keys[0].private_key
    assert private is not None
    signature = private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    critical = signing_input.decode() + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    assert "cannot be verified" in refused(verifier, critical).message


def test_unsigned_and_hmac_tokens_are_refused(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path))

    claims = {"iss": fresh.issuer, "aud": APP, "sub": "mallory", "exp": int(time.time()) + 600}
    unsigned = f"{b64({'alg': 'none', 'kid': 'key-1'})}.{b64(claims)}."
    assert "not signed (alg 'none')" in refused(verifier, unsigned).message
    # HS256 keyed with the provider's public key: the classic confusion attack.
    public = json.dumps(fresh.keys[0].as_dict(private=False)).encode()
    from joserfc.jwk import OctKey

    forged = jwt.encode(
        {"alg": "HS256", "kid": "key-1"}, claims, OctKey.import_key(public), algorithms=["HS256"]
    )
    error = refused(verifier, forged)
    assert "signed with HS256, which is not accepted" in error.message


def test_settings_refuse_none_and_hmac_algorithms_and_a_clashing_header() -> None:
    for algorithms in (["none"], ["HS256"], ["RS256", "HS512"]):
        with pytest.raises(ValueError, match="never 'none' or HMAC"):
            UserTokenSettings(issuer="https://id.example", audiences=["app"], algorithms=algorithms)
    with pytest.raises(ValueError, match="audiences"):
        UserTokenSettings(issuer="https://id.example")
    with pytest.raises(ValueError, match="https"):
        UserTokenSettings(issuer="http://id.example", audiences=["app"])
    tokens = {"issuer": "https://id.example", "audiences": ["app"], "header": "Authorization"}
    with pytest.raises(ConfigurationError, match="carries the app's API key"):
        load_settings(gateway={"user_tokens": tokens})
    settings = load_settings(gateway={"user_tokens": tokens, "require_api_key": False})
    assert settings.gateway.user_tokens.header == "authorization"


def test_a_token_signed_by_another_key_is_refused(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path))
    exp = int(time.time()) + 600
    impostor = rsa_key("key-1")  # claims the provider's kid
    error = refused(verifier, fresh.mint({"exp": exp}, key=impostor))
    assert "does not verify with the provider's key 'key-1'" in error.message
    assert "signed by another key" in error.message
    stranger = ECKey.generate_key("P-256", parameters={"kid": "not-theirs"})
    error = refused(verifier, fresh.mint({"exp": exp}, key=stranger, alg="ES256"))
    assert "does not publish" in error.message and "'not-theirs'" in error.message


def test_unknown_kids_refresh_the_keys_at_most_once_per_interval(fresh: Provider, tmp_path: Path) -> None:
    clock = Clock()
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path, min_refresh_interval_s=30), clock=clock)
    verify(verifier, fresh.id_token("ada"))
    assert verifier.keys.fetches == 1
    exp = int(time.time()) + 600
    bogus = [fresh.mint({"exp": exp}, key=rsa_key(f"bogus-{n}")) for n in range(3)]

    async def flood() -> list[BaseException | Any]:
        return await asyncio.gather(*(verifier.verify(token) for token in bogus * 10), return_exceptions=True)

    clock.now += 31
    results = asyncio.run(flood())
    assert all(isinstance(result, UserTokenError) for result in results)
    assert verifier.keys.fetches == 2  # thirty tokens, three unknown kids: one fetch
    refused(verifier, bogus[0])
    assert verifier.keys.fetches == 2  # too soon for another


def test_a_rotated_key_is_fetched_and_accepted(provider: Provider, tmp_path: Path) -> None:
    provider.stop()
    provider.start([rsa_key("key-1")])
    clock = Clock()
    verifier = UserTokenVerifier(token_settings(provider, tmp_path, min_refresh_interval_s=30), clock=clock)
    before = provider.id_token("ada")
    verify(verifier, before)
    old = provider.keys[0]
    provider.stop()
    provider.start([rsa_key("key-2"), old])  # the new key signs; the old one is still published
    after = provider.id_token("rex")
    assert jwt.decode(after, provider.keys[0]).header["kid"] == "key-2"
    clock.now += 31
    assert verify(verifier, after).id == "rex"
    assert verifier.keys.fetches == 2
    assert verify(verifier, before).id == "ada"  # tokens signed before the rotation still verify
    cached = json.loads((tmp_path / "jwks.json").read_text())
    assert [key["kid"] for key in cached["jwks"]["keys"]] == ["key-2", "key-1"]
    provider.stop()
    provider.start([rsa_key("key-3")])  # the old keys are retired
    clock.now += 3601  # refresh_s: the cached copy is old, fetched again
    assert "does not publish" in refused(verifier, before).message


def test_cached_keys_verify_tokens_while_the_provider_is_down(fresh: Provider, tmp_path: Path) -> None:
    settings = token_settings(fresh, tmp_path)
    token = fresh.id_token("ada")
    verify(UserTokenVerifier(settings), token)
    fresh.stop()
    try:
        restarted = UserTokenVerifier(settings)  # a new gateway process: the keys come from the file
        assert verify(restarted, token).id == "ada"
        assert restarted.keys.fetches == 0
        cold = UserTokenVerifier(token_settings(fresh, tmp_path / "elsewhere"))
        with pytest.raises(IdentityProviderError) as caught:
            verify(cold, token)
        assert caught.value.status_code == 503 and "could not be fetched" in caught.value.message
    finally:
        fresh.start([rsa_key("key-1")])


def test_fetches_follow_the_ssrf_rules(fresh: Provider, tmp_path: Path) -> None:
    verifier = UserTokenVerifier(token_settings(fresh, tmp_path, allow_private_hosts=False))
    with pytest.raises(IdentityProviderError) as caught:
        verify(verifier, fresh.id_token("ada"))
    assert "non-public address 127.0.0.1" in caught.value.message
    assert "allow_private_hosts" in caught.value.message


def test_a_provider_that_resolves_to_a_private_address_is_not_fetched(tmp_path: Path) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    settings = UserTokenSettings(
        issuer="https://id.example", audiences=["app"], cache_file=tmp_path / "k.json"
    )
    keys = ProviderKeys(settings, resolver=resolve)
    with pytest.raises(IdentityProviderError, match=r"non-public address 10\.0\.0\.7"):
        asyncio.run(keys.candidates("any"))
    assert keys.fetches == 1


# ---------------------------------------------------------------------------------- tiers

POLICY = f"""\
name: Test Helper
purpose: You answer general knowledge questions for the test suite.
allowed_topics: [geography, general knowledge]
off_topic_reply: Sorry, I can only help with general knowledge.
limits:
  max_output_tokens: 200
  allowed_models: [{MODEL}, {BIG_MODEL}]
tiers:
  - name: id_verified
    claims: {{id_verified: true}}
    limits: {{max_output_tokens: 1000}}
  - name: email_verified
    claims: {{email_verified: true}}
    rate_limit: {{requests: 30, window_s: 60}}
  - name: signed_in
    rate_limit: {{requests: 10, window_s: 60}}
  - name: anonymous
    verified: false
    rate_limit: {{requests: 2, window_s: 60}}
    limits: {{max_output_tokens: 16, allowed_models: [{MODEL}]}}
    risk: {{warn_at: 1, throttle_at: 2, block_at: 2}}
"""


async def _reply(request: Recorded) -> Response:
    if request.path == "/v1/models":
        models = [{"id": name, "object": "model", "owned_by": "t"} for name in (MODEL, BIG_MODEL)]
        return json_reply({"object": "list", "data": models})
    if request.body.get("stream"):
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": request.body["model"]}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        return Response(body, media_type="text/event-stream")
    message = {"role": "assistant", "content": ANSWER}
    return json_reply(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": 1,
            "model": request.body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    )


@dataclass
class Gateway:
    server: RunningServer
    upstream: StandIn
    provider: Provider
    audit_file: Path
    db: Path

    def ask(self, *, token: str | None = None, session: str | None = None, model: str = MODEL) -> Any:
        headers = {}
        if token is not None:
            headers["x-seawall-user-token"] = token
        if session is not None:
            headers["x-seawall-session"] = session
        with self.server.client() as client:
            return client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                extra_headers=headers,
            )

    def sent(self) -> dict[str, Any]:
        chats = [r for r in self.upstream.requests if r.path == "/v1/chat/completions"]
        return dict(chats[-1].body)

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]


@pytest.fixture(scope="module")
def gateway(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("verified-gateway")
    (tmp / "policy.yaml").write_text(POLICY)
    with stand_in(_reply) as upstream:
        settings = load_settings(
            gateway={
                "enabled": True,
                "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
                "policy_file": str(tmp / "policy.yaml"),
                "secret_file": str(tmp / "secret"),
                "audit_file": str(tmp / "audit.jsonl"),
                "input_moderation": False,  # this module is about identity, not content
                "output_moderation": False,
                "topic_guard": False,
                "user_tokens": {
                    "issuer": provider.issuer,
                    "audiences": [APP],
                    "allow_private_hosts": True,
                    "cache_file": str(tmp / "jwks.json"),
                },
            },
            store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
        )
        with running_server(settings) as server:
            yield Gateway(server, upstream, provider, tmp / "audit.jsonl", tmp / "seawall.db")


def test_anonymous_users_meet_their_tier_s_limits_and_verified_users_do_not(
    gateway: Gateway, fresh: Provider
) -> None:
    session = secrets.token_hex(8)
    assert gateway.ask(session=session).choices[0].message.content == ANSWER
    assert gateway.sent()["max_completion_tokens"] == 16  # the anonymous tier's cap
    with pytest.raises(openai.PermissionDeniedError) as denied:
        gateway.ask(session=session, model=BIG_MODEL)
    assert denied.value.code == "model_not_allowed_for_tier" and "'anonymous'" in denied.value.message
    with pytest.raises(openai.RateLimitError) as limited:
        gateway.ask(session=session)  # the third request in a minute: anonymous allows two
    assert "tier anonymous" in limited.value.message

    ada = fresh.id_token("ada")  # e-mail verified
    for _ in range(4):
        gateway.ask(token=ada, model=BIG_MODEL)
    assert gateway.sent()["max_completion_tokens"] == 200 and gateway.sent()["model"] == BIG_MODEL
    gateway.ask(token=fresh.id_token("ida"))
    assert gateway.sent()["max_completion_tokens"] == 1000  # the id_verified tier's cap
    assert "safety_identifier" in gateway.sent() and "user" not in gateway.sent()

    tiers = [(r.get("tier"), r["user_source"], r["outcome"]) for r in gateway.audit()[-8:]]
    assert tiers == [
        ("anonymous", "session", "ok"),
        ("anonymous", "session", "invalid_request"),  # 403: the tier may not use the model
        ("anonymous", "session", "rate_limited"),
        *[("email_verified", "token", "ok")] * 4,
        ("id_verified", "token", "ok"),
    ]


def test_a_verified_user_s_identifier_cannot_be_claimed_without_the_token(
    gateway: Gateway, fresh: Provider
) -> None:
    gateway.ask(token=fresh.id_token("rex"))
    verified = gateway.audit()[-1]
    with gateway.server.client() as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], user="rex")
    claimed = gateway.audit()[-1]
    assert claimed["user_source"] == "user" and claimed["tier"] == "anonymous"
    assert claimed["safety_identifier"] != verified["safety_identifier"]


@pytest.mark.parametrize(
    ("make", "fragment", "code"),
    [
        (
            lambda p: p.id_token("ada", client=OTHER, secret=OTHER_SECRET),
            "audience 'other-app'",
            "invalid_user_token",
        ),
        (lambda p: p.mint({"exp": int(time.time()) - 600}), "expired at", "user_token_expired"),
        (
            lambda p: p.mint({"exp": int(time.time()) + 600}, key=rsa_key("key-1")),
            "signed by another key",
            None,
        ),
        (lambda p: "not.a-token", "not a JWT", None),
    ],
)
def test_a_bad_token_is_a_401_that_says_why(
    gateway: Gateway, fresh: Provider, make: Any, fragment: str, code: str | None
) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.ask(token=make(fresh))
    assert fragment in caught.value.message
    assert caught.value.code == (code or "invalid_user_token")
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "authentication_error"
    record = gateway.audit()[-1]
    assert record["outcome"] == "unauthorized" and "tier" not in record


def test_the_users_page_reads_each_user_s_latest_tier(gateway: Gateway, fresh: Provider) -> None:
    gateway.ask(token=fresh.id_token("pia"))
    wanted = gateway.audit()[-1]["safety_identifier"]
    store = open_store(StoreSettings(url=f"sqlite:///{gateway.db}"))
    try:
        # The store gets audit records from a background writer.
        wait_for(lambda: store.user_tiers("default", [wanted]), 30, "the user's tier in the store")
        assert store.user_tiers("default", [wanted]) == {wanted: "email_verified"}
    finally:
        store.close()


def test_unverified_users_are_refused_when_the_settings_say_so(fresh: Provider, tmp_path: Path) -> None:
    settings = token_settings(fresh, tmp_path, unverified="refuse")
    step = Identity(
        KeyAuthenticator([], None, default_tenant="t"), bytes(32), None, verifier=UserTokenVerifier(settings)
    )

    def run(headers: dict[str, str]) -> RequestContext:
        ctx = RequestContext(
            body={"model": MODEL, "user": "ada"}, headers=headers, audit=AuditRecord("r", "t", False)
        )
        asyncio.run(step.run(ctx))
        return ctx

    with pytest.raises(UserTokenError) as caught:
        run({})
    assert caught.value.code == "user_token_required" and "x-seawall-user-token" in caught.value.message
    ctx = run({"X-Seawall-User-Token": "Bearer " + fresh.id_token("ada")})
    assert ctx.audit.user_source == "token" and ctx.safety_id


def test_a_tier_s_thresholds_escalate_its_users_sooner() -> None:
    policy = policy_from_dict(
        {
            "name": "a",
            "purpose": "b",
            "allowed_topics": ["x"],
            "off_topic_reply": "no",
            "tiers": POLICY_TIERS,
        }
    )
    risk = RiskSettings()
    tiers = Tiers(policy.tiers, policy.limits, None, risk)
    ledger = RiskLedger(MemoryStore(), risk)
    anonymous, verified = tiers.for_claims(None), tiers.for_claims({"email_verified": True})
    for n in range(2):
        ledger.record("t", "anon", "high", f"a{n}", thresholds=anonymous.risk)
        ledger.record("t", "known", "high", f"k{n}", thresholds=verified.risk)
    anon, known = ledger.standing("t", "anon"), ledger.standing("t", "known")
    assert anon is not None and anon.status == "blocked"  # the anonymous tier blocks at 2 points
    assert known is not None and known.status == "warned"  # the settings' ladder: throttle at 3


def test_a_tier_s_throttle_rate_and_medium_score_apply_to_its_users(fresh: Provider, tmp_path: Path) -> None:
    """Through the gateway with the embedded moderation model: the anonymous tier counts a request
    medium risk at a score of 0.001 (the settings: 0.3) and lets a throttled user send one request a
    minute (the settings: 5); a verified user, whose tier sets neither, gets the settings'."""
    policy = POLICY.split("tiers:")[0] + (
        "tiers:\n"
        "  - name: email_verified\n"
        "    claims: {email_verified: true}\n"
        "  - name: anonymous\n"
        "    verified: false\n"
        "    risk: {warn_at: 1, throttle_at: 1, medium_score: 0.001,"
        " throttle: {requests: 1, window_s: 60}}\n"
    )
    (tmp_path / "policy.yaml").write_text(policy)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with stand_in(_reply) as upstream:
        settings = load_settings(
            gateway={
                "enabled": True,
                "upstream": {"base_url": f"{upstream.url}/v1", "max_retries": 0},
                "policy_file": str(tmp_path / "policy.yaml"),
                "secret_file": str(tmp_path / "secret"),
                "audit_file": str(tmp_path / "audit.jsonl"),
                "output_moderation": False,
                "topic_guard": False,
                "risk": {"enabled": True, "medium_per_high": 1},
                "user_tokens": {
                    "issuer": fresh.issuer,
                    "audiences": [APP],
                    "allow_private_hosts": True,
                    "cache_file": str(tmp_path / "jwks.json"),
                },
            },
            store={"url": f"sqlite:///{tmp_path / 'seawall.db'}"},
        )
        assert settings.gateway.risk.throttle.requests == 5 and settings.gateway.risk.medium_score == 0.3
        ada = {"x-seawall-user-token": fresh.id_token("ada")}
        anonymous = {"x-seawall-session": secrets.token_hex(8)}
        with running_server(settings) as server, server.client() as client:
            for headers in (ada, ada, ada, anonymous, anonymous):
                client.chat.completions.create(model=MODEL, messages=question, extra_headers=headers)
            with pytest.raises(openai.RateLimitError) as throttled:
                client.chat.completions.create(model=MODEL, messages=question, extra_headers=anonymous)
            client.chat.completions.create(model=MODEL, messages=question, extra_headers=ada)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    seen = [(r["tier"], r["risk"], r["outcome"]) for r in records]
    assert seen == [
        *[("email_verified", "low", "ok")] * 3,  # the settings' medium_score (0.3)
        ("anonymous", "medium", "ok"),  # medium at 0.001: one point, throttled at once
        ("anonymous", "medium", "ok"),  # the tier's throttle lets one request a minute through
        ("anonymous", None, "rate_limited"),
        ("email_verified", "low", "ok"),
    ]
    assert records[3]["escalation"]["status"] == "throttled"
    assert throttled.value.code == "user_throttled" and "1 requests per" in throttled.value.message


POLICY_TIERS = [
    {"name": "email_verified", "claims": {"email_verified": True}},
    {"name": "anonymous", "verified": False, "risk": {"warn_at": 1, "throttle_at": 2, "block_at": 2}},
]


def test_tiers_match_claims_by_json_type_and_list_membership() -> None:
    policy = policy_from_dict(
        {
            "name": "a",
            "purpose": "b",
            "allowed_topics": ["x"],
            "off_topic_reply": "no",
            "tiers": [
                {"name": "staff", "claims": {"realm_access.roles": ["staff", "admin"]}},
                {"name": "paid", "claims": {"https://example.com/plan": "pro", "email_verified": True}},
                {"name": "signed_in"},
                {"name": "anonymous", "verified": False},
            ],
        }
    )
    tiers = Tiers(policy.tiers, policy.limits, None, RiskSettings())
    assert tiers.for_claims({"realm_access": {"roles": ["user", "admin"]}}).name == "staff"
    assert tiers.for_claims({"https://example.com/plan": "pro", "email_verified": True}).name == "paid"
    assert tiers.for_claims({"https://example.com/plan": "pro", "email_verified": "true"}).name == "signed_in"
    assert tiers.for_claims({}).name == "signed_in"
    assert tiers.for_claims(None).name == "anonymous"


def test_policy_tiers_that_cannot_hold_are_refused_at_start_up(tmp_path: Path) -> None:
    base = {"name": "a", "purpose": "b", "allowed_topics": ["x"], "off_topic_reply": "no"}
    with pytest.raises(ConfigurationError, match=r"the last tier .* must match every request"):
        policy_from_dict({**base, "tiers": [{"name": "signed_in"}]})
    with pytest.raises(ConfigurationError, match="claims can only be checked on a verified token"):
        policy_from_dict({**base, "tiers": [{"name": "x", "verified": False, "claims": {"plan": "pro"}}]})
    with pytest.raises(ConfigurationError, match="given twice"):
        policy_from_dict({**base, "tiers": [{"name": "x"}, {"name": "x", "verified": False}]})
    # The tier's own rungs must rise with the ones it keeps from gateway.risk (block_at 5 there).
    policy = tmp_path / "policy.yaml"
    tiers = [{"name": "anonymous", "verified": False, "risk": {"warn_at": 8}}]
    policy.write_text(json.dumps({**base, "tiers": tiers}))
    upstream = {"base_url": "http://127.0.0.1:9/v1"}  # never called: the gateway does not start
    settings = load_settings(
        gateway={"policy_file": str(policy), "secret_file": str(tmp_path / "s"), "upstream": upstream}
    )
    from seawall.gateway.pipeline import Gateway as Pipeline
    from seawall.service import ModerationService

    with pytest.raises(ConfigurationError, match="tier 'anonymous': risk: warn_at <= throttle_at"):
        Pipeline(settings, ModerationService(settings))


def test_the_users_page_shows_each_user_s_tier(tmp_path: Path) -> None:
    from test_ui_support import (
        ADMIN,
        add_accounts,
        audit_record,
        make_settings,
        open_ui_store,
        safety_id,
        seed,
        sign_in,
        ui_server,
        ui_settings,
    )

    settings = make_settings(tmp_path)
    store = open_ui_store(settings)
    add_accounts(store)
    now = datetime.now(UTC)
    paid, guest = safety_id(21), safety_id(22)
    records = [
        audit_record(at=now - timedelta(minutes=4), user=paid, risk="high", categories=["violence"]),
        audit_record(at=now - timedelta(minutes=3), user=guest, risk="high", categories=["violence"]),
        audit_record(at=now - timedelta(minutes=2), user=paid),
    ]
    for record, tier in zip(records, ["signed_in", "anonymous", "payment_verified"], strict=True):
        record["tier"] = tier
    seed(store, records)
    ledger = RiskLedger(store, settings.gateway.risk)
    for who in (paid, guest):  # the users list shows users with risk events
        ledger.record("default", who, "high", f"event-{who[:6]}")
    try:
        with ui_server(settings, ui_settings(tmp_path), store) as running, running.http() as http:
            assert sign_in(http, *ADMIN).status_code == 303
            page = http.get("/ui/users").text
    finally:
        store.close()
    assert '<th scope="col">Tier</th>' in page
    rows = {sid: page.split(f'id="user-{sid}"', 1)[1].split("</tr>", 1)[0] for sid in (paid, guest)}
    assert '<td class="tier">payment_verified</td>' in rows[paid]  # the latest record's tier
    assert '<td class="tier">anonymous</td>' in rows[guest]


def test_the_model_list_is_the_user_s_tier_s(gateway: Gateway, fresh: Provider) -> None:
    with gateway.server.client() as client:
        anonymous = [model.id for model in client.models.list()]
        token = {"x-seawall-user-token": fresh.id_token("ada")}
        verified = [model.id for model in client.models.list(extra_headers=token)]
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list(extra_headers={"x-seawall-user-token": fresh.mint({"exp": 1})})
    assert anonymous == [MODEL]
    assert verified == [MODEL, BIG_MODEL]
    assert "expired at" in caught.value.message


def test_streams_get_the_tier_s_limits_too(gateway: Gateway, fresh: Provider) -> None:
    with gateway.server.client() as client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            stream=True,
            max_tokens=5000,
            extra_headers={"x-seawall-user-token": fresh.id_token("ida")},
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(
                model=BIG_MODEL,
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                extra_headers={"x-seawall-session": secrets.token_hex(8)},
            )
    assert text == ANSWER
    assert gateway.sent()["max_tokens"] == 1000  # the id_verified tier's cap, not the 5000 asked for
    records = gateway.audit()[-2:]
    assert [(r["tier"], r["stream"], r["outcome"]) for r in records] == [
        ("id_verified", True, "ok"),
        ("anonymous", True, "invalid_request"),
    ]


def _slow(request: Any) -> None:
    time.sleep(3)  # longer than the fetch may take


def _redirect(request: Any) -> None:
    request.send_response(302)
    request.send_header("Location", "http://127.0.0.1:9/jwks")
    request.send_header("Content-Length", "0")
    request.end_headers()


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        (send_bytes(b"<html>nope</html>", "text/html"), "is not JSON"),
        (
            send_bytes(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).encode(), "application/json"),
            "holds no usable signing key",
        ),
        (send_bytes(b"x" * (MAX_DOCUMENT_BYTES + 1), "application/json"), "larger than"),
        (_redirect, "answered HTTP 302"),  # redirects are not followed
        (_slow, "within 0.5 s"),
    ],
)
def test_a_jwks_that_cannot_be_used_is_a_503_that_says_why(tmp_path: Path, route: Any, fragment: str) -> None:
    with ImageHost() as host:
        host.routes["/jwks"] = route
        settings = UserTokenSettings(
            issuer="https://id.example",
            audiences=["app"],
            jwks_url=host.url("/jwks"),
            allow_private_hosts=True,
            timeout_s=0.5,
            cache_file=tmp_path / "jwks.json",
        )
        keys = ProviderKeys(settings)
        with pytest.raises(IdentityProviderError) as caught:
            asyncio.run(keys.candidates("key-1"))
    assert fragment in caught.value.message and caught.value.status_code == 503
    assert not (tmp_path / "jwks.json").exists()  # nothing unusable is cached


def test_a_discovery_document_for_another_issuer_is_not_trusted(tmp_path: Path) -> None:
    with ImageHost() as host:
        issuer = host.url("")
        document = {"issuer": "https://evil.example", "jwks_uri": host.url("/jwks")}
        host.routes["/.well-known/openid-configuration"] = send_bytes(
            json.dumps(document).encode(), "application/json"
        )
        settings = token_settings_for(issuer, tmp_path)
        with pytest.raises(IdentityProviderError, match=r"names the issuer 'https://evil\.example'"):
            asyncio.run(ProviderKeys(settings).candidates(None))
        assert host.hits == ["/.well-known/openid-configuration"]  # its jwks_uri was never fetched


def token_settings_for(issuer: str, tmp: Path) -> UserTokenSettings:
    return UserTokenSettings(
        issuer=issuer, audiences=["app"], allow_private_hosts=True, cache_file=tmp / "jwks.json"
    )
