"""Identity, standing and limits of the gateway: app API keys, the risk ledger and its
escalation ladder, rate limits, anonymous sessions, and the audit in the store.

The ledger and limiter are tested on a real SQLite store with a controllable clock; the
end-to-end tests run the real server in front of a loopback upstream with the official SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import SecretStr

from backend_standins import stand_in
from conftest import running_server
from seawall.errors import AuthenticationError, ConfigurationError, PermissionDeniedError, RateLimitError
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.identity import SESSION_COOKIE, SESSION_HEADER, hash_api_key, safety_identifier
from seawall.gateway.pipeline import REQUEST_ID_HEADER, WARNING_HEADER
from seawall.gateway.ratelimit import RateLimiter
from seawall.gateway.risk import RiskLedger, risk_level
from seawall.settings import RateLimitSettings, RiskSettings, StoreSettings
from seawall.store import open_store
from seawall.store.base import Store, UserState
from test_gateway_pipeline import (
    CLEAN_ANSWER,
    MODEL,
    QUESTION,
    THREAT,
    Behaviour,
    gateway_settings,
    make_reply,
    question,
)

TENANT = "acme"
SAFETY_ID = "a" * 64


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'seawall.db'}"))
    yield opened
    opened.close()


# ----------------------------------------------------------------- risk levels


def test_risk_level_from_flags_scores_and_injection() -> None:
    assert risk_level(flagged=True, medium_score=0.3) == "high"
    assert risk_level(flagged=False, scores=[0.1, 0.31], medium_score=0.3) == "medium"
    assert risk_level(flagged=False, scores=[0.1], injection=True, medium_score=0.3) == "medium"
    assert risk_level(flagged=False, scores=[0.1, 0.29], medium_score=0.3) == "low"


# ----------------------------------------------------------------- the ladder


def test_ladder_warns_throttles_blocks_and_sends_to_review(store: Store) -> None:
    clock = Clock()
    ledger = RiskLedger(store, RiskSettings(), clock=clock)  # warn 1, throttle 3, block 5, review 10
    assert ledger.admit(TENANT, SAFETY_ID) is None
    assert ledger.record(TENANT, SAFETY_ID, "low", "r0") is None  # low risk is not recorded

    assert ledger.record(TENANT, SAFETY_ID, "high", "r1", ["violence"]).status == "warned"  # type: ignore[union-attr]
    assert ledger.admit(TENANT, SAFETY_ID).status == "warned"  # type: ignore[union-attr]
    assert ledger.record(TENANT, SAFETY_ID, "high", "r2") is None  # 2 points: still warned
    throttled = ledger.record(TENANT, SAFETY_ID, "high", "r3")
    assert throttled is not None and throttled.status == "throttled"
    assert throttled.until == clock.now + timedelta(seconds=3600)

    # a throttled user gets 5 requests a minute, then 429 with a retry time
    for _ in range(5):
        ledger.admit(TENANT, SAFETY_ID)
    with pytest.raises(RateLimitError) as limited:
        ledger.admit(TENANT, SAFETY_ID)
    # a sliding window: 5 hits at the start of a minute keep the count above 4 until 12 s into the next
    assert limited.value.code == "user_throttled" and limited.value.retry_after == pytest.approx(72, abs=1)

    ledger.record(TENANT, SAFETY_ID, "high", "r4")
    blocked = ledger.record(TENANT, SAFETY_ID, "high", "r5")
    assert blocked is not None and blocked.status == "blocked"
    with pytest.raises(PermissionDeniedError) as denied:
        ledger.admit(TENANT, SAFETY_ID)
    assert denied.value.code == "user_blocked" and denied.value.status_code == 403
    assert "2026-01-02 12:00 UTC" in denied.value.message  # says until when (block_s = 1 day)
    assert "5 high-risk" in denied.value.message  # and why

    for number in range(6, 11):
        ledger.record(TENANT, SAFETY_ID, "high", f"r{number}")
    with pytest.raises(PermissionDeniedError) as review:
        ledger.admit(TENANT, SAFETY_ID)
    assert review.value.code == "user_under_review"
    clock.advance(days=30)  # review does not expire by itself
    with pytest.raises(PermissionDeniedError):
        ledger.admit(TENANT, SAFETY_ID)


def test_medium_events_weigh_a_third_and_points_decay(store: Store) -> None:
    clock = Clock()
    settings = RiskSettings(warn_at=1, throttle_at=2, block_at=None, review_at=None)
    ledger = RiskLedger(store, settings, clock=clock)
    assert ledger.record(TENANT, SAFETY_ID, "medium", "m1") is None
    assert ledger.record(TENANT, SAFETY_ID, "medium", "m2") is None
    assert ledger.record(TENANT, SAFETY_ID, "medium", "m3").status == "warned"  # type: ignore[union-attr]
    assert ledger.points(TENANT, SAFETY_ID) == (1, 0, 3)
    clock.advance(hours=25)  # the events left the 24 h window
    assert ledger.points(TENANT, SAFETY_ID) == (0, 0, 0)
    assert ledger.admit(TENANT, SAFETY_ID) is None  # the warning expired with the window


def test_block_expires_and_a_repeat_offender_is_blocked_again_at_once(store: Store) -> None:
    clock = Clock()
    settings = RiskSettings(warn_at=None, throttle_at=None, block_at=2, review_at=None, block_s=600)
    ledger = RiskLedger(store, settings, clock=clock)
    ledger.record(TENANT, SAFETY_ID, "high", "a")
    assert ledger.record(TENANT, SAFETY_ID, "high", "b").status == "blocked"  # type: ignore[union-attr]
    clock.advance(seconds=601)
    assert ledger.admit(TENANT, SAFETY_ID) is None  # the block ended
    assert ledger.record(TENANT, SAFETY_ID, "high", "c").status == "blocked"  # type: ignore[union-attr]


def test_admin_clear_unblocks_and_resets_points(store: Store) -> None:
    clock = Clock()
    ledger = RiskLedger(store, RiskSettings(), clock=clock)
    for number in range(10):
        ledger.record(TENANT, SAFETY_ID, "high", f"r{number}")
    with pytest.raises(PermissionDeniedError):
        ledger.admit(TENANT, SAFETY_ID)
    clock.advance(seconds=1)
    cleared = ledger.clear(TENANT, SAFETY_ID, by="admin", reason="false positives")
    assert cleared.status == "ok" and cleared.updated_by == "admin"
    assert ledger.admit(TENANT, SAFETY_ID) is None
    assert ledger.points(TENANT, SAFETY_ID)[0] == 0
    clock.advance(seconds=1)
    assert ledger.record(TENANT, SAFETY_ID, "high", "again").status == "warned"  # type: ignore[union-attr]


def test_manual_block_with_and_without_duration(store: Store) -> None:
    clock = Clock()
    ledger = RiskLedger(store, RiskSettings(), clock=clock)
    ledger.block(TENANT, SAFETY_ID, by="admin", reason="abuse report 42", duration_s=3600)
    with pytest.raises(PermissionDeniedError, match="abuse report 42"):
        ledger.admit(TENANT, SAFETY_ID)
    clock.advance(hours=2)
    assert ledger.admit(TENANT, SAFETY_ID) is None
    ledger.block(TENANT, SAFETY_ID, by="admin", reason="until we talk")
    clock.advance(days=365)
    with pytest.raises(PermissionDeniedError, match="until we talk"):
        ledger.admit(TENANT, SAFETY_ID)


def test_users_are_separate_per_tenant(store: Store) -> None:
    ledger = RiskLedger(store, RiskSettings(warn_at=None, throttle_at=None, block_at=1, review_at=None))
    ledger.record("tenant-a", SAFETY_ID, "high", "x")
    with pytest.raises(PermissionDeniedError):
        ledger.admit("tenant-a", SAFETY_ID)
    assert ledger.admit("tenant-b", SAFETY_ID) is None


def test_admission_counts_the_rate_limits_only_for_a_user_it_lets_on(store: Store) -> None:
    """The standing and the rate limits in one store call: a refused user uses none of its limits,
    a throttled one counts against its throttle first, a full limit is handed back (not raised)."""
    clock = Clock()
    ledger = RiskLedger(store, RiskSettings(), clock=clock)
    limiter = RateLimiter(store, RateLimitSettings(per_user={"requests": 2, "window_s": 60}), clock=clock)
    counts = limiter.counts(None, TENANT, SAFETY_ID)
    assert [count.hit.bucket for count in counts] == [f"user:{TENANT}:{SAFETY_ID}"]
    assert ledger.admit_counting(TENANT, SAFETY_ID, counts) == (None, None)
    ledger.block(TENANT, SAFETY_ID, by="admin", reason="abuse report 7", duration_s=60)
    for _ in range(3):  # refused before the rate limit: none of these is counted
        with pytest.raises(PermissionDeniedError, match="abuse report 7"):
            ledger.admit_counting(TENANT, SAFETY_ID, counts)
    clock.advance(seconds=61)  # the block ended; one of the two requests is left (of this window)
    assert ledger.admit_counting(TENANT, SAFETY_ID, counts)[1] is None
    state, refused = ledger.admit_counting(TENANT, SAFETY_ID, counts)
    assert state is None and isinstance(refused, RateLimitError) and "this user" in refused.message
    # Throttled: the throttle's own bucket first; over it, 429 user_throttled and nothing else counted.
    other = "b" * 64
    ledger.store.set_user(
        UserState(TENANT, other, "throttled", clock.now + timedelta(hours=1), "3 points", clock.now)
    )
    mine = limiter.counts(None, TENANT, other)
    statuses = []
    for _ in range(2):
        state, refused = ledger.admit_counting(TENANT, other, mine)
        statuses.append((state.status if state else None, refused))
    assert statuses == [("throttled", None), ("throttled", None)]
    throttle = ledger.settings.throttle  # 5 requests per 60 s
    bucket = f"throttle:{TENANT}:{other}"
    assert store.hit(bucket, throttle.requests, throttle.window_s, clock.now).count == 3
    while store.hit(bucket, throttle.requests, throttle.window_s, clock.now).allowed:
        pass
    with pytest.raises(RateLimitError) as throttled:
        ledger.admit_counting(TENANT, other, mine)
    assert throttled.value.code == "user_throttled"
    assert store.hit(f"user:{TENANT}:{other}", 3, 60, clock.now).count == 3  # 2 counted, this one


# ----------------------------------------------------------------- rate limits and keys


def test_rate_limits_per_user_and_per_key(store: Store) -> None:
    clock = Clock()
    limiter = RateLimiter(
        store,
        RateLimitSettings(per_user={"requests": 3, "window_s": 60}, per_key={"requests": 4, "window_s": 60}),
        clock=clock,
    )
    for _ in range(3):
        limiter.check("key_1", TENANT, "user-1")
    with pytest.raises(RateLimitError) as user_limited:
        limiter.check("key_1", TENANT, "user-1")
    assert "this user" in user_limited.value.message and user_limited.value.retry_after > 0
    limiter.check("key_1", TENANT, "user-2")  # the key's 4th request
    with pytest.raises(RateLimitError, match="this API key"):
        limiter.check("key_1", TENANT, "user-3")
    limiter.check("key_2", TENANT, "user-3")  # another key has its own budget
    clock.advance(seconds=121)  # both windows passed
    limiter.check("key_1", TENANT, "user-1")


def test_key_authenticator_static_store_revoked_and_optional(store: Store) -> None:
    open_access = KeyAuthenticator([], store, default_tenant=TENANT)
    assert open_access.authenticate(None).key_id is None  # no key exists: none is required

    stored = store.create_key("bot", "shop", hash_api_key("sw-secret-key"), "sw-secre")
    access = KeyAuthenticator([], store, default_tenant=TENANT)
    caller = access.authenticate("Bearer sw-secret-key")
    assert (caller.key_id, caller.tenant) == (stored.id, "shop")
    with pytest.raises(AuthenticationError, match="Missing"):
        access.authenticate(None)
    with pytest.raises(AuthenticationError, match="Incorrect"):
        access.authenticate("Bearer sw-wrong")
    store.revoke_key(stored.id)
    fresh = KeyAuthenticator([], store, default_tenant=TENANT)  # no cached lookup
    with pytest.raises(AuthenticationError) as revoked:
        fresh.authenticate("Bearer sw-secret-key")
    assert revoked.value.code == "api_key_revoked"

    static = KeyAuthenticator([SecretStr("from-settings")], None, default_tenant=TENANT)
    assert static.authenticate("Bearer from-settings").tenant == TENANT
    with pytest.raises(AuthenticationError):
        static.authenticate("Bearer from-setting")
    forced = KeyAuthenticator([], None, default_tenant=TENANT, require=True)
    with pytest.raises(AuthenticationError):
        forced.authenticate(None)


# ----------------------------------------------------------------- end to end


def _settings(tmp: Path, url: str, **gateway: Any) -> Any:
    """The pipeline tests' settings with the ledger and per-user limit back on (unless given)."""
    gateway.setdefault("risk", {"enabled": True})
    gateway.setdefault("rate_limits", {"per_user": {"requests": 60, "window_s": 60}})
    return gateway_settings(tmp, url, **gateway)


