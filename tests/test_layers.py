"""The harness's sub-packages import only the ones below them (README "Layout", docs/CONTRIBUTING.md).

Every import statement counts, at module level or inside a function: a lazy import that points up is still a cycle in
the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bottom first; a package may import the packages before it (and itself), never one after it
ORDER = ("checkpoints", "datasets", "shapesworld", "reporting", "protocols", "orchestration", "demo")


def _package(path: Path) -> str | None:
    rel = path.relative_to(REPO / "evaluate").parts
    return rel[0] if len(rel) > 1 else None  # top-level modules (cli.py, __init__.py) may import anything


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        targets = {n.split(".")[1] for n in names if n.startswith("evaluate.") and n.split(".")[1] in ORDER}
        out += [(node.lineno, target) for target in sorted(targets)]
    return out


def test_every_evaluate_package_is_in_the_layer_order():
    packages = {p.name for p in (REPO / "evaluate").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(ORDER)
    assert sorted(p.name for p in (REPO / "evaluate").glob("*.py")) == ["__init__.py", "cli.py"]


def test_evaluate_packages_import_only_downwards():
    upward = []
    for path in sorted((REPO / "evaluate").rglob("*.py")):
        pkg = _package(path)
        if pkg is None:
            continue
        for lineno, target in _imports(path):
            if ORDER.index(target) > ORDER.index(pkg):
                upward.append(f"{path.relative_to(REPO)}:{lineno} ({pkg}) imports evaluate.{target}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from evaluate.demo import pipeline\n    import evaluate.reporting.records\n")
    assert _imports(bad) == [(2, "demo"), (3, "reporting")]
