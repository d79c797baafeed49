"""Run ``medcf edit`` in a background process and follow it (no Slicer, no Qt).

A diffusion edit takes tens of seconds to minutes; run on Slicer's main thread
it would freeze the application. :class:`BackgroundEdit` starts

    <interpreter> -m medcf edit INPUT [options] --out DIR

as a child process in its own process group, reads its stdout and stderr on
two daemon threads, and answers :meth:`BackgroundEdit.poll` with
``(state, percent, message)`` without ever blocking, so that a GUI timer can
call it. Progress is read from the progress bar ``medcf edit`` writes to stderr
(tqdm: ``sampling:  42%|####  | 5/12 [...]``, redrawn with carriage returns).

:meth:`BackgroundEdit.cancel` stops the whole process tree and removes what the run
wrote: the output folder if the run created it, or everything in it if it was an
empty folder before the run. A folder that held files before is never touched
(medcf refuses to write there).

How the tree is started and stopped, per platform (:func:`popen_options`,
:func:`descendants`, :func:`tree_kill_command`):

- POSIX: the child leads a new session (its own process group); Cancel sends SIGTERM
  to the group, then SIGKILL after a grace period, and also to every descendant seen
  before the signal (found with psutil when Slicer's Python has it, else from
  ``/proc`` on Linux), so that a grandchild that started a session of its own dies too.
- Windows: the child gets ``CREATE_NO_WINDOW`` and a hidden-window ``STARTUPINFO`` (no
  console window flashes up on each run) and ``CREATE_NEW_PROCESS_GROUP``. A process
  without a console cannot receive CTRL_BREAK, so Cancel ends the tree outright:
  psutil's ``children(recursive=True)`` when available, else ``taskkill /F /T /PID``,
  which walks the tree from the child (run before the child itself is gone). medcf
  writes its outputs atomically, so a hard stop leaves no half-written file under its
  final name; the partial ones are removed below. Only Linux has been run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"

#: Windows process-creation flags (subprocess's names exist only on Windows, hence the values)
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0

_COUNT = re.compile(r"(\d+)/(\d+)\s*\[")  # tqdm's "n/total [elapsed<remaining"
_PERCENT = re.compile(r"(?<![\d.])(\d{1,3})%")  # tqdm's "NN%|"


def parse_progress(line: str) -> float | None:
    """Percent done (0..100) read from one progress-bar line, or None if it holds none.

    The ``n/total`` count is preferred (finer than tqdm's rounded percentage)."""
    count = _COUNT.search(line)
    if count:
        done, total = int(count.group(1)), int(count.group(2))
        if total > 0 and 0 <= done <= total:
            return 100.0 * done / total
    percent = _PERCENT.search(line)
    if percent and int(percent.group(1)) <= 100:
        return float(percent.group(1))
    return None


def popen_options(os_name: str = os.name) -> dict:
    """The ``subprocess.Popen`` keyword arguments that make the worker a tree Cancel can end: a new
    session on POSIX; on Windows a new process group, no console window and a hidden-window
    ``STARTUPINFO`` (built only on Windows, where ``subprocess.STARTUPINFO`` exists)."""
    if os_name == "posix":
        return {"start_new_session": True}
    options: dict = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):
        startupinfo = subprocess.STARTUPINFO()
        startupinfo.dwFlags |= STARTF_USESHOWWINDOW
        startupinfo.wShowWindow = SW_HIDE
        options["startupinfo"] = startupinfo
    return options


def tree_kill_command(pid: int) -> list[str]:
    """Windows without psutil: end ``pid`` and every process it started (/T), forcibly (/F)."""
    return ["taskkill", "/F", "/T", "/PID", str(int(pid))]


