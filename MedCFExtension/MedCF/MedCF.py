"""MedCF: counterfactual chest X-rays in 3D Slicer (thin module shell).

This module holds no imaging logic of its own. Inspecting and loading are done
by the Slicer-free ``medcf`` library, which must be installed into Slicer's
Python; ``MedCFLib.logic`` only converts its radiograph into a Slicer volume.
``medcf`` is imported when a button is pressed, not when the module loads, so
the module still appears (and says what to install) when the library is absent.
"""

import logging
import os

import ctk
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

from MedCFLib import (
    EDIT_CHOICES,
    FAILED,
    FINISHED,
    RUNNING,
    BackgroundEdit,
    default_interpreter,
    edit_arguments,
    load_into_scene,
)

RESEARCH_ONLY_LABEL = "Synthetic outputs: research only, never for diagnosis."

INSTALL_HINT = (
    "The medcf Python library is not installed in Slicer's Python. In Slicer's Python console run "
    "slicer.util.pip_install('medcf') (or pass the path of a MedCF source checkout), then try again."
)


class MedCFLibraryMissing(Exception):
    """The ``medcf`` package cannot be imported in Slicer's Python."""


def _import_medcf():
    """Import what the module uses from ``medcf``; a one-line hint if it is missing."""
    try:
        import medcf.cli
        import medcf.io
    except ImportError as exc:
        raise MedCFLibraryMissing(f"{INSTALL_HINT} ({exc})") from None
    return medcf


def _one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_medcf_error(exc):
    try:
        from medcf.errors import MedCFError
    except ImportError:
        return False
    return isinstance(exc, MedCFError)


#
# MedCF
#


