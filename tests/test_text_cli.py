"""`medcf report-parse` as a user meets it: real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Each test runs `medcf report parse` as its own process (about 8 s of interpreter and spaCy start
# apiece); the reader's logic is tested in-process by test_text.py and test_text_rules.py.
pytestmark = pytest.mark.integration


def medcf(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medcf", "report-parse", *args], capture_output=True, text=True,
                          input=stdin)


def test_text_argument() -> None:
    result = medcf("FINDINGS: Small left pleural effusion. No pneumothorax.")
    assert result.returncode == 0, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert [(f["finding"], f["present"], f["laterality"], f["severity"]) for f in findings] == [
        ("pleural_effusion", True, "left", "mild"), ("pneumothorax", False, None, None)]


def test_file(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("INDICATION: rule out pneumonia.\nIMPRESSION: Moderate cardiomegaly.\n")
    result = medcf("--file", str(report), "--compact")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert [f["finding"] for f in json.loads(result.stdout)["findings"]] == ["cardiomegaly"]


def test_jsonl_one_line_per_input(tmp_path: Path) -> None:
    lines = [{"id": 7, "text": "Right pneumothorax."}, {"id": "b", "text": "Lungs are clear."},
             {"id": None, "text": "No effusion."}]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    result = medcf("--jsonl", str(path))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == [7, "b", None]
    assert out[0]["findings"][0]["laterality"] == "right" and out[1]["findings"] == []
    assert set(out[2]) == {"id", "findings"}


def test_jsonl_from_stdin() -> None:
    result = medcf("--jsonl", "-", stdin='{"id": 1, "text": "Bibasilar atelectasis."}\n')
    assert result.returncode == 0
    assert json.loads(result.stdout)["findings"][0]["laterality"] == "bilateral"


@pytest.mark.parametrize("args,stdin,message", [
    (["--jsonl", "-"], '{"id": 1, "text": "ok"}\n{"id": 2, text}\n', "stdin:2: not JSON"),
    (["--jsonl", "-"], '{"id": 1}\n', "stdin:1: expected"),
    (["--jsonl", "/no/such.jsonl"], None, "no such file"),
    (["--file", "/no/such.txt"], None, "no such file"),
    ([], None, "exactly one of"),
    (["text", "--file", "x.txt"], None, "exactly one of"),
    (["--backend", "llm", "text"], None, "--llm-url"),
])
def test_errors_are_one_line_exit_2(args, stdin, message) -> None:
    result = medcf(*args, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr


def test_help_explains() -> None:
    result = medcf("--help")
    assert result.returncode == 0
    for word in ("--jsonl", "--file", "INDICATION", "research only", "--backend"):
        assert word in result.stdout
