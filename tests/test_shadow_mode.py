"""Shadow mode per control (``gateway.modes``): the same request that a control refuses, filters,
cuts, holds or answers itself in enforce mode goes through in shadow mode with the upstream's
answer, the audit record says what the control would have done, the user's ledger is not charged,
and ``seawall_gateway_shadow_total`` counts it.

Two real servers on loopback in front of one loopback upstream stand-in, with the embedded
moderation model, a SQLite store, the risk ledger and review on: one with every control enforced
(the default), one with every control in shadow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backend_standins import Recorded, StandIn, stand_in
from conftest import RunningServer, running_server, wait_for_audit
from seawall.errors import ConfigurationError
from seawall.gateway.identity import safety_identifier
from seawall.gateway.pipeline import REQUEST_ID_HEADER, WARNING_HEADER
from seawall.gateway.risk import RiskLedger
from seawall.settings import ControlModes, ExtraStep, Settings, load_settings
from seawall.store import open_store
from seawall.store.base import AuditQuery, Store
from test_gateway_pipeline import (
    CLEAN_ANSWER,
    INJECTION,
    LONG_BENIGN,
    MODEL,
    POLICY,
    QUESTION,
    REFUSAL,
    THREAT,
    Behaviour,
    collect,
    make_reply,
)
from test_gateway_routing import METADATA, OFF_TOPIC, RETURN_QUESTION
from test_gateway_steps import CANNED, plugin  # noqa: F401  (plugin: a fixture, a real distribution)
from test_gateway_steps import settings_for as steps_settings

TENANT = "acme"
ADMIN = "admin-token-shadow-0123456789"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ALL_SHADOW = dict.fromkeys(ControlModes.model_fields, "shadow")
THREAT_ARGUMENTS = json.dumps({"to": "neighbour", "text": THREAT})


@dataclass
class Side:
    """One server (enforce or shadow) and what it keeps."""

    server: RunningServer
    settings: Settings
    tmp: Path

    @property
    def store(self) -> Store:
        return open_store(self.settings.store)

    def safety_id(self, user: str) -> str:
        secret = (self.tmp / "secret").read_bytes()
        return safety_identifier(secret, TENANT, user)

    def record(self, response: httpx.Response | Any) -> dict[str, Any]:
        request_id = response.headers[REQUEST_ID_HEADER]
        lines = (self.tmp / "audit.jsonl").read_text().splitlines()
        [record] = [r for r in map(json.loads, lines) if r["request_id"] == request_id]
        return record

    def shadow_count(self, step: str, would: str) -> float:
        with httpx.Client(base_url=self.server.root, timeout=30) as http:
            text = http.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
        pattern = rf'^seawall_gateway_shadow_total\{{step="{step}",would="{would}"\}} (\S+)$'
        found = re.search(pattern, text, flags=re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def high_events(self, user: str) -> int:
        store = self.store
        try:
            since = datetime.now(UTC) - timedelta(hours=1)
            return store.count_events(TENANT, self.safety_id(user), "high", since)
        finally:
            store.close()


@dataclass
class Sides:
    enforce: Side
    shadow: Side
    upstream: StandIn
    behaviour: Behaviour

    def last_chat(self) -> Recorded:
        return [r for r in self.upstream.requests if r.path == "/v1/chat/completions"][-1]


def settings_for(tmp: Path, upstream_url: str, modes: dict[str, str], **gateway: Any) -> Settings:
    policy = tmp / "policy.yaml"
    if not policy.exists():
        policy.write_text(POLICY)
    return load_settings(
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0, "total_timeout_s": 20},
            "policy_file": str(policy),
            "secret_file": str(tmp / "secret"),
            "audit_file": str(tmp / "audit.jsonl"),
            "tenant": TENANT,
            "refusal_text": REFUSAL,
            "untrusted_action": "refuse",
            "stream_guard": {"hold_back_chars": 200, "scan_every_chars": 50},
            "risk": {"enabled": True, "warn_at": 1, "throttle_at": None, "block_at": 3, "review_at": None},
            "rate_limits": {"per_user": {"requests": 3, "window_s": 600}},
            "modes": modes,
            **gateway,
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
        review={
            "enabled": True,
            "detect_domains": False,  # held only when the request declares a domain
            "uncertain_low": None,
            "admin_tokens": {"root": ADMIN},
        },
    )


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    behaviour = Behaviour()
    with stand_in(make_reply(behaviour)) as upstream:
        enforce_tmp, shadow_tmp = tmp_path_factory.mktemp("enforce"), tmp_path_factory.mktemp("shadow")
        enforce_settings = settings_for(enforce_tmp, upstream.url, {})
        shadow_settings = settings_for(shadow_tmp, upstream.url, ALL_SHADOW)
        with running_server(enforce_settings) as enforce, running_server(shadow_settings) as shadow:
            yield Sides(
                Side(enforce, enforce_settings, enforce_tmp),
                Side(shadow, shadow_settings, shadow_tmp),
                upstream,
                behaviour,
            )


@pytest.fixture
def gw(sides: Sides) -> Sides:
    for default in fields(Behaviour):  # back to the clean answer
        setattr(sides.behaviour, default.name, default.default)
    return sides


def ask(side: Side, text: str, user: str, **extra: Any) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "user": user, **extra}
    with side.server.http() as http:
        return http.post("/v1/chat/completions", json=body)


def entry_of(record: dict[str, Any], step: str) -> dict[str, Any]:
    [entry] = [e for e in record.get("shadow", []) if e["step"] == step]
    return entry


# ----------------------------------------------------------------- the default


def test_every_control_is_enforced_unless_set_to_shadow(monkeypatch: pytest.MonkeyPatch) -> None:
    modes = Settings().gateway.modes
    assert set(modes.model_dump().values()) == {"enforce"}
    assert ExtraStep(name="mine", before="prompt").mode == "enforce"
    monkeypatch.setenv("SEAWALL_GATEWAY__MODES__OUTPUT_MODERATION", "shadow")
    from_env = load_settings().gateway.modes
    assert from_env.output_moderation == "shadow" and from_env.input_moderation == "enforce"
    with pytest.raises(ConfigurationError, match="input_moderation"):
        load_settings(gateway={"modes": {"input_moderation": "watch"}})
    with pytest.raises(ConfigurationError, match="rate_limits"):  # capacity is never shadowed
        load_settings(gateway={"modes": {"rate_limits": "shadow"}})


# ----------------------------------------------------------------- input moderation


def test_input_moderation_in_shadow_lets_the_threat_through_and_charges_nobody(gw: Sides) -> None:
    before = gw.shadow.shadow_count("input_moderation", "refuse")
    refused = ask(gw.enforce, THREAT, "ivy")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_policy_violation"
    assert gw.enforce.high_events("ivy") == 1  # enforce charges the user's ledger

    passed = ask(gw.shadow, THREAT, "ivy")
    assert passed.status_code == 200, passed.text
    assert passed.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    assert THREAT in gw.last_chat().body["messages"][-1]["content"]  # it went upstream
    record = gw.shadow.record(passed)
    entry = entry_of(record, "input_moderation")
    assert entry["would"] == "refuse" and entry["code"] == "content_policy_violation"
    assert entry["status"] == 400 and entry["outcome"] == "refused_input"
    assert "violence" in entry["categories"] and entry["decisions"][0]["scores"]["violence"] > 0.5
    # The would-be refusal is not a decision: no risk, no ledger event, no escalation, no warning.
    assert all(d["step"] != "input_moderation" for d in record["decisions"])
    assert record["outcome"] == "ok" and record["risk"] == "low" and record["escalation"] is None
    assert gw.shadow.high_events("ivy") == 0 and WARNING_HEADER not in passed.headers
    assert ask(gw.shadow, QUESTION, "ivy").status_code == 200  # and still in good standing
    assert gw.shadow.shadow_count("input_moderation", "refuse") == before + 1


def test_a_clean_request_leaves_no_shadow_entry(gw: Sides) -> None:
    response = ask(gw.shadow, QUESTION, "quinn")
    assert response.status_code == 200
    assert "shadow" not in gw.shadow.record(response)


# ----------------------------------------------------------------- untrusted content


def test_untrusted_content_in_shadow_passes_the_injected_document_on(gw: Sides) -> None:
    documents = {"seawall": {"documents": [{"source": "web/evil.html", "text": INJECTION}]}}
    refused = ask(gw.enforce, QUESTION, "uma", **documents)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "untrusted_content_rejected"

    passed = ask(gw.shadow, QUESTION, "uma", **documents)
    assert passed.status_code == 200, passed.text
    assert passed.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    assert INJECTION in gw.last_chat().raw.decode()  # fenced into the prompt, not dropped
    entry = entry_of(gw.shadow.record(passed), "untrusted_content")
    assert entry["would"] == "refuse" and entry["code"] == "untrusted_content_rejected"
    assert "prompt_injection" in entry["categories"]
    assert gw.shadow.record(passed)["risk"] == "low"  # an injection would count as medium
    assert gw.shadow.shadow_count("untrusted_content", "refuse") >= 1


# ----------------------------------------------------------------- standing and rate limits


def test_standing_in_shadow_lets_a_blocked_user_through_and_rate_limits_still_hold(gw: Sides) -> None:
    for side in (gw.enforce, gw.shadow):
        ask(side, QUESTION, "walt")  # the user exists (and the secret file)
        store = side.store
        RiskLedger(store, side.settings.gateway.risk).block(
            TENANT, side.safety_id("walt"), "test", "abuse report 17", duration_s=3600
        )
        store.close()
    blocked = ask(gw.enforce, QUESTION, "walt")
    assert blocked.status_code == 403 and blocked.json()["error"]["code"] == "user_blocked"

    before = gw.shadow.shadow_count("standing", "refuse")
    passed = ask(gw.shadow, QUESTION, "walt")
    assert passed.status_code == 200, passed.text
    assert passed.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    record = gw.shadow.record(passed)
    entry = entry_of(record, "standing")
    assert entry["would"] == "refuse" and entry["code"] == "user_blocked"
    assert entry["outcome"] == "user_blocked" and record["outcome"] == "ok"
    assert gw.shadow.shadow_count("standing", "refuse") == before + 1
    # Rate limits are capacity, not a judgement: enforced in shadow mode too (3 per user here).
    assert ask(gw.shadow, QUESTION, "walt").status_code == 200
    assert ask(gw.shadow, QUESTION, "walt").status_code == 429


# ----------------------------------------------------------------- output moderation


def test_output_moderation_in_shadow_releases_the_plain_answer_unchanged(gw: Sides) -> None:
    gw.behaviour.answer = f"Sure. {THREAT}"
    filtered = ask(gw.enforce, QUESTION, "olga")
    assert filtered.json()["choices"][0]["finish_reason"] == "content_filter"
    assert filtered.json()["choices"][0]["message"]["content"] == REFUSAL

    before = gw.shadow.shadow_count("output_moderation", "filter")
    passed = ask(gw.shadow, QUESTION, "olga")
    choice = passed.json()["choices"][0]
    assert choice["message"]["content"] == f"Sure. {THREAT}" and choice["finish_reason"] == "stop"
    record = gw.shadow.record(passed)
    entry = entry_of(record, "output_moderation")
    assert entry["would"] == "filter" and entry["outcome"] == "filtered_output"
    assert "violence" in entry["categories"]
    assert record["outcome"] == "ok" and all(d["step"] != "output_moderation" for d in record["decisions"])
    assert gw.shadow.shadow_count("output_moderation", "filter") == before + 1
    store = gw.shadow.store
    try:  # an answer stopped only in shadow is not counted against the model either
        summary = store.org_summary(TENANT, datetime.now(UTC) - timedelta(hours=1))
        assert summary.filtered_answers == {}
    finally:
        store.close()


def test_the_stream_guard_in_shadow_releases_everything_and_audits_the_cut(gw: Sides) -> None:
    answer = LONG_BENIGN + THREAT + " " + LONG_BENIGN
    gw.behaviour.answer = answer
    with gw.enforce.server.client() as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True, user="sven"
        )
        cut, error, _ = collect(stream)
    assert error is not None and "kill" not in cut

    before = gw.shadow.shadow_count("output_moderation", "block")
    with gw.shadow.server.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": QUESTION}], stream=True, user="sven"
        )
        text, error, finish = collect(raw.parse())
    assert error is None and finish == "stop" and text == answer  # the text went out unchanged
    record = gw.shadow.record(raw)
    entry = entry_of(record, "output_moderation")
    assert entry["would"] == "block" and entry["code"] == "content_policy_violation"
    assert "violence" in entry["categories"]
    [decision] = entry["decisions"]
    # Where the guard would have cut: it would have released only the text before the threat.
    assert decision["released_chars"] < len(LONG_BENIGN) + len(THREAT)
    assert decision["received_chars"] >= len(LONG_BENIGN) + len(THREAT)
    assert record["outcome"] == "ok" and record["error"] is None
    assert gw.shadow.shadow_count("output_moderation", "block") == before + 1


def test_tool_call_moderation_in_shadow_releases_the_streamed_tool_call(gw: Sides) -> None:
    gw.behaviour.answer = ""
    gw.behaviour.tool_arguments = THREAT_ARGUMENTS
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": QUESTION}],
        "user": "tess",
        "stream": True,
    }
    with gw.enforce.server.http() as http:
        stopped = http.post("/v1/chat/completions", json=body)
    assert "content_policy_violation" in stopped.text and "neighbour" not in stopped.text

    with gw.shadow.server.http() as http:
        released = http.post("/v1/chat/completions", json=body)
    assert released.status_code == 200 and "error" not in released.text
    assert "neighbour" in released.text and released.text.endswith("data: [DONE]\n\n")
    entry = entry_of(gw.shadow.record(released), "tool_call_moderation")
    assert entry["would"] == "block" and entry["code"] == "content_policy_violation"


# ----------------------------------------------------------------- review


def test_review_in_shadow_releases_the_answer_and_stores_nothing(gw: Sides) -> None:
    declared = {"seawall": {"review": {"domain": "health"}}}
    held = ask(gw.enforce, QUESTION, "hana", **declared)  # the placeholder, the draft held back
    assert held.status_code == 200 and held.json()["seawall"]["review"]["status"] == "pending"
    assert CLEAN_ANSWER not in held.text

    before = gw.shadow.shadow_count("review", "hold")
    passed = ask(gw.shadow, QUESTION, "hana", **declared)
    assert passed.status_code == 200 and passed.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    entry = entry_of(gw.shadow.record(passed), "review")
    assert entry["would"] == "hold" and entry["decisions"][0]["reasons"] == ["declared:health"]
    with gw.shadow.server.http() as http:  # a stream that qualifies streams, and says so
        streamed = http.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": QUESTION}],
                "user": "hana",
                "stream": True,
                **declared,
            },
        )
    assert streamed.status_code == 200 and CLEAN_ANSWER in "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
    )
    assert entry_of(gw.shadow.record(streamed), "review")["would"] == "hold"
    assert gw.shadow.shadow_count("review", "hold") == before + 2
    store = gw.shadow.store
    try:
        assert store.review_counts().get("pending", 0) == 0  # nobody is asked to review it
    finally:
        store.close()


# ----------------------------------------------------------------- routing


def test_routing_in_shadow_asks_the_model_instead_of_answering_itself(tmp_path: Path, gw: Sides) -> None:
    """The example policy and knowledge base: an off-topic question and a curated one."""
    routed = {
        "policy_file": str(EXAMPLES / "policy-strict.yaml"),
        "knowledge_file": str(EXAMPLES / "knowledge.yaml"),
    }
    results: dict[str, tuple[httpx.Response, httpx.Response, dict[str, Any], dict[str, Any]]] = {}
    for name, modes in (("enforce", {}), ("shadow", {"routing": "shadow"})):
        side_tmp = tmp_path / name
        side_tmp.mkdir()
        settings = settings_for(side_tmp, gw.upstream.url, modes, **routed)
        with running_server(settings) as server:
            side = Side(server, settings, side_tmp)
            extra = {"model": "gpt-4o-mini", "metadata": METADATA}
            off = ask(side, OFF_TOPIC, "rosa", **extra)
            known = ask(side, RETURN_QUESTION, "rosa", **extra)
            results[name] = (off, known, side.record(off), side.record(known))
            if name == "shadow":
                counted = side.shadow_count("routing", "refuse"), side.shadow_count("routing", "answer")
    off, known, off_record, known_record = results["enforce"]
    assert off_record["outcome"] == "off_topic" and known_record["outcome"] == "knowledge_base"
    assert "30 days" in known.json()["choices"][0]["message"]["content"]

    off, known, off_record, known_record = results["shadow"]
    for response, record in ((off, off_record), (known, known_record)):
        assert response.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
        assert record["outcome"] == "ok" and record["upstream"]["status"] == 200
    off_entry, known_entry = entry_of(off_record, "routing"), entry_of(known_record, "routing")
    assert off_entry["would"] == "refuse" and off_entry["outcome"] == "off_topic"
    assert known_entry["would"] == "answer" and known_entry["outcome"] == "knowledge_base"
    assert known_entry["decisions"][0]["entry"] == "return-window"
    assert counted == (1.0, 1.0)


# ----------------------------------------------------------------- steps of one's own


@pytest.mark.usefixtures("plugin")
def test_an_extra_step_in_shadow_mode_only_says_what_it_would_have_done(tmp_path: Path, gw: Sides) -> None:
    """The runner applies the mode to any step: the plugin's own answer (and header) in enforce
    mode, the model's answer and a shadow entry in shadow mode."""
    answers = {}
    for mode in ("enforce", "shadow"):
        side_tmp = tmp_path / mode
        side_tmp.mkdir()
        extra = [{"name": "tag", "before": "prompt", "mode": mode}]
        settings = steps_settings(side_tmp, gw.upstream.url, extra_steps=extra)
        with running_server(settings) as server, server.http() as http:
            body = {"model": MODEL, "messages": [{"role": "user", "content": CANNED}], "user": "xena"}
            response = http.post("/v1/chat/completions", json=body)
        lines = (side_tmp / "audit.jsonl").read_text().splitlines()
        answers[mode] = response, json.loads(lines[-1])
    enforced, enforced_record = answers["enforce"]
    assert enforced.json()["choices"][0]["message"]["content"] == "Nine to five."
    assert enforced.headers["x-test-tag"] == "acme" and "shadow" not in enforced_record
    shadowed, shadowed_record = answers["shadow"]
    assert shadowed.json()["choices"][0]["message"]["content"] == CLEAN_ANSWER
    assert "x-test-tag" not in shadowed.headers  # what the step changed stayed in its copy
    entry = entry_of(shadowed_record, "tag")
    assert entry["would"] == "answer" and entry["decisions"] == [
        {"step": "tag", "action": "allow", "categories": [], "scores": {}}
    ]
    assert all(d["step"] != "tag" for d in shadowed_record["decisions"])