class MedCF(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedCF"
        self.parent.categories = ["Utilities"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedCF team"]
        self.parent.helpText = """
<p>MedCF makes counterfactual chest X-rays: it edits one finding of a chest radiograph and
keeps the rest of the patient. <b>Its outputs are synthetic, for research only, never for
diagnosis.</b></p>
<p>This module is a thin Slicer front end. The work is done by the core <code>medcf</code>
Python library, which has no Slicer dependency and must be installed into Slicer's own Python
first: in the Python console run <code>slicer.util.pip_install('medcf')</code> (or give the path
of a MedCF source checkout instead of the name), then restart Slicer or reload the module.</p>
<p>Now: choose a DICOM file, series folder or study folder; <i>Inspect</i> lists the instances
found and which frontal radiograph MedCF would edit, and why; <i>Load selected radiograph</i>
loads that radiograph (display-space pixels, window 1 / level 0.5) as a single-slice volume,
shown in the coronal view. <i>Edit</i> adds or removes one finding (side, zone, severity,
method) by running <code>medcf edit</code> in a background process (Slicer stays responsive; a
progress bar follows the sampling, <i>Cancel</i> stops it and removes what it wrote), then loads
the counterfactual next to the input. The output folder receives a new synthetic DICOM series,
the panel, the masks and the provenance.</p>
"""
        self.parent.acknowledgementText = """
Built on the 3D Slicer scripted module template. MedCF outputs are synthetic and for research only.
"""


#
# MedCFWidget
#


class MedCFWidget(ScriptedLoadableModuleWidget):
    """Path chooser, Inspect and Load buttons, a report box, and the edit controls.

    The widgets come from Resources/UI/MedCF.ui. An edit runs ``medcf edit`` in a background
    process (``MedCFLib.BackgroundEdit``); a timer polls it, so Slicer stays responsive."""

    POLL_INTERVAL_MS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self.editRun = None
        self.editTimer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MedCFLogic()

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedCF.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        self.ui.researchOnlyLabel.text = RESEARCH_ONLY_LABEL
        # folders are browsed; a single DICOM file's path can be typed or pasted (an enum-set
        # property, set here rather than in the .ui so the .ui also loads without CTK's plugins)
        self.ui.pathEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.outputEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.reportBox.setFont(qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont))
        self.editCombos = {}
        for name, values in EDIT_CHOICES.items():
            combo = getattr(self.ui, f"{name}ComboBox")
            combo.addItems(values)
            self.editCombos[name] = combo
        self.ui.severityComboBox.setCurrentText("moderate")
        self.ui.methodComboBox.setCurrentText("auto")

        self.editTimer = qt.QTimer()
        self.editTimer.setInterval(self.POLL_INTERVAL_MS)
        self.editTimer.connect("timeout()", self.onEditPoll)

        self.ui.pathEdit.connect("currentPathChanged(QString)", self.updateButtons)
        self.ui.outputEdit.connect("currentPathChanged(QString)", self.updateButtons)
        self.ui.inspectButton.connect("clicked(bool)", self.onInspect)
        self.ui.loadButton.connect("clicked(bool)", self.onLoad)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelEdit)

        self.updateButtons()

    def cleanup(self):
        """Module closed or reloaded: a running edit is cancelled, not orphaned."""
        if self.editTimer is not None:
            self.editTimer.stop()
        if self.editRun is not None:
            self.editRun.cancel()
            self.editRun = None

    def currentPath(self):
        return self.ui.pathEdit.currentPath.strip()

    def outputPath(self):
        return self.ui.outputEdit.currentPath.strip()

    def updateButtons(self, *_):
        hasPath = bool(self.currentPath())
        running = self.editRun is not None
        self.ui.inspectButton.enabled = hasPath
        self.ui.loadButton.enabled = hasPath
        self.ui.editButton.enabled = hasPath and bool(self.outputPath()) and not running
        self.ui.cancelButton.enabled = running

    def _run(self, action):
        """Run ``action``; show MedCF errors as one line, unexpected ones with a console pointer."""
        try:
            return action()
        except MedCFLibraryMissing as exc:
            slicer.util.errorDisplay(str(exc))
        except Exception as exc:
            if _is_medcf_error(exc):
                slicer.util.errorDisplay(_one_line(exc))
            else:
                logging.exception("MedCF: unexpected error")
                slicer.util.errorDisplay(f"Unexpected error: {_one_line(exc)} (details in the Python console)")
        return None

    def onInspect(self):
        path = self.currentPath()
        with _WaitCursor():
            text = self._run(lambda: self.logic.inspectText(path))
        if text is not None:
            self.ui.reportBox.setPlainText(text)

    def onLoad(self):
        path = self.currentPath()
        with _WaitCursor():
            result = self._run(lambda: self.logic.loadRadiograph(path))
        if result is None:
            return
        node, radiograph = result
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpGreenSliceView)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        self.ui.reportBox.appendPlainText("\n" + MedCFLogic.describeLoaded(node, radiograph))

    def onEdit(self):
        """Start ``medcf edit`` in the background; onEditPoll follows it."""
        if self.editRun is not None:
            return
        options = {name: combo.currentText for name, combo in self.editCombos.items()}
        run = self._run(lambda: self.logic.startEdit(self.currentPath(), options, self.outputPath()))
        if run is None:
            return
        self.editRun = run
        self.ui.editProgressBar.value = 0
        self.ui.editStatusLabel.text = "Starting medcf edit in the background..."
        self.updateButtons()
        self.editTimer.start()

    def onEditPoll(self):
        if self.editRun is None:
            self.editTimer.stop()
            return
        state, percent, message = self.editRun.poll()
        self.ui.editProgressBar.value = int(percent)
        if state == RUNNING:
            self.ui.editStatusLabel.text = message
            return
        self.editTimer.stop()
        run, self.editRun = self.editRun, None
        self.updateButtons()
        if state == FINISHED:
            self.ui.editStatusLabel.text = "Finished."
            result = self._run(lambda: self.logic.loadEditResult(run))
            if result is not None:
                node, files = result
                slicer.util.setSliceViewerLayers(background=node, fit=True)
                self.ui.reportBox.appendPlainText("\nCounterfactual (synthetic, research only): "
                                                  + ", ".join(f"{k}: {v}" for k, v in files.items()))
        elif state == FAILED:
            self.ui.editStatusLabel.text = f"Failed: {message}"
            slicer.util.errorDisplay(message)
        else:
            self.ui.editStatusLabel.text = "Cancelled; nothing was written."

    def onCancelEdit(self):
        if self.editRun is None:
            return
        with _WaitCursor():
            self.editRun.cancel()
        self.onEditPoll()


class _WaitCursor:
    """Show a wait cursor while a slow call runs."""

    def __enter__(self):
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        return self

    def __exit__(self, *exc_info):
        qt.QApplication.restoreOverrideCursor()
        return False


#
# MedCFLogic
#


