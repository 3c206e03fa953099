"""Plugins through one loader (:mod:`seawall.plugins`): a third-party moderation backend with its
own ``plugins.<name>`` settings section, installed the way pip lays a distribution out (a module
and a ``.dist-info`` with ``entry_points.txt``, in a folder on ``sys.path``), used through
``seawall.moderate`` and the HTTP service; broken plugins named by their distribution; nothing
imported before it is asked for, and nothing imported twice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import seawall
from conftest import subprocess_env
from seawall.backends.base import available_backends, create_backend
from seawall.errors import ConfigurationError, ModelNotFoundError, PluginError
from seawall.gateway.runner import load_extra_steps
from seawall.plugins import BACKENDS, DETECTORS, STEPS, STRATEGIES, load_group
from seawall.redteam.detectors import available_detectors
from seawall.redteam.strategies import available_strategies, resolve_chain
from seawall.server.app import create_app
from seawall.settings import ExtraStep, Settings, describe_settings, load_settings

MODULE = "seawall_keyword_backend"
DISTRIBUTION = "seawall-keyword-backend"

PLUGIN = """
from pathlib import Path

from pydantic import BaseModel, Field

from seawall.categories import CATEGORIES
from seawall.results import ModerationResult

# Every import of this module leaves a line here: the loader must import it once.
with open(Path(__file__).with_name("imports.log"), "a") as log:
    log.write("imported\\n")


class KeywordSettings(BaseModel):
    words: list[str] = Field(description="Words that flag a text as harassment.")
    score: float = Field(0.9, ge=0, le=1, description="The harassment score of a flagged text.")


class KeywordBackend:
    name = "keyword"

    def __init__(self, config):
        self.config = config

    async def moderate(self, inputs):
        results = []
        for item in inputs:
            hit = any(word in item.text.lower() for word in self.config.words)
            scores = {c: 0.0 for c in CATEGORIES}
            scores["harassment"] = self.config.score if hit else 0.01
            results.append(ModerationResult(
                category_scores=scores,
                categories={c: scores[c] >= 0.5 for c in CATEGORIES},
                applied_input_types={c: ["text"] for c in CATEGORIES},
                backend=self.name,
            ))
        return results

    async def aclose(self):
        pass


def create(settings, config):
    return KeywordBackend(config)


create.settings_model = KeywordSettings

NOT_A_BACKEND = 42


def not_a_backend_either(settings):
    return "a string"
"""

ENTRY_POINTS = f"""\
[{BACKENDS}]
keyword = {MODULE}:create
broken = {MODULE}_missing:create
wrong = {MODULE}:NOT_A_BACKEND
wrong_factory = {MODULE}:not_a_backend_either
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The distribution ``seawall-keyword-backend``, installed in a folder on ``sys.path``."""
    site = tmp_path / "site"
    info = site / "seawall_keyword_backend-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{MODULE}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    return site


def imports(site: Path) -> int:
    log = site / "imports.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def keyword_settings(**extra: object) -> Settings:
    return load_settings(plugins={"keyword": {"words": ["idiot"], "score": 0.75}}, **extra)


def test_a_backend_plugin_with_its_own_settings_through_the_python_api(site: Path) -> None:
    settings = keyword_settings()
    flagged, clean = seawall.moderate(["you idiot", "hello"], model="keyword", settings=settings)
    assert flagged.backend == "keyword" and flagged.flagged and not clean.flagged
    assert flagged.category_scores["harassment"] == 0.75


def test_a_backend_plugin_serves_the_moderation_api(site: Path) -> None:
    """As the default backend, the plugin answers OpenAI's model names and its own."""
    settings = keyword_settings(moderation={"backend": "keyword"}, gateway={"enabled": False})
    with TestClient(create_app(settings)) as client:
        for model in ("omni-moderation-latest", "keyword"):
            reply = client.post("/v1/moderations", json={"model": model, "input": ["what an idiot", "hi"]})
            assert reply.status_code == 200, reply.text
            first, second = reply.json()["results"]
            assert first["flagged"] and first["category_scores"]["harassment"] == 0.75
            assert not second["flagged"]


