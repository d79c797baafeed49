"""The Slicer module's first-use install (MedCFExtension/MedCF/MedCFLib/install.py) against a
stand-in ``slicer`` module: the wheel the extension carries is the only source of medcf, Slicer's
torch, SimpleITK, numpy and VTK are left alone, the missing requirements are computed from the
wheel's METADATA, torch comes through the PyTorch extension with a range, declining installs
nothing, and a restart is offered when something already imported was installed anew."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedCFExtension" / "MedCF"
sys.path.insert(0, str(MODULE_DIR))

from MedCFLib import install  # noqa: E402
from MedCFLib.install import (  # noqa: E402
    REFUSAL,
    Installer,
    InstallError,
    first_use_install,
    plan_install,
    wheel_metadata,
)

REQUIRES = [
    "torch>=2.3",
    "numpy>=2.0",
    "SimpleITK>=2.2",
    "vtk",
    "pydicom>=3.0",
    "monai>=1.4,<2",
    "scipy>=1.11",
    "ray[default]>=2.9; extra == \"ray\"",  # an extra: not part of a plain install
    "pywin32>=306; sys_platform == \"never\"",  # another platform's requirement
]


def make_wheel(folder: Path, version: str = "0.9.0", requires: list[str] = REQUIRES, name: str = "medcf") -> Path:
    """A wheel with the METADATA a real medcf wheel has (Name, Version, Requires-Dist)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    metadata = "Metadata-Version: 2.1\n" f"Name: {name}\n" f"Version: {version}\n" + "".join(
        f"Requires-Dist: {line}\n" for line in requires)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        archive.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                                               "Tag: py3-none-any\n")
        record = "".join(f"{entry},,\n" for entry in (f"{name}/__init__.py", f"{name}-{version}.dist-info/METADATA",
                                                        f"{name}-{version}.dist-info/WHEEL",
                                                        f"{name}-{version}.dist-info/RECORD"))
        archive.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return wheel


def _seen(args) -> list[str]:
    """The pip arguments as recorded, with a constraints file's lines in place of its (temporary) path."""
    args = list(args)
    if "-c" in args:
        at = args.index("-c") + 1
        args[at] = "constraints:" + ",".join(Path(args[at]).read_text().split())
    return args


class Recorder:
    """Everything the stand-in Slicer was asked to do, in order."""

    def __init__(self, answers=(True,), restart_answer=False):
        self.calls: list[tuple] = []
        self.answers = list(answers)
        self.restart_answer = restart_answer


def stand_in_slicer(recorder: Recorder, pydeps: bool = False, packaging: bool = False) -> types.ModuleType:
    """A ``slicer`` module with the parts the installer touches: the dialogs, the progress dialog,
    ``util.pip_install`` and, when asked, ``pydeps.pip_install`` (Slicer 5.11+) or the uv-based
    ``packaging.pip_install``."""
    slicer = types.ModuleType("slicer")
    util = types.ModuleType("slicer.util")

    def confirm(text, *args, **kwargs):
        recorder.calls.append(("confirm", text))
        return recorder.answers.pop(0)

    def confirm_restart(text, *args, **kwargs):
        recorder.calls.append(("confirm_restart", text))
        return recorder.restart_answer

    class Progress:
        value = 0
        labelText = ""

        def close(self):
            recorder.calls.append(("progress_closed", self.value))

    util.confirmOkCancelDisplay = confirm
    util.confirmYesNoDisplay = confirm_restart
    util.createProgressDialog = lambda **kwargs: recorder.calls.append(("progress", kwargs["maximum"])) or Progress()
    util.pip_install = lambda args: recorder.calls.append(("util.pip_install", _seen(args)))
    util.restart = lambda: recorder.calls.append(("restart",))
    slicer.util = util
    slicer.app = types.SimpleNamespace(processEvents=lambda: None)
    if pydeps:
        module = types.ModuleType("slicer.pydeps")

        def pip_install(requirements, constraints=None, no_deps_requirements=None, skip_packages=None,
                        blocking=True, show_progress=True, requester=None, parent=None, logCallback=None,
                        completedCallback=None):
            recorder.calls.append(("pydeps.pip_install", requirements, list(skip_packages or []), requester))

        module.pip_install = pip_install
        slicer.pydeps = module
    if packaging:
        module = types.ModuleType("slicer.packaging")
        module.pip_install = lambda args, *, requirements=None, interactive=True: recorder.calls.append(
            ("packaging.pip_install", _seen(args), interactive))
        slicer.packaging = module
    return slicer


