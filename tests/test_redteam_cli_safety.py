"""`seawall redteam run` never loses a scan to a mistake it could have caught first: a report folder
that cannot be written, an unknown format or a malformed target is refused before any request;
Ctrl-C keeps the cases that finished; a folder that breaks after the scan gets the results saved
elsewhere. Scans go to a simulated chat server on loopback (tests/data/redteam/bots.py), and the
Ctrl-C test runs the real command in a subprocess and sends it a real SIGINT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from backend_standins import serving
from seawall.redteam import load_report, scan
from seawall.redteam.cli import _write
from seawall.redteam.cli import app as redteam_cli
from seawall.redteam.config import OpenAITargetConfig, RedTeamConfig

sys.path.insert(0, str(Path(__file__).parent / "data" / "redteam"))
from bots import chat_app, hardened_reply

CONFIG = (
    "app:\n  system_prompt: You are Velo Help.\n"
    "suite:\n  families: [system_prompt_leakage, prompt_injection]\n  strategies: []\n"
    "run:\n  concurrency: 1\n"
)


@pytest.fixture()
def bot() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with serving(chat_app(hardened_reply, seen=seen)) as server:
        yield f"{server.url}/v1", seen


@pytest.fixture()
def slow_bot() -> Iterator[str]:
    def slow(messages: list[dict[str, Any]]) -> str:
        time.sleep(0.4)
        return str(hardened_reply(messages))

    with serving(chat_app(slow)) as server:
        yield f"{server.url}/v1"


def _run(config: Path, url: str, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        redteam_cli, ["run", "-c", str(config), "--target", url, "--model", "bot", "-q", *extra]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_mistakes_are_refused_before_any_request(
    bot: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, seen = bot
    config = tmp_path / "redteam.yaml"
    config.write_text(CONFIG)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")

    code, output = _run(config, url, "-o", str(a_file / "sub"))
    assert code == 2 and "cannot write reports to" in output and "Traceback" not in output

    code, output = _run(config, url, "-o", str(tmp_path / "out"), "--format", "pdf")
    assert code == 2 and "unknown report format 'pdf'" in output and "html" in output

    code, output = _run(config, "ftp://127.0.0.1/v1", "-o", str(tmp_path / "out"))
    assert code == 2 and "--target ftp://127.0.0.1/v1" in output and "Traceback" not in output
    assert "base_url must start with" in output and "Value error" not in output

    code, output = _run(config, url, "--target-type", "bogus", "-o", str(tmp_path / "out"))
    assert code == 2 and "choose openai or seawall" in output
    assert seen == []  # not one request reached the target

    code, output = _run(config, url, "-o", str(tmp_path / "out"), "--format", "json")
    assert code == 0, output
    assert seen and (tmp_path / "out" / "report.json").is_file()
    assert not list((tmp_path / "out").glob(".seawall-write-check-*"))  # the check leaves nothing behind


def test_freeze_to_an_unwritable_path_is_a_clean_error(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    frozen = CliRunner().invoke(redteam_cli, ["freeze", "-o", str(a_file / "suite.json")])
    assert frozen.exit_code == 2 and "cannot write the suite to" in frozen.output
    assert not isinstance(frozen.exception, OSError)


def test_a_folder_that_fails_after_the_scan_gets_the_results_saved_elsewhere(
    bot: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = bot
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    report = scan(
        OpenAITargetConfig(base_url=url, model="bot"),
        config=RedTeamConfig(suite={"probes": ["leak.repeat_above"], "strategies": []}),
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    with pytest.raises(typer.Exit) as exited:
        _write(report, a_file / "sub", ["json", "html"])
    assert exited.value.exit_code == 2
    [rescued] = (tmp_path / "tmp").glob("seawall-redteam-*")
    saved = load_report(rescued / "report.json")
    assert saved.results and [r.id for r in saved.results] == [r.id for r in report.results]
    assert (rescued / "cases.jsonl").is_file()
    # when the temporary folder fails too, a clean error with the caller's exit code, no traceback
    monkeypatch.setattr(tempfile, "tempdir", str(a_file / "tmp"))
    with pytest.raises(typer.Exit) as again:
        _write(report, a_file / "sub", ["json"], exit_code=130)
    assert again.value.exit_code == 130


def test_ctrl_c_keeps_the_finished_cases_and_progress_shows_without_a_terminal(
    slow_bot: str, tmp_path: Path
) -> None:
    config = tmp_path / "redteam.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    command = ["redteam", "run", "-c", str(config), "--target", slow_bot, "--model", "bot", "-o", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "seawall", *command, "--offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background runs with SIGINT ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    progress: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        if line.startswith("scanned "):
            progress.append(line)
            done = int(line.split()[1].split("/")[0])
            if done >= 3:
                break
    assert progress, "no progress line reached a non-terminal stderr"
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, rest
    assert "interrupted after" in rest
    report = json.loads((out / "report.json").read_text())
    total = int(progress[0].split()[1].split("/")[1])
    assert 3 <= len(report["results"]) < total
    assert report["settings"]["interrupted"] is True
    assert len((out / "cases.jsonl").read_text().splitlines()) == len(report["results"])


def test_an_expired_suppression_is_announced_before_the_scan(
    bot: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    url, _ = bot
    config = tmp_path / "redteam.yaml"
    config.write_text(CONFIG)
    suppressions = tmp_path / "suppressions.yaml"
    suppressions.write_text(
        "- probe: leak.repeat_above\n  reason: accepted last year\n  expires: 2025-01-31\n"
    )
    code, output = _run(config, url, "-o", str(tmp_path / "out"), "--suppressions", str(suppressions))
    assert code == 0, output
    assert "suppression for probe leak.repeat_above expired on 2025-01-31: no longer applied" in output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any("expired on 2025-01-31" in note for note in report["settings"]["notes"])


def test_paths_are_read_as_a_user_means_them(bot: tuple[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    """report.dir in a config file is relative to the file (as its other paths are); --baseline takes
    the folder of an earlier run; replaying a report.json says to replay its cases.jsonl."""
    url, _ = bot
    (tmp_path / "project").mkdir()
    config = tmp_path / "project" / "redteam.yaml"
    config.write_text(CONFIG + "report:\n  dir: reports/first\n  formats: [json, jsonl]\n")
    code, output = _run(config, url)
    assert code == 0, output
    first = tmp_path / "project" / "reports" / "first"
    assert (first / "report.json").is_file()
    code, output = _run(config, url, "-o", str(tmp_path / "second"), "--baseline", str(first))
    assert code == 0, output
    replayed = CliRunner().invoke(
        redteam_cli, ["replay", str(first / "report.json"), "--target", url, "--model", "bot"]
    )
    assert replayed.exit_code == 2 and "replay the cases.jsonl beside it" in replayed.output
