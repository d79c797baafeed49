"""First use inside Slicer: install ``medcf`` from the wheel this extension carries.

Why this shape (docs/slicer.md, "Dependencies on first use"):

- ``medcf`` is installed only from the wheel in ``Resources/wheels`` (CMake copies
  ``dist/medcf-<version>-py3-none-any.whl`` there at build time). It is never asked for by name
  from a package index: no package called ``medcf`` is published by this project, and one
  published by someone else would be a stranger's code. The wheel goes in with ``--no-index``
  where the installer is pip.
- Slicer's own packages are left alone (:data:`SLICER_OWNED`): torch (the PyTorch extension
  installs the build that matches the GPU; a pip resolve would replace it, on Windows with the
  CPU wheel), SimpleITK, numpy and VTK (Slicer is built against its copies).
- torch comes through the PyTorch extension (``PyTorchUtilsLogic().installTorch``) with the
  version range the wheel states (:data:`TORCH_REQUIREMENT` when it states none). A torch that is
  installed but outside the range is reported, never replaced.
- Where Slicer has ``slicer.pydeps.pip_install(..., skip_packages=...)`` (Slicer 5.11 on), that does
  the selective install and its own progress dialog. Otherwise the requirements are read from the
  wheel's METADATA (``Requires-Dist``), the skip list and what is already satisfied are dropped,
  the rest is installed (through ``slicer.packaging.pip_install`` where the Slicer has that uv-based
  installer, else ``slicer.util.pip_install``) with Slicer's own packages pinned to their installed
  versions in a constraints file (so the requirements' dependencies cannot move them either), then
  the wheel itself with ``--no-deps``.
- Nothing is installed before the user says yes; declining gives one line and changes nothing. A
  restart is offered when something already imported in this session was installed anew.

Everything here is standard library plus ``packaging`` (which Slicer's Python ships); ``slicer``
and ``PyTorchUtils`` are imported only when an install runs, so tests hand in stand-ins.
"""

from __future__ import annotations

import contextlib
import email.parser
import importlib
import importlib.metadata
import inspect
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

#: where the extension's build puts the medcf wheel (MedCFExtension/MedCF/CMakeLists.txt)
WHEEL_DIR = Path(__file__).resolve().parents[1] / "Resources" / "wheels"
#: packages Slicer (or the PyTorch extension) owns in its Python: never installed or replaced here
SLICER_OWNED = ("torch", "SimpleITK", "numpy", "vtk")
#: the torch range asked of the PyTorch extension when the wheel states none
TORCH_REQUIREMENT = "torch>=2.3,<3"
REQUESTER = "MedCF"


class InstallError(Exception):
    """Installing cannot go on, said in one line (no wheel, a torch out of range, a failed step)."""


class Installer(str, Enum):
    """Which of Slicer's installers does the selective install (the newest the Slicer has)."""

    PYDEPS_SKIP = "slicer.pydeps.pip_install(skip_packages=...)"
    PACKAGING = "slicer.packaging.pip_install + --no-deps"
    PIP_INSTALL = "slicer.util.pip_install + --no-deps"


def canonical(name: str) -> str:
    """PEP 503 name: case, '-', '_' and '.' do not matter."""
    return "-".join(name.replace("_", "-").replace(".", "-").lower().split("-"))


SKIP = frozenset(canonical(name) for name in SLICER_OWNED)


def find_wheel(folder: str | Path = WHEEL_DIR) -> Path:
    """The one ``medcf-*.whl`` the extension carries; one line when there is none or several."""
    wheels = sorted(Path(folder).glob("medcf-*.whl"))
    if len(wheels) != 1:
        found = "no medcf wheel" if not wheels else f"{len(wheels)} medcf wheels"
        raise InstallError(f"the MedCF extension carries {found} in {folder} (build it with `make dist`, then "
                           "rebuild the extension); MedCF never installs a package named medcf from an index")
    return wheels[0]


