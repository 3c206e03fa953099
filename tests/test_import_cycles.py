"""seawall's modules import one another without cycles (read from the source by bench/import_cycles.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "bench" / "import_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cycles_script = _script()


def module_level(source: Path) -> list[object]:
    return [edge for edge in cycles_script.collect_edges(source) if edge.kind != "function"]


def test_no_module_imports_another_that_imports_it_back() -> None:
    found = cycles_script.cycles(module_level(ROOT / "src"))
    assert found == [], cycles_script.report(ROOT / "src")[0]


def test_the_gateway_and_the_review_packages_do_not_import_each_other() -> None:
    pairs = [pair for pair, _ in cycles_script.mutual_packages(module_level(ROOT / "src"))]
    assert ("seawall.gateway", "seawall.review") not in pairs


def test_the_script_finds_cycles_of_every_kind(tmp_path: Path) -> None:
    package = tmp_path / "seawall"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from seawall import b\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from seawall.a import thing\n"
    )
    (package / "c.py").write_text("import seawall.sub.d\n")
    (package / "sub" / "d.py").write_text("def later():\n    from ..c import name\n")
    edges = cycles_script.collect_edges(tmp_path)
    assert {(e.source, e.target, e.kind) for e in edges} == {
        ("seawall.a", "seawall.b", "module"),
        ("seawall.b", "seawall.a", "type_checking"),
        ("seawall.c", "seawall.sub.d", "module"),
        ("seawall.sub.d", "seawall.c", "function"),
    }
    module_cycles = cycles_script.cycles(module_level(tmp_path))
    assert [group for group, _ in module_cycles] == [["seawall.a", "seawall.b"]]
    assert [group for group, _ in cycles_script.cycles(edges)] == [
        ["seawall.a", "seawall.b"],
        ["seawall.c", "seawall.sub.d"],
    ]
    text, count = cycles_script.report(tmp_path)
    assert count == 1
    assert "seawall.b:3 -> seawall.a   [type checking only]" in text
    assert "seawall.sub.d:2 -> seawall.c   [inside a function]" in text
