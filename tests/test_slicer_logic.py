"""The Slicer module's adapter (MedCFExtension/MedCF/MedCFLib/logic.py), tested without Slicer."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medcf.io import radiograph_from_dataset
from medcf.io.samples import SampleSpec, make_sample
from medcf.vocab import SpacingSource
from tests import waiting

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedCFExtension" / "MedCF"
sys.path.insert(0, str(MODULE_DIR))

from MedCFLib.logic import (  # noqa: E402
    CORONAL_IJK_TO_RAS,
    DEFAULT_SPACING_MM,
    EDIT_CHOICES,
    radiograph_to_volume_arrays,
)


def _radiograph(spec: SampleSpec):
    ds, _expected = make_sample(spec)
    return radiograph_from_dataset(ds)


def test_single_slice_float32_volume_in_kji_order():
    rad = _radiograph(SampleSpec(rows=96, columns=64, spacing_mm=0.2))
    array, spacing, origin, direction = radiograph_to_volume_arrays(rad)
    assert array.shape == (1, 96, 64)
    assert array.dtype == np.float32
    assert array.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(array[0], rad.display)
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert spacing == pytest.approx((0.2, 0.2, 1.0))
    assert origin == (0.0, 0.0, 0.0)
    assert direction.shape == (3, 3)


def test_spacing_is_column_row_slice():
    rad = _radiograph(SampleSpec(rows=96, columns=64, spacing_mm=0.2))
    assert rad.spacing_mm == pytest.approx((0.2, 0.2))
    anisotropic = dataclasses.replace(rad, spacing_mm=(0.2, 0.3))  # (row, col) in DICOM order
    _, spacing, _, _ = radiograph_to_volume_arrays(anisotropic)
    assert spacing == pytest.approx((0.3, 0.2, 1.0))


def test_missing_spacing_falls_back_to_one_mm():
    rad = _radiograph(SampleSpec(rows=80, columns=72, spacing=SpacingSource.NONE))
    assert rad.spacing_mm is None
    volume = radiograph_to_volume_arrays(rad)
    assert volume.spacing_ijk == (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM, DEFAULT_SPACING_MM) == (1.0, 1.0, 1.0)
    assert volume.array_kji.shape == (1, 80, 72)


def test_direction_is_a_right_handed_coronal_frame():
    direction = radiograph_to_volume_arrays(_radiograph(SampleSpec(rows=32, columns=40))).ijk_to_ras_direction
    np.testing.assert_array_equal(direction, CORONAL_IJK_TO_RAS)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3))
    assert np.linalg.det(direction) == pytest.approx(1.0)
    i_axis, j_axis, k_axis = direction.T
    np.testing.assert_array_equal(i_axis, [-1, 0, 0])  # columns toward patient's left
    np.testing.assert_array_equal(j_axis, [0, 0, -1])  # rows toward the feet


def test_rejects_non_2d_display():
    rad = _radiograph(SampleSpec(rows=32, columns=40))
    with pytest.raises(ValueError, match="2-D"):
        radiograph_to_volume_arrays(dataclasses.replace(rad, display=np.zeros((2, 32, 40), np.float32)))


def test_importing_logic_does_not_import_slicer_or_qt():
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        "import MedCFLib.logic, MedCFLib, MedCFLib.remote, MedCFLib.install\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'slicer', 'qt', 'ctk', 'vtk', 'PythonQt', 'PyQt5', 'PySide2', 'PySide6'})\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    result = waiting.run([sys.executable, "-c", code], cpu_budget=SHORT_CPU_BUDGET)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "[]"


def test_segment_legends_are_the_library_legends():
    """The segment names and label values the module reads from `medcf segment`'s label maps."""
    from medcf.anatomy.masks import LABEL_LEGEND, ZONE_LEGEND

    from MedCFLib.logic import ORGAN_LABELS, ZONE_LABELS

    assert ORGAN_LABELS == {name: value for name, value in LABEL_LEGEND.items() if value}
    assert ZONE_LABELS == ZONE_LEGEND


