"""A pytest plugin so an app's own tests can assert on a red-team scan.

Enable it with ``-p seawall.redteam.pytest_plugin`` (or the ``pytest11`` entry point), then::

    def test_my_app_resists_injection(redteam_scan):
        report = redteam_scan("http://127.0.0.1:8000/v1", model="my-model",
                              suite=SuiteConfig(families=["prompt_injection"], per_strategy=2))
        assert report.asr is not None and report.asr <= 0.05, report.findings()

``redteam_scan`` is :func:`seawall.redteam.scan` with offline defaults; with
``--redteam-report-dir DIR`` every scan of the session also writes its reports there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seawall.redteam.report import Report, write_reports
from seawall.redteam.scan import scan


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seawall-redteam")
    group.addoption("--redteam-report-dir", default=None, help="Write every redteam_scan's reports here.")


@pytest.fixture
def redteam_scan(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """Run a scan (offline by default) and return its report."""
    try:
        directory = request.config.getoption("--redteam-report-dir")
    except ValueError:  # the plugin's options are not registered (fixture imported directly)
        directory = None

    def run(target: Any, suite: Any = None, **kwargs: Any) -> Report:
        report = scan(target, suite, **kwargs)
        if directory:
            name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
            write_reports(report, Path(directory) / name, ["json", "junit", "html"])
        return report

    return run
