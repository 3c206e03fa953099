"""The ``seawall`` command line, run as a real subprocess from the virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conftest import (
    BENIGN_KILL,
    INJECTION,
    THREAT,
    assert_far_above,
    refusing_port,
    served_port,
    subprocess_env,
    threat_score,
    wait_for,
)
from seawall.categories import CATEGORIES, EXTRA_LABELS
from seawall.settings import Settings, describe_settings, load_settings, unknown_environment_setting


def seawall_executable() -> str:
    beside_python = Path(sys.executable).with_name("seawall")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("seawall")
    assert found, "the seawall console script is not installed"
    return found


SEAWALL = seawall_executable()


def clean_env(**extra: str) -> dict[str, str]:
    env = subprocess_env()
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


def run(
    *args: str, stdin: bytes | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [SEAWALL, *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env or clean_env(),
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8"),
        completed.stderr.decode("utf-8", errors="replace"),
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_row(row: dict[str, Any]) -> dict[str, Any]:
    """One output record: a single seawall result with every category and extra score."""
    (result,) = row["results"]
    assert set(result["category_scores"]) == set(CATEGORIES)
    assert set(result["extra_scores"]) == set(EXTRA_LABELS)
    assert result["flagged"] is any(result["categories"].values())
    return result


# ----------------------------------------------------------------- moderate


def test_moderate_one_text_prints_one_json_line() -> None:
    completed = run("moderate", THREAT)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert row["input"] == THREAT
    result = assert_row(row)
    assert result["flagged"] is True
    assert "1 input(s), 1 flagged" in completed.stderr


def test_moderate_jsonl_file_keeps_order_and_records(tmp_path: Path) -> None:
    records: list[Any] = [
        BENIGN_KILL,
        {"text": THREAT, "id": 1},
        {"input": "have a lovely day", "meta": {"source": "chat", "n": [1, 2]}},
        {"input": [{"type": "text", "text": INJECTION}], "id": "parts"},
        "ünïcödé ✓",
        THREAT,
    ]
    source = tmp_path / "in.jsonl"
    source.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in records[:3])
        + "\n\n"
        + "\n".join(json.dumps(r, ensure_ascii=False) for r in records[3:])
        + "\n",
        encoding="utf-8",
    )
    target = tmp_path / "out.jsonl"
    # A batch size of 2 splits the file into several backend calls; order must survive.
    completed = run("moderate", "-f", str(source), "-o", str(target), "--batch-size", "2")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""
    rows = json_lines(target.read_text(encoding="utf-8"))
    assert len(rows) == len(records)
    assert rows[0]["input"] == BENIGN_KILL
    assert rows[1]["text"] == THREAT and rows[1]["id"] == 1
    assert rows[2]["meta"] == {"source": "chat", "n": [1, 2]}
    assert rows[3]["id"] == "parts"
    assert rows[4]["input"] == "ünïcödé ✓"
    results = [assert_row(row) for row in rows]
    assert_far_above(threat_score(results[1]), threat_score(results[0]))
    assert results[1]["category_scores"] == pytest.approx(results[5]["category_scores"], abs=1e-5)
    assert results[3]["extra_scores"]["prompt_injection"] > results[2]["extra_scores"]["prompt_injection"]
    assert f"{len(records)} input(s)" in completed.stderr


def test_moderate_jsonl_from_stdin() -> None:
    stdin = (json.dumps(THREAT) + "\n" + json.dumps({"text": "hello", "k": 2}) + "\n").encode()
    completed = run("moderate", "-f", "-", stdin=stdin)
    assert completed.returncode == 0, completed.stderr
    rows = json_lines(completed.stdout)
    assert [row.get("input", row.get("text")) for row in rows] == [THREAT, "hello"]
    assert rows[1]["k"] == 2
    assert_far_above(threat_score(assert_row(rows[0])), threat_score(assert_row(rows[1])))


def test_moderate_plain_lines_from_stdin() -> None:
    completed = run("moderate", "-", stdin=f"first line\r\n\n{THREAT}\n   \nlast\n".encode())
    assert completed.returncode == 0, completed.stderr
    rows = json_lines(completed.stdout)
    assert [row["input"] for row in rows] == ["first line", THREAT, "last"]
    for row in rows:
        assert_row(row)


@pytest.mark.parametrize(
    ("content", "line"),
    [(b"fine\ncaf\xe9\n", 2), (b"fine\n\n" + b"a" * 200_001 + b"\n", 3)],
    ids=["not-utf8", "over-the-limit"],
)
def test_a_bad_plain_line_on_stdin_stops_before_anything_is_scored(content: bytes, line: int) -> None:
    completed = run("moderate", "-", stdin=content)
    assert completed.returncode == 2, completed.stderr
    assert f"<stdin>:{line}:" in completed.stderr
    assert completed.stdout == ""


def test_moderate_with_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text("moderation:\n  thresholds: {violence: 0.0}\n", encoding="utf-8")
    completed = run("moderate", "--config", str(config), "the cat sleeps")
    assert completed.returncode == 0, completed.stderr
    result = assert_row(json_lines(completed.stdout)[0])
    assert result["categories"]["violence"] is True


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b'"fine"\n{"text": "also fine"}\n{"text": \n', 3),
        (b'"fine"\n42\n', 2),
        (b'{"id": 1}\n', 1),
        (b'{"input": 5}\n', 1),
        (b'"fine"\n"caf\xe9"\n', 2),
        # Over the service's limits: named by line before anything is scored, not as "input[N]" of a batch.
        (b'"fine"\n\n"' + b"a" * 200_001 + b'"\n', 3),
        (b'"fine"\n{"input": [{"type": "video"}]}\n', 2),
    ],
    ids=["bad-json", "number", "no-text", "input-not-text", "not-utf8", "too-long", "bad-part"],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, content: bytes, line: int) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(content)
    completed = run("moderate", "-f", str(source))
    assert completed.returncode == 2
    assert f"bad.jsonl:{line}" in completed.stderr.replace("\n", "")
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("moderate", "-f", "does-not-exist.jsonl"),
        ("moderate",),
        ("moderate", "text", "-f", "x.jsonl"),
        ("moderate", "--model", "no-such-model", "hello"),
        ("moderate", "hello", "-o", "no/such/dir/out.jsonl"),
        ("eval", "does-not-exist.jsonl"),
    ],
    ids=["missing-file", "nothing", "both", "unknown-model", "unwritable-output", "eval-missing"],
)
def test_usage_errors_exit_2_without_a_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    completed = run(*args, cwd=tmp_path)
    assert completed.returncode == 2, (completed.stdout, completed.stderr)
    assert "error" in completed.stderr.lower()
    assert "Traceback" not in completed.stderr


# ----------------------------------------------------------------- eval


def write_labeled(path: Path) -> None:
    rows = [
        {"text": "I am going to kill you, I know where you live", "labels": ["harassment/threatening"]},
        {"text": "I will find you and hurt you and your whole family", "labels": ["harassment/threatening"]},
        {"text": "I'm going to beat you until you can't walk", "labels": ["violence"]},
        {"text": "how do I kill a python process", "labels": []},
        {"text": "The cat is sleeping on the sofa.", "labels": []},
        {"text": "Thanks, see you at lunch tomorrow!", "labels": []},
        {"text": INJECTION, "labels": ["prompt_injection"]},
        {"text": "What's the weather in Paris?", "labels": []},
    ]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")


def test_eval_prints_an_auprc_table(tmp_path: Path) -> None:
    labeled = tmp_path / "labeled.jsonl"
    write_labeled(labeled)
    completed = run("eval", str(labeled))
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "AUPRC" in out and "F1" in out
    for name in ("harassment/threatening", "harassment", "violence", "prompt_injection"):
        assert name in out
    assert "self-harm" not in out  # no positives: not reported
    assert "rows 8" in out.replace("\n", " ")


def test_eval_json_report(tmp_path: Path) -> None:
    labeled = tmp_path / "labeled.jsonl"
    write_labeled(labeled)
    completed = run("eval", "--json", str(labeled))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["summary"]["rows"] == 8
    assert report["summary"]["any_positives"] == 3
    # The parent relation holds: a threat is harassment too.
    assert report["labels"]["harassment"]["positives"] == 2
    for row in report["labels"].values():
        assert 0.0 <= row["auprc"] <= 1.0
        assert 0.0 <= row["f1"] <= 1.0
    assert report["labels"]["prompt_injection"]["auprc"] == 1.0


def test_eval_reads_categories_as_0_1_fields(tmp_path: Path) -> None:
    labeled = tmp_path / "labeled.jsonl"
    rows = [
        {"text": THREAT, "harassment/threatening": 1, "violence": 1},
        {"text": "What's the weather in Paris?", "violence": 0},
    ]
    labeled.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    completed = run("eval", "--json", str(labeled))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["summary"]["any_positives"] == 1
    assert report["labels"]["harassment"]["positives"] == 1  # a parent of a 0/1 field too


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"text": "a", "labels": []}\n{not json}\n', "labeled.jsonl:2"),
        (b'{"text": "a", "labels": ["not-a-category"]}\n', "labeled.jsonl:1"),
        (b'{"labels": []}\n', "labeled.jsonl:1"),
        (b'{"text": "a", "labels": "violence"}\n', "labeled.jsonl:1"),
        (b"\n\n", "no rows"),
        (b'{"text": "caf\xe9", "labels": []}\n', "UTF-8"),
        # Never labelled: read as benign it would count as a false positive of the model.
        (b'{"text": "a", "labels": []}\n{"text": "b"}\n', "labeled.jsonl:2: no labels"),
    ],
    ids=["bad-json", "unknown-label", "no-text", "labels-not-list", "empty", "not-utf8", "unlabelled"],
)
def test_eval_on_a_malformed_file(tmp_path: Path, content: bytes, needle: str) -> None:
    labeled = tmp_path / "labeled.jsonl"
    labeled.write_bytes(content)
    completed = run("eval", str(labeled))
    assert completed.returncode == 2
    assert needle in completed.stderr.replace("\n", "")
    assert "Traceback" not in completed.stderr


# ----------------------------------------------------------------- config


def schema_settings() -> list[tuple[str, str, bool]]:
    """(dotted name, description, is a leaf) of every setting, sections included, read from the
    JSON schema of Settings (not from seawall's own walk over the models): sections that are
    optional, lists of sections ('[]') and mappings of sections ('*') are walked too."""
    schema = Settings.model_json_schema()
    definitions = schema.get("$defs", {})

    def section_of(node: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        def model(ref: dict[str, Any]) -> dict[str, Any]:
            return definitions[ref["$ref"].rsplit("/", 1)[-1]]

        if "$ref" in node:
            return model(node), ""
        references = [option for option in node.get("anyOf", []) if "$ref" in option]
        if len(references) == 1:
            return model(references[0]), ""
        if "$ref" in node.get("items", {}):
            return model(node["items"]), "[]"
        if "$ref" in (node.get("additionalProperties") or {}):
            return model(node["additionalProperties"]), ".*"
        return None

    found: list[tuple[str, str, bool]] = []

    def walk(model: dict[str, Any], prefix: str) -> None:
        for name, node in model["properties"].items():
            section = section_of(node)
            found.append((prefix + name, node.get("description", ""), section is None))
            if section is not None:
                walk(section[0], f"{prefix}{name}{section[1]}.")

    walk(schema, "")
    return found


def config_lines(stdout: str) -> dict[str, str]:
    """``seawall config``'s ``name = value`` lines, by name."""
    return dict(line.split(" = ", 1) for line in stdout.splitlines() if line and not line.startswith(" "))


def test_config_lists_and_documents_every_setting() -> None:
    settings = schema_settings()
    leaves = [name for name, _, leaf in settings if leaf]
    assert len(leaves) > 150 and "ui.oidc.issuer" in leaves and "review.notices.limitations[].id" in leaves
    assert [name for name, description, _ in settings if not description.strip()] == []

    completed = run("config", env=clean_env(COLUMNS="80"))
    assert completed.returncode == 0, completed.stderr
    shown = config_lines(completed.stdout)
    assert [name for name in leaves if name not in shown] == []
    assert shown["gateway.rate_limits.per_key.requests"] == "(unset)"  # per_key is None
    assert shown["gateway.rate_limits.per_user.requests"] == "60"
    words = " ".join(completed.stdout.split())
    assert [name for name, text, leaf in settings if leaf and " ".join(text.split()) not in words] == []
    assert "PydanticUndefined" not in completed.stdout and "(required)" in completed.stdout
    assert max(len(line) for line in completed.stdout.splitlines()) <= 80
    assert [name for name, _, _ in describe_settings()] == list(shown)


def test_config_shows_file_and_environment_values(tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text("server:\n  port: 9123\nmoderation:\n  max_items: 77\n", encoding="utf-8")
    completed = run("config", "--config", str(config), env=clean_env(SEAWALL_MODERATION__MAX_ITEMS="55"))
    assert completed.returncode == 0, completed.stderr
    lines = config_lines(completed.stdout)
    assert lines["server.port"] == "9123"
    assert lines["moderation.max_items"] == "55"  # the environment beats the file


def test_config_as_yaml_is_a_commented_settings_file_that_loads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in os.environ if name.startswith("SEAWALL_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "seawall.yaml"
    config.write_text(
        "server: {port: 9123, api_keys: [sk-not-shown]}\n"
        "ui: {oidc: {issuer: 'https://login.example.org', client_id: seawall}}\n",
        encoding="utf-8",
    )
    completed = run("config", "--config", str(config), "--format", "yaml", env=clean_env(COLUMNS="80"))
    assert completed.returncode == 0, completed.stderr
    assert max(len(line) for line in completed.stdout.splitlines()) <= 80
    assert "sk-not-shown" not in completed.stdout and "'**********'" in completed.stdout
    assert (
        "  url: sqlite:///" in completed.stdout
    )  # the store's place shows: a password-less URL hides nothing
    comments = " ".join(completed.stdout.replace("#", " ").split())
    assert [name for name, text, _ in schema_settings() if " ".join(text.split()) not in comments] == []
    assert "#   # SMTP server host. (required)" in completed.stdout  # the template of a None section

    printed = tmp_path / "printed.yaml"
    printed.write_text(completed.stdout.replace("'**********'", "sk-not-shown"), encoding="utf-8")
    assert load_settings(printed) == load_settings(config)


def test_a_misspelt_environment_setting_is_refused_with_the_name_it_meant() -> None:
    completed = run("config", env=clean_env(SEAWALL_MODERATION__CONTEXTAUL="off", SEAWALL_PORT="9000"))
    assert completed.returncode == 2, completed.stdout
    assert (
        "SEAWALL_MODERATION__CONTEXTAUL is not a setting (did you mean SEAWALL_MODERATION__CONTEXTUAL?)"
        in (completed.stderr)
    )
    assert "SEAWALL_PORT is not a setting (did you mean SEAWALL_SERVER__PORT?)" in completed.stderr
    assert "Traceback" not in completed.stderr

    # Lower case is read as pydantic-settings reads it; the test suite's own switches are not settings.
    completed = run("config", env=clean_env(seawall_moderation__contextual="off", SEAWALL_TEST_ANYTHING="1"))
    assert completed.returncode == 0, completed.stderr
    assert config_lines(completed.stdout)["moderation.contextual"] == "off"


def test_environment_names_below_a_mapping_belong_to_it() -> None:
    assert unknown_environment_setting("SEAWALL_PLUGINS__KEYWORD__WORDS") is None  # a plugin's own keys
    assert unknown_environment_setting("SEAWALL_MODERATION__THRESHOLDS__HARASSMENT") is None
    assert unknown_environment_setting("SEAWALL_GATEWAY") is None  # a whole section, as JSON
    assert unknown_environment_setting("OTHER_TOOL__PORT") is None
    problem = unknown_environment_setting("SEAWALL_GATEWAY__NOPE")
    assert problem is not None and problem.startswith("SEAWALL_GATEWAY__NOPE is not a setting")


def test_config_with_an_invalid_file(tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text("server: [this is not a mapping\n", encoding="utf-8")
    completed = run("config", "--config", str(config))
    assert completed.returncode == 2
    assert "YAML" in completed.stderr


# ----------------------------------------------------------------- serve


def _serve(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``seawall serve ARGS`` in ``tmp_path``, its home too: the default store, secret and model
    cache are never the user's."""
    return subprocess.Popen(
        [SEAWALL, "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(HOME=str(tmp_path)),
        cwd=tmp_path,
    )


def _said(process: subprocess.Popen[bytes]) -> str:
    """What a ``_serve`` process wrote to stderr, once it has exited (read earlier, it would block)."""
    if process.poll() is None or process.stderr is None:
        return "(still running)"
    return process.stderr.read().decode(errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> tuple[str, str]:
    """Ctrl+C, as a user stops it; its stdout and stderr."""
    process.send_signal(signal.SIGINT)
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return stdout.decode(), stderr.decode()


def test_serve_answers_and_stops(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = _serve(tmp_path, "--port", "0", "--port-file", str(port_file))
    try:
        # The port file is written once the server accepts requests: the first request is answered.
        port = served_port(port_file, process, lambda: _said(process))
        assert port_file.read_text() == f"{port}\n"
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0) as client:
            response = client.moderations.create(model="omni-moderation-latest", input=[THREAT, "hi"])
        assert len(response.results) == 2
        threat, hello = response.model_dump(by_alias=True)["results"]
        assert_far_above(threat_score(threat), threat_score(hello))
    finally:
        _, stderr = _stop(process)
    assert process.returncode == 0, stderr
    assert f"seawall serving on http://127.0.0.1:{port}/v1" in stderr  # the bound port, not 0
    assert not port_file.exists()  # a stopped server's port is nobody's to use


def test_serve_port_file_replaces_a_stale_one_and_refuses_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "port"
    completed = run("serve", "--port", "0", "--port-file", str(missing), env=clean_env(HOME=str(tmp_path)))
    assert completed.returncode != 0
    assert f"the folder {missing.parent} does not exist" in completed.stderr

    # A file left by a killed run names a port nobody listens on: the server replaces it with the
    # port it bound (a script removes the old file itself before it starts the server and waits).
    port_file = tmp_path / "port"
    with refusing_port() as stale:
        port_file.write_text(f"{stale}\n")
        process = _serve(tmp_path, "--port", "0", "--port-file", str(port_file))
        try:

            def replaced() -> bool:
                assert process.poll() is None, _said(process)
                try:
                    return port_file.read_text() != f"{stale}\n"
                except FileNotFoundError:  # removed at start, not written yet
                    return False

            wait_for(replaced, 120, "the stale port file replaced")
            port = int(port_file.read_text())
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        finally:
            _stop(process)


def test_serve_on_a_taken_port_fails_and_writes_no_port_file(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        completed = run(
            "serve",
            "--port",
            str(taken.getsockname()[1]),
            "--port-file",
            str(port_file),
            env=clean_env(HOME=str(tmp_path)),
        )
    assert completed.returncode == 3, completed.stderr  # uvicorn's start-up failure
    assert "address already in use" in completed.stderr.lower()
    assert not port_file.exists()


def test_serve_refuses_to_start_with_an_unknown_image_fallback(tmp_path: Path) -> None:
    config = tmp_path / "seawall.yaml"
    config.write_text("images:\n  fallback_backend: no-such-backend\n", encoding="utf-8")
    process = subprocess.run(
        [SEAWALL, "serve", "--config", str(config), "--port", "0"],
        capture_output=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert process.returncode != 0
    assert "no-such-backend" in process.stderr.decode()


def test_help_lists_the_commands() -> None:
    completed = run("--help")
    assert completed.returncode == 0
    for command in ("serve", "moderate", "eval", "train", "config"):
        assert command in completed.stdout


def test_train_refuses_a_fine_tune_without_the_contextual_stage(tmp_path: Path) -> None:
    # Refused before any data is read: the data folder does not even exist.
    result = run(
        "train",
        "--data",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "out"),
        "--finetune-rows",
        "5",
        "--no-contextual",
    )
    assert result.returncode == 2
    assert "--finetune-rows" in result.stderr and "--contextual" in result.stderr
    assert not (tmp_path / "out").exists()
    negative = run("train", "--data", str(tmp_path), "--finetune-rows", "-1")
    assert negative.returncode == 2 and "Invalid value for '--finetune-rows'" in negative.stderr
    epochs_alone = run("train", "--data", str(tmp_path / "none"), "--finetune-epochs", "3")
    assert epochs_alone.returncode == 2 and "--finetune-rows" in epochs_alone.stderr
    seeds_alone = run(
        "train", "--data", str(tmp_path / "none"), "--context-head-seed", "1", "--no-contextual"
    )
    assert seeds_alone.returncode == 2 and "--context-head-seed" in seeds_alone.stderr
    assert not (tmp_path / "out").exists()


def test_config_shows_a_store_url_with_only_its_password_masked() -> None:
    url = "postgresql+psycopg://seawall:hunter2@db.internal:5432/seawall"
    completed = run("config", env=clean_env(SEAWALL_STORE__URL=url, COLUMNS="200"))
    assert completed.returncode == 0, completed.stderr
    assert (
        config_lines(completed.stdout)["store.url"]
        == "postgresql+psycopg://seawall:**********@db.internal:5432/seawall"
    )
    assert "hunter2" not in completed.stdout


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("SEAWALL_STORE__URL", "garbage", "store.url: store.url must be a database URL"),
        ("SEAWALL_SERVER__PORT", "abc", "server.port: Input should be a valid integer"),
        ("SEAWALL_MODERATION__THRESHOLDS", "notjson", "invalid SEAWALL_* environment variable"),
    ],
)
def test_bad_settings_are_one_clear_line_not_a_traceback(variable: str, value: str, said: str) -> None:
    completed = run("keys", "list", env=clean_env(**{variable: value}))
    assert completed.returncode == 2, completed.stderr
    assert said in completed.stderr and "Traceback" not in completed.stderr
    assert "errors.pydantic.dev" not in completed.stderr


@pytest.mark.parametrize("hours", ["nan", "inf", "-5", "0", "1e12"])
def test_a_block_or_window_of_no_sensible_length_is_refused(hours: str, tmp_path: Path) -> None:
    env = clean_env(SEAWALL_DATA_DIR=str(tmp_path))
    blocked = run("users", "block", "u1", "--raw", "--reason", "spam", "--hours", hours, env=env)
    assert blocked.returncode == 2 and "--hours" in blocked.stderr and "Traceback" not in blocked.stderr
    summary = run("org", "--hours", hours, env=env)
    assert summary.returncode == 2 and "Traceback" not in summary.stderr


def test_moderate_checks_its_output_first_and_keeps_finished_rows_on_ctrl_c(tmp_path: Path) -> None:
    source = tmp_path / "many.jsonl"
    source.write_text(
        "".join(
            json.dumps({"input": f"note {i} on the weather and a walk", "id": i}) + "\n"
            for i in range(40_000)
        ),
        encoding="utf-8",
    )
    unwritable = run("moderate", "-f", str(source), "-o", str(tmp_path / "no" / "such" / "out.jsonl"))
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr
    assert "moderating" not in unwritable.stderr  # refused before any scoring began

    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(
        [SEAWALL, "moderate", "-f", str(source), "-o", str(out), "--batch-size", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        # A suite started in the background runs with SIGINT ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert 0 < len(rows) < 40_000
    assert f"the first {len(rows)} of 40000 results are in {out}" in " ".join(stderr.split())
    assert [row["id"] for row in rows] == list(range(len(rows)))


def test_db_and_audit_results_go_to_stdout_and_conflicting_sources_are_refused(tmp_path: Path) -> None:
    env = clean_env(SEAWALL_DATA_DIR=str(tmp_path))
    assert run("db", "upgrade", env=env).returncode == 0
    current = run("db", "current", env=env)
    assert current.returncode == 0 and "up to date" in current.stdout  # `seawall db current > f` keeps it
    verified = run("audit", "verify", "store", env=env)
    assert verified.returncode == 0 and "intact (0 records" in verified.stdout
    trail = tmp_path / "audit.jsonl"
    trail.write_text("", encoding="utf-8")
    both = run("audit", "verify", "store", "--file", str(trail), env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    one_tenant = run("audit", "verify", "--file", str(trail), "--tenant", "acme", env=env)
    assert one_tenant.returncode == 2 and "--tenant" in one_tenant.stderr