def test_keys_made_in_the_store_guard_the_gateway_and_name_the_tenant(tmp_path: Path) -> None:
    behaviour = Behaviour()
    with stand_in(make_reply(behaviour)) as upstream:
        settings = _settings(tmp_path, upstream.url)
        store = open_store(settings.store)
        key = "sw-" + "k" * 43
        stored = store.create_key("support bot", "shop", hash_api_key(key), key[:8])
        with running_server(settings) as server:
            with server.client(api_key="sw-wrong") as client, pytest.raises(openai.AuthenticationError):
                client.chat.completions.create(model=MODEL, messages=question())
            with server.client(api_key=key) as client:
                answer = client.chat.completions.create(model=MODEL, messages=question(), user="u1")
                assert answer.choices[0].message.content
                assert [m.id for m in client.models.list()]
            with server.http() as http:
                assert http.get("/v1/models").status_code == 401
        sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
        assert len(sent) == 1  # the refused request never reached the upstream
        secret = (tmp_path / "state" / "secret").read_bytes()
        assert sent[0].body["safety_identifier"] == safety_identifier(secret, "shop", "u1")
        records = store.search_audit()
        assert {r["outcome"] for r in records} == {"unauthorized", "ok"}
        ok = next(r for r in records if r["outcome"] == "ok")
        assert ok["key_id"] == stored.id and ok["tenant"] == "shop" and ok["risk"] == "low"
        store.close()


