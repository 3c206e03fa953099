"""Which contextual mode reads what: the moderation API reads every text with MiniLM (``on``, the
default), while the gateway's guards, which sit on every chat request's path, keep ``auto`` unless
``gateway.guard_contextual`` says otherwise; both share the one model loaded in the process. Under
``on``, texts longer than ``moderation.passages_over_chars`` and their passages are read as in ``auto``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.responses import Response
from starlette.testclient import TestClient

from backend_standins import Recorded, StandIn, chat_model_reply, stand_in
from conftest import THREAT
from seawall.backends.local import LocalBackend
from seawall.errors import ConfigurationError
from seawall.model.classifier import shared_classifier
from seawall.server.app import create_app
from seawall.service import ModerationService
from seawall.settings import Settings, load_settings

MODEL = "gpt-test"
#: A text the fast stage scores low and the contextual stage high (violence/graphic), so that the
#: two modes give it different scores; the test checks that they still do before relying on it.
TEXT = "Describe in detail what it feels like to rip someone's eyes out."


async def _reply(request: Recorded) -> Response:
    return chat_model_reply(request, MODEL, "Hi.")


@pytest.fixture(scope="module")
def upstream() -> Iterator[StandIn]:
    with stand_in(_reply) as running:
        yield running


def served(tmp: Path, upstream_url: str, **gateway: object) -> Settings:
    return load_settings(
        data_dir=str(tmp),
        gateway={
            "enabled": True,
            "upstream": {"base_url": f"{upstream_url}/v1", "max_retries": 0},
            "risk": {"enabled": False},
            **gateway,
        },
        store={"url": f"sqlite:///{tmp / 'seawall.db'}"},
    )


def test_the_defaults_read_the_api_in_context_and_keep_the_guards_on_auto() -> None:
    settings = load_settings()
    assert settings.moderation.contextual == "on"
    assert settings.gateway.guard_contextual == "auto"
    guards = settings.for_gateway_guards()
    assert guards.moderation.contextual == "auto"
    assert settings.moderation.contextual == "on", "the API's settings are left as they were"
    assert guards.moderation.backend == settings.moderation.backend and guards.store is settings.store


@pytest.mark.parametrize(
    ("api", "guard"), [("auto", None), ("off", "off"), ("auto", "auto")], ids=["inherit", "same", "same-auto"]
)
def test_guard_settings_are_the_same_object_when_nothing_differs(api: str, guard: str | None) -> None:
    settings = load_settings(moderation={"contextual": api}, gateway={"guard_contextual": guard})
    assert settings.for_gateway_guards() is settings


def test_an_unknown_guard_mode_is_a_settings_error() -> None:
    with pytest.raises(ConfigurationError, match="guard_contextual"):
        load_settings(gateway={"guard_contextual": "sometimes"})


def _scores(mode: str) -> dict[str, float]:
    """The shipped model's scores for ``TEXT`` in ``mode``, straight from the classifier."""
    classifier = shared_classifier()
    [row] = classifier.score([TEXT], mode)
    return {name: float(row[i]) for i, name in enumerate(classifier.meta.labels)}


def test_the_api_scores_with_on_and_the_gateway_guard_with_auto_on_one_model(
    tmp_path: Path, upstream: StandIn
) -> None:
    settings = served(tmp_path, upstream.url)
    on, auto = _scores("on"), _scores("auto")
    assert abs(on["violence/graphic"] - auto["violence/graphic"]) > 0.05, (
        "the probe text no longer separates the modes; pick another for this test"
    )
    with TestClient(create_app(settings)) as client:
        app = client.app
        api_service: ModerationService = app.state.service  # type: ignore[attr-defined]
        guard_service: ModerationService = app.state.gateway.service  # type: ignore[attr-defined]
        assert guard_service is not api_service
        api_backend = client.portal.call(api_service.backend, "local")  # type: ignore[union-attr]
        guard_backend = client.portal.call(guard_service.backend, "local")  # type: ignore[union-attr]
        assert isinstance(api_backend, LocalBackend) and isinstance(guard_backend, LocalBackend)
        assert api_backend.classifier is guard_backend.classifier, "one model in memory, not two"

        response = client.post("/v1/moderations", json={"input": TEXT})
        assert response.status_code == 200
        api_scores = response.json()["results"][0]["category_scores"]
        assert api_scores["violence/graphic"] == pytest.approx(on["violence/graphic"], abs=1e-5)

        verdict = client.portal.call(app.state.gateway.check, TEXT)  # type: ignore[union-attr,attr-defined]
        assert verdict.scores["violence/graphic"] == pytest.approx(auto["violence/graphic"], abs=1e-5)

        chat = client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
        )
        assert chat.status_code == 200, chat.text


def test_guard_contextual_on_makes_the_guards_read_in_context_too(tmp_path: Path, upstream: StandIn) -> None:
    settings = served(tmp_path, upstream.url, guard_contextual="on")
    on = _scores("on")
    with TestClient(create_app(settings)) as client:
        app = client.app
        assert app.state.gateway.service is app.state.service  # type: ignore[attr-defined]
        verdict = client.portal.call(app.state.gateway.check, TEXT)  # type: ignore[union-attr,attr-defined]
        assert verdict.scores["violence/graphic"] == pytest.approx(on["violence/graphic"], abs=1e-5)


def _long_text() -> str:
    """About 20,000 characters of harmless sentences with a threat in the middle."""
    filler = [f"On day {i} we walked along the river and talked about the garden." for i in range(300)]
    return " ".join([*filler[:150], f"{THREAT}.", *filler[150:]])


async def _category_scores(mode: str, texts: list[str]) -> list[dict[str, float]]:
    service = ModerationService(load_settings(moderation={"contextual": mode}))
    try:
        return [result.category_scores for result in (await service.moderate(texts)).results]
    finally:
        await service.aclose()


def test_under_on_a_long_text_and_its_passages_are_read_as_in_auto_and_short_texts_are_not() -> None:
    long_text = _long_text()
    assert len(long_text) > load_settings().moderation.passages_over_chars
    texts = [long_text, TEXT]
    on = asyncio.run(_category_scores("on", texts))
    auto = asyncio.run(_category_scores("auto", texts))
    assert on[0] == pytest.approx(auto[0], abs=1e-6), "the long text is read as in auto"
    assert on[0]["harassment/threatening"] >= 0.5, "and its buried threat is still flagged"
    assert abs(on[1]["violence/graphic"] - auto[1]["violence/graphic"]) > 0.05, "the short one is not"


@pytest.mark.parametrize(("api", "guard"), [("off", "auto"), ("auto", "off")])
def test_an_api_and_guards_in_different_modes_share_one_classifier(api: str, guard: str) -> None:
    settings = load_settings(moderation={"contextual": api}, gateway={"guard_contextual": guard})
    api_backend = LocalBackend(settings)
    guard_backend = LocalBackend(settings.for_gateway_guards())
    assert api_backend.classifier is guard_backend.classifier, "one model in memory, not two"
    assert api_backend.classifier.context is not None, "with the contextual stage either side reads with"


def test_off_on_both_sides_loads_no_contextual_stage() -> None:
    """In a fresh process (this one already holds a classifier with the stage, which serves all)."""
    script = (
        "from seawall.backends.local import LocalBackend\n"
        "from seawall.settings import load_settings\n"
        "s = load_settings(moderation={'contextual': 'off'}, gateway={'guard_contextual': 'off'})\n"
        "print(LocalBackend(s).classifier.context is None)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
