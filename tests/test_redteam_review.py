"""The red team against a real gateway with human review on, and the gate's checks before a scan.

The gateway is the real seawall app on loopback (embedded moderation model, SQLite store) in front
of the simulated vulnerable bot (tests/data/redteam/bots.py); the scanner is the real client. A
hold rule that matches every answer (a band from 0 on the request's scores) makes every case that
the input guard lets through a held one, so the figures do not depend on the model's scores.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend_standins import serving
from conftest import RunningServer, running_server
from seawall.gateway.identity import hash_api_key
from seawall.redteam import AppConfig, RedTeamConfig, Report, Verdict, evaluate, scan, write_reports
from seawall.redteam.cli import app as redteam_cli
from seawall.redteam.config import OpenAITargetConfig, SuiteConfig
from seawall.redteam.report import guard_line
from seawall.settings import StoreSettings, load_settings
from seawall.store import open_store

sys.path.insert(0, str(Path(__file__).parent / "data" / "redteam"))
from bots import chat_app, vulnerable_reply

APP = AppConfig(
    system_prompt="You are Velo Help, the support assistant of Velo Bikes.",
    purpose="customer support for Velo Bikes, an online bicycle shop",
)
SUITE = SuiteConfig(families=["system_prompt_leakage", "prompt_injection"], strategies=[], per_strategy=0)
CONFIG = RedTeamConfig(app=APP, suite=SUITE)
SCAN_KEY = "sw-redteam-scan-key-0123456789"
APP_KEY = "sw-redteam-app-key-0123456789ab"
HOLD_EVERYTHING = [{"name": "hold everything", "band": [0.0, None], "scores": "request"}]


@dataclass
class Gateway:
    server: RunningServer
    bot: str

    def target(self, **headers: str) -> OpenAITargetConfig:
        return OpenAITargetConfig(
            type="seawall",
            base_url=self.server.base_url,
            model="bot",
            api_key_env="SEAWALL_TEST_REDTEAM_KEY",
            headers=headers,
        )

    def pending(self) -> int:
        admin = {"authorization": "Bearer admin-token-0123456789abc"}
        with self.server.http(headers=admin) as client:
            answer = client.get("/v1/seawall/reviews", params={"status": "pending", "limit": 200})
            answer.raise_for_status()
            return len(answer.json()["data"])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("redteam-review")
    url = f"sqlite:///{tmp}/store.db"
    store = open_store(StoreSettings(url=url))
    scan_key = store.create_key("red team", "default", hash_api_key(SCAN_KEY), SCAN_KEY[:8])
    store.create_key("app", "default", hash_api_key(APP_KEY), APP_KEY[:8])
    store.close()
    with serving(chat_app(vulnerable_reply)) as bot:
        settings = load_settings(
            gateway={
                "enabled": True,
                "upstream": {"base_url": f"{bot.url}/v1", "max_retries": 0},
                "secret_file": str(tmp / "secret"),
                "audit_file": None,
                # two shared cores under load: the guard's 5 s default would fail some checks
                "stream_guard": {"check_timeout_s": 120},
            },
            store={"url": url},
            review={
                "enabled": True,
                "rules": HOLD_EVERYTHING,
                "scan_keys": [scan_key.id],
                "admin_tokens": {"admin": "admin-token-0123456789abc"},
            },
        )
        with running_server(settings) as server:
            yield Gateway(server, f"{bot.url}/v1")


def _scan(gateway: Gateway, key: str, monkeypatch: pytest.MonkeyPatch, **headers: str) -> Report:
    monkeypatch.setenv("SEAWALL_TEST_REDTEAM_KEY", key)
    return scan(gateway.target(**headers), config=CONFIG)


@pytest.mark.parametrize("mode", ["placeholder", "accepted"])
def test_a_held_answer_is_the_guards_verdict_not_an_error(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The default placeholder completion (HTTP 200) and the 202 pending body alike."""
    report = _scan(gateway, APP_KEY, monkeypatch, **{"x-seawall-review": mode})
    overall = report.summary.overall
    assert overall.error == 0, [r.reason for r in report.results if r.verdict is Verdict.ERROR]
    held = [r for r in report.results if "held for human review" in r.reason]
    assert held and all(r.blocked and r.verdict is Verdict.INCONCLUSIVE for r in held)
    assert overall.blocked >= len(held) and overall.block_rate is not None and overall.block_rate > 0
    assert overall.block_ci_low is not None and overall.block_ci_low < overall.block_rate
    # the reply carried the review id: the reason names it
    assert all("rev_" in r.reason for r in held)
    line = guard_line(overall)
    assert f"{overall.blocked} of {overall.answered} blocked" in line and "ASR" in line
    assert evaluate(report, ["asr:0.99"]).exit_code == 0  # a held scan is a trusted scan


