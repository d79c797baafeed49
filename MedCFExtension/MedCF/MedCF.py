"""MedCF: counterfactual chest X-rays in 3D Slicer (thin module shell).

This module holds no imaging logic of its own. Inspecting and loading are done
by the Slicer-free ``medcf`` library, which must be installed into Slicer's
Python; ``MedCFLib.logic`` only converts its radiograph into a Slicer volume.
``medcf`` is imported when a button is pressed, not when the module loads, so
the module still appears (and says what to install) when the library is absent.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ctk
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedCFLib import (
    EDIT_CHOICES,
    EDIT_OPTIONS,
    EDIT_START,
    FAILED,
    FINISHED,
    RUNNING,
    WorkFolders,
    default_interpreter,
    load_into_scene,
    mrml,
    run_folder,
    slicer_version_problem,
    with_device,
    with_report,
)
from MedCFLib.domain import ALLOW_OPTION, MODEL_OPTION, WayOn, domain_refusal, retry_options, ways_on_text
from MedCFLib.logic import DOCUMENTATION_URL, SAMPLE_DATA
from MedCFLib.remote import RemoteEdit, RemoteError

RESEARCH_ONLY_LABEL = "Synthetic outputs: research only, never for diagnosis."

INSTALL_HINT = (
    "The medcf Python library is not installed in Slicer's Python. Press Derive anatomy or Edit: MedCF offers to "
    "install it from the wheel this extension carries (never from a package index)."
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
        self.parent.contributors = ["MedCF maintainers (MedCF project)"]
        self.parent.helpText = f"""
<p>MedCF makes counterfactual chest X-rays: it edits one finding of a chest radiograph and
keeps the rest of the patient. <b>Its outputs are synthetic, for research only, never for
diagnosis.</b></p>
<p>This module is a thin Slicer front end. The work is done by the core <code>medcf</code>
Python library, which the extension carries as a wheel: on the first <i>Derive anatomy</i> or
<i>Edit</i>, MedCF asks, then installs it into Slicer's Python (PyTorch through the PyTorch extension;
Slicer's own torch, SimpleITK, numpy and VTK are left alone) and offers a restart when one is needed.</p>
<p>Choose a DICOM file, series folder or study folder; <i>Inspect</i> lists the instances found and
which frontal radiograph MedCF would edit, and why; <i>Load selected radiograph</i> loads it as a
single-slice volume (or load <i>MedCF sample PA chest X-ray</i> from Sample Data). Any scalar volume
can be the <i>Input volume</i>. <i>Derive anatomy</i> runs <code>medcf segment</code> in the background:
lungs and heart (with SNOMED CT terminology) and the lung zones become a segmentation; <i>Correct in
Segment Editor</i> opens it there, and the edit uses it as corrected (<code>--masks</code>). <i>Force
CPU</i> runs both on the CPU. <i>Model folder</i> edits with another model (<code>--model</code>). <i>Edit</i> adds or removes one finding by running <code>medcf edit</code>
in a background process, or on MedCF's MONAI Label server (<i>Remote</i>); each run writes into its own
subfolder of the output folder; Slicer stays responsive, a progress bar follows the sampling,
<i>Cancel</i> stops it and keeps nothing. A film outside the model's training domain is refused in one
line, with three ways on: <i>Edit anyway</i> (<code>--allow-out-of-domain</code>, the result is marked so),
<i>Use insert</i> (<code>--method insert</code>, no diffusion model) or <i>Choose model...</i>. The counterfactual appears beside the input with the
difference; its provenance (<code>edit.json</code>) is in the node's attributes. <i>Save to DICOM
database</i> imports the synthetic series MedCF wrote.</p>
<p>Documentation: <a href="{DOCUMENTATION_URL}">{DOCUMENTATION_URL}</a></p>
"""
        self.parent.acknowledgementText = """
Built on the 3D Slicer scripted module template. MedCF outputs are synthetic and for research only.
"""
        # Sample Data exists once the application has started
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The sample study's PA film (simulated, no patient) in the Sample Data module."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        thumbnailFileName=os.path.join(iconsPath, "MedCF.png"), **SAMPLE_DATA)


#
# MedCFParameterNode
#


@parameterNodeWrapper
class MedCFParameterNode:
    """The module's state in the scene (saved with it, restored when the module is entered again):
    the input volume, its segmentation, whether the edit uses it, and the CPU choice. Bound to the
    widgets named in the .ui by their ``SlicerParameterName``."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    useSegmentation: bool = True
    forceCPU: bool = False