@pytest.fixture
def pytorch_extension(monkeypatch):
    """A stand-in PyTorch extension (PyTorchUtils) recording the torch range it is asked for."""
    asked = []

    class Logic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                         torchvisionVersionRequirement=None):
            asked.append((askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.5.1")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    return asked


#: Slicer's Python as shipped: its own numpy (older than medcf's range!), SimpleITK and VTK; pydicom
#: already satisfied; monai and scipy missing; no torch, no medcf
SLICER_PYTHON = {"numpy": "1.26.4", "SimpleITK": "2.4.0", "vtk": "9.3.1", "pydicom": "3.0.1"}


def installed(extra: dict | None = None):
    versions = {**SLICER_PYTHON, **(extra or {})}
    return lambda name: versions.get(name)


def _pip_args(recorder: Recorder) -> list[list[str]]:
    return [call[1] for call in recorder.calls if call[0] in ("util.pip_install", "packaging.pip_install")]


def _never_medcf_from_an_index(recorder: Recorder, wheel: Path) -> None:
    for args in _pip_args(recorder):
        names = [a for a in args if not a.startswith(("-", "constraints:"))]
        assert "medcf" not in [install.canonical(n.split("[")[0].split("=")[0].split(">")[0]) for n in names], args
        if str(wheel) in args:
            assert "--no-index" in args and "--no-deps" in args, args


def test_the_wheel_metadata_and_the_plan(tmp_path):
    wheel = make_wheel(tmp_path / "wheels")
    name, version, requires = wheel_metadata(wheel)
    assert (name, version, requires) == ("medcf", "0.9.0", REQUIRES)
    plan = plan_install(wheel, installed())
    assert plan.medcf and plan.version == "0.9.0"
    # missing: what medcf needs that is absent or outside its range, with the skip list dropped
    assert plan.requirements == ("monai<2,>=1.4", "scipy>=1.11")
    # numpy 1.26 is outside medcf's numpy>=2.0 but it is Slicer's: left alone, never replaced
    assert {s.split(">")[0].split("=")[0] for s in plan.skipped} == {"torch", "numpy", "SimpleITK", "vtk"}
    assert plan.torch == "torch>=2.3" and plan.torch_problem is None
    assert "ray" not in " ".join(plan.requirements) and "pywin32" not in " ".join(plan.requirements)
    question = plan.question()
    assert "torch, SimpleITK, numpy, vtk are left as they are" in question and wheel.name in question


def test_fallback_installs_the_missing_list_then_the_wheel_without_deps_or_index(tmp_path, pytorch_extension):
    wheel = make_wheel(tmp_path / "wheels")
    recorder = Recorder()
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", installed(), imported={})
    assert said is None, said
    assert pytorch_extension == [(False, ">=2.3")]  # torch through the PyTorch extension, with the range
    # the requirements go in with Slicer's packages pinned as installed, so their dependencies cannot move them
    pins = "constraints:SimpleITK==2.4.0,numpy==1.26.4,vtk==9.3.1,torch==2.5.1"
    assert _pip_args(recorder) == [["-c", pins, "monai<2,>=1.4", "scipy>=1.11"],
                                   ["--no-deps", "--no-index", str(wheel)]]
    kinds = [call[0] for call in recorder.calls]
    assert kinds[0] == "confirm" and kinds[1] == "progress"  # asked first, then shown
    assert ("progress", 3) in recorder.calls and ("progress_closed", 3) in recorder.calls  # torch, requirements, medcf
    _never_medcf_from_an_index(recorder, wheel)
    for args in _pip_args(recorder):
        assert not {"torch", "numpy", "SimpleITK", "vtk"} & {a.split(">")[0].split("=")[0] for a in args}


def test_pydeps_installs_the_wheel_with_the_skip_list(tmp_path, pytorch_extension):
    wheel = make_wheel(tmp_path / "wheels")
    recorder = Recorder()
    slicer = stand_in_slicer(recorder, pydeps=True, packaging=True)
    assert install.choose_installer(slicer) == Installer.PYDEPS_SKIP
    assert first_use_install(slicer, tmp_path / "wheels", installed(), imported={}) is None
    calls = [call for call in recorder.calls if call[0] == "pydeps.pip_install"]
    assert calls == [("pydeps.pip_install", str(wheel), ["torch", "SimpleITK", "numpy", "vtk"], "MedCF")]
    assert _pip_args(recorder) == []  # nothing else: pydeps walks the requirements itself


def test_uv_based_slicer_packaging_is_used_where_there_is_no_pydeps(tmp_path, pytorch_extension):
    wheel = make_wheel(tmp_path / "wheels")
    recorder = Recorder()
    slicer = stand_in_slicer(recorder, packaging=True)
    assert install.choose_installer(slicer) == Installer.PACKAGING
    assert first_use_install(slicer, tmp_path / "wheels", installed(), imported={}) is None
    packaging_calls = [call for call in recorder.calls if call[0] == "packaging.pip_install"]
    assert [call[1] for call in packaging_calls] == [
        ["-c", "constraints:SimpleITK==2.4.0,numpy==1.26.4,vtk==9.3.1,torch==2.5.1", "monai<2,>=1.4", "scipy>=1.11"],
        ["--no-deps", "--no-index", str(wheel)]]
    assert all(call[2] is False for call in packaging_calls)  # the user was asked once, by MedCF
    _never_medcf_from_an_index(recorder, wheel)


def test_declined_installs_nothing_and_says_so_in_one_line(tmp_path, pytorch_extension):
    make_wheel(tmp_path / "wheels")
    recorder = Recorder(answers=[False])
    said = first_use_install(stand_in_slicer(recorder, pydeps=True), tmp_path / "wheels", installed(), imported={})
    assert said == REFUSAL and "\n" not in said and "nothing was changed" in said
    assert [call[0] for call in recorder.calls] == ["confirm"]  # no progress, no pip
    assert pytorch_extension == []


def test_nothing_missing_asks_nothing(tmp_path, pytorch_extension):
    make_wheel(tmp_path / "wheels")
    recorder = Recorder(answers=[])
    everything = installed({"medcf": "0.9.0", "torch": "2.5.1", "monai": "1.5.0", "scipy": "1.14.0"})
    assert first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", everything, imported={}) is None
    assert recorder.calls == [] and pytorch_extension == []


def test_a_torch_outside_the_range_is_reported_not_replaced(tmp_path, pytorch_extension):
    make_wheel(tmp_path / "wheels")
    recorder = Recorder(answers=[])
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", installed({"torch": "1.13.1"}),
                             imported={})
    assert said.startswith("MedCF needs torch>=2.3; this Slicer has torch 1.13.1, which MedCF does not replace")
    assert recorder.calls == [] and pytorch_extension == []


def test_no_wheel_carried_is_one_line_and_never_an_index_install(tmp_path, pytorch_extension):
    recorder = Recorder(answers=[])
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "empty", installed(), imported={})
    assert "carries no medcf wheel" in said and "make dist" in said and "never installs a package named medcf" in said
    assert recorder.calls == []
    # a module run from its source folder, with medcf installed by hand: nothing to do
    by_hand = installed({"medcf": "0.8.0", "torch": "2.5.1"})
    assert first_use_install(stand_in_slicer(recorder), tmp_path / "empty", by_hand, imported={}) is None
    make_wheel(tmp_path / "two", "0.9.0")
    make_wheel(tmp_path / "two", "0.9.1")
    assert "carries 2 medcf wheels" in first_use_install(stand_in_slicer(recorder), tmp_path / "two", installed(),
                                                          imported={})
    stranger = make_wheel(tmp_path / "stranger", name="notmedcf")
    stranger.rename(tmp_path / "stranger" / "medcf-0.9.0-py3-none-any.whl")
    with pytest.raises(InstallError, match="holds notmedcf, not medcf"):
        plan_install(tmp_path / "stranger" / "medcf-0.9.0-py3-none-any.whl", installed())


