"""tests/waiting.py: the subprocess waits the other tests use fail on a hang or on runaway work,
never because the machine is busy."""

from __future__ import annotations

import sys
import time

import pytest

from tests import waiting

pytestmark = pytest.mark.skipif(not waiting.HAVE_PROC, reason="CPU time is read from /proc")


def test_a_finished_run_returns_its_output_and_the_cpu_it_used():
    done = waiting.run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); "
                        "sum(range(3 * 10 ** 7))"], cpu_budget=60, stall=10)
    assert done.returncode == 0 and done.stdout == "out\n" and done.stderr == "err\n"
    assert done.cpu_seconds > 0.1  # the loop's CPU time was seen


def test_a_process_that_uses_no_cpu_is_a_stall():
    with pytest.raises(AssertionError, match="idle .* and silent for 2 s: a hang"):
        waiting.run(["sleep", "60"], cpu_budget=60, stall=2)


def test_a_process_that_prints_is_not_stalled():
    code = "import time\nfor _ in range(8):\n    print('.', flush=True); time.sleep(0.5)"
    assert waiting.run([sys.executable, "-c", code], cpu_budget=60, stall=2).returncode == 0


def test_cpu_of_grandchildren_counts_against_the_budget_and_all_are_killed():
    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'while True: pass'])"
    with pytest.raises(AssertionError, match="more than its budget of 1.5"):
        waiting.run([sys.executable, "-c", code], cpu_budget=1.5, stall=30)
    for _ in range(100):  # SIGKILL is delivered at once; the exit itself may take a moment
        if not any("while True: pass" in line for line in _commands()):
            break
        time.sleep(0.1)
    assert not any("while True: pass" in line for line in _commands())


def test_wait_until_fails_when_the_process_exits_first():
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    with pytest.raises(AssertionError, match="exited with 0 first"):
        waiting.wait_until(lambda: False, watch=[process.pid], cpu_budget=60, what="never", process=process)


def _commands() -> list[str]:
    lines = []
    for entry in waiting.PROC.iterdir():
        try:
            lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, NotADirectoryError):
            continue
    return lines
