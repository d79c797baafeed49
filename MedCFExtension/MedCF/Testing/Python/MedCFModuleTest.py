"""MedCF module tests that need the Slicer application (run by ctest, or in Slicer's Python
console: ``import MedCFModuleTest; MedCFModuleTest.MedCFModuleTest().runTest()``)."""

import os
import sys
import tempfile
import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class MedCFModuleTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ui_has_every_widget()
        self.setUp()
        self.test_background_process_is_cancelled()

    def test_ui_has_every_widget(self):
        """The .ui loads with Slicer's widget plugins and holds the widgets MedCF.py uses."""
        slicer.util.selectModule("MedCF")
        widget = slicer.modules.MedCFWidget
        for name in ("pathEdit", "inspectButton", "loadButton", "reportBox", "outputEdit", "editButton",
                     "cancelButton", "editProgressBar", "editStatusLabel", "findingComboBox", "inputVolumeSelector",
                     "segmentButton", "segmentationSelector", "useSegmentationCheckBox", "strengthSpinBox",
                     "seedSpinBox", "localRadioButton", "remoteRadioButton", "serverUrlEdit", "saveToDicomButton",
                     "openSegmentEditorButton", "forceCpuCheckBox"):
            self.assertTrue(hasattr(widget.ui, name), name)
        self.assertEqual(widget.ui.findingComboBox.count, 7)
        self.assertFalse(widget.ui.cancelButton.enabled)
        # the parameter node drives the bound widgets (parameterNodeWrapper's connectGui)
        widget._parameterNode.forceCPU = True
        self.assertTrue(widget.ui.forceCpuCheckBox.checked)
        widget._parameterNode.forceCPU = False
        self.delayDisplay("MedCF.ui loaded")

    def test_background_process_is_cancelled(self):
        """BackgroundEdit starts a child of Slicer's Python and cancels it (a stand-in for medcf
        edit, so that this test needs neither medcf nor its model)."""
        from MedCFLib import CANCELLED, BackgroundEdit, default_interpreter

        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")
            run = BackgroundEdit([], out, default_interpreter())
            run.command = [default_interpreter(), "-c", "import time; time.sleep(60)"]
            run.start()
            time.sleep(0.5)
            run.cancel()
            self.assertEqual(run.poll()[0], CANCELLED)
            self.assertIsNotNone(run.process.returncode)
        self.delayDisplay(f"background process cancelled ({sys.platform})")