def test_restart_is_offered_when_an_imported_package_was_installed_anew(tmp_path, pytorch_extension):
    make_wheel(tmp_path / "wheels", "0.9.0")
    older = installed({"medcf": "0.8.0", "torch": "2.5.1", "monai": "1.5.0", "scipy": "1.14.0"})
    recorder = Recorder(restart_answer=True)
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", older, imported={"medcf": object()})
    assert said is None and recorder.calls[-1] == ("restart",)
    assert any(call[0] == "confirm_restart" and "medcf" in call[1] for call in recorder.calls)
    recorder = Recorder(restart_answer=False)
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", older, imported={"medcf": object()})
    assert said.startswith("MedCF was installed; restart Slicer") and ("restart",) not in recorder.calls
    recorder = Recorder()
    assert first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", older, imported={}) is None
    assert not any(call[0] == "confirm_restart" for call in recorder.calls)  # nothing was loaded: no restart


def test_a_failed_step_is_one_line(tmp_path, pytorch_extension):
    make_wheel(tmp_path / "wheels")
    recorder = Recorder()
    slicer = stand_in_slicer(recorder)

    def broken(args):
        raise RuntimeError("pip exited with 1\nlong log")

    slicer.util.pip_install = broken
    said = first_use_install(slicer, tmp_path / "wheels", installed(), imported={})
    assert said == "Installing MedCF failed: pip exited with 1"
    assert recorder.calls[-1][0] == "progress_closed"  # the dialog does not stay up