def test_old_slicer_is_refused_in_one_line():
    from MedCFLib.logic import slicer_version_problem

    for fine in ("5.12.0", "5.13.31053", "5.12.0-2026-01-01", "6.0.1"):
        assert slicer_version_problem(fine) is None, fine
    for old in ("5.10.2", "5.8.1", "4.11.20210226"):
        said = slicer_version_problem(old)
        assert said.startswith("MedCF needs Slicer 5.12 or newer") and old in said and "\n" not in said
    assert "cannot tell which Slicer" in slicer_version_problem("unknown")


def test_medcf_python_names_the_interpreter(monkeypatch):
    from MedCFLib.process import BackgroundEdit, default_interpreter

    monkeypatch.setenv("MEDCF_PYTHON", "/opt/medcf/bin/python")
    assert default_interpreter() == "/opt/medcf/bin/python"
    run = BackgroundEdit(["film.nii.gz"], "out", subcommand="segment")
    assert run.command == ["/opt/medcf/bin/python", "-m", "medcf", "segment", "film.nii.gz", "--out", "out"]
    monkeypatch.delenv("MEDCF_PYTHON")
    assert default_interpreter() in (sys.executable, __import__("shutil").which("PythonSlicer"))


def test_edit_choices_are_the_library_vocabularies():
    from medcf.editing.spec import Method
    from medcf.vocab import Action, Finding, Severity, Side, Zone

    expected = {"finding": Finding, "action": Action, "side": Side, "zone": Zone, "severity": Severity,
                "method": Method}
    for name, enum in expected.items():
        assert set(EDIT_CHOICES[name]) - {"-"} == {m.value for m in enum}, name


# --- the background edit (MedCFLib/process.py): a real `medcf edit` child process ---------------

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import xml.etree.ElementTree as ET  # noqa: E402

from MedCFLib.process import (  # noqa: E402
    CANCELLED,
    FINISHED,
    RUNNING,
    BackgroundEdit,
    edit_arguments,
    parse_progress,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_STUDY = ROOT / "medcf" / "data" / "sample_study"
needs_weights = pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                                   reason="the default model's weights are not committed in this checkout")


# Limits in CPU seconds (tests/waiting.py), not wall seconds. SHORT: a Python start, an import or
# a Qt window, a few CPU s each. EDIT: an edit of the sample study with the committed model,
# 40 steps: measured 87 CPU s on a busy 2-core x86 VM (14 minutes of wall time there); 10x.
SHORT_CPU_BUDGET = 120.0
EDIT_CPU_BUDGET = 900.0


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(p) for p in (extra_path, ROOT) if p is not None]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _process_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the child led its own process group
    except ProcessLookupError:
        return True
    return False


def test_progress_is_read_from_tqdm_lines():
    assert parse_progress("sampling:  42%|####2     | 5/12 [00:01<00:01,  4.49step/s]") == pytest.approx(500 / 12)
    assert parse_progress("sampling: 100%|##########| 12/12 [00:02<00:00,  4.99step/s]") == 100.0
    assert parse_progress("sampling:  33%|###3") == 33.0  # a bar cut before its count
    for line in ("/tmp/out/panel.png", "model check: target reached after 1 pass (strength 1, depth 0.5)",
                 "error: 250% is not a severity", "1.2.826.0.1.3680043.8.498.5677.dcm"):
        assert parse_progress(line) is None, line
    assert edit_arguments("in.dcm", {"finding": "nodule", "side": "-", "zone": "", "severity": None}) == [
        "in.dcm", "--finding", "nodule"]