@dataclass
class _Job:
    """A running segment or edit: what runs it, the nodes it was started on, its work folder."""

    kind: str  # "segment" or "edit"
    run: Any  # BackgroundEdit or RemoteEdit
    node: Any  # the input volume node
    work: Optional[Path]  # removed when the job is over
    options: Optional[dict] = None  # an edit's options, kept to re-run it another way after a refusal


#
# MedCFWidget
#


class MedCFWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: input (a study path or a loaded volume), anatomy, edit settings, run mode, result.

    The widgets come from Resources/UI/MedCF.ui; the volume, segmentation and CPU choice live in the
    scene's parameter node (:class:`MedCFParameterNode`). Segmenting and editing run outside Slicer's
    main thread: a local ``python -m medcf`` process (``MedCFLib.BackgroundEdit``) or the MONAI Label
    server (``MedCFLib.remote.RemoteEdit``, same interface); one timer polls whichever runs, so Slicer
    stays responsive and the progress bar and Cancel button work the same way for both. Closing the
    scene cancels a running job, so nothing is ever written into a node the close deleted. The scene
    work is ``MedCFLib.mrml`` (tested headless against slicer-core); this class only wires widgets to it."""

    POLL_INTERVAL_MS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self.job = None  # a _Job while a segment or edit runs
        self.editTimer = None
        self.resultNode = None
        self.refusedOptions = None  # the options of an edit refused outside the model's domain
        self._jobOptions = None  # the options the edit being started runs with
        self.versionProblem = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MedCFLogic()

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedCF.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)

        self.ui.researchOnlyLabel.text = RESEARCH_ONLY_LABEL
        self.versionProblem = slicer_version_problem(slicer.app.applicationVersion)
        if self.versionProblem:  # refuse politely, once, and say why; every button stays off
            self.ui.researchOnlyLabel.text = self.versionProblem
        # folders are browsed; a single DICOM file's path can be typed or pasted (an enum-set
        # property, set here rather than in the .ui so the .ui also loads without CTK's plugins)
        self.ui.pathEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.outputEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.modelEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.waysOnWidget.visible = False
        self.ui.reportBox.setFont(qt.QFontDatabase.systemFont(qt.QFontDatabase.FixedFont))
        self.ui.inputVolumeSelector.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentationSelector.setMRMLScene(slicer.mrmlScene)
        self.editCombos = {}
        for name, values in EDIT_CHOICES.items():
            combo = getattr(self.ui, f"{name}ComboBox")
            combo.addItems(values)
            combo.setCurrentText(EDIT_START[name])
            self.editCombos[name] = combo
        # the spin boxes start at MedCF's defaults (medcf options --json), within their ranges
        self.ui.strengthSpinBox.value = EDIT_OPTIONS["strength"]["default"]
        self.ui.seedSpinBox.value = EDIT_OPTIONS["seed"]["default"]
        self.ui.serverUrlEdit.text = qt.QSettings().value("MedCF/ServerURL", "")

        self.editTimer = qt.QTimer()
        self.editTimer.setInterval(self.POLL_INTERVAL_MS)
        self.editTimer.connect("timeout()", self.onEditPoll)

        # a job's nodes go away with the scene: cancel it first, then forget the parameter node
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.pathEdit.connect("currentPathChanged(QString)", self.updateButtons)
        self.ui.outputEdit.connect("currentPathChanged(QString)", self.updateButtons)
        self.ui.remoteRadioButton.connect("toggled(bool)", self.updateButtons)
        self.ui.serverUrlEdit.connect("textChanged(QString)", self.updateButtons)
        self.ui.inspectButton.connect("clicked(bool)", self.onInspect)
        self.ui.loadButton.connect("clicked(bool)", self.onLoad)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.openSegmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)
        self.ui.editButton.connect("clicked(bool)", self.onEdit)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelEdit)
        self.ui.saveToDicomButton.connect("clicked(bool)", self.onSaveToDicom)
        # the three ways on from a refusal outside the model's domain (MedCFLib.domain)
        self.ui.allowAnywayButton.connect("clicked(bool)", lambda: self.onWayOn(WayOn.ALLOW))
        self.ui.useInsertButton.connect("clicked(bool)", lambda: self.onWayOn(WayOn.INSERT))
        self.ui.chooseModelButton.connect("clicked(bool)", lambda: self.onWayOn(WayOn.MODEL))

        # leftovers of a session that crashed mid-run
        self.logic.workFolders.sweep()
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self):
        """Module closed or reloaded: a running job is cancelled, not orphaned."""
        self.cancelJob()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        """File > Close Scene: the job's input (and segmentation) are about to be deleted. Cancel it
        now, so that it can never write its result into, or beside, a node that is gone."""
        if self.job is not None:
            self.cancelJob()
            self.ui.editStatusLabel.text = "The scene was closed: the running job was cancelled; nothing was kept."
        self.resultNode = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        """Bind the widgets to ``inputParameterNode`` (None: unbind)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def currentPath(self):
        return self.ui.pathEdit.currentPath.strip()

    def outputPath(self):
        return self.ui.outputEdit.currentPath.strip()

    def remote(self):
        return bool(self.ui.remoteRadioButton.checked)

    def inputVolume(self):
        return self._parameterNode.inputVolume if self._parameterNode else None

    def segmentation(self):
        return self._parameterNode.segmentation if self._parameterNode else None

    def updateButtons(self, *_):
        if self.ui is None:
            return
        if self.versionProblem:
            for button in (self.ui.inspectButton, self.ui.loadButton, self.ui.segmentButton, self.ui.editButton,
                           self.ui.cancelButton, self.ui.saveToDicomButton, self.ui.openSegmentEditorButton):
                button.enabled = False
            return
        hasPath = bool(self.currentPath())
        hasVolume = self.inputVolume() is not None
        running = self.job is not None
        remoteReady = not self.remote() or bool(self.ui.serverUrlEdit.text.strip())
        self.ui.inspectButton.enabled = hasPath
        self.ui.loadButton.enabled = hasPath
        self.ui.segmentButton.enabled = hasVolume and not running
        self.ui.openSegmentEditorButton.enabled = self.segmentation() is not None
        self.ui.useSegmentationCheckBox.enabled = not self.remote()  # the server segments with its own weights
        self.ui.forceCpuCheckBox.enabled = not self.remote()  # the server picks its own device
        self.ui.serverUrlEdit.enabled = self.remote()
        self.ui.modelEdit.enabled = not self.remote()  # the server's model is set when it starts
        for button in (self.ui.allowAnywayButton, self.ui.useInsertButton):
            button.enabled = self.refusedOptions is not None and not running
        self.ui.chooseModelButton.enabled = self.refusedOptions is not None and not running and not self.remote()
        self.ui.editButton.enabled = hasVolume and bool(self.outputPath()) and remoteReady and not running
        self.ui.cancelButton.enabled = running
        self.ui.saveToDicomButton.enabled = self.resultNode is not None and bool(
            self.resultNode.GetAttribute(mrml.SOURCE_ATTRIBUTE))

    def _run(self, action):
        """Run ``action``; show MedCF errors as one line, unexpected ones with a console pointer."""
        try:
            return action()
        except MedCFLibraryMissing as exc:
            slicer.util.errorDisplay(str(exc))
        except (mrml.MRMLError, RemoteError) as exc:
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
        self._parameterNode.inputVolume = node
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpGreenSliceView)
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        self.ui.reportBox.appendPlainText("\n" + MedCFLogic.describeLoaded(node, radiograph))

    def _startJob(self, kind, start):
        """``start(node, work)`` begins the job; the work folder is removed when the job is over."""
        node = self.inputVolume()
        work = self.logic.workFolders.new()
        run = self._run(lambda: start(node, work))
        if run is None:
            self.logic.workFolders.remove(work)
            return
        self.job = _Job(kind, run, node, work)
        self.ui.editProgressBar.value = 0
        self.ui.editStatusLabel.text = f"Starting medcf {kind} in the background..."
        self.updateButtons()
        self.editTimer.start()

    def _endJob(self):
        job, self.job = self.job, None
        self.editTimer.stop()
        if job is not None:
            self.logic.workFolders.remove(job.work)
        self.updateButtons()
        return job

    def cancelJob(self):
        if self.editTimer is not None:
            self.editTimer.stop()
        if self.job is not None:
            with _WaitCursor():
                self.job.run.cancel()
            self._endJob()

    def forceCPU(self):
        return bool(self._parameterNode and self._parameterNode.forceCPU)

    def onSegment(self):
        """``medcf segment`` on the input volume in the background; onEditPoll adds the segmentation."""
        if self.job is None:
            self._startJob("segment", lambda node, work: self.logic.startSegment(node, work, self.forceCPU()))

    def onOpenSegmentEditor(self):
        """The segmentation in Segment Editor, on the input volume: where the user corrects it."""
        segmentation, volume = self.segmentation(), self.inputVolume()
        if segmentation is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.SegmentEditorWidget.editor
        editor.setSegmentationNode(segmentation)
        if volume is not None:
            # Slicer 5.2 renamed the master volume the source volume
            setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode
            setSource(volume)

    def editOptions(self, work):
        options = {name: combo.currentText for name, combo in self.editCombos.items()}
        options["strength"] = f"{self.ui.strengthSpinBox.value:g}"
        options["seed"] = str(int(self.ui.seedSpinBox.value))
        options[ALLOW_OPTION] = bool(self.ui.allowOutOfDomainCheckBox.checked)
        if not self.remote():
            options[MODEL_OPTION] = self.ui.modelEdit.currentPath.strip() or None
        # a pasted report names the findings (medcf edit --from-report); the first result is shown
        return with_report(options, self.ui.reportEdit.plainText, work)

    def onEdit(self, retry=None):
        """Start the edit (local process or MONAI Label server) into a new subfolder of the output
        folder; onEditPoll follows it. ``retry``: options that replace the panel's (a way on from a
        refusal, already shown in the panel's controls)."""
        if self.job is not None:
            return
        retry = retry if isinstance(retry, dict) else None  # Qt's clicked(bool) may hand over its bool
        self.refusedOptions = None
        self.ui.waysOnWidget.visible = False
        if self.remote() and self.ui.reportEdit.plainText.strip():  # the server's model takes a finding
            self.ui.editStatusLabel.text = "A pasted report runs locally only: choose Local, or clear the report."
            return
        if self.remote():
            url = self.ui.serverUrlEdit.text.strip()
            qt.QSettings().setValue("MedCF/ServerURL", url)

            def start(node, work):
                options = retry or self.editOptions(work)
                self._jobOptions = options
                return self.logic.startRemoteEdit(url, node, options, run_folder(self.outputPath(), options), work)
        else:
            segmentation = self.segmentation() if self._parameterNode.useSegmentation else None

            def start(node, work):
                options = retry or with_device(self.editOptions(work), self.forceCPU())
                self._jobOptions = options
                return self.logic.startEdit(node, options, run_folder(self.outputPath(), options), work,
                                            segmentation)
        self._jobOptions = None
        self._startJob("edit", start)
        if self.job is not None:
            self.job.options = self._jobOptions

    def onWayOn(self, way):
        """Re-run the refused edit the chosen way (MedCFLib.domain.retry_options), and show it in the
        controls: the checkbox ticked, the method insert, or the model folder chosen here."""
        if self.refusedOptions is None or self.job is not None:
            return
        model = self.ui.modelEdit.currentPath.strip()
        if way is WayOn.MODEL:
            model = qt.QFileDialog.getExistingDirectory(
                slicer.util.mainWindow(), "A model trained on real radiographs (medcf edit --model)", model) or ""
            if not model:
                return
        try:
            retry = retry_options(self.refusedOptions, way, model)
        except ValueError as exc:
            self.ui.editStatusLabel.text = str(exc)
            return
        if way is WayOn.ALLOW:
            self.ui.allowOutOfDomainCheckBox.checked = True
        elif way is WayOn.INSERT:
            self.editCombos["method"].setCurrentText(retry["method"])
        else:
            self.ui.modelEdit.currentPath = model
        self.onEdit(retry)

    def onEditPoll(self):
        if self.job is None:
            self.editTimer.stop()
            return
        state, percent, message = self.job.run.poll()
        self.ui.editProgressBar.value = int(percent)
        if state == RUNNING:
            self.ui.editStatusLabel.text = message
            return
        job = self.job
        self.editTimer.stop()
        if state == FINISHED:
            self.ui.editStatusLabel.text = "Finished."
            if job.kind == "segment":  # read before _endJob removes the work folder it wrote into
                segmentation = self._run(lambda: mrml.segmentation_from_anatomy(job.run.out_dir, job.node))
                if segmentation is not None:
                    self._parameterNode.segmentation = segmentation
                    self.ui.reportBox.appendPlainText(
                        f"\nAnatomy of '{job.node.GetName()}': segmentation '{segmentation.GetName()}' (lungs, heart, "
                        "zones). Correct it in Segment Editor; the edit uses it as corrected.")
            else:
                self.showResult(job.node, job.run)
        elif state == FAILED:
            refusal = domain_refusal(getattr(job.run, "returncode", None), message) if job.kind == "edit" else None
            if refusal is not None and job.options is not None:  # one line, and its three ways on as buttons
                self.refusedOptions = job.options
                self.ui.editStatusLabel.text = ways_on_text(refusal, model_choice=not self.remote())
                self.ui.waysOnWidget.visible = True
                self.ui.reportBox.appendPlainText(f"\nEdit refused: {refusal}")
            else:
                self.ui.editStatusLabel.text = f"Failed: {message}"
                slicer.util.errorDisplay(message)
        else:
            self.ui.editStatusLabel.text = "Cancelled; nothing was kept."
        self._endJob()

    def showResult(self, node, run):
        """The counterfactual beside the input, with the difference, in three coronal views."""
        nodes = self._run(lambda: self.logic.loadEditResult(node, run))
        if nodes is None:
            return
        result, difference = nodes
        self.resultNode = result
        self.updateButtons()
        self.logic.showSideBySide(node, result, difference)
        facts = ", ".join(f"{k[len(mrml.EDIT_ATTRIBUTE_PREFIX):]}: {result.GetAttribute(k)}"
                          for k in ("MedCF.Finding", "MedCF.Action", "MedCF.Side", "MedCF.TargetReached",
                                    "MedCF.AnatomySource", "MedCF.ModelCheck", "MedCF.Domain")
                          if result.GetAttribute(k))
        self.ui.reportBox.appendPlainText(f"\nCounterfactual (synthetic, research only) '{result.GetName()}': {facts}; "
                                          f"files in {run.out_dir}")

    def onCancelEdit(self):
        if self.job is None:
            return
        self.cancelJob()
        self.ui.editStatusLabel.text = "Cancelled; nothing was kept."

    def onSaveToDicom(self):
        """Import the synthetic series MedCF's writer wrote (not Slicer's exporter, which cannot tag
        synthetic images) into Slicer's DICOM database."""
        if self.resultNode is None:
            return
        with _WaitCursor():
            said = self._run(lambda: self.logic.importSeries(self.resultNode))
        if said:
            self.ui.reportBox.appendPlainText("\n" + said)


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

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        # the files handed to medcf (input as NIfTI, masks, report, a segment run's anatomy), one
        # folder per run in Slicer's temporary folder, removed when the run is over
        self.workFolders = WorkFolders(os.path.join(slicer.app.temporaryPath, "MedCF"))

    def getParameterNode(self):
        return MedCFParameterNode(super().getParameterNode())

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
        node = load_into_scene(radiograph, name)
        if radiograph.path is not None:
            node.SetAttribute(mrml.SOURCE_ATTRIBUTE, str(radiograph.path))  # medcf edits this very file
        return node, radiograph

    def sourceFor(self, node):
        """Tell ``medcf`` which file a volume came from: MedCF's own load sets it; a volume loaded from
        Slicer's DICOM database names its instances, whose file the database knows."""
        if not node.GetAttribute(mrml.SOURCE_ATTRIBUTE):
            uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
            if uids and getattr(slicer, "dicomDatabase", None) is not None:
                path = slicer.dicomDatabase.fileForInstance(uids[0])
                if path:
                    node.SetAttribute(mrml.SOURCE_ATTRIBUTE, path)
        return node

    def _needsLocalMedCF(self):
        """medcf runs in Slicer's Python (no $MEDCF_PYTHON): on first use, install it from the wheel the
        extension carries, after a confirmation (``MedCFLib.install``: selective, torch through the
        PyTorch extension, Slicer's own packages left alone, a restart offered when needed)."""
        if os.environ.get("MEDCF_PYTHON"):
            return
        from MedCFLib.install import first_use_install

        problem = first_use_install(slicer)
        if problem:
            raise MedCFLibraryMissing(problem)
        _import_medcf()

    def startSegment(self, node, work, forceCPU=False):
        """``medcf segment`` on ``node`` in a background process, writing into ``work``; returns the job."""
        self._needsLocalMedCF()
        return mrml.start_segment(self.sourceFor(node), os.path.join(work, "anatomy"), work, default_interpreter(),
                                  device="cpu" if forceCPU else None)

    def startEdit(self, node, options, out_dir, work, segmentation=None):
        """``medcf edit`` on ``node`` (with ``segmentation`` as its anatomy when given) writing into
        ``out_dir``, in a background process; returns the running ``BackgroundEdit``."""
        self._needsLocalMedCF()
        return mrml.start_edit(self.sourceFor(node), options, out_dir, work, segmentation, default_interpreter())

    def startRemoteEdit(self, url, node, options, out_dir, work):
        """The same edit on MedCF's MONAI Label server; returns the running ``RemoteEdit``."""
        source = mrml.medcf_input(self.sourceFor(node), work)
        return RemoteEdit(url, source, options, out_dir).start()

    def loadEditResult(self, node, run):
        """The counterfactual of a finished run beside ``node`` (in ``node``'s units), and the
        difference; (result, difference)."""
        result = mrml.result_volume(run.out_dir, node)
        return result, mrml.difference_volume(result, node)

    def showSideBySide(self, node, result, difference):
        """Input | counterfactual | difference in three coronal slice views."""
        layoutId = 40501
        layout = """<layout type="horizontal">""" + "".join(
            f"""<item><view class="vtkMRMLSliceNode" singletontag="{tag}">
            <property name="orientation" action="default">Coronal</property>
            <property name="viewlabel" action="default">{label}</property>
            <property name="viewcolor" action="default">{color}</property></view></item>"""
            for tag, label, color in (("Red", "R", "#F34A33"), ("Yellow", "Y", "#EDD54C"),
                                      ("Green", "G", "#6EB04B"))) + "</layout>"
        layoutNode = slicer.app.layoutManager().layoutLogic().GetLayoutNode()
        if not layoutNode.IsLayoutDescription(layoutId):
            layoutNode.AddLayoutDescription(layoutId, layout)
        slicer.app.layoutManager().setLayout(layoutId)
        for tag, volume in (("Red", node), ("Yellow", result), ("Green", difference)):
            composite = slicer.app.layoutManager().sliceWidget(tag).mrmlSliceCompositeNode()
            composite.SetBackgroundVolumeID(volume.GetID())
            composite.SetForegroundVolumeID(None)
            slicer.app.layoutManager().sliceWidget(tag).sliceLogic().FitSliceToAll()

    def importSeries(self, result):
        """Import the folder of the synthetic series behind ``result`` into the DICOM database;
        returns what was done, in one line."""
        from DICOMLib import DICOMUtils

        instance = result.GetAttribute(mrml.SOURCE_ATTRIBUTE)
        if not instance or not os.path.isfile(instance):
            raise mrml.MRMLError(f"'{result.GetName()}' has no synthetic DICOM series on disk (was the input DICOM?)")
        folder = os.path.dirname(instance)
        DICOMUtils.importDicom(folder)
        series = mrml.dicom_tags(instance, ["0020|000e"]).get("0020|000e", "?")
        return f"Imported the synthetic series {series} from {folder} into the DICOM database."

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
        self.test_parameter_node()
        self.setUp()
        self.test_load_into_scene()
        self.setUp()
        self.test_load_sample_study()

    def test_parameter_node(self):
        """The parameter node starts with MedCF's defaults and holds a volume node reference."""
        parameters = MedCFLogic().getParameterNode()
        self.assertFalse(parameters.forceCPU)
        self.assertTrue(parameters.useSegmentation)
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "MedCFTest input")
        parameters.inputVolume = volume
        self.assertIs(MedCFLogic().getParameterNode().inputVolume, volume)
        self.delayDisplay("parameter node passed")

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