def test_repeat_violations_escalate_to_a_block_that_says_why_and_until_when(tmp_path: Path) -> None:
    behaviour = Behaviour()
    with stand_in(make_reply(behaviour)) as upstream:
        risk = {"enabled": True, "warn_at": 1, "throttle_at": None, "block_at": 2, "review_at": None}
        settings = _settings(tmp_path, upstream.url, risk=risk)
        with running_server(settings) as server, server.http() as http:

            def send(text: str, user: str = "mallory") -> Any:
                body = {"model": MODEL, "messages": question(text), "user": user}
                return http.post("/v1/chat/completions", json=body)

            first = send(THREAT)
            assert first.status_code == 400
            warned = send(QUESTION)
            assert warned.status_code == 200 and warned.headers[WARNING_HEADER].startswith("warned")
            assert send(THREAT).status_code == 400
            blocked = send(QUESTION)
            assert blocked.status_code == 403
            error = blocked.json()["error"]
            assert error["code"] == "user_blocked" and "until" in error["message"]
            assert "2 high-risk" in error["message"]
            assert send(QUESTION, user="bob").status_code == 200  # others are not affected
        store = open_store(settings.store)
        records = {r["request_id"]: r for r in store.search_audit()}
        assert records[first.headers[REQUEST_ID_HEADER]]["risk"] == "high"
        assert records[first.headers[REQUEST_ID_HEADER]]["escalation"]["status"] == "warned"
        assert records[blocked.headers[REQUEST_ID_HEADER]]["outcome"] == "user_blocked"
        summary = store.org_summary(TENANT_OF_TESTS, datetime.now(UTC) - timedelta(hours=1))
        assert summary.events.get("high") == 2 and summary.users_by_status.get("blocked") == 1
        store.close()