# ----------------------------------------------------------------- the audit search


def test_the_audit_search_finds_the_records_with_shadow_decisions(gw: Sides) -> None:
    answer = ask(gw.shadow, THREAT, "abel")
    plain = ask(gw.shadow, QUESTION, "abel")  # nothing would act on it: a record with no shadow list
    store = gw.shadow.store
    try:
        # A background thread writes records through to the store after the answer leaves: wait for
        # these, or a record arriving between the two searches below makes them disagree.
        wait_for_audit(store, answer.headers[REQUEST_ID_HEADER])
        assert not wait_for_audit(store, plain.headers[REQUEST_ID_HEADER]).get("shadow")
        everything = store.audit_page(AuditQuery(page_size=500))
        shadowed = store.audit_page(AuditQuery(shadow=True, page_size=500))
    finally:
        store.close()
    expected = {r["request_id"] for r in everything.rows if r.get("shadow")}
    assert expected and {r["request_id"] for r in shadowed.rows} == expected
    assert shadowed.total == len(expected) < everything.total


def test_the_sdk_sees_an_ordinary_answer_in_shadow_mode(gw: Sides) -> None:
    """What the client gets in shadow mode is the upstream's answer, through the official SDK."""
    with gw.shadow.server.client() as client:
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": THREAT}], user="sid"
        )
    assert completion.choices[0].message.content == CLEAN_ANSWER
    with gw.enforce.server.client() as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": THREAT}], user="sid"
        )
