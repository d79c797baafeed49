"""The wheel works anywhere: ``python -m build`` makes an sdist and, from it, a wheel that
carries the MONAI bundle (configs, the default model's weights and their manifest) as the
data package ``medcf_bundle`` and states its requirements as ranges. Installed into a fresh
virtual environment outside the checkout, ``medcf segment`` and ``medcf edit`` run on the
sample study from another folder with no ``MEDCF_BUNDLE``, no ``PYTHONPATH`` and no checkout
in reach; beside a torch other than the tested one, pip installs the wheel alone; a damaged
weight file in the install is one line, exit 2.

The fresh environment is ``python -m venv --without-pip``; it reaches the third-party packages
already installed for the tests through a ``.pth`` line naming a folder of links to them, with
every medcf entry of that environment (the editable install) left out. So everything of MedCF
it runs (code, bundle, weights, sample study) comes from the wheel, and pip resolves the
wheel's own requirements against what is installed, with no index (``--no-index``): a
requirement the installed packages do not meet fails the install instead of downloading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What setup.py reads to build the sdist (the wheel is built from the sdist, as `make dist` does).
SOURCES = ("setup.py", "README.md", "LICENSE", "medcf", "monai_bundle")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
BUNDLE_RUNS = ("output", "runs", "eval")  # written into monai_bundle/ by `monai.bundle run`; git ignores them
OTHER_TORCH = "2.9.1"  # in the wheel's range (and monai 1.6's torch>=2.8), not the tested 2.13.0
EDIT = ["--finding", "pleural_effusion", "--action", "add", "--side", "left", "--quiet"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH, no MEDCF_* setting, no pip settings of
    this machine (its find-links and index), one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MEDCF_", "PYTHON"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", **extra}


def run(command: list, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def build(tmp: Path) -> Path:
    """sdist, then the wheel from it, built from a copy of the sources (the checkout gets no
    build/ or egg-info from a test); --no-isolation: this environment's setuptools, no download."""
    source = tmp / "src"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        (shutil.copytree(path, source / name, ignore=IGNORED) if path.is_dir() else shutil.copy2(path, source / name))
    for name in BUNDLE_RUNS:
        shutil.rmtree(source / "monai_bundle" / name, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCF_")}
    done = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", source], tmp, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(list((tmp / "dist").glob("medcf-*.tar.gz"))) == 1
    shutil.rmtree(source)  # 43 MB of copied weights, not needed once built
    (wheel,) = (tmp / "dist").glob("medcf-*-py3-none-any.whl")
    return wheel


def fresh_venv(tmp: Path) -> Path:
    """A new venv whose only view of the installed dependencies is a folder of links to them,
    medcf's own entries left out; returns its python."""
    run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], tmp, clean_env()).check_returncode()
    python = tmp / "venv" / "bin" / "python"
    installed = Path(sysconfig.get_paths()["purelib"])
    deps = tmp / "deps"
    deps.mkdir()
    for entry in installed.iterdir():
        name = entry.name.lower()
        if name.startswith(("medcf", "__editable__", "__pycache__")) or name.endswith((".pth", ".egg-link")):
            continue
        (deps / entry.name).symlink_to(entry)
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp,
                    clean_env()).stdout.strip())
    (site / "medcf-test-deps.pth").write_text(f"{deps}\n")
    return python