TENANT_OF_TESTS = "acme"  # gateway_settings' tenant


def test_filtered_answers_are_counted_per_model_and_never_charged_to_the_user(tmp_path: Path) -> None:
    """A harmless prompt whose answer output moderation stopped leaves its user in good standing."""
    behaviour = Behaviour(answer=f"Sure. {THREAT}")
    with stand_in(make_reply(behaviour)) as upstream:
        risk = {"enabled": True, "warn_at": 1, "throttle_at": None, "block_at": 2, "review_at": None}
        settings = _settings(tmp_path, upstream.url, risk=risk)
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": question(), "user": "ivan"}
            plain = [http.post("/v1/chat/completions", json=body) for _ in range(3)]
            streamed = http.post("/v1/chat/completions", json={**body, "stream": True})
            control = http.post("/v1/chat/completions", json={**body, "messages": question(THREAT)})
    for response in plain:
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["finish_reason"] == "content_filter"
        assert WARNING_HEADER not in response.headers
    assert streamed.status_code == 200 and "content_policy_violation" in streamed.text
    assert WARNING_HEADER not in streamed.headers
    assert control.status_code == 400  # what the user sends is still charged
    store = open_store(settings.store)
    secret = (tmp_path / "state" / "secret").read_bytes()
    since = datetime.now(UTC) - timedelta(hours=1)
    state = store.get_user(TENANT_OF_TESTS, safety_identifier(secret, TENANT_OF_TESTS, "ivan"))
    assert state is not None and state.status == "warned" and "1 high-risk" in state.reason
    summary = store.org_summary(TENANT_OF_TESTS, since)
    assert summary.events == {"medium": 0, "high": 1}
    assert summary.filtered_answers == {MODEL: 4}
    store.close()


