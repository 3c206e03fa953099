"""One sign-in: a signed-in UI reviewer or admin uses the review API and ``/metrics`` as their
bearer token could (changes need the session's CSRF header), and admins make and revoke operator
tokens (stored hashed) in the UI and with ``seawall tokens``, instead of writing them into the YAML.

A real server on loopback (gateway, human review and the web UI on one SQLite store), a loopback
upstream stand-in, the real CLI on the same store.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from backend_standins import stand_in
from conftest import RunningServer, running_server
from seawall.cli import app as cli
from seawall.store import open_store
from seawall.ui.accounts import TOKEN_PREFIX, AccountStore
from seawall.ui.accounts import metadata as ui_metadata
from test_route_access import HEALTH, MODEL, OWN_KEY, OWN_TENANT, _settings, _upstream
from test_ui_support import csrf_from, sign_in

ADMIN = ("ada", "ada-password-1234")
REVIEWER = ("rex", "rex-password-1234")
_TOKEN = re.compile(r'id="new-token-value">([^<]+)<')


@dataclass
class Served:
    server: RunningServer
    config: Path

    @contextmanager
    def session(self, who: tuple[str, str]) -> Iterator[httpx.Client]:
        """A client signed in to the UI as ``who``, without any bearer token."""
        with self.server.http() as http:
            assert sign_in(http, *who).status_code == 303
            yield http

    def bearer(self, token: str) -> httpx.Client:
        return self.server.http(headers={"authorization": f"Bearer {token}"})

    def hold(self) -> str:
        with self.bearer(OWN_KEY) as app:
            answer = app.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": HEALTH}]},
            )
        assert answer.status_code == 200, answer.text
        return str(answer.headers["x-seawall-review-id"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("one-sign-in")
    with stand_in(_upstream) as upstream:
        settings = _settings(tmp, upstream.url)
        store = open_store(settings.store)
        ui_metadata.create_all(store.engine)
        accounts = AccountStore(store)
        accounts.create(ADMIN[0], "admin", ADMIN[1])
        accounts.create(REVIEWER[0], "reviewer", REVIEWER[1])
        from seawall.gateway.identity import hash_api_key

        store.create_key("own app", OWN_TENANT, hash_api_key(OWN_KEY), OWN_KEY[:8])
        store.close()
        config = tmp / "seawall.yaml"
        config.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp / 'seawall.db'}"}}))
        with running_server(settings) as server:
            yield Served(server, config)


def test_a_signed_in_admin_reads_metrics_and_uses_the_review_api(served: Served) -> None:
    with served.session(ADMIN) as admin:
        metrics = admin.get("/metrics")
        assert metrics.status_code == 200 and "seawall_review_items" in metrics.text
        assert admin.get("/v1/seawall/reports").status_code == 200
        review_id = served.hold()
        # A change needs the session's CSRF token in a header: a cross-site form cannot send it.
        bare = admin.post(f"/v1/seawall/reviews/{review_id}/claim")
        assert bare.status_code == 401
        csrf = csrf_from(admin.get("/ui/review").text)
        assert (
            admin.post(f"/v1/seawall/reviews/{review_id}/claim", headers={"x-csrf-token": "x"}).status_code
            == 401
        )
        claimed = admin.post(f"/v1/seawall/reviews/{review_id}/claim", headers={"x-csrf-token": csrf})
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["claimed_by"] == ADMIN[0]


def test_a_signed_in_reviewer_is_a_reviewer_on_the_api_too(served: Served) -> None:
    with served.session(REVIEWER) as reviewer:
        assert reviewer.get("/v1/seawall/reviews").status_code == 200
        assert reviewer.get("/metrics").status_code == 403
    with served.server.http() as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/v1/seawall/reviews").status_code == 401


def test_admins_make_and_revoke_operator_tokens_in_the_ui(served: Served) -> None:
    with served.session(ADMIN) as admin:
        csrf = csrf_from(admin.get("/ui/accounts").text)
        made = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "prometheus", "role": "admin"})
        assert made.status_code == 201, made.text
        scraper_token = _TOKEN.search(made.text)
        assert scraper_token is not None and scraper_token.group(1).startswith(TOKEN_PREFIX)
        spare = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "spare", "role": "admin"})
        spare_token = _TOKEN.search(spare.text)
        assert spare_token is not None
        triage = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "triage", "role": "reviewer"})
        triage_token = _TOKEN.search(triage.text)
        assert triage_token is not None
        refused = admin.post("/ui/tokens", data={"csrf_token": csrf, "name": "", "role": "admin"})
        assert refused.status_code == 400
        assert (
            admin.post("/ui/tokens", data={"csrf_token": "stale", "name": "x", "role": "admin"}).status_code
            == 403
        )
        listing = admin.get("/ui/accounts").text
        assert "prometheus" in listing and scraper_token.group(1) not in listing  # shown once only
        spare_id = re.search(r'<tr id="(tok_[0-9a-f]+)"><th scope="row">spare', listing)
        assert spare_id is not None
        revoked = admin.post(f"/ui/tokens/{spare_id.group(1)}/revoke", data={"csrf_token": csrf})
        assert revoked.status_code == 303
        assert "Token revoked." in admin.get(revoked.headers["location"]).text
    with served.bearer(scraper_token.group(1)) as scraper:
        assert scraper.get("/metrics").status_code == 200
    with served.bearer(triage_token.group(1)) as triage_bot:
        assert triage_bot.get("/v1/seawall/reports").status_code == 200
        assert triage_bot.get("/metrics").status_code == 403
    with served.bearer(spare_token.group(1)) as revoked_client:
        assert revoked_client.get("/metrics").status_code == 401
    with served.session(REVIEWER) as reviewer:  # only admins manage tokens
        csrf = csrf_from(reviewer.get("/ui/review").text)
        assert (
            reviewer.post("/ui/tokens", data={"csrf_token": csrf, "name": "x", "role": "admin"}).status_code
            == 403
        )
    store = open_store(served.server.settings.store)
    try:
        stored = {t.name: t for t in store.list_tokens(include_revoked=True)}
        assert stored["prometheus"].token_hash != scraper_token.group(1)  # only the hash is kept
        assert stored["prometheus"].created_by == ADMIN[0] and stored["prometheus"].last_used_at is not None
        assert not stored["spare"].active
    finally:
        store.close()


def test_seawall_tokens_create_list_revoke(served: Served) -> None:
    runner = CliRunner()
    config = ["--config", str(served.config)]
    created = runner.invoke(
        cli, ["tokens", "create", "ci scraper", "--role", "admin", "--by", "ops", *config]
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith(TOKEN_PREFIX)
    with served.bearer(token) as scraper:
        assert scraper.get("/metrics").status_code == 200
    listed = runner.invoke(cli, ["tokens", "list", *config])
    assert listed.exit_code == 0 and "ci scraper" in listed.stdout and token not in listed.stdout
    [token_id] = [line.split("\t")[0] for line in listed.stdout.splitlines() if "\tci scraper\t" in line]
    assert runner.invoke(cli, ["tokens", "revoke", token_id, *config]).exit_code == 0
    assert token_id not in runner.invoke(cli, ["tokens", "list", *config]).stdout
    assert token_id in runner.invoke(cli, ["tokens", "list", "--all", *config]).stdout
    wrong_role = runner.invoke(cli, ["tokens", "create", "x", "--role", "root", *config])
    assert wrong_role.exit_code == 2 and "unknown role" in wrong_role.output
    unknown = runner.invoke(cli, ["tokens", "revoke", "tok_000000000000", *config])
    assert unknown.exit_code == 2 and "tok_000000000000" in unknown.output
