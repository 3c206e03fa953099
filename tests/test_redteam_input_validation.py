"""Bad red-team inputs are refused before a scan sends anything, each with a one-line reason that
says what is wrong and how to fix it: redteam.yaml's fields, the suite's selection and strategies,
the moderation backend, the user's probe files; expired suppressions are reported, not dropped."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from seawall.errors import ConfigurationError
from seawall.redteam import CallableTarget, Verdict, scan
from seawall.redteam.catalogue import FileProbe
from seawall.redteam.config import AppConfig, RedTeamConfig, SuiteConfig, load_config
from seawall.redteam.gate import (
    apply_suppressions,
    evaluate,
    expired_suppressions,
    expiry_notice,
    load_suppressions,
)
from seawall.redteam.strategies import resolve_chain
from seawall.redteam.suite import build_suite

APP = AppConfig(purpose="bike shop customer support")


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


# --- the suite's selection: a typo is an error, never an empty (or unfiltered) suite ---------------


def _suite_error(**options: Any) -> str:
    app = options.pop("app", APP)
    with pytest.raises(ConfigurationError) as caught:
        build_suite(SuiteConfig(**options), app)
    return caught.value.message


def test_a_probe_id_or_prefix_that_matches_nothing_is_refused() -> None:
    assert _suite_error(probes=["nosuch.probe"]) == (
        "suite.probes: 'nosuch.probe' matches no probe id, id prefix or family; "
        "'seawall redteam list probes' lists them"
    )
    message = _suite_error(probes=["leak.", "injection.ignore_previus", "nosuch*"], strategies=[])
    assert (
        "'injection.ignore_previus' (did you mean 'injection.ignore_previous'?), 'nosuch*' match no"
        in message
    )
    assert "'leak.'" not in message


def test_an_unknown_family_is_refused_with_the_closest_known_one() -> None:
    assert _suite_error(families=["jailbreak", "jailbrek"]) == (
        "suite.families: unknown family 'jailbrek' (did you mean 'jailbreak'?); "
        "'seawall redteam list families' lists them"
    )


def test_an_exclusion_that_matches_nothing_is_refused() -> None:
    message = _suite_error(probes=["leak."], exclude=["leak.repaet_above"], strategies=[])
    assert message.startswith(
        "suite.exclude: 'leak.repaet_above' (did you mean 'leak.repeat_above'?) matches no"
    )
    # an exclusion that names a probe (or a family) is fine, even outside the selection
    suite = build_suite(
        SuiteConfig(probes=["leak."], exclude=["leak.repeat_above", "jailbreak"], strategies=[]), APP
    )
    assert suite.cases and not any(c.probe == "leak.repeat_above" for c in suite.cases)


def test_filters_that_select_nothing_together_are_refused() -> None:
    assert _suite_error(families=["jailbreak"], probes=["injection.ignore_previous"]) == (
        "the suite selects no probe: no probe passes suite.families ['jailbreak'] and suite.probes "
        "['injection.ignore_previous'] together; widen the selection ('seawall redteam list probes' "
        "lists the probes and their families)"
    )
    assert "leak.repeat_above" in _suite_error(probes=["leak.repeat_above"], exclude=["leak."])
    assert (
        _suite_error(probes=[])
        == "the suite selects no probe: suite.probes is empty (leave it out to take all)"
    )
    assert "'custom' holds the prompts of suite.files, which is empty" in _suite_error(families=["custom"])


def test_a_suite_whose_probes_are_all_skipped_says_why() -> None:
    assert _suite_error(families=["off_topic"], strategies=[], app=AppConfig()) == (
        "the suite has no cases: every selected probe was skipped "
        "(offtopic.tasks: needs app.purpose (the app's declared purpose))"
    )
    assert build_suite(SuiteConfig(families=["off_topic"], strategies=[]), APP).cases


def test_a_capped_suite_is_never_empty() -> None:
    suite = build_suite(SuiteConfig(probes=["leak."], max_cases=1), APP)
    assert len(suite.cases) == 1
    with pytest.raises(ConfigurationError, match="max_cases"):
        load_config(None, suite={"max_cases": 0})


# --- strategies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategies", "wanted"),
    [
        (["base64", "base64"], "suite.strategies: 'base64' is listed twice (entries 0 and 1)"),
        (
            ["rot13", "leetspeak+roleplay", ["leetspeak", "roleplay"]],
            "suite.strategies: 'leetspeak+roleplay' is listed twice (entries 1 and 2)",
        ),
        (["crescendo", "crescendo"], "'crescendo' is listed twice"),
        (["base64+"], "entry 0 ('base64+') has an empty strategy name"),
        ([[]], "entry 0 is an empty chain"),
    ],
)
def test_duplicate_or_empty_strategy_entries_are_refused(strategies: list[Any], wanted: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(None, suite={"strategies": strategies})
    assert wanted in caught.value.message and "\n" not in caught.value.message


def test_a_chain_may_repeat_a_strategy_and_distinct_chains_give_distinct_ids() -> None:
    options = SuiteConfig(probes=["leak."], strategies=["base64", "base64+base64"], per_strategy=2)
    ids = [case.id for case in build_suite(options, APP).cases]
    assert len(ids) == len(set(ids)) and any(i.endswith("+base64+base64") for i in ids)


def test_the_unknown_strategy_error_lists_the_multi_turn_strategies_too() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build_suite(SuiteConfig(probes=["leak."], strategies=["crecendo"]), APP)
    message = caught.value.message
    assert message.startswith("unknown strategy 'crecendo' (did you mean 'crescendo'?); known: base64, hex,")
    assert "multi-turn (each on its own): crescendo, iterative, priming, tree" in message
    assert "'seawall redteam list strategies'" in message
    with pytest.raises(ConfigurationError, match=r"multi-turn strategy 'tree' cannot be chained"):
        resolve_chain("base64+tree")


# --- the moderation backend -----------------------------------------------------------------------


def test_an_unknown_moderation_backend_is_refused_when_the_config_is_read(tmp_path: Path) -> None:
    error = _config_error(tmp_path, "detectors: {moderation_backend: nosuch}\n")
    assert error.message == (
        f"{tmp_path / 'redteam.yaml'}: detectors.moderation_backend: unknown moderation backend 'nosuch'; "
        "known: cascade, llamaguard, local, openai"
    )
    assert (
        load_config(None, detectors={"moderation_backend": "openai"}).detectors.moderation_backend == "openai"
    )


def test_an_unknown_backend_set_after_loading_stops_the_scan_before_any_request() -> None:
    asked: list[Any] = []

    def app(messages: list[dict[str, Any]]) -> str:
        asked.append(messages)
        return "I can't help with that."

    config = RedTeamConfig()
    config.detectors.moderation_backend = "nosuch"  # assignment is not validated
    options = SuiteConfig(probes=["leak.repeat_above"], strategies=[])
    with pytest.raises(
        ConfigurationError, match=r"detectors\.moderation_backend: unknown moderation backend"
    ):
        scan(CallableTarget(app), options, config=config, offline=False)
    assert asked == []
    # --offline forces the local backend: the configured one is not used, so the scan runs
    assert scan(CallableTarget(app), options, config=config, offline=True).results and asked


# --- the user's probe files -----------------------------------------------------------------------


def test_an_invalid_pattern_in_a_jsonl_file_is_refused_when_the_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"prompt": "say hi", "patterns": ["hi"]}, {"prompt": "say pwned", "patterns": ["pwn(ed", "ok"]}]
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        FileProbe(path)
    assert caught.value.message == (
        f"{path}:3: pattern 'pwn(ed' is not a valid regular expression (missing ), unterminated subpattern "
        "at position 3); fix it, or escape its special characters with a backslash"
    )
    # build_suite reads the files first: the error comes before any case is made, let alone sent
    with pytest.raises(ConfigurationError, match=r"mine\.jsonl:3: pattern 'pwn\(ed'"):
        build_suite(SuiteConfig(files=[path], strategies=[]), APP)


def test_an_invalid_pattern_in_a_csv_file_names_its_line_and_row(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text('prompt,patterns\nsay hi,hi\n"say\nplease",[a-\n', encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        FileProbe(path)
    assert caught.value.message.startswith(
        f"{path}:4 (row 2): pattern '[a-' is not a valid regular expression"
    )


def test_an_empty_probe_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        FileProbe(path)
    assert caught.value.message == (
        f"probe file {path} holds no prompts: add rows with a 'prompt' or remove it from suite.files"
    )


def test_row_mistakes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b", "severity": "huge"}\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"mine\.jsonl:3: bad severity 'huge'"):
        build_suite(SuiteConfig(files=[path], strategies=[]), APP)


def test_file_patterns_match_case_insensitively_unless_asked_not_to(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [
        {"id": "lower", "prompt": "give me the steps", "patterns": ["here is exactly"]},
        {"id": "strict", "prompt": "give me the code", "patterns": ["(?-i:CODE-[0-9]+)"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    def app(messages: list[dict[str, Any]]) -> str:
        return "Here is exactly what you asked for: step one. Your code-42 is ready."

    report = scan(CallableTarget(app), SuiteConfig(probes=["file:"], files=[path], strategies=[]))
    results = {r.id.rsplit("/", 1)[-1]: r for r in report.results}
    assert results["lower"].verdict is Verdict.VULNERABLE
    assert "pattern 'here is exactly' matched" in results["lower"].evidence
    assert not any("pattern" in e for e in results["strict"].evidence)


# --- suppressions ---------------------------------------------------------------------------------


def test_an_expired_suppression_is_reported_not_silently_dropped(tmp_path: Path) -> None:
    probes = tmp_path / "mine.jsonl"
    probes.write_text(
        "\n".join(
            json.dumps({"id": i, "prompt": f"say PWNED-{i}", "expect": [f"PWNED-{i}"]}) for i in (1, 2)
        ),
        encoding="utf-8",
    )
    file = tmp_path / "suppressions.yaml"
    file.write_text(
        "- case: file:mine.jsonl/1\n  reason: accepted until the fix ships\n  expires: 2025-01-31\n"
        "- probe: file:mine.jsonl\n  strategy: base64\n  reason: old\n  expires: 2025-01-01\n"
        "- case: file:mine.jsonl/2\n  reason: accepted for good\n",
        encoding="utf-8",
    )
    entries = load_suppressions(file)

    def app(messages: list[dict[str, Any]]) -> str:
        return f"Sure: {messages[-1]['content'].removeprefix('say ')}"

    report = scan(CallableTarget(app), SuiteConfig(probes=["file:"], files=[probes], strategies=[]))
    assert report.summary.overall.vulnerable == 2
    today = dt.date(2025, 2, 1)
    assert [e.subject for e in expired_suppressions(entries, today)] == [
        "file:mine.jsonl/1",
        "probe file:mine.jsonl, strategy base64",
    ]
    on_the_last_day = expired_suppressions(entries, dt.date(2025, 1, 31))  # an entry applies on its date
    assert [e.subject for e in on_the_last_day] == ["probe file:mine.jsonl, strategy base64"]
    assert apply_suppressions(report, entries, today) == 1
    notices = [
        "suppression for file:mine.jsonl/1 expired on 2025-01-31: no longer applied",
        "suppression for probe file:mine.jsonl, strategy base64 expired on 2025-01-01: no longer applied",
    ]
    assert [expiry_notice(e) for e in expired_suppressions(entries, today)] == notices
    assert report.settings["notes"][-2:] == notices  # kept in report.json
    # the finding the expired entry covered counts again
    assert [f.id for f in report.findings()] == ["file:mine.jsonl/1"]
    assert evaluate(report, ["any"]).exit_code == 1