def test_per_user_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    with stand_in(make_reply(Behaviour())) as upstream:
        limits = {"per_user": {"requests": 2, "window_s": 60}}
        settings = _settings(tmp_path, upstream.url, rate_limits=limits)
        with running_server(settings) as server, server.client() as client:
            for _ in range(2):
                client.chat.completions.create(model=MODEL, messages=question(), user="carol")
            with pytest.raises(openai.RateLimitError) as limited:
                client.chat.completions.create(model=MODEL, messages=question(), user="carol")
            assert limited.value.code == "rate_limit_exceeded"
            assert 1 <= int(limited.value.response.headers["retry-after"]) <= 120  # sliding: < 2 windows
            client.chat.completions.create(model=MODEL, messages=question(), user="dave")


def test_anonymous_clients_get_a_session_back_and_keep_it(tmp_path: Path) -> None:
    with stand_in(make_reply(Behaviour())) as upstream:
        settings = _settings(tmp_path, upstream.url)
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": question()}
            first = http.post("/v1/chat/completions", json=body)
            session = first.headers[SESSION_HEADER]
            assert first.cookies[SESSION_COOKIE] == session
            assert "httponly" in first.headers["set-cookie"].lower()
            again = http.post("/v1/chat/completions", json=body)  # the client sends the cookie back
            assert SESSION_HEADER not in again.headers
            streamed = http.post("/v1/chat/completions", json={**body, "stream": True})
            assert SESSION_HEADER not in streamed.headers
        sent = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
        assert len({r.body["safety_identifier"] for r in sent}) == 1  # one session, one identifier


