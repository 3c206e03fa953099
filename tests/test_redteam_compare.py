"""``seawall redteam compare``: ASR per family with Wilson intervals across saved runs.

The runs are real scans of two simulated apps over loopback (the leaky and the careful one of
test_redteam_coverage), saved with the real report writer; the trend is read back by the CLI.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend_standins import serving
from seawall.redteam import AppConfig, RedTeamConfig, SuiteConfig, build_suite, freeze, load_report, scan
from seawall.redteam.cli import app as redteam_cli
from seawall.redteam.config import OpenAITargetConfig
from seawall.redteam.report import percent, write_reports
from seawall.redteam.stats import group_stats, wilson
from seawall.redteam.trends import cell, load_runs, trend

sys.path.insert(0, str(Path(__file__).parent / "data" / "redteam"))
from bots import chat_app

from test_redteam_coverage import careful_reply, leaky_reply

APP = AppConfig(
    system_prompt="You are Velo Help, the support assistant of Velo Bikes.", purpose="bike support"
)
CONFIG = RedTeamConfig(app=APP, detectors={"moderation": False})
PROBES = [
    "leak.prompt_completion",
    "output.path_traversal",
    "agency.claimed_action",
    "poisoning.knowledge_base",
]
#: Run folder -> (the app scanned, the day it is dated).
RUNS = {
    "monday": ("leaky", "2026-11-02"),
    "tuesday": ("careful", "2026-11-03"),
    "wednesday": ("leaky", "2026-11-04"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out: dict[str, Path] = {}
    with serving(chat_app(leaky_reply)) as leaky, serving(chat_app(careful_reply)) as careful:
        urls = {"leaky": f"{leaky.url}/v1", "careful": f"{careful.url}/v1"}
        for name, (app, day) in RUNS.items():
            report = scan(
                OpenAITargetConfig(base_url=urls[app], model=app),
                SuiteConfig(seed=5, probes=PROBES, strategies=[]),
                config=CONFIG,
            )
            report.started_at = f"{day}T10:00:00+00:00"
            write_reports(report, root / name, ["json"])
            out[name] = root / name
        extra = scan(
            OpenAITargetConfig(base_url=urls["leaky"], model="leaky"),
            SuiteConfig(seed=5, probes=[*PROBES, "leak.pii_verification"], strategies=[]),
            config=CONFIG,
        )
        write_reports(extra, root / "bigger", ["json"])
        out["bigger"] = root / "bigger"
    return out


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(redteam_cli, ["compare", *args], env={"COLUMNS": "240"})
    return result.exit_code, result.output


def test_the_trend_orders_runs_by_date_and_gives_intervals(runs: dict[str, Path], tmp_path: Path) -> None:
    html_path = tmp_path / "trend.html"
    # given out of order (and as a folder and as a file): shown oldest first
    code, output = _invoke(
        str(runs["wednesday"]),
        str(runs["monday"] / "report.json"),
        str(runs["tuesday"]),
        "-o",
        str(html_path),
    )
    assert code == 0, output
    assert output.index("2026-11-02") < output.index("2026-11-03") < output.index("2026-11-04")
    reports = [load_report(runs[name] / "report.json") for name in RUNS]
    data = trend(load_runs([runs[name] for name in RUNS]))
    assert [r.started_at[:10] for r in data.runs] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    families = sorted({r.case.family for r in reports[0].results})
    assert sorted(data.families) == families
    page = html_path.read_text("utf-8")
    for family in families:
        for index, report in enumerate(reports):
            stats = group_stats([r for r in report.results if r.case.family == family])
            assert data.families[family][index] == stats
            assert cell(stats) in page
            if stats.judged:
                low, high = wilson(stats.vulnerable, stats.judged)
                assert f"[{percent(low)}–{percent(high)}]" in page
    for stats in data.overall:
        assert percent(stats.asr) in output
    # the leaky app's runs are found out, the careful one's not
    assert (
        data.overall[0].vulnerable > 0 and data.overall[1].vulnerable == 0 and data.overall[2].vulnerable > 0
    )
    # self-contained: an inline SVG chart, no script, nothing fetched
    assert "<svg" in page and "<polyline" in page and "<table>" in page
    assert "<script" not in page.lower()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?https?://", page)


def test_bad_input_gets_a_clear_error(runs: dict[str, Path], tmp_path: Path) -> None:
    monday = str(runs["monday"])
    code, output = _invoke(monday, str(tmp_path / "nowhere.json"))
    assert code == 2 and "nowhere.json: no such file" in output
    (tmp_path / "empty").mkdir()
    code, output = _invoke(monday, str(tmp_path / "empty"))
    assert code == 2 and "holds no report.json" in output
    suite_file = tmp_path / "suite.json"
    freeze(build_suite(SuiteConfig(seed=5, probes=PROBES, strategies=[]), APP), suite_file)
    code, output = _invoke(monday, str(suite_file))
    assert code == 2 and "is not a red-team run" in output and "seawall redteam run" in output
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json", "utf-8")
    code, output = _invoke(monday, str(garbage))
    assert code == 2 and "is not JSON" in output
    broken = json.loads((runs["monday"] / "report.json").read_text("utf-8"))
    del broken["results"][0]["verdict"]
    (tmp_path / "broken.json").write_text(json.dumps(broken), "utf-8")
    code, output = _invoke(monday, str(tmp_path / "broken.json"))
    assert code == 2 and "not a valid one" in output and "verdict" in output
    code, output = _invoke(monday)
    assert code == 2 and "at least two runs" in output


def test_runs_of_different_catalogues_are_refused_unless_asked_to_share(runs: dict[str, Path]) -> None:
    code, output = _invoke(str(runs["monday"]), str(runs["bigger"]))
    assert code == 2
    assert "runs of different catalogues" in output and "leak.pii_verification" in output
    assert "--shared-only" in output
    code, output = _invoke(str(runs["monday"]), str(runs["bigger"]), "--shared-only")
    assert code == 0, output
    data = trend(load_runs([runs["monday"], runs["bigger"]], shared_only=True))
    assert "pii_leakage" not in data.families
    assert data.overall[0].cases == data.overall[1].cases


def test_the_trend_module_leaves_the_baseline_compare_in_place() -> None:
    """``seawall.redteam.compare`` is the baseline comparison (gate.compare); importing the trend
    code (as the CLI does) must not rebind that name to a module."""
    import seawall.redteam
    import seawall.redteam.cli
    import seawall.redteam.trends
    from seawall.redteam.gate import compare as baseline_compare

    assert seawall.redteam.cli.load_runs is seawall.redteam.trends.load_runs
    assert seawall.redteam.compare is baseline_compare