def another_torch(tmp: Path) -> Path:
    """A folder holding the installed record of a torch other than the tested one, for pip to
    see first on its path."""
    record = tmp / "other-torch" / f"torch-{OTHER_TORCH}.dist-info"
    record.mkdir(parents=True)
    (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {OTHER_TORCH}\n")
    return record.parent


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.integration  # builds the wheel, a venv, and runs medcf segment and edit in it (~2 min)
def test_the_wheel_installs_anywhere_with_its_model_and_keeps_an_installed_torch(tmp_path: Path) -> None:
    wheel = build(tmp_path)

    # The wheel carries every file the manifest lists, byte for byte, and states ranges.
    manifest = json.loads((ROOT / "monai_bundle" / "models" / "medcf_model.json").read_text())
    listed = [f["path"] for f in manifest["weights"].values()]
    listed += [f["path"] for piece in manifest["pieces"].values() for f in piece["files"].values()]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for path in listed + ["medcf_model.json"]:
            member = f"medcf_bundle/models/{path}"
            assert member in names, member
            assert hashlib.sha256(archive.read(member)).hexdigest() == _sha256(ROOT / "monai_bundle" / "models" / path)
        assert {f"medcf_bundle/configs/{p.name}" for p in (ROOT / "monai_bundle" / "configs").glob("*.json")} <= names
        assert "medcf/data/sample_study/series-001-pa/IM0001.dcm" in names
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in requires if "==" in r.split(";")[0]], requires
    assert any(re.fullmatch(r"torch\s*>=\s*2\.\d+", r) for r in core), core

    python = fresh_venv(tmp_path)
    site_dir = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path,
                        clean_env()).stdout.strip())
    pip = [python, "-m", "pip", "install", "--no-index", "--find-links", wheel.parent]

    # Beside a torch other than the tested one, pip would install medcf alone, keeping that torch.
    report = tmp_path / "report.json"
    dry = run(pip + ["--dry-run", "--report", report, "medcf"], tmp_path,
              clean_env(PYTHONPATH=str(another_torch(tmp_path))))
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    assert [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]] == ["medcf"]
    assert re.search(rf"Requirement already satisfied: torch\S* in .*other-torch.*\({re.escape(OTHER_TORCH)}\)",
                     dry.stdout), dry.stdout[-3000:]

    # Installed for real (its requirements met by what is installed, nothing downloaded).
    done = run(pip + ["--no-compile", "medcf"], tmp_path, clean_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Successfully installed medcf-" in done.stdout

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(MEDCF_CACHE=str(tmp_path / "cache"))
    medcf = tmp_path / "venv" / "bin" / "medcf"
    where = run([python, "-c", "import medcf, medcf.bundle; print(medcf.__file__); print(medcf.bundle.bundle_root())"],
                elsewhere, env)
    module, bundle = (Path(line) for line in where.stdout.split())
    assert module.is_relative_to(site_dir) and bundle == site_dir / "medcf_bundle", where.stdout + where.stderr
    sample = site_dir / "medcf" / "data" / "sample_study"

    segment = run([medcf, "segment", sample, "--out", "anatomy"], elsewhere, env)
    assert segment.returncode == 0, segment.stderr[-3000:]
    record = json.loads((elsewhere / "anatomy" / "anatomy.json").read_text())
    assert record["segmenter"] == "medcf-unet"
    assert all((elsewhere / "anatomy" / f).stat().st_size > 0 for f in ("anatomy-seg.dcm", "overlay.png"))

    edit = run([medcf, "edit", sample, *EDIT, "--out", "edit"], elsewhere, env)
    assert edit.returncode == 0, edit.stderr[-3000:]
    record = json.loads((elsewhere / "edit" / "edit.json").read_text())
    assert Path(record["extra"]["model"]["source"]) == bundle / "models"
    (counterfactual,) = (elsewhere / "edit" / "dicom").glob("*.dcm")
    ds = pydicom.dcmread(counterfactual)
    assert ds.SyntheticData == "YES" and ds.pixel_array.shape == pydicom.dcmread(
        next((sample / "series-001-pa").glob("*.dcm"))).pixel_array.shape
    assert (elsewhere / "edit" / "panel.png").stat().st_size > 0

    # A damaged weight file in the install: refused at load, in one line, exit 2.
    weights = bundle / "models" / "unet.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    damaged = run([medcf, "segment", sample, "--out", "again"], elsewhere, env)
    assert damaged.returncode == 2 and damaged.stderr.count("\n") == 1, damaged.stderr[-3000:]
    assert "unet.safetensors does not match" in damaged.stderr and "reinstall the medcf wheel" in damaged.stderr
    assert not (elsewhere / "again").exists()


# -- where medcf.bundle looks (units, no build) -----------------------------------------------

@pytest.fixture
def installed_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``medcf_bundle`` data package on the import path, as a wheel installs it, and no checkout."""
    from medcf import bundle

    package = tmp_path / "site" / bundle.BUNDLE_PACKAGE
    (package / "configs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, bundle.BUNDLE_PACKAGE, raising=False)
    monkeypatch.setattr(bundle, "CHECKOUT_BUNDLE", tmp_path / "no-checkout" / "monai_bundle")
    monkeypatch.delenv(bundle.BUNDLE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return package


def test_without_a_checkout_the_installed_bundle_is_found(installed_copy: Path) -> None:
    from medcf import bundle

    assert bundle.bundle_root() == installed_copy
    assert bundle.in_installed_bundle(installed_copy / "models" / "unet.safetensors")
    assert not bundle.in_installed_bundle(ROOT / "monai_bundle" / "models" / "unet.safetensors")


def test_medcf_bundle_overrides_the_installed_bundle(installed_copy: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from medcf import bundle

    mine = tmp_path / "mine"
    (mine / "configs").mkdir(parents=True)
    monkeypatch.setenv(bundle.BUNDLE_ENV, str(mine))
    assert bundle.bundle_root() == mine


def test_the_checkout_comes_before_an_installed_bundle(installed_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medcf import bundle

    monkeypatch.setattr(bundle, "CHECKOUT_BUNDLE", ROOT / "monai_bundle")
    assert bundle.bundle_root() == ROOT / "monai_bundle"
    assert not bundle.in_installed_bundle(ROOT / "monai_bundle" / "models" / "unet.safetensors")


def test_no_bundle_anywhere_is_one_line_naming_the_remedies(installed_copy: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from medcf import bundle
    from medcf.errors import InputError

    monkeypatch.setattr(bundle, "BUNDLE_PACKAGE", "medcf_bundle_not_installed")
    with pytest.raises(InputError) as error:
        bundle.bundle_root()
    message = str(error.value)
    assert "\n" not in message and "reinstall medcf" in message and bundle.BUNDLE_ENV in message