def wheel_metadata(wheel: str | Path) -> tuple[str, str, list[str]]:
    """``(name, version, Requires-Dist lines)`` read from the wheel's ``*.dist-info/METADATA``."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise InstallError(f"{wheel} is not a wheel: no single *.dist-info/METADATA in it")
        message = email.parser.Parser().parsestr(archive.read(names[0]).decode("utf-8"))
    return message["Name"], message["Version"], list(message.get_all("Requires-Dist") or [])


def base_requirements(lines: list[str], environment: dict[str, str] | None = None) -> list:
    """The wheel's requirements that apply here without extras (``packaging`` Requirement objects):
    a marker is evaluated for this Python and platform with ``extra`` empty, so ``[lab]``-only
    packages and other platforms' packages drop out."""
    from packaging.requirements import Requirement

    env = {**(environment or {}), "extra": ""}
    found = []
    for line in lines:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(env):
            found.append(requirement)
    return found


def installed_version(name: str) -> str | None:
    """The installed version of distribution ``name`` in this Python, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class InstallPlan:
    """What first use must do, decided before anything is installed (and shown in the question)."""

    wheel: Path
    version: str
    medcf: bool  # the wheel itself: medcf absent, or another version installed
    torch: str | None  # the torch requirement to hand to the PyTorch extension; None when torch is fine
    torch_problem: str | None  # torch installed but outside the wheel's range: refused, never replaced
    requirements: tuple[str, ...] = ()  # medcf's requirements not satisfied, SLICER_OWNED excluded
    skipped: tuple[str, ...] = ()  # medcf's requirements on SLICER_OWNED packages, left to Slicer
    owned: tuple[str, ...] = ()  # SLICER_OWNED as installed ("numpy==1.26.4"): pinned while requirements go in
    installer: Installer = Installer.PIP_INSTALL

    @property
    def needed(self) -> bool:
        return bool(self.medcf or self.torch or self.requirements)

    def question(self) -> str:
        """The confirmation text: what will be installed, from where, and what is left alone."""
        parts = []
        if self.torch:
            parts.append(f"PyTorch ({self.torch}) through the PyTorch extension")
        if self.requirements:
            parts.append(f"{len(self.requirements)} Python packages MedCF needs ({', '.join(self.requirements)})")
        if self.medcf:
            parts.append(f"medcf {self.version} from the wheel this extension carries ({self.wheel.name})")
        return (f"MedCF needs, in Slicer's Python: {'; '.join(parts)}. Slicer's own "
                f"{', '.join(SLICER_OWNED)} are left as they are. This can take minutes and may need a "
                "restart. Install now?")


def choose_installer(slicer) -> Installer:
    """The newest installer this Slicer has (see the module docstring)."""
    pydeps = _submodule(slicer, "pydeps")
    if pydeps is not None and "skip_packages" in _parameters(getattr(pydeps, "pip_install", None)):
        return Installer.PYDEPS_SKIP
    packaging = _submodule(slicer, "packaging")
    if packaging is not None and callable(getattr(packaging, "pip_install", None)):
        return Installer.PACKAGING
    return Installer.PIP_INSTALL


def _submodule(slicer, name: str):
    found = getattr(slicer, name, None)
    if found is not None:
        return found
    try:
        return importlib.import_module(f"{slicer.__name__}.{name}")
    except (ImportError, AttributeError):
        return None


def _parameters(function) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


def plan_install(wheel: str | Path, version_of: Callable[[str], str | None] = installed_version,
                 installer: Installer = Installer.PIP_INSTALL,
                 environment: dict[str, str] | None = None) -> InstallPlan:
    """Compare the wheel's requirements with what ``version_of`` (name -> installed version or None)
    says is installed; nothing is installed here."""
    wheel = Path(wheel)
    name, version, lines = wheel_metadata(wheel)
    if canonical(name) != "medcf":
        raise InstallError(f"{wheel.name} holds {name}, not medcf")
    torch, torch_problem, missing, skipped = None, None, [], []
    torch_stated = False
    for requirement in base_requirements(lines, environment):
        key = canonical(requirement.name)
        have = version_of(requirement.name)
        if key == "torch":
            torch_stated = True
            spec = str(requirement.specifier) or TORCH_REQUIREMENT[len("torch"):]
            if have is None:
                torch = f"torch{spec}"
            elif not requirement.specifier.contains(have, prereleases=True):
                torch_problem = (f"MedCF needs torch{spec}; this Slicer has torch {have}, which MedCF does not "
                                 "replace: update it with the PyTorch extension (PyTorch Utils module), then try again")
            skipped.append(str(requirement))
        elif key in SKIP:
            skipped.append(str(requirement))
        elif key == "medcf":
            continue  # a wheel never needs itself; never a name to ask an index for
        elif have is None or not requirement.specifier.contains(have, prereleases=True):
            missing.append(str(requirement))
    if not torch_stated and version_of("torch") is None:
        torch = TORCH_REQUIREMENT  # a wheel that states no torch still runs on it: the default range
    owned = tuple(f"{name}=={version_of(name)}" for name in SLICER_OWNED if version_of(name))
    return InstallPlan(wheel=wheel, version=version, medcf=version_of("medcf") != version, torch=torch,
                       torch_problem=torch_problem, requirements=tuple(missing), skipped=tuple(skipped),
                       owned=owned, installer=installer)


@dataclass
class InstallResult:
    """What an install did: each step in order, and the packages that need a restart to take effect."""

    steps: list[str] = field(default_factory=list)
    restart_for: list[str] = field(default_factory=list)


REFUSAL = ("MedCF is not installed: installation was declined, and nothing was changed. MedCF cannot run "
           "without it; press Derive anatomy or Edit again to be asked again.")


def first_use_install(slicer=None, wheel_dir: str | Path = WHEEL_DIR,
                      version_of: Callable[[str], str | None] = installed_version,
                      imported: dict | None = None) -> str | None:
    """Install what MedCF needs in Slicer's Python, after asking; returns None when MedCF can run,
    else the one line to show (declined, no wheel, torch out of range, a failed step).

    ``slicer`` is the ``slicer`` module (a stand-in in tests): ``slicer.util.confirmOkCancelDisplay``
    asks, ``slicer.util.createProgressDialog`` shows the steps, the installer is chosen by
    :func:`choose_installer`; ``imported`` (``sys.modules``) tells whether a restart is needed."""
    if slicer is None:
        import slicer  # noqa: PLC0415 - only inside Slicer
    try:
        wheel = find_wheel(wheel_dir)
    except InstallError as error:
        # a module run from its source folder (no wheel carried) works with a medcf installed by hand
        return None if version_of("medcf") and version_of("torch") else str(error)
    try:
        plan = plan_install(wheel, version_of, choose_installer(slicer))
    except InstallError as error:
        return str(error)
    if not plan.needed:
        return None
    if plan.torch_problem:
        return plan.torch_problem
    if not slicer.util.confirmOkCancelDisplay(plan.question()):
        return REFUSAL
    try:
        result = run_plan(plan, slicer)
    except InstallError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - any installer failure becomes the one line shown
        text = str(error).strip()
        return f"Installing MedCF failed: {text.splitlines()[0] if text else type(error).__name__}"
    importlib.invalidate_caches()
    restart_for = restart_needed(plan, sys.modules if imported is None else imported)
    result.restart_for.extend(restart_for)
    if restart_for and slicer.util.confirmYesNoDisplay(
            f"MedCF was installed. {', '.join(restart_for)} had already been loaded in this session; Slicer "
            "must restart before MedCF can use the new version. Restart now?"):
        slicer.util.restart()
        return None
    if restart_for:
        return f"MedCF was installed; restart Slicer before using it ({', '.join(restart_for)} was already loaded)."
    return None


def run_plan(plan: InstallPlan, slicer) -> InstallResult:
    """Carry out ``plan`` with a progress dialog of its steps (torch, requirements, the wheel)."""
    result = InstallResult()
    steps = (["torch"] if plan.torch else []) + (["requirements"] if plan.requirements
                                                 and plan.installer != Installer.PYDEPS_SKIP else []) + ["medcf"]
    progress = _progress_dialog(slicer, len(steps))
    torch_version = None
    try:
        for index, step in enumerate(steps):
            _advance(slicer, progress, index, {"torch": f"Installing PyTorch ({plan.torch}) ...",
                                               "requirements": "Installing MedCF's requirements ...",
                                               "medcf": f"Installing medcf {plan.version} ..."}[step])
            if step == "torch":
                torch_version = _install_torch(plan.torch)
            elif step == "requirements":
                # the requirements' own dependencies must not move Slicer's packages either: they are
                # pinned to what is installed (pip then leaves them, or fails in one line)
                with _owned_constraints(plan, torch_version) as pins:
                    _pip(slicer, plan.installer, ["-c", str(pins), *plan.requirements])
            elif plan.installer == Installer.PYDEPS_SKIP:
                slicer.pydeps.pip_install(str(plan.wheel), skip_packages=list(SLICER_OWNED), show_progress=True,
                                          requester=REQUESTER)
            else:
                _pip(slicer, plan.installer, ["--no-deps", "--no-index", str(plan.wheel)])
            result.steps.append(step)
        _advance(slicer, progress, len(steps), "MedCF installed.")
    finally:
        if progress is not None:
            progress.close()
    return result


@contextlib.contextmanager
def _owned_constraints(plan: InstallPlan, torch_version: str | None):
    """A constraints file holding :attr:`InstallPlan.owned`, and the torch the PyTorch extension has
    just installed (``torch_version``)."""
    pins = list(plan.owned) + ([f"torch=={torch_version}"] if torch_version else [])
    folder = tempfile.mkdtemp(prefix="medcf-install-")
    path = Path(folder) / "slicer-owned-constraints.txt"
    path.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
    try:
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _install_torch(requirement: str) -> str | None:
    """torch through the PyTorch extension, within ``requirement``'s range; its version."""
    import PyTorchUtils  # the PyTorch extension: this extension's EXTENSION_DEPENDS

    spec = requirement[len("torch"):]
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=spec)
    if torch is None:
        raise InstallError("PyTorch was not installed: install the PyTorch extension (Extensions Manager), "
                           "then try again")
    return getattr(torch, "__version__", None)