class MedCFLogic(ScriptedLoadableModuleLogic):
    """Calls into ``medcf`` and ``MedCFLib``; no GUI, no imaging code of its own."""

    def inspectText(self, path):
        """The ``medcf inspect`` report for ``path`` (file, series or study folder)."""
        medcf = _import_medcf()
        return medcf.cli.format_inspection(medcf.io.inspect_study(path))

    def loadRadiograph(self, path, name=None):
        """Load the radiograph MedCF would edit under ``path``; return (volume node, radiograph)."""
        medcf = _import_medcf()
        radiograph = medcf.io.load_radiograph(path)
        if name is None:
            stem = radiograph.path.stem if radiograph.path is not None else os.path.basename(path)
            name = slicer.mrmlScene.GenerateUniqueName(f"MedCF {stem}")
        return load_into_scene(radiograph, name), radiograph

    def startEdit(self, path, options, out_dir, interpreter=None):
        """Start ``medcf edit`` on ``path`` with ``options`` (finding, action, side, zone, severity,
        method; "-" = not given) writing into ``out_dir``, in a background process; return the
        running ``MedCFLib.BackgroundEdit``. The interpreter is Slicer's PythonSlicer by default."""
        _import_medcf()  # say what to install now, not after the process fails
        run = BackgroundEdit(edit_arguments(path, options), out_dir, interpreter or default_interpreter())
        return run.start()

    def loadEditResult(self, run):
        """Load the counterfactual of a finished ``run``; return (volume node, files)."""
        medcf = _import_medcf()
        files = run.result()
        radiograph = medcf.io.load_radiograph(files.get("dicom") or files["image"])
        stem = os.path.basename(os.path.dirname(os.path.dirname(files["dicom"]))) if "dicom" in files else "image"
        name = slicer.mrmlScene.GenerateUniqueName(f"MedCF counterfactual {stem}")
        return load_into_scene(radiograph, name), files

    @staticmethod
    def describeLoaded(node, radiograph):
        rows, cols = radiograph.shape
        if radiograph.spacing_mm is None:
            spacing = "no pixel spacing in the file; 1.0 mm assumed"
        else:
            spacing = f"{radiograph.spacing_mm[0]:g} x {radiograph.spacing_mm[1]:g} mm (row x col) " \
                      f"from {radiograph.spacing_source.value}"
        return (
            f"Loaded {radiograph.path} as volume '{node.GetName()}': {rows} x {cols} pixels, {spacing}; "
            f"view {radiograph.view.value}; display space [0, 1], window 1 / level 0.5."
        )


#
# MedCFTest
#


class MedCFTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Reload and Test, or ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_load_into_scene()
        self.setUp()
        self.test_load_sample_study()

    def test_load_into_scene(self):
        """A stand-in radiograph becomes a (1, rows, cols) float volume with (col, row, 1) spacing."""
        import types

        import numpy as np

        display = np.linspace(0.0, 1.0, 30 * 20, dtype=np.float32).reshape(30, 20)
        radiograph = types.SimpleNamespace(display=display, spacing_mm=(0.2, 0.3))
        node = load_into_scene(radiograph, "MedCFTest")
        array = slicer.util.arrayFromVolume(node)
        self.assertEqual(array.shape, (1, 30, 20))
        np.testing.assert_allclose(array[0], display)
        np.testing.assert_allclose(node.GetSpacing(), (0.3, 0.2, 1.0))
        displayNode = node.GetDisplayNode()
        self.assertAlmostEqual(displayNode.GetWindow(), 1.0)
        self.assertAlmostEqual(displayNode.GetLevel(), 0.5)
        self.delayDisplay("load_into_scene passed")

    def test_load_sample_study(self):
        """End to end through medcf, when the library is installed in Slicer's Python."""
        try:
            _import_medcf()
            from medcf.io.samples import SampleSpec, make_sample, save_sample
        except (MedCFLibraryMissing, ImportError):
            self.delayDisplay("medcf is not installed in Slicer's Python; end-to-end test skipped")
            return
        import pathlib
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ds, _expected = make_sample(SampleSpec(rows=64, columns=48))
            save_sample(ds, pathlib.Path(tmp) / "sample.dcm")
            logic = MedCFLogic()
            self.assertIn("Would edit:", logic.inspectText(tmp))
            node, radiograph = logic.loadRadiograph(tmp)
        self.assertEqual(slicer.util.arrayFromVolume(node).shape, (1, 64, 48))
        self.assertEqual(radiograph.path.name, "sample.dcm")
        self.delayDisplay("end-to-end sample load passed")
