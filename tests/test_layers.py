"""Every import arrow points down: CLI -> analysis/training -> mopd_eval core -> sandbox.

Parses each module (no import side effects) and lists its imports of our packages, including
imports inside functions. The CLI layer (``mopd_eval/cli.py`` and ``mopd_eval/commands/``) may
import anything below it; the core may import neither ``analysis`` nor ``training``; ``sandbox``
imports nothing of ours (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("mopd_eval", "analysis", "training", "sandbox")
ALLOWED = {
    "cli": set(OURS),
    "analysis": {"analysis", "mopd_eval", "sandbox"},
    "training": {"training", "mopd_eval", "sandbox"},
    "core": {"mopd_eval", "sandbox"},
    "sandbox": {"sandbox"},
}


def layer(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "mopd_eval":
        return "cli" if rel[1] in ("cli.py", "commands") else "core"
    return rel[0]


def imported_packages(path: Path) -> set[tuple[str, int]]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                out.add((arg.value.split(".")[0], node.lineno))
    return {(p, line) for p, line in out if p in OURS}


MODULES = sorted(p for pkg in OURS for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    allowed = ALLOWED[layer(path)]
    bad = sorted((pkg, line) for pkg, line in imported_packages(path) if pkg not in allowed)
    assert not bad, f"{path.relative_to(ROOT)} ({layer(path)} layer) imports upward: {bad}"


def test_the_checker_sees_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from training.trainer import train\n    import importlib\n"
                 "    importlib.import_module('analysis.x')\n")
    assert imported_packages(f) == {("training", 2), ("analysis", 4)}