def _pip(slicer, installer: Installer, args: list[str]) -> None:
    """One pip (or uv) run through the Slicer's installer; ``medcf`` only ever as the wheel's path."""
    if any(canonical(arg) == "medcf" for arg in args):
        raise InstallError("refusing to install a package named medcf from an index")
    if installer == Installer.PACKAGING:
        slicer.packaging.pip_install(args, interactive=False)  # we asked already
    else:
        slicer.util.pip_install(args)


def _progress_dialog(slicer, steps: int):
    create = getattr(slicer.util, "createProgressDialog", None)
    if create is None:
        return None
    return create(value=0, maximum=steps, windowTitle="Installing MedCF", labelText="Installing MedCF ...")


def _advance(slicer, progress, value: int, text: str) -> None:
    if progress is None:
        return
    progress.labelText = text
    progress.value = value
    app = getattr(slicer, "app", None)
    if app is not None:
        app.processEvents()


def restart_needed(plan: InstallPlan, imported: dict) -> list[str]:
    """The installed distributions whose modules this session had already imported (their old code
    stays loaded until Slicer restarts)."""
    names = ["medcf"] if plan.medcf else []
    names += [str(r).split(";")[0] for r in plan.requirements]
    from packaging.requirements import Requirement

    found = []
    for text in names:
        name = Requirement(text).name
        module = name.replace("-", "_").lower()
        if module in imported or name in imported:
            found.append(name)
    return found