def test_scan_traffic_is_held_only_when_the_scan_asks(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = gateway.pending()
    quiet = _scan(gateway, SCAN_KEY, monkeypatch)
    assert gateway.pending() == before, "a scan key's traffic must not reach the review queue"
    assert not any("held for human review" in r.reason for r in quiet.results)
    asked = _scan(gateway, SCAN_KEY, monkeypatch, **{"x-seawall-scan-review": "hold"})
    held = [r for r in asked.results if "held for human review" in r.reason]
    assert held and gateway.pending() == before + len(held)
    # a bad value is refused before the model is called, naming the header
    with gateway.server.http() as client:
        refused = client.post(
            "/v1/chat/completions",
            json={"model": "bot", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {SCAN_KEY}", "x-seawall-scan-review": "maybe"},
        )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_scan_review"


def test_the_html_report_shows_the_block_rate(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report = _scan(gateway, APP_KEY, monkeypatch)
    written = write_reports(report, tmp_path, ["html", "json"])
    page = written["html"].read_text()
    overall = report.summary.overall
    assert "Blocked by the target's guard" in page
    assert f"({overall.blocked} of {overall.answered}" in page
    assert "block rate" in page


# ----------------------------------------------------------------- the gate, before and after a scan


@pytest.fixture(scope="module")
def counted_bot() -> Iterator[tuple[str, list[int]]]:
    calls: list[int] = []

    def reply(messages: list[dict[str, str]]) -> str:
        calls.append(1)
        return vulnerable_reply(messages)

    with serving(chat_app(reply)) as bot:
        yield f"{bot.url}/v1", calls


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--fail-on", "asr:0.2x"], "is not a number"),
        (["--fail-on", "severty:high"], "unknown --fail-on rule"),
        (["--fail-on", "severity:urgent"], "severity must be one of"),
        (["--fail-on", "asr:no_such_family=0.1"], "no family 'no_such_family'"),
        (["--fail-on", "regression"], "needs --baseline"),
        (["--baseline", "missing-report.json"], "no such file"),
    ],
)
def test_gate_arguments_are_checked_before_the_scan(
    counted_bot: tuple[str, list[int]], tmp_path: Path, arguments: list[str], message: str
) -> None:
    url, calls = counted_bot
    calls.clear()
    config = tmp_path / "redteam.yaml"
    config.write_text("suite:\n  families: [system_prompt_leakage]\n  strategies: []\n  per_strategy: 0\n")
    result = CliRunner().invoke(
        redteam_cli,
        ["run", "-c", str(config), "--target", url, "--model", "bot", "-o", str(tmp_path), "-q", *arguments],
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert calls == [], "the scan must not start when the gate's arguments are wrong"
    assert not (tmp_path / "report.json").exists()


def test_a_subset_run_is_compared_with_the_baselines_same_cases(counted_bot: tuple[str, list[int]]) -> None:
    url, _ = counted_bot
    full = scan(OpenAITargetConfig(base_url=url, model="bot"), config=CONFIG)
    # the baseline: the same scan after a fix of half the findings
    baseline = full.model_copy(deep=True)
    for index, result in enumerate(baseline.results):
        if result.verdict is Verdict.VULNERABLE and index % 2:
            result.verdict = Verdict.SAFE
    baseline.resummarise()
    still = {r.id for r in baseline.results if r.verdict is Verdict.VULNERABLE}
    assert still and len(still) < len(baseline.results)
    # rerunning only the remaining findings (run --case ...): 100% ASR, the whole baseline's is lower
    subset = full.model_copy(deep=True)
    subset.results = [r for r in subset.results if r.id in still]
    subset.resummarise()
    assert (subset.asr or 0) > (baseline.asr or 0)
    gate = evaluate(subset, ["regression"], baseline=baseline)
    assert gate.exit_code == 0, gate.reasons
    assert gate.comparison is not None and gate.comparison.shared_cases == len(still)
    assert not gate.comparison.regressions and not gate.comparison.new_findings
    assert any(f"the {len(still)} cases both runs have" in reason for reason in gate.reasons)
    # a real regression on the shared cases is still found: every case of the full run against
    # a baseline in which they were all safe
    fixed = full.model_copy(deep=True)
    for result in fixed.results:
        result.verdict = Verdict.SAFE
    fixed.resummarise()
    worse = evaluate(subset.model_copy(deep=True), ["regression"], baseline=fixed)
    assert worse.exit_code == 1 and worse.comparison is not None and worse.comparison.regressions
