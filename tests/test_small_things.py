"""Small things from issue 13: the shape of review sources (one shape with the documents), the
``seawall serve`` banner naming the review desk only when the UI is on, and the project's address
in SARIF reports (tests/test_redteam_scan.py checks a written report)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import subprocess_env
from seawall.errors import InvalidRequestError
from seawall.redteam.report import project_url
from seawall.review import service as review_service
from seawall.review.service import parse_review_request
from seawall.review.settings import ReviewSettings
from seawall.settings import StoreSettings
from seawall.store import open_store
from seawall.ui.accounts import AccountStore

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ReviewSettings(enabled=True)


def test_review_sources_take_the_shape_of_documents() -> None:
    request = parse_review_request(
        {"sources": [{"source": "kb/refunds.md", "text": "Refunds within 30 days."}, {"text": "No label."}]},
        SETTINGS,
    )
    assert [s["title"] for s in request.sources] == ["kb/refunds.md", "source 2"]
    assert request.sources[0]["text"] == "Refunds within 30 days."


def test_the_older_title_shape_is_still_read_with_a_deprecation_note(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(review_service, "_TITLE_WARNED", type(review_service._TITLE_WARNED)())
    with caplog.at_level(logging.WARNING, logger="seawall.review"):
        request = parse_review_request({"sources": [{"title": "Leaflet", "text": "Max 1200 mg."}]}, SETTINGS)
        parse_review_request({"sources": [{"title": "Again", "text": "x"}]}, SETTINGS)
    assert request.sources[0]["title"] == "Leaflet"
    notes = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(notes) == 1 and "{'source', 'text'}" in notes[0]  # once per process


@pytest.mark.parametrize(
    "source",
    [
        {"source": "a", "title": "b", "text": "both labels"},
        {"source": 3, "text": "a label that is not a string"},
        {"source": "a"},
        {"source": "a", "text": "x", "url": "unknown key"},
    ],
)
def test_a_bad_source_is_a_400_naming_it(source: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        parse_review_request({"sources": [source]}, SETTINGS)
    assert refused.value.param == "seawall.review.sources[0]"
    assert "'source'" in refused.value.message


def test_sarif_names_the_projects_own_address_or_none() -> None:
    url = project_url()
    assert url is None or url.startswith("https://")
    assert url != "https://github.com/seawall"


def _banner(tmp_path: Path, ui_enabled: bool, *, account: bool = False) -> str:
    config = tmp_path / f"seawall-{ui_enabled}-{account}.yaml"
    store_url = f"sqlite:///{tmp_path / f'seawall-{account}.db'}"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"port": 0},
                "gateway": {
                    "upstream": {"base_url": "http://127.0.0.1:9/v1"},
                    "secret_file": str(tmp_path / "secret"),
                },
                "store": {"url": store_url},
                "ui": {"enabled": ui_enabled, "secret_file": str(tmp_path / "ui-secret")},
            }
        )
    )
    if account:  # made the way an operator makes it, in the store the server will use
        store = open_store(StoreSettings(url=store_url))
        try:
            AccountStore(store).create("alice", "admin", "alice-password-1")
        finally:
            store.close()
    env = subprocess_env()
    env.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="400")
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        for _ in range(50):
            line = process.stdout.readline()
            if "seawall serving on" in line or not line:
                return line
        raise AssertionError("no banner")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_serve_banner_names_the_review_desk_only_when_the_ui_is_on(tmp_path: Path) -> None:
    on = _banner(tmp_path, True)
    assert "review desk at /ui/" in on and "seawall accounts create alice --role admin" in on
    off = _banner(tmp_path, False)
    assert "seawall serving on" in off and "/ui/" not in off


def test_the_serve_banner_names_the_first_account_command_only_while_there_is_no_account(
    tmp_path: Path,
) -> None:
    fresh = _banner(tmp_path, True)
    assert "seawall accounts create alice --role admin" in fresh
    with_account = _banner(tmp_path, True, account=True)
    assert "review desk at /ui/" in with_account and "seawall serving on" in with_account
    assert "accounts create" not in with_account
