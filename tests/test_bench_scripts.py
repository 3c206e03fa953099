"""Every benchmark script still imports against today's package.

The benchmarks print the figures the notes and model cards report, but no test runs them end to end
(they take minutes to hours). A renamed constant once left ``bench/refusal.py`` unable to start for a
whole round unnoticed; importing each script (its ``main`` guarded, so nothing runs) catches that class
of breakage in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "bench").glob("*.py"))

# Run in a child process: the scripts put bench/ and src/ on sys.path and import heavy optional
# modules, which should not leak into the test session.
_IMPORT_ALL = """
import importlib.util, json, sys
sys.path.insert(0, sys.argv[1])
failures, without_main = {}, []
for path in sys.argv[2:]:
    name = "bench_" + path.rsplit("/", 1)[-1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    except BaseException as error:  # SystemExit included: a script must not run on import
        failures[path] = f"{type(error).__name__}: {error}"
        continue
    if not callable(getattr(module, "main", None)):
        without_main.append(path)
print(json.dumps({"failures": failures, "without_main": without_main}))
"""


def _import(paths: list[Path]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(ROOT / "bench"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_every_benchmark_script_imports_and_has_a_main() -> None:
    assert len(SCRIPTS) >= 20, SCRIPTS
    assert _import(SCRIPTS) == {"failures": {}, "without_main": []}


def test_a_script_that_imports_a_missing_name_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("from seawall.redteam.refusal_training import NO_SUCH_NAME\n\ndef main(): ...\n")
    failures = _import([broken])["failures"]
    assert isinstance(failures, dict) and list(failures) == [str(broken)]
    assert "NO_SUCH_NAME" in failures[str(broken)]


def test_the_refusal_benchmark_names_held_out_sets_by_number() -> None:
    script = ROOT / "bench" / "refusal.py"
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('bench_refusal', {str(script)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "names = ('10', '23', '345', '2,10', '1', '11', '13', '14', '16')\n"
        "print(json.dumps([module.selected_sets(t) for t in names]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        ["10"],
        ["23"],  # a set's own number wins over one set a digit
        ["3", "4", "5"],
        ["2", "10"],
        ["1"],
        ["11"],
        ["13"],
        ["14"],
        ["16"],
    ]
    # a set the bench does not know is refused before anything is scored
    refused = subprocess.run(
        [sys.executable, str(script), "--sets", "2,99", "--folds", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert refused.returncode == 2 and "--sets takes set numbers from 1,2" in refused.stderr, refused.stderr
    assert "held-out set" not in refused.stdout


def test_comparing_a_model_with_itself_finds_no_difference_and_a_bad_folder_is_refused(
    tmp_path: Path,
) -> None:
    """The paired comparison end to end on the functional suite: the shipped model against a copy of
    itself differs by exactly 0 with a zero-width interval on every figure."""
    import shutil

    from seawall.model.classifier import default_model_dir

    copy = tmp_path / "copy"
    shutil.copytree(default_model_dir(), copy)
    out = tmp_path / "figures.json"
    script = str(ROOT / "bench" / "compare_models.py")
    arguments = ["--candidate", str(copy), "--sets", "functional", "--resamples", "100", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, script, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())["functional"]
    assert set(figures) == {"any-category AUPRC", "mean per-category AUPRC", "false-positive rate", "recall"}
    for row in figures.values():
        assert row["base"] == row["candidate"] and row["difference"] == row["low"] == row["high"] == 0
    assert 0.9 < figures["any-category AUPRC"]["base"] <= 1
    refused = subprocess.run(
        [sys.executable, script, "--candidate", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 2 and "no model.json" in refused.stderr