def test_a_refused_anonymous_client_gets_its_session_back_and_is_escalated(tmp_path: Path) -> None:
    """The session minted for a first request that is refused comes back with the 400, so a client
    that keeps cookies is counted as one abuser, not a fresh stranger each time."""
    with stand_in(make_reply(Behaviour())) as upstream:
        risk = {"enabled": True, "warn_at": 1, "throttle_at": None, "block_at": 2, "review_at": None}
        settings = _settings(tmp_path, upstream.url, risk=risk)
        with running_server(settings) as server, server.http() as http:
            threat = {"model": MODEL, "messages": question(THREAT)}
            first = http.post("/v1/chat/completions", json=threat)
            assert first.status_code == 400
            session = first.headers[SESSION_HEADER]
            assert first.cookies[SESSION_COOKIE] == session
            second = http.post("/v1/chat/completions", json=threat)  # the cookie goes back
            assert second.status_code == 400 and SESSION_HEADER not in second.headers
            blocked = http.post("/v1/chat/completions", json={"model": MODEL, "messages": question()})
            assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "user_blocked"
        assert [r for r in upstream.requests if r.path == "/v1/chat/completions"] == []


def test_categories_set_to_flag_pass_but_count_as_high_risk(tmp_path: Path) -> None:
    from seawall.categories import CATEGORIES

    with stand_in(make_reply(Behaviour())) as upstream:
        settings = _settings(tmp_path, upstream.url, category_actions=dict.fromkeys(CATEGORIES, "flag"))
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": question(THREAT), "user": "grace"}
            response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 200  # let through to the model
        assert response.headers[WARNING_HEADER].startswith("warned")  # and counted
        store = open_store(settings.store)
        [record] = [r for r in store.search_audit() if r["request_id"] == response.headers[REQUEST_ID_HEADER]]
        [decision] = [d for d in record["decisions"] if d["step"] == "input_moderation"]
        assert decision["action"] == "flag" and decision["categories"] and record["risk"] == "high"
        store.close()


def test_unknown_category_in_actions_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="violense"):
        _settings(tmp_path, "http://127.0.0.1:9", category_actions={"violense": "flag"})


def test_content_is_audited_only_when_the_settings_say_so(tmp_path: Path) -> None:
    with stand_in(make_reply(Behaviour())) as upstream:
        settings = _settings(tmp_path, upstream.url, audit_content=True)
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": question(), "user": "heidi"}
            plain = http.post("/v1/chat/completions", json=body)
            streamed = http.post("/v1/chat/completions", json={**body, "stream": True})
            _ = streamed.text
        lines = (tmp_path / "audit.jsonl").read_text().splitlines()
        records = {r["request_id"]: r for r in map(json.loads, lines)}
        for response in (plain, streamed):
            content = records[response.headers[REQUEST_ID_HEADER]]["content"]
            assert content["messages"] == question()
            assert content["answer"] == [CLEAN_ANSWER]
        assert "heidi" not in (tmp_path / "audit.jsonl").read_text()  # still no raw user id


def test_anonymous_requests_without_a_session_are_limited_per_address(tmp_path: Path) -> None:
    """A client that drops the session cookie gets a new session each time; its address is counted."""
    with stand_in(make_reply(Behaviour())) as upstream:
        limits = {"per_user": {"requests": 100}, "per_address_without_session": {"requests": 3}}
        settings = _settings(tmp_path, upstream.url, rate_limits=limits)
        with running_server(settings) as server:
            body = {"model": MODEL, "messages": question()}
            statuses = []
            for _ in range(4):
                with server.http() as http:  # a fresh client: no cookie, no session header
                    statuses.append(http.post("/v1/chat/completions", json=body).status_code)
            assert statuses == [200, 200, 200, 429]
            with server.http() as http:  # a client that keeps its session is counted per user
                first = http.post("/v1/chat/completions", json=body)
                assert first.status_code == 429  # minting this session still came without one
                session = {SESSION_HEADER: "an-existing-session"}
                assert http.post("/v1/chat/completions", json=body, headers=session).status_code == 200