@needs_weights
@pytest.mark.slow
def test_background_edit_reports_rising_progress_and_finishes_with_the_files(tmp_path):
    options = {"finding": "pleural_effusion", "action": "add", "side": "left", "zone": "-", "steps": "40"}
    run = BackgroundEdit(edit_arguments(SAMPLE_STUDY, options), tmp_path / "out", sys.executable,
                         env=_env(), cwd=tmp_path).start()
    seen = []
    progress = waiting.Watch([run.process.pid], EDIT_CPU_BUDGET, waiting.STALL, "the background edit")
    while True:
        state, percent, message = run.poll()
        seen.append(percent)
        if state != RUNNING:
            break
        if why := progress.problem(printed=len(run.stderr_lines)):
            run.cancel()
            raise AssertionError(why)
        time.sleep(0.05)
    assert state == FINISHED, (state, message, run.stderr_lines[-3:])
    assert seen == sorted(seen) and seen[-1] == 100.0
    partial = sorted({p for p in seen if 0 < p < 100})
    assert len(partial) >= 3, partial  # progress was seen while it ran, not only at the end
    files = run.result()
    assert Path(files["dicom"]).parent == tmp_path / "out" / "dicom" and Path(files["dicom"]).is_file()
    assert Path(files["panel"]) == tmp_path / "out" / "panel.png" and Path(files["panel"]).is_file()
    record = json.loads(Path(files["provenance"]).read_text())
    assert record["finding"] == "pleural_effusion" and record["extra"]["spec"]["steps"] == 40
    assert files["check"].startswith("model check:")


@needs_weights
@pytest.mark.slow
def test_cancelled_background_edit_stops_the_process_and_leaves_no_output(tmp_path):
    options = {"finding": "pleural_effusion", "action": "add", "side": "left", "steps": "100"}
    out = tmp_path / "out"
    run = BackgroundEdit(edit_arguments(SAMPLE_STUDY, options), out, sys.executable, env=_env(), cwd=tmp_path).start()
    waiting.wait_until(lambda: run.poll()[1] > 0 or run.poll()[0] != RUNNING, watch=[run.process.pid],
                       cpu_budget=EDIT_CPU_BUDGET, what="the background edit's first step", interval=0.05)
    state, percent, _ = run.poll()
    assert state == RUNNING and 0 < percent < 100  # cancelled mid-sampling
    run.cancel()
    assert run.poll()[0] == CANCELLED
    assert run.process.returncode is not None and _process_gone(run.process.pid)
    assert not out.exists()


FAKE_MEDCF = '''
import sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
(out / "dicom").mkdir(parents=True, exist_ok=True)
(out / "dicom" / ".partial.dcm.tmp").write_bytes(b"half a file")
for i in range(1000):
    sys.stderr.write(f"\\rsampling: {i // 10:3d}%| | {i}/1000 [00:00<00:00]")
    sys.stderr.flush()
    time.sleep(0.01)
time.sleep(3600)  # still running when cancelled, however slowly the test gets to it
'''


@pytest.mark.parametrize("existed", [False, True])
def test_cancel_removes_what_the_run_wrote_and_only_that(tmp_path, existed):
    """A run killed mid-write (here a stand-in medcf) leaves no partial output; a folder that was
    empty before stays, empty; the process group is gone."""
    fake = tmp_path / "fake"
    (fake / "medcf").mkdir(parents=True)
    (fake / "medcf" / "__init__.py").write_text("")
    (fake / "medcf" / "__main__.py").write_text(FAKE_MEDCF)
    out = tmp_path / "out"
    if existed:
        out.mkdir()
    run = BackgroundEdit(["input.dcm"], out, sys.executable, env=_env(fake), cwd=tmp_path).start()
    waiting.wait_until(lambda: run.poll()[1] >= 5, watch=[run.process.pid], cpu_budget=SHORT_CPU_BUDGET,
                       what="the stand-in medcf", process=run.process)
    assert (out / "dicom" / ".partial.dcm.tmp").is_file() and run.poll()[0] == RUNNING
    run.cancel()
    assert run.poll()[0] == CANCELLED and _process_gone(run.process.pid)
    assert out.is_dir() == existed and (not existed or not any(out.iterdir()))


