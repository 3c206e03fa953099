"""``seawall keys``, ``seawall users``, ``seawall org`` and ``seawall db`` on a real SQLite store."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seawall.cli import app
from seawall.clock import utc_now
from seawall.errors import PermissionDeniedError
from seawall.gateway.access import KeyAuthenticator
from seawall.gateway.identity import load_or_create_secret, safety_identifier
from seawall.gateway.risk import RiskLedger
from seawall.settings import RiskSettings, StoreSettings
from seawall.store import FilteredAnswer, open_store

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "seawall.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"tenant": "acme", "secret_file": str(tmp_path / "secret")},
                "store": {"url": f"sqlite:///{tmp_path / 'seawall.db'}"},
            }
        )
    )
    return path


def test_keys_create_list_revoke(config: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "support bot", "--config", str(config)])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sw-") and len(key) > 40

    store = open_store(StoreSettings(url=yaml.safe_load(config.read_text())["store"]["url"]))
    access = KeyAuthenticator([], store, default_tenant="acme")
    caller = access.authenticate(f"Bearer {key}")
    assert caller.tenant == "acme" and caller.key_id is not None

    listed = runner.invoke(app, ["keys", "list", "--config", str(config)])
    assert listed.exit_code == 0 and caller.key_id in listed.stdout and "support bot" in listed.stdout
    assert key not in listed.stdout  # only its first characters

    revoked = runner.invoke(app, ["keys", "revoke", caller.key_id, "--config", str(config)])
    assert revoked.exit_code == 0, revoked.output
    assert caller.key_id not in runner.invoke(app, ["keys", "list", "--config", str(config)]).stdout
    assert caller.key_id in runner.invoke(app, ["keys", "list", "--all", "--config", str(config)]).stdout

    unknown = runner.invoke(app, ["keys", "revoke", "key_000000000000", "--config", str(config)])
    assert unknown.exit_code == 2 and "key_000000000000" in unknown.output
    store.close()


def test_users_block_show_list_clear_and_org(config: Path, tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "secret")
    safety_id = safety_identifier(secret, "acme", "mallory")
    store = open_store(StoreSettings(url=yaml.safe_load(config.read_text())["store"]["url"]))
    ledger = RiskLedger(store, RiskSettings())
    for number in range(3):
        ledger.record("acme", safety_id, "high", f"r{number}", ["violence"])

    shown = runner.invoke(app, ["users", "show", "mallory", "--raw", "--config", str(config)])
    assert shown.exit_code == 0, shown.output
    assert "throttled" in shown.stdout and "risk points: 3" in shown.stdout

    listed = runner.invoke(app, ["users", "list", "--config", str(config)])
    assert safety_id in listed.stdout

    block = ["users", "block", safety_id, "--reason", "abuse report", "--hours", "2"]
    blocked = runner.invoke(app, [*block, "--config", str(config)])
    assert blocked.exit_code == 0 and "blocked" in blocked.stdout
    assert ledger.standing("acme", safety_id).status == "blocked"  # type: ignore[union-attr]

    org = runner.invoke(app, ["org", "--config", str(config)])
    assert org.exit_code == 0 and "high-risk requests" in org.stdout and "3" in org.stdout
    assert re.search(r"answers filtered \(not charged to users\)\s+0\b", org.stdout)

    # Answers output moderation stopped are counted per model, apart from the users' ledger.
    for number, model in enumerate(["gpt-a", "gpt-a", "gpt-b"]):
        store.record_filtered_answer(FilteredAnswer("acme", model, utc_now(), f"f{number}", ("violence",)))
    store.record_filtered_answer(FilteredAnswer("other", "gpt-a", utc_now(), "f9"))
    org = runner.invoke(app, ["org", "--config", str(config)])
    assert re.search(r"answers filtered \(not charged to users\)\s+3\b", org.stdout)
    assert re.search(r"answers filtered, model gpt-a\s+2\b", org.stdout)
    assert re.search(r"answers filtered, model gpt-b\s+1\b", org.stdout)
    assert re.search(r"high-risk requests\s+3\b", org.stdout)  # the users' figures are unchanged

    cleared = runner.invoke(app, ["users", "clear", safety_id, "--by", "tester", "--config", str(config)])
    assert cleared.exit_code == 0 and ": ok" in cleared.stdout
    assert ledger.standing("acme", safety_id) is None

    # Each user's trust tier: that of their latest request that had one.
    other = safety_identifier(secret, "acme", "trudy")
    ledger.record("acme", other, "high", "t1", ["violence"])
    for number, (who, tier) in enumerate([(safety_id, "anonymous"), (safety_id, "email_verified")]):
        at = (utc_now() - timedelta(minutes=5 - number)).isoformat()
        store.write_audit(
            {"request_id": f"q{number}", "tenant": "acme", "safety_identifier": who, "tier": tier, "time": at}
        )
    listed = runner.invoke(app, ["users", "list", "--config", str(config)])  # piped: tab-separated
    assert listed.exit_code == 0, listed.output
    header, *lines = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    assert header[:3] == ["safety identifier", "tier", "status"]
    assert {line[0]: line[1] for line in lines} == {safety_id: "email_verified", other: "-"}
    shown = runner.invoke(app, ["users", "show", "mallory", "--raw", "--config", str(config)])
    assert "tier: email_verified" in shown.stdout

    bad = runner.invoke(app, ["users", "show", "mallory", "--config", str(config)])
    assert bad.exit_code == 2 and "--raw" in bad.output
    bad_status = runner.invoke(app, ["users", "list", "--status", "banned", "--config", str(config)])
    assert bad_status.exit_code == 2 and "unknown status" in bad_status.output
    store.close()


def test_db_current_and_upgrade(config: Path) -> None:
    upgraded = runner.invoke(app, ["db", "upgrade", "--config", str(config)])
    assert upgraded.exit_code == 0, upgraded.output
    current = runner.invoke(app, ["db", "current", "--config", str(config)])
    assert current.exit_code == 0, current.output


def test_a_feedback_key_is_good_only_for_feedback(config: Path) -> None:
    created = runner.invoke(app, ["keys", "create", "widget", "--scope", "feedback", "--config", str(config)])
    assert created.exit_code == 0, created.output
    assert "scope feedback" in created.output
    key = created.stdout.strip().splitlines()[-1]
    store = open_store(StoreSettings(url=yaml.safe_load(config.read_text())["store"]["url"]))
    try:
        access = KeyAuthenticator([], store, default_tenant="acme")
        assert access.authenticate(f"Bearer {key}", purpose="feedback").tenant == "acme"
        with pytest.raises(PermissionDeniedError) as refused:
            access.authenticate(f"Bearer {key}")
        assert refused.value.code == "api_key_scope"
        listed = runner.invoke(app, ["keys", "list", "--config", str(config)])
        assert "\tfeedback\t" in listed.stdout
    finally:
        store.close()
    wrong = runner.invoke(app, ["keys", "create", "widget", "--scope", "feedbak", "--config", str(config)])
    assert wrong.exit_code == 2 and "--scope must be one of all, feedback" in wrong.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["support\tbot"], "holds a control character"),
        (["two\nlines"], "holds a control character"),
        (["   "], "must not be blank"),
        (["x" * 201], "the limit is 200"),
        (["bot", "--tenant", "acme\tprod"], "the tenant 'acme\\tprod' holds a control character"),
    ],
    ids=["tab", "newline", "blank", "too-long", "tenant-tab"],
)
def test_a_key_name_that_would_break_the_listing_is_refused(
    config: Path, args: list[str], message: str
) -> None:
    refused = runner.invoke(app, ["keys", "create", *args, "--config", str(config)])
    assert refused.exit_code == 2, refused.output
    assert message in " ".join(refused.output.split())
    listed = runner.invoke(app, ["keys", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.strip().splitlines()[1:] == []  # nothing was stored
