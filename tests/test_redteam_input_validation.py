"""Bad red-team inputs are refused before a scan sends anything, each with a one-line reason that
says what is wrong and how to fix it: redteam.yaml's fields, the suite's selection and strategies,
the moderation backend, the user's probe files; expired suppressions are reported, not dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.errors import ConfigurationError
from seawall.redteam.config import load_config


def _config_error(tmp_path: Path, text: str) -> ConfigurationError:
    path = tmp_path / "redteam.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    return caught.value


# --- redteam.yaml: one line per mistake, no pydantic dump -----------------------------------------


def test_a_config_mistake_is_one_line_naming_the_file_and_the_field(tmp_path: Path) -> None:
    error = _config_error(tmp_path, "suite: {per_strategy: -1}\n")
    where = tmp_path / "redteam.yaml"
    wanted = "suite.per_strategy: Input should be greater than or equal to 0 (got -1)"
    assert error.message == f"{where}: {wanted}"
    assert error.param == "suite.per_strategy"


def test_several_config_mistakes_are_one_line_each_without_urls(tmp_path: Path) -> None:
    error = _config_error(
        tmp_path, "suite: {per_strategy: -1, strategies: [7]}\nrun: {concurrency: 0}\nbogus: 1\n"
    )
    lines = error.message.splitlines()
    where = str(tmp_path / "redteam.yaml")
    assert lines == [
        f"{where}: suite.strategies[0]: Input should be a valid string, or a valid list (got 7)",
        f"{where}: suite.per_strategy: Input should be greater than or equal to 0 (got -1)",
        f"{where}: run.concurrency: Input should be greater than or equal to 1 (got 0)",
        f"{where}: bogus: unknown field (allowed here: target, app, suite, run, detectors, judge, attacker, "
        "offline, gate, report)",
    ]
    assert "pydantic" not in error.message and "http" not in error.message


def test_a_target_mistake_is_named_as_written_without_the_union_tag(tmp_path: Path) -> None:
    error = _config_error(tmp_path, "target: {type: http, url: x, body: {}, reply_path: $.a, replypath: x}\n")
    assert error.message.endswith(
        ": target.replypath: unknown field (allowed here: type, url, method, headers, body, reply_path, "
        "blocked_status, tool_calls_path, stream, delta_path)"
    )
    error = _config_error(tmp_path, "target: {type: openai, base_url: ftp://x, model: m}\n")
    assert error.message.endswith(": target.base_url: base_url must start with http:// or https://")


def test_overrides_without_a_file_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(None, run={"concurrency": 0})
    assert caught.value.message == (
        "red-team config: run.concurrency: Input should be greater than or equal to 1 (got 0)"
    )