def _proc_children() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from Linux's /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces or parentheses, so split after the last ")"
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every process ``pid`` started, directly or not (children before grandchildren): psutil's
    view where it is installed (Slicer's Python usually has it), else /proc on Linux, else none
    (the process group or ``taskkill /T`` then does the work)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    if not os.path.isdir("/proc"):
        return []
    tree, found, queue = _proc_children(), [], [pid]
    while queue:
        for child in tree.get(queue.pop(0), []):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def _kill_pids(pids: list[int], sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def default_interpreter() -> str:
    """The Python that runs ``medcf``: ``$MEDCF_PYTHON`` when set (MedCF installed in an environment of
    its own, as the MONAI Label app's worker finds it; the slicer-core tests use it), else Slicer's
    ``PythonSlicer`` when on PATH (inside Slicer ``sys.executable`` is the application itself), else
    this interpreter."""
    return os.environ.get("MEDCF_PYTHON") or shutil.which("PythonSlicer") or sys.executable


def edit_arguments(input_path: str | os.PathLike, options: dict[str, str | None]) -> list[str]:
    """``medcf edit`` arguments for ``input_path`` and ``options`` (name -> value; None, "" or
    "-" = not given, the command's default applies; True = a flag given alone, such as
    ``--allow-out-of-domain``; False = a flag left out)."""
    args = [str(input_path)]
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False and value not in (None, "", "-"):
            args += [f"--{name}", str(value)]
    return args


def classify_outputs(lines: list[str]) -> tuple[dict[str, str], str | None]:
    """The files ``medcf edit`` printed on stdout, by kind (dicom, image, panel, provenance),
    and its one-line model check, if any."""
    files: dict[str, str] = {}
    check = None
    for line in lines:
        line = line.strip()
        if line.startswith("model check:"):
            check = line
            continue
        path = Path(line)
        if not line or not path.is_file():
            continue
        if path.suffix.lower() == ".dcm":
            files.setdefault("dicom", line)
        elif path.name == "panel.png":
            files.setdefault("panel", line)
        elif path.name == "edit.json":
            files.setdefault("provenance", line)
        else:
            files.setdefault("image", line)
    return files, check


class BackgroundEdit:
    """One ``medcf edit`` run in a child process; see the module docstring."""

    def __init__(self, args: list[str], out_dir: str | os.PathLike, interpreter: str | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 subcommand: str = "edit"):
        """``subcommand`` is the ``medcf`` command to run (``edit``, or ``segment`` for the anatomy the
        user then corrects): every command that writes into ``--out`` is followed and cancelled alike."""
        self.out_dir = Path(out_dir)
        self.subcommand = subcommand
        self.command = [interpreter or default_interpreter(), "-m", "medcf", subcommand, *map(str, args),
                        "--out", str(self.out_dir)]
        self._env = dict(os.environ if env is None else env)
        self._env["PYTHONUNBUFFERED"] = "1"
        self._cwd = cwd
        self._lock = threading.Lock()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._percent = 0.0
        self._message = "starting: loading the model, reading and segmenting the input"
        self._cancelled = False
        self._out_existed = None
        self._out_held_files = False
        self.process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []

    # --- starting ---------------------------------------------------------------------------

    def start(self) -> "BackgroundEdit":
        if self.process is not None:
            raise RuntimeError("this edit was already started")
        self._out_existed = self.out_dir.exists()
        self._out_held_files = self._out_existed and (not self.out_dir.is_dir() or any(self.out_dir.iterdir()))
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=self._env, cwd=self._cwd, **popen_options())
        for stream, sink in ((self.process.stdout, self._stdout), (self.process.stderr, self._stderr)):
            thread = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _read(self, stream, sink: list[str]) -> None:
        """Split the stream on newlines and carriage returns (tqdm redraws with \\r)."""
        pending = b""
        while True:
            chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
            if not chunk:
                break
            pending += chunk
            parts = re.split(rb"[\r\n]", pending)
            pending = parts.pop()
            for part in parts:
                self._line(part.decode("utf-8", "replace"), sink)
        if pending:
            self._line(pending.decode("utf-8", "replace"), sink)
        stream.close()

    def _line(self, text: str, sink: list[str]) -> None:
        text = text.strip()
        if not text:
            return
        with self._lock:
            sink.append(text)
            percent = parse_progress(text)
            if percent is not None:
                # never move backwards (a later pass of the editor draws a new bar)
                self._percent = max(self._percent, percent)
            self._message = text

    # --- following ----------------------------------------------------------------------------

    def poll(self) -> tuple[str, float, str]:
        """``(state, percent, message)``: state is running, finished, failed or cancelled;
        percent is 0..100 and never decreases; message is the last line the run printed
        (on failure: medcf's one-line error)."""
        if self.process is None:
            return RUNNING, 0.0, "not started"
        code = self.process.poll()
        if code is not None:
            for thread in self._threads:  # the pipes are closed: the readers end promptly
                thread.join(timeout=5)
        with self._lock:
            if self._cancelled:
                return CANCELLED, self._percent, "cancelled"
            if code is None:
                return RUNNING, self._percent, self._message
            if code == 0:
                return FINISHED, 100.0, "finished"
            error = self._stderr[-1] if self._stderr else f"medcf {self.subcommand} exited with status {code}"
            return FAILED, self._percent, error

    def wait(self, timeout: float | None = None) -> tuple[str, float, str]:
        if self.process is not None:
            self.process.wait(timeout)
        return self.poll()

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended (2: medcf refused the input in one line)."""
        return None if self.process is None else self.process.poll()

    @property
    def stdout_lines(self) -> list[str]:
        with self._lock:
            return list(self._stdout)

    @property
    def stderr_lines(self) -> list[str]:
        with self._lock:
            return list(self._stderr)

    def result(self) -> dict[str, str]:
        """The written files by kind (dicom, image, panel, provenance) and ``check``: the
        model's one-line verdict. Only for a finished run."""
        state, _, message = self.poll()
        if state != FINISHED:
            raise RuntimeError(f"no result: the edit is {state} ({message})")
        files, check = classify_outputs(self.stdout_lines)
        if check:
            files["check"] = check
        return files

    # --- cancelling --------------------------------------------------------------------------

    def cancel(self, grace_s: float = 5.0) -> None:
        """Stop the run (its whole process tree) and remove what it wrote."""
        if self.process is None:
            return
        with self._lock:
            if self.process.poll() is not None and not self._cancelled:
                return  # already over: nothing to cancel, its outputs are complete
            self._cancelled = True
        tree = descendants(self.process.pid)  # seen before any signal, while the child still holds them
        if os.name == "posix":
            self._signal_group(signal.SIGTERM)
            _kill_pids(tree, signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(signal.SIGKILL)  # the group's stragglers, and descendants that left it
            _kill_pids(descendants(self.process.pid) + tree, signal.SIGKILL)
        else:
            self._end_windows_tree(tree)
        self.process.wait()
        for thread in self._threads:
            thread.join(timeout=5)
        self._remove_outputs()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _end_windows_tree(self, tree: list[int]) -> None:
        """No console, so no CTRL_BREAK: end the tree at once, children first."""
        try:
            import psutil
        except ImportError:
            psutil = None
        if psutil is not None:
            for pid in [*tree, self.process.pid]:
                try:
                    psutil.Process(pid).kill()
                except psutil.Error:
                    pass
            return
        subprocess.run(tree_kill_command(self.process.pid), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, **popen_options())
        if self.process.poll() is None:
            self.process.kill()

    def _remove_outputs(self) -> None:
        if self._out_held_files or not self.out_dir.is_dir():
            return  # a folder that held files before the run is never touched
        if not self._out_existed:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        else:  # it was new-or-empty (medcf refuses anything else), so all it holds is this run's
            for child in self.out_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
