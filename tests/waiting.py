"""Waiting for subprocesses by the work they do, not by the wall clock.

A fixed wall-clock timeout is a guess at how busy the machine is. On a machine shared with
other jobs, or on a slower CPU, a subprocess doing exactly the same work takes several times
longer, and a test that passed alone fails although nothing is wrong. What a timeout is there
for is a process that hangs or runs away, so the waits here fail on exactly that:

- a *stall*: the watched processes (each root and everything it started) used less than
  ``IDLE_SHARE`` of one core and printed nothing for ``stall`` seconds in a row. A process at
  work gets a share of the CPU however busy the machine is (the scheduler shares it out:
  several percent of a core even with dozens of jobs per core), while one that hangs, or
  only polls for an answer that never comes, uses well under 1 %: a hang, not a slow run;
- a *runaway*: they used more than ``cpu_budget`` CPU seconds in all. CPU time is the work:
  it does not grow when other jobs share the cores. Each budget is the CPU time the work
  was measured to take, times a margin written beside it for a slower CPU.

CPU time is read from /proc (Linux). Where there is no /proc, CPU cannot be read, and the
budget is applied to the wall clock instead, times ``WALL_PER_CPU_SECOND``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PROC = Path("/proc")
HAVE_PROC = (PROC / "self" / "stat").is_file()
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
STALL = 300.0  # seconds idle (below IDLE_SHARE) and silent: a hang
IDLE_SHARE = 0.01  # of one core: below this the watched processes do no work (a 1 Hz poll loop uses ~0.3 %)
READ_EVERY = 1.0  # seconds between reads of /proc (a read costs a few ms)
WALL_PER_CPU_SECOND = 4.0  # without /proc: wall seconds allowed per budgeted CPU second


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of its children that it has reaped)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        # man 5 proc: utime, stime, cutime, cstime are fields 14-17 (indices 11-14 here)
        table[int(entry.name)] = int(fields[1]), sum(int(value) for value in fields[11:15]) / TICKS
    return table


def _tree(roots: Iterable[int], table: dict[int, tuple[int, float]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        if pid in table and pid not in found:
            found.append(pid)
            stack.extend(children.get(pid, ()))
    return found


def cpu_seconds(roots: Iterable[int]) -> dict[int, float]:
    """pid -> CPU seconds used so far, for the processes ``roots`` and all their descendants
    (each one's own time and that of the children it has reaped)."""
    table = _processes()
    return {pid: table[pid][1] for pid in _tree(roots, table)}


class Watch:
    """Progress of the processes ``roots`` (and their descendants) against a CPU budget."""

    def __init__(self, roots: Sequence[int], cpu_budget: float, stall: float, what: str) -> None:
        self.roots, self.cpu_budget, self.stall, self.what = list(roots), cpu_budget, stall, what
        self.started = self.last_output = time.monotonic()
        self.base = self.used = 0.0
        self.printed, self.read_at = 0, self.started
        # Each process's largest reading: a process that exits keeps its share (its parent's reaped
        # time may count it a second time: an upper estimate, which the budgets' margins allow for).
        self.peak: dict[int, float] = {}
        self.samples: deque[tuple[float, float]] = deque()  # (time, CPU total), the last ``stall`` seconds
        if HAVE_PROC:
            self.base = self._total()
            self.samples.append((self.started, self.base))

    def _total(self) -> float:
        for pid, seconds in cpu_seconds(self.roots).items():
            self.peak[pid] = max(self.peak.get(pid, 0.0), seconds)
        return sum(self.peak.values())

    def problem(self, printed: int = 0) -> str | None:
        """Why the wait should stop (a stall or a runaway), or None; ``printed``: output so far
        (which counts as progress too)."""
        now = time.monotonic()
        if not HAVE_PROC:
            if now - self.started > self.cpu_budget * WALL_PER_CPU_SECOND:
                return (f"{self.what}: still running after {now - self.started:.0f} s (no /proc to read its CPU "
                        f"time: limit {WALL_PER_CPU_SECOND:g} s per budgeted CPU second)")
            return None
        if now - self.read_at < READ_EVERY and printed <= self.printed:
            return None
        self.read_at, total = now, self._total()
        self.used = total - self.base
        if printed > self.printed:
            self.printed, self.last_output = printed, now
        self.samples.append((now, total))
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.stall:
            self.samples.popleft()  # keep one sample at or before the window's start
        if self.used > self.cpu_budget:
            return (f"{self.what}: used {self.used:.0f} CPU s, more than its budget of {self.cpu_budget:g} "
                    f"(after {now - self.started:.0f} s)")
        since, before = self.samples[0]
        if (now - since >= self.stall and total - before < IDLE_SHARE * (now - since)
                and now - self.last_output >= self.stall):
            return (f"{self.what}: idle (under {IDLE_SHARE:.0%} of a core) and silent for {now - since:.0f} s: a "
                    f"hang ({self.used:.1f} CPU s used, {now - self.started:.0f} s in all)")
        return None

    def check(self, printed: int = 0) -> None:
        """Fail the test (AssertionError) on a stall or a runaway (see :meth:`problem`)."""
        message = self.problem(printed)
        if message:
            raise AssertionError(message)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process and everything it started (a Ray cluster it brought up, say)."""
    pids = list(cpu_seconds([process.pid])) if HAVE_PROC else [process.pid]
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def wait_until(done: Callable[[], bool], *, watch: Sequence[int], cpu_budget: float, what: str,
               process: subprocess.Popen | None = None, stall: float = STALL, interval: float = 0.02) -> None:
    """Poll ``done()`` until it is true, failing on a stall or runaway of ``watch``, or when
    ``process`` (if given) exits first."""
    progress = Watch(watch, cpu_budget, stall, what)
    while not done():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode} first")
        progress.check()
        time.sleep(interval)


def communicate(process: subprocess.Popen, *, cpu_budget: float, what: str, watch: Sequence[int] = (),
                stall: float = STALL) -> tuple[str, str, float]:
    """``process.communicate()`` (text pipes), failing on a stall or runaway of the process tree
    (and of ``watch``: other processes that do its work, a server or a cluster, say); also
    returns the CPU seconds used: the process's own at its exit, or all the watched processes'
    (read once a second), whichever is more."""
    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def drain(stream, into: list[str]) -> None:
        for line in iter(stream.readline, ""):
            into.append(line)
        stream.close()

    readers = [threading.Thread(target=drain, args=(stream, chunks[name]), daemon=True)
               for name, stream in (("out", process.stdout), ("err", process.stderr)) if stream is not None]
    for reader in readers:
        reader.start()
    progress = Watch([process.pid, *watch], cpu_budget, stall, what)
    own = 0.0  # the process's own CPU time (and its reaped children's), as the OS reports it at exit
    try:
        while process.returncode is None:
            progress.check(printed=sum(len(c) for c in chunks.values()))
            try:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                process.wait()
                break
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                own = usage.ru_utime + usage.ru_stime
            else:
                time.sleep(0.05)
    except BaseException:
        kill_tree(process)
        raise
    for reader in readers:
        reader.join()
    return "".join(chunks["out"]), "".join(chunks["err"]), max(progress.used, own)


def run(args: Sequence[str], *, cpu_budget: float, what: str | None = None, watch: Sequence[int] = (),
        stall: float = STALL, env: dict | None = None, cwd: str | os.PathLike | None = None,
        input: str | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True)`` whose limit is the work, not the
    clock: it fails on a stall or when the process tree uses more than ``cpu_budget`` CPU s.
    The CPU seconds used are in the result's ``cpu_seconds``."""
    process = subprocess.Popen(list(map(str, args)), stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    if input is not None:
        process.stdin.write(input)
        process.stdin.close()
    stdout, stderr, used = communicate(process, cpu_budget=cpu_budget, watch=watch, stall=stall,
                                       what=what or " ".join(map(str, args[:4])))
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    done.cpu_seconds = used
    return done


def while_working(function: Callable[[], T], *, watch: Sequence[int], cpu_budget: float, what: str,
                  stall: float = STALL) -> T:
    """``function()`` (a request to a server, say, made with no timeout of its own), failing on a
    stall or runaway of ``watch``, the processes doing its work, instead of after a fixed time."""
    outcome: dict[str, object] = {}

    def call() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=call, daemon=True)  # left behind only if the test fails
    thread.start()
    progress = Watch(watch, cpu_budget, stall, what)
    while thread.is_alive():
        thread.join(0.2)
        progress.check()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
