"""The layers are a contract (pyproject.toml [tool.importlinter], docs/development.md, "Architecture").

``lint-imports`` checks two contracts on the imports of ``mirage_cli``, those inside functions too:
each package imports only from the layers below it, and no modules or packages import each other in
a circle. Inside functions only the command line imports our own modules (lazily, so ``mirage
--help`` and ``mirage trajectory`` start without torch); nowhere may such an import hide a circle,
since the contracts see it all the same.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mirage_cli"
LAZY_IMPORTS_ALLOWED = PACKAGE / "cli"


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    runner = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return subprocess.run([sys.executable, "-c", runner, "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_the_layer_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract bites: the same check on a copy of the package where the bottom layer imports the
    command line fails and names that import."""
    shutil.copytree(PACKAGE, tmp_path / "mirage_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "mirage_cli" / "base" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom mirage_cli.cli import app  # noqa: E402,F401\n")
    proc = lint_imports(tmp_path, pythonpath=tmp_path)
    assert proc.returncode != 0
    assert "mirage_cli.base.errors -> mirage_cli.cli.app" in proc.stdout, proc.stdout


def test_no_import_of_our_own_modules_inside_functions_outside_the_command_line():
    inside = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if LAZY_IMPORTS_ALLOWED in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                module = sub.module if isinstance(sub, ast.ImportFrom) else None
                names = [a.name for a in sub.names] if isinstance(sub, ast.Import) else []
                if (module or "").startswith("mirage_cli") or any(n.startswith("mirage_cli") for n in names):
                    inside.append(f"{path.relative_to(ROOT)}:{sub.lineno} in {node.name}")
    assert inside == []