def test_the_pytorch_extension_declining_is_one_line(tmp_path, monkeypatch):
    make_wheel(tmp_path / "wheels")

    class Logic:
        def installTorch(self, **kwargs):
            return None

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    recorder = Recorder()
    said = first_use_install(stand_in_slicer(recorder), tmp_path / "wheels", installed(), imported={})
    assert said.startswith("PyTorch was not installed") and _pip_args(recorder) == []


def test_the_stand_in_matches_slicers_own_signatures():
    """The stand-ins are called the way Slicer's functions are defined (keyword names checked
    against the signatures the installer relies on)."""
    import inspect

    recorder = Recorder()
    slicer = stand_in_slicer(recorder, pydeps=True, packaging=True)
    assert "skip_packages" in inspect.signature(slicer.pydeps.pip_install).parameters
    assert "interactive" in inspect.signature(slicer.packaging.pip_install).parameters
    assert install.choose_installer(stand_in_slicer(recorder)) == Installer.PIP_INSTALL


def test_the_wheel_step_is_a_valid_offline_pip_install(tmp_path, pytorch_extension):
    """The arguments the fallback gives for the wheel, run by the real pip (into a target folder, no
    index, no network): the carried wheel installs, and nothing else is fetched."""
    import subprocess

    from tests import waiting

    wheel = make_wheel(tmp_path / "wheels")
    target = tmp_path / "site"
    recorder = Recorder()
    slicer = stand_in_slicer(recorder)
    ran = []

    def real_pip(args):
        done = waiting.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            "--target", str(target), *args], cpu_budget=120.0, what="pip install of the wheel")
        ran.append((list(args), done.returncode, done.stderr))
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, args, stderr=done.stderr)

    slicer.util.pip_install = real_pip
    ready = installed({"torch": "2.5.1", "monai": "1.5.0", "scipy": "1.14.0"})
    assert first_use_install(slicer, tmp_path / "wheels", ready, imported={}) is None, ran
    assert [args for args, _, _ in ran] == [["--no-deps", "--no-index", str(wheel)]]
    assert (target / "medcf" / "__init__.py").is_file()
    assert (target / "medcf-0.9.0.dist-info" / "METADATA").is_file()