# A stand-in medcf whose edit starts two helpers of its own (as a data loader or a tool might): one in
# its process group, one that leaves it for a session of its own (setsid), which a group kill misses.
TREE_MEDCF = '''
import subprocess, sys, time
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
sleeper = [sys.executable, "-c", "import time; time.sleep(3600)", "medcf-helper", str(out)]
same = subprocess.Popen(sleeper)
escaped = subprocess.Popen(sleeper, start_new_session=True)
(out / "pids.txt").write_text(f"{same.pid} {escaped.pid}")
for i in range(1000):
    sys.stderr.write(f"\\rsampling: {i // 10:3d}%| | {i}/1000 [00:00<00:00]")
    sys.stderr.flush()
    time.sleep(0.01)
time.sleep(3600)
'''


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _processes_naming(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = open(f"/proc/{entry}/cmdline", "rb").read().decode("utf-8", "replace")
            except OSError:
                continue
            if marker in cmdline and _alive(int(entry)):
                found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from Linux's /proc")
def test_cancel_leaves_no_medcf_process_alive(tmp_path):
    """Cancel on a running edit ends the whole tree: the medcf process, a helper in its group and a
    helper that started a session of its own; afterwards no process names the run's output folder."""
    from MedCFLib.process import descendants

    fake = tmp_path / "fake"
    (fake / "medcf").mkdir(parents=True)
    (fake / "medcf" / "__init__.py").write_text("")
    (fake / "medcf" / "__main__.py").write_text(TREE_MEDCF)
    out = tmp_path / "out-tree"
    run = BackgroundEdit(["input.dcm"], out, sys.executable, env=_env(fake), cwd=tmp_path).start()
    waiting.wait_until(lambda: run.poll()[1] >= 5 and (out / "pids.txt").is_file(), watch=[run.process.pid],
                       cpu_budget=SHORT_CPU_BUDGET, what="the stand-in medcf and its helpers", process=run.process)
    helpers = [int(pid) for pid in (out / "pids.txt").read_text().split()]
    assert all(_alive(pid) for pid in helpers) and set(helpers) <= set(descendants(run.process.pid))
    assert len(_processes_naming(str(out))) == 3  # medcf and its two helpers
    run.cancel(grace_s=2.0)
    assert run.poll()[0] == CANCELLED
    try:
        # cancel() has sent SIGKILL to every one of them: an exit is due at once; 10 s of wall time is
        # only the grace for a loaded machine to reap them (a survivor still fails, rather than hangs)
        deadline = time.monotonic() + 10.0
        while any(_alive(pid) for pid in [run.process.pid, *helpers]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_naming(str(out)) == [] and not out.exists()
    finally:
        for pid in helpers:  # whatever happened above, leave nothing running behind the test
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_windows_worker_has_no_console_window_and_cancel_ends_the_tree():
    """The options a Windows run gets (checked here on any platform; only Linux has run a worker)."""
    from MedCFLib import process

    posix = process.popen_options("posix")
    assert posix == {"start_new_session": True}
    windows = process.popen_options("nt")
    assert windows["creationflags"] & process.CREATE_NO_WINDOW == 0x08000000  # no console window flashes up
    assert windows["creationflags"] & process.CREATE_NEW_PROCESS_GROUP == 0x00000200
    if hasattr(subprocess, "STARTUPINFO"):  # Windows: the window is also asked to stay hidden
        assert windows["startupinfo"].wShowWindow == process.SW_HIDE
    assert process.tree_kill_command(4242) == ["taskkill", "/F", "/T", "/PID", "4242"]  # /T: the whole tree


def test_cancel_never_touches_a_folder_that_held_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    run = BackgroundEdit(["-c", "import time; time.sleep(30)"], out, sys.executable, env=_env())
    run.command = [sys.executable, "-c", "import time; time.sleep(30)"]
    run.start()
    run.cancel()
    assert run.poll()[0] == CANCELLED and (out / "keep.txt").read_text() == "earlier result"


# --- the module's layout: .ui, icon, CMake ----------------------------------------------------------

UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedCF.ui"


def test_every_widget_the_module_uses_is_in_the_ui_file():
    names = {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "MedCF.py").read_text()))
    assert used and used <= names, used - names
    # the edit combos are looked up by name (getattr(self.ui, f"{name}ComboBox")), one per EDIT_CHOICES key
    assert {f"{name}ComboBox" for name in EDIT_CHOICES} <= names
    assert 'getattr(self.ui, f"{name}ComboBox")' in (MODULE_DIR / "MedCF.py").read_text()


