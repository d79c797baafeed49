"""The house's layer rules, checked on every test run (docs/architecture.md).

The contracts themselves live in ``.importlinter`` at the repository root and are checked
by import-linter, which reads every import, including those inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Command-line modules may import lazily: a verb's heavy work is imported only when it runs,
# so `medcf --help` stays quick.
CLI_MODULES = ("medcf/cli.py", "medcf/__main__.py")


def _is_cli(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return rel in CLI_MODULES or rel.endswith("/cli.py") or rel.startswith("medcf/commands/")


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_no_function_level_import_of_medcf_outside_the_command_line():
    """Our own modules are imported at the top, so that a cycle fails at once instead of hiding
    behind a lazy import; only heavy third-party packages are imported where used."""
    found = []
    for path in sorted((ROOT / "medcf").rglob("*.py")):
        if _is_cli(path):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 0 and (inner.module or "").startswith("medcf"):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno} from {inner.module}")
                elif isinstance(inner, ast.Import) and any(a.name.split(".")[0] == "medcf" for a in inner.names):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno} import {inner.names[0].name}")
    assert not found, "\n".join(sorted(set(found)))