def test_plugin_settings_are_checked_at_start_up(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text("plugins:\n  keyword:\n    words: [idiot]\n    score: 2\n")
    with pytest.raises(PluginError) as invalid:
        load_settings(config)
    message = str(invalid.value)
    assert "plugins.keyword.score" in message and "less than or equal to 1" in message
    assert DISTRIBUTION in message and invalid.value.name == "keyword"

    with pytest.raises(PluginError, match=r"plugins.keyword.words: Field required"):
        load_settings(plugins={"keyword": {}})
    with pytest.raises(PluginError, match=r"plugins.nope: no plugin named 'nope' is installed; .*keyword"):
        load_settings(plugins={"nope": {"x": 1}})
    # A plugin that declares no settings model takes no settings (the built-in backends included).
    with pytest.raises(PluginError, match=r"'local' .* takes no settings"):
        load_settings(plugins={"local": {"x": 1}})
    # Errors of the one exception tree: a configuration error, as any other settings mistake.
    assert issubclass(PluginError, ConfigurationError)


def test_a_plugin_that_needs_settings_and_has_none_says_which(site: Path) -> None:
    with pytest.raises(PluginError, match=r"plugins.keyword.words: Field required"):
        create_backend("keyword", Settings())


def test_broken_plugins_name_their_distribution_and_entry_point(site: Path) -> None:
    settings = Settings()
    with pytest.raises(PluginError) as broken:
        create_backend("broken", settings)
    message = str(broken.value)
    assert f"from distribution {DISTRIBUTION!r}" in message
    assert f"{BACKENDS} entry point broken = {MODULE}_missing:create" in message
    assert "could not be loaded: ModuleNotFoundError" in message
    assert broken.value.distribution == DISTRIBUTION and broken.value.group == BACKENDS

    with pytest.raises(PluginError, match=r"'wrong' .* is int: neither ModerationBackend nor a factory"):
        create_backend("wrong", settings)
    with pytest.raises(PluginError, match=r"'wrong_factory' .* gave str, not ModerationBackend"):
        create_backend("wrong_factory", settings)

    # Asked for by name through the service, a broken backend is a 404 that says why.
    with pytest.raises(ModelNotFoundError, match=DISTRIBUTION):
        seawall.moderate("hello", model="broken", settings=keyword_settings())


def test_plugins_are_lazy_and_loaded_once(site: Path) -> None:
    # Listing the group imports nothing: broken entry points sit there harmlessly.
    assert {"keyword", "broken", "wrong", "local"} <= set(available_backends())
    assert imports(site) == 0
    # Start-up with a broken plugin installed but never asked for.
    settings = keyword_settings(moderation={"backend": "keyword"}, gateway={"enabled": False})
    assert imports(site) == 1  # the plugins section needed the settings model
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/moderations", json={"input": "idiot"}).json()["results"][0]["flagged"]
    # Another service, another backend instance, the same import.
    sys.modules.pop(MODULE)
    seawall.moderate("idiot", model="keyword", settings=settings)
    assert imports(site) == 1
    assert available_backends() is available_backends()
    assert available_backends()["keyword"].load() is available_backends()["keyword"].load()


def test_a_group_is_read_again_when_sys_path_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "late" not in load_group(STEPS, object)
    info = tmp_path / "late-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{STEPS}]\nlate = late_module:Late\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "late" in load_group(STEPS, object)


def test_seawall_config_documents_the_plugins_section() -> None:
    [(_name, default, meaning)] = [row for row in describe_settings() if row[0] == "plugins"]
    assert default == "{}" and "settings_model" in meaning


def test_seawall_config_shows_a_plugin_section_and_refuses_a_bad_one(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text(textwrap.dedent("plugins:\n  keyword: {words: [idiot]}\n"))
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), *sys.path])
    command = [sys.executable, "-m", "seawall", "config", "--config", str(config)]
    shown = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert 'plugins = {"keyword": {"words": ["idiot"]}}' in shown.stdout
    config.write_text(textwrap.dedent("plugins:\n  keyword: {words: [idiot], score: high}\n"))
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert refused.returncode != 0
    assert "plugins.keyword.score" in refused.stderr and DISTRIBUTION in refused.stderr


def test_red_team_plugins_follow_the_same_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken strategy or detector that a suite does not use is never imported; one it asks
    for names its distribution; a strategy must carry its entry point's name."""
    info = tmp_path / "seawall_red_fixture-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seawall-red-fixture\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{STRATEGIES}]\nbroken = seawall_red_missing:make\nmisnamed = seawall_red_fixture:misnamed\n\n"
        f"[{DETECTORS}]\nbroken = seawall_red_missing:detect\n"
    )
    (tmp_path / "seawall_red_fixture.py").write_text(
        "from seawall.redteam import Strategy\n\n"
        "def misnamed():\n    return Strategy('other', 'x', lambda turns, rng: turns)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "seawall_red_fixture", raising=False)
    strategies, detectors = available_strategies(), available_detectors()
    assert {"broken", "misnamed", "base64"} <= set(strategies) and {"broken", "harm"} <= set(detectors)
    assert [s.name for s in resolve_chain("base64+rot13")] == ["base64", "rot13"]
    assert callable(detectors["harm"])
    with pytest.raises(PluginError, match=r"from distribution 'seawall-red-fixture'.* ModuleNotFound"):
        resolve_chain("broken")
    with pytest.raises(PluginError, match=r"'broken' .*seawall.redteam.detectors.*seawall-red-fixture"):
        detectors["broken"]
    with pytest.raises(PluginError, match="gave a strategy named 'other', not 'misnamed'"):
        strategies["misnamed"]


def test_a_gateway_step_gets_its_settings_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "seawall_step_fixture-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: seawall-step-fixture\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{STEPS}]\nbanner = seawall_step_fixture:Banner\n")
    (tmp_path / "seawall_step_fixture.py").write_text(
        textwrap.dedent(
            """\
            from pydantic import BaseModel

            class BannerSettings(BaseModel):
                text: str

            class Banner:
                name = "banner"
                settings_model = BannerSettings

                def __init__(self, gateway, config):
                    self.gateway, self.text = gateway, config.text

                async def run(self, ctx):
                    return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "seawall_step_fixture", raising=False)

    class First:
        name = "identity"

        async def run(self, ctx: object) -> None:
            return None

    settings = load_settings(plugins={"banner": {"text": "hello"}})
    gateway = object()
    path = load_extra_steps([First()], [ExtraStep(name="banner", after="identity")], gateway, settings)
    assert [step.name for step in path] == ["identity", "banner"]
    assert path[1].text == "hello" and path[1].gateway is gateway  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=r"plugins.banner.text: Input should be a valid string"):
        load_settings(plugins={"banner": {"text": 3}})


def test_plugin_settings_from_the_environment(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_PLUGINS__KEYWORD__WORDS", '["idiot", "fool"]')
    monkeypatch.setenv("SEAWALL_PLUGINS__KEYWORD__SCORE", "0.6")
    [result] = seawall.moderate("what a fool", model="keyword", settings=load_settings())
    assert result.flagged and result.category_scores["harassment"] == 0.6
    monkeypatch.setenv("SEAWALL_PLUGINS__KEYWORD__SCORE", "high")
    with pytest.raises(PluginError, match=r"plugins.keyword.score: Input should be a valid number"):
        load_settings()