def test_ui_file_loads_in_qt_and_holds_the_widgets(tmp_path):
    """Qt itself (PySide6's QUiLoader, offscreen) reads the .ui; CTK widgets fall back to QWidget.
    Skipped where PySide6 is not installed (it is not a MedCF dependency)."""
    code = (
        "import re, sys\n"
        "from PySide6.QtWidgets import QApplication, QWidget\n"
        "from PySide6.QtUiTools import QUiLoader\n"
        "from PySide6.QtCore import QFile\n"
        "app = QApplication([])\n"
        f"f = QFile({str(UI_FILE)!r}); assert f.open(QFile.ReadOnly)\n"
        "w = QUiLoader().load(f)\n"
        "assert w is not None and w.objectName() == 'MedCF'\n"
        f"used = set(re.findall(r'self\\.ui\\.(\\w+)', open({str(MODULE_DIR / 'MedCF.py')!r}).read()))\n"
        "missing = sorted(n for n in used if w.findChild(QWidget, n) is None)\n"
        "print(len(used), missing)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    probe = subprocess.run([sys.executable, "-c", "import PySide6.QtUiTools"], capture_output=True, env=env)
    if probe.returncode != 0:
        pytest.skip("PySide6 is not installed")
    done = waiting.run([sys.executable, "-c", code], env=env, cpu_budget=SHORT_CPU_BUDGET)
    assert done.returncode == 0, done.stderr
    count, missing = done.stdout.split(" ", 1)
    assert int(count) > 10 and missing.strip() == "[]", done.stdout
    assert "could not be read" not in done.stderr, done.stderr  # every property parses


def test_panel_screenshot_script_renders_the_ui(tmp_path):
    """scripts/slicer_panel_screenshot.py (docs/images/slicer-panel.png) runs and draws the panel
    with its caption; PySide6 comes with the test extra."""
    from PIL import Image

    out = tmp_path / "panel.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = waiting.run([sys.executable, str(ROOT / "scripts" / "slicer_panel_screenshot.py"), str(out)], env=env,
                       cpu_budget=SHORT_CPU_BUDGET)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert 400 <= width <= 600 and height > 900
    assert (pixels[-30:] == [255, 243, 205]).all(axis=-1).mean() > 0.5  # the caption strip is there
    assert pixels[: height - 70].std() > 20  # and the panel above it is drawn, not blank


def test_cmake_installs_the_resources_and_scripts():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = re.findall(r"(\S*\$\{MODULE_NAME\}\S*\.(?:py|ui|png))\b", cmake)
    assert listed
    for name in listed:
        assert (MODULE_DIR / name.replace("${MODULE_NAME}", "MedCF")).is_file(), name
    for path in MODULE_DIR.rglob("*"):
        if path.suffix in (".py", ".ui", ".png") and "Testing" not in path.parts and "__pycache__" not in path.parts:
            assert path.relative_to(MODULE_DIR).as_posix().replace("MedCF", "${MODULE_NAME}", 1) in cmake, path
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"?PyTorch"?\)', top)
    assert "counterfactual" in top.lower()
    # the wheel the first-use install takes is copied into the module's Resources/wheels and installed
    assert 'Resources/wheels/${MEDCF_WHEEL_NAME}' in cmake and 'medcf-*-py3-none-any.whl' in cmake
    assert 'DESTINATION "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/wheels"' in cmake


def _cmake_setting(text: str, name: str) -> str:
    found = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    assert found, name
    return found.group(1)


def test_extension_metadata_is_what_the_extensions_index_asks_for():
    """Absolute https URLs for homepage, icon and screenshot, all under the project's one address;
    contributors as "Name (Org)"; a catalog entry with only the schema's keys."""
    from MedCFLib.logic import DOCUMENTATION_URL, PROJECT_URL, RAW_URL

    top = (ROOT / "CMakeLists.txt").read_text()
    homepage, icon, shots = (_cmake_setting(top, f"EXTENSION_{key}") for key in ("HOMEPAGE", "ICONURL",
                                                                                  "SCREENSHOTURLS"))
    assert homepage == DOCUMENTATION_URL and homepage.startswith(PROJECT_URL + "/")
    for url in (icon, *shots.split()):
        assert url.startswith(RAW_URL + "/"), url
        assert (ROOT / url[len(RAW_URL) + 1:]).is_file(), url  # the file is in the repository
    assert shots.split()
    contributors = _cmake_setting(top, "EXTENSION_CONTRIBUTORS")
    assert re.fullmatch(r"[^,()]+ \([^()]+\)(, [^,()]+ \([^()]+\))*", contributors), contributors
    assert "MedCF team" not in top and contributors in (MODULE_DIR / "MedCF.py").read_text()
    catalog = json.loads((ROOT / "MedCFExtension" / "MedCF.json").read_text())
    # the keys of slicer-extension-catalog-entry-schema v1.0.2 (additionalProperties: false)
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(catalog) <= allowed
    assert catalog["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert catalog["scm_url"] == PROJECT_URL and catalog["category"] == _cmake_setting(top, "EXTENSION_CATEGORY")
    assert catalog["build_dependencies"] == ["PyTorch"] and 1 <= catalog["tier"] <= 5
    source = (MODULE_DIR / "MedCF.py").read_text()  # the help text (an f-string) links the documentation
    assert 'href="{DOCUMENTATION_URL}"' in source and "import DOCUMENTATION_URL" in source


def test_sample_data_is_the_committed_sample_film():
    import hashlib

    from MedCFLib.logic import RAW_URL, SAMPLE_DATA, SAMPLE_DATA_SOURCE

    source = ROOT / SAMPLE_DATA_SOURCE
    assert SAMPLE_DATA["uris"] == f"{RAW_URL}/{SAMPLE_DATA_SOURCE}"
    assert SAMPLE_DATA["checksums"] == "SHA256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert SAMPLE_DATA["fileNames"].endswith(".dcm") and SAMPLE_DATA["loadFileType"] == "VolumeFile"
    assert "registerCustomSampleDataSource" in (MODULE_DIR / "MedCF.py").read_text()


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "MedCF.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


# --- dependencies on first use, and a pasted report -------------------------------------------


def test_each_run_gets_its_own_output_subfolder(tmp_path):
    from datetime import datetime

    from MedCFLib.logic import run_folder

    when = datetime(2026, 12, 7, 23, 15, 2)
    options = {"finding": "pleural_effusion", "action": "add", "side": "left"}
    first = run_folder(tmp_path, options, when)
    assert first == tmp_path / "20261207-231502-pleural_effusion-add" and not first.exists()
    first.mkdir()
    (first / "edit.json").write_text("{}")
    second = run_folder(tmp_path, options, when)  # the same second: a second Edit still gets a new folder
    assert second == tmp_path / "20261207-231502-pleural_effusion-add-2"
    report = run_folder(tmp_path, {"from-report": "/w/report.txt", "action": "-"}, when)
    assert report.name == "20261207-231502-report"
    assert run_folder(tmp_path, {"finding": "a/b c", "action": None}, when).parent == tmp_path


def test_work_folders_are_removed_and_swept(tmp_path):
    from MedCFLib.logic import WorkFolders

    folders = WorkFolders(tmp_path / "MedCF")
    one, two = folders.new(), folders.new()
    (one / "input.nii.gz").write_bytes(b"x")
    (two / "anatomy").mkdir()
    assert one != two and one.parent == two.parent == tmp_path / "MedCF"
    folders.remove(one)
    assert not one.exists() and two.exists()
    elsewhere = tmp_path / "run-elsewhere"
    elsewhere.mkdir()
    folders.remove(elsewhere)  # only its own folders
    assert elsewhere.exists()
    three = folders.new()
    assert folders.sweep(keep=(three,)) == [two] and three.exists() and not two.exists()


def test_force_cpu_sets_medcfs_device_option():
    from MedCFLib.logic import with_device

    options = {"finding": "nodule"}
    assert with_device(options, True) == {"finding": "nodule", "device": "cpu"}
    assert with_device(options, False) == options and "device" not in options
    assert edit_arguments("in.dcm", with_device(options, True)) == ["in.dcm", "--finding", "nodule", "--device", "cpu"]
    ui = UI_FILE.read_text()
    assert 'name="forceCpuCheckBox"' in ui and "<string>forceCPU</string>" in ui


def test_parameter_node_names_match_the_ui():
    """Every field of MedCFParameterNode is bound to a widget by its SlicerParameterName in the .ui."""
    source = (MODULE_DIR / "MedCF.py").read_text()
    block = source[source.index("class MedCFParameterNode:"):source.index("@dataclass")]
    fields = re.findall(r"^    (\w+): ", block, flags=re.M)
    bound = re.findall(r'name="SlicerParameterName"[^>]*>\s*<string>(\w+)</string>', UI_FILE.read_text())
    assert fields and sorted(fields) == sorted(bound)
    assert "@parameterNodeWrapper" in source and "StartCloseEvent" in source


def test_a_pasted_report_becomes_from_report_and_replaces_the_finding(tmp_path):
    from MedCFLib.logic import with_report

    options = {"finding": "nodule", "action": "add", "side": "left", "seed": "0"}
    assert with_report(options, "  \n", tmp_path) == options
    given = with_report(options, "Small left pleural effusion.\n", tmp_path / "run")
    assert "finding" not in given and given["action"] == "add" and given["side"] == "left"
    assert Path(given["from-report"]).read_text() == "Small left pleural effusion.\n"
    args = edit_arguments("in.dcm", given)
    assert args[args.index("--from-report") + 1] == given["from-report"] and "--finding" not in args


# --- a refusal outside the model's domain (MedCFLib/domain.py): one line, three ways on -----------------

from MedCFLib.domain import (  # noqa: E402
    ALLOW_OPTION,
    MODEL_FREE_METHOD,
    REFUSAL_MARK,
    WayOn,
    domain_refusal,
    retry_options,
    ways_on_text,
)
from MedCFLib.process import FAILED  # noqa: E402


def _refusal_line() -> str:
    """The library's own refusal for a film far outside a model's domain."""
    from medcf.domain.assess import DomainStatus, DomainVerdict, refusal_line

    verdict = DomainVerdict(DomainStatus.OUTSIDE, {"reconstruction_error": 3.0}, {"reconstruction_error": 1.0})
    return refusal_line(verdict)


# A stand-in medcf that refuses as `medcf edit` does outside the domain (one line on stderr, exit 2,
# nothing written) unless the edit takes a way on; then it writes edit.json and prints its path.
REFUSING_MEDCF = '''
import json, sys
from pathlib import Path
argv = sys.argv[1:]
out = Path(argv[argv.index("--out") + 1])
method = argv[argv.index("--method") + 1] if "--method" in argv else "auto"
model = argv[argv.index("--model") + 1] if "--model" in argv else None
if "--allow-out-of-domain" not in argv and method != "insert" and model is None:
    sys.stderr.write("medcf: error: " + LINE + "\\n")
    sys.exit(2)
out.mkdir(parents=True)
(out / "edit.json").write_text(json.dumps({"argv": argv}))
print(out / "edit.json")
'''


def _refusing_medcf(tmp_path: Path) -> Path:
    fake = tmp_path / "fake"
    (fake / "medcf").mkdir(parents=True)
    (fake / "medcf" / "__init__.py").write_text("")
    (fake / "medcf" / "__main__.py").write_text(f"LINE = {_refusal_line()!r}\n" + REFUSING_MEDCF)
    return fake


def test_the_panel_knows_the_librarys_refusal_and_its_ways_on():
    """The words the panel recognises and the options it sets are the library's own."""
    from medcf.domain.assess import ALLOW_FLAG
    from medcf.domain.assess import MODEL_FREE_METHOD as LIBRARY_METHOD
    from medcf.editing.spec import Method

    line = _refusal_line()
    assert REFUSAL_MARK in line and ALLOW_FLAG in line and f"--method {LIBRARY_METHOD}" in line
    assert f"--{ALLOW_OPTION}" == ALLOW_FLAG and MODEL_FREE_METHOD == LIBRARY_METHOD == Method.INSERT.value
    assert MODEL_FREE_METHOD in EDIT_CHOICES["method"]  # the method combo offers insert
    from MedCFLib.logic import EDIT_OPTIONS
    assert EDIT_OPTIONS["allow_out_of_domain"]["flag"] == ALLOW_FLAG  # the schema the panel reads has the flag


def test_a_domain_refusal_is_one_line_and_each_way_on_reruns_with_its_option(tmp_path):
    """A worker that exits 2 with the domain line: the run fails with that line (no prefix, no
    traceback), and each way on re-runs the same edit with its option and is written."""
    fake = _refusing_medcf(tmp_path)
    options = {"finding": "pleural_effusion", "action": "add", "side": "right", "method": "auto",
               ALLOW_OPTION: False, "model": None}
    refused = BackgroundEdit(edit_arguments("input.dcm", options), tmp_path / "refused", sys.executable,
                             env=_env(fake), cwd=tmp_path).start()
    state, _, message = refused.wait(timeout=SHORT_CPU_BUDGET)
    assert state == FAILED and refused.returncode == 2
    line = domain_refusal(refused.returncode, message)
    assert line == _refusal_line() and "\n" not in line and "Traceback" not in "".join(refused.stderr_lines)
    assert not (tmp_path / "refused").exists()
    assert line in ways_on_text(line) and "Model folder" in ways_on_text(line)
    assert "-c generator" in ways_on_text(line, model_choice=False)

    expected = {WayOn.ALLOW: ["--allow-out-of-domain"], WayOn.INSERT: ["--method", "insert"],
                WayOn.MODEL: ["--model", str(tmp_path / "real-model")]}
    for way, wanted in expected.items():
        retry = retry_options(options, way, str(tmp_path / "real-model"))
        args = edit_arguments("input.dcm", retry)
        assert args[:7] == ["input.dcm", "--finding", "pleural_effusion", "--action", "add", "--side", "right"]
        assert any(args[i:i + len(wanted)] == wanted for i in range(len(args))), (way, args)
        assert (way is WayOn.ALLOW) == ("--allow-out-of-domain" in args), (way, args)
        assert ("auto" in args) == (way is not WayOn.INSERT), (way, args)  # insert replaces the method
        out = tmp_path / way.name
        run = BackgroundEdit(args, out, sys.executable, env=_env(fake), cwd=tmp_path).start()
        assert run.wait(timeout=SHORT_CPU_BUDGET)[0] == FINISHED, (way, run.stderr_lines)
        assert run.result()["provenance"] == str(out / "edit.json")
    with pytest.raises(ValueError, match="Model folder"):
        retry_options(options, WayOn.MODEL, "  ")


def test_other_failures_are_not_taken_for_a_domain_refusal():
    line = "medcf: error: " + _refusal_line()
    assert domain_refusal(2, line) == _refusal_line()
    assert domain_refusal(2, "MONAI Label server: " + _refusal_line()) == _refusal_line()
    assert domain_refusal(1, line) is None  # an internal error that quotes it is not the refusal
    assert domain_refusal(None, line) is None  # still running
    assert domain_refusal(2, "medcf: error: --masks m.nrrd: no such file") is None


def test_remote_edit_sends_the_ways_on_as_the_apps_params(tmp_path):
    from MedCFLib.remote import RemoteEdit

    film = tmp_path / "film.dcm"
    film.write_bytes(b"x")
    options = retry_options({"finding": "nodule", "action": "add", "zone": "-", ALLOW_OPTION: False}, WayOn.ALLOW)
    params = RemoteEdit("http://127.0.0.1:1", film, options, tmp_path / "out").params
    assert params["allow_out_of_domain"] is True and "zone" not in params
    params = RemoteEdit("http://127.0.0.1:1", film, {**options, ALLOW_OPTION: False, "method": "insert"},
                        tmp_path / "out").params
    assert "allow_out_of_domain" not in params and params["method"] == "insert"
