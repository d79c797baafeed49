"""Render the Slicer module's panel (MedCFExtension/MedCF/Resources/UI/MedCF.ui) offscreen with plain
Qt and save it as a PNG: docs/images/slicer-panel.png.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/slicer_panel_screenshot.py [OUT.png]

This is *not* a screenshot of 3D Slicer: there is no Slicer here. PySide6's ``QUiLoader`` reads the
same .ui file Slicer loads; the CTK and MRML widgets it names (collapsible sections, path fields,
node selectors) exist only inside Slicer, so they are drawn by plain-Qt stand-ins (a group box, a
line edit, a combo box) registered under their names, and the image says so in a caption. The
combo boxes are filled as ``MedCF.py`` fills them (``EDIT_CHOICES``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QFile, QRect, Qt  # noqa: E402
from PySide6.QtGui import QColor, QFont, QImage, QPainter  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLineEdit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MedCFExtension" / "MedCF"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedCF.ui"
CAPTION = ("MedCF.ui rendered by plain Qt (PySide6 QUiLoader, offscreen), not inside 3D Slicer. "
           "CTK/MRML widgets are plain-Qt stand-ins: sections as group boxes, path fields as line edits, "
           "node selectors as combo boxes.")


class ctkCollapsibleButton(QGroupBox):  # noqa: N801  (named as the .ui names it)
    """Stand-in: a group box, titled with the ``text`` the .ui gives the collapsible button (QUiLoader
    stores it as a dynamic property)."""


class ctkPathLineEdit(QLineEdit):  # noqa: N801
    """Stand-in: a line edit."""


class qMRMLNodeComboBox(QComboBox):  # noqa: N801
    """Stand-in: a combo box showing which node type it would list."""


class _Loader(QUiLoader):
    def createWidget(self, class_name, parent=None, name=""):  # noqa: N802
        stand_ins = {"ctkCollapsibleButton": ctkCollapsibleButton, "ctkPathLineEdit": ctkPathLineEdit,
                     "qMRMLNodeComboBox": qMRMLNodeComboBox}
        if class_name in stand_ins:
            widget = stand_ins[class_name](parent)
            widget.setObjectName(name)
            return widget
        return super().createWidget(class_name, parent, name)


def render(out: Path) -> Path:
    sys.path.insert(0, str(MODULE_DIR))
    from MedCFLib.logic import EDIT_CHOICES

    app = QApplication.instance() or QApplication([])
    app.setFont(QFont("DejaVu Sans", 9))
    handle = QFile(str(UI_FILE))
    if not handle.open(QFile.ReadOnly):
        raise SystemExit(f"cannot open {UI_FILE}")
    panel = _Loader().load(handle)
    if panel is None:
        raise SystemExit(f"QUiLoader could not load {UI_FILE}")
    for section in panel.findChildren(ctkCollapsibleButton):
        section.setTitle(str(section.property("text") or ""))
    for name, values in EDIT_CHOICES.items():  # as MedCF.py fills them
        combo = panel.findChild(QComboBox, f"{name}ComboBox")
        combo.addItems(values)
    panel.findChild(QComboBox, "severityComboBox").setCurrentText("moderate")
    for name, text in (("inputVolumeSelector", "(scalar volume nodes)"),
                       ("segmentationSelector", "(segmentation nodes)")):
        panel.findChild(QComboBox, name).addItem(text)
    panel.findChild(QLineEdit, "pathEdit").setPlaceholderText("(DICOM file or folder)")
    panel.findChild(QLineEdit, "outputEdit").setPlaceholderText("(a folder: each run writes a new subfolder)")
    panel.resize(460, panel.sizeHint().height())
    shot = panel.grab().toImage()

    caption_height = 64
    image = QImage(shot.width(), shot.height() + caption_height, QImage.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    painter.drawImage(0, 0, shot)
    painter.fillRect(QRect(0, shot.height(), shot.width(), caption_height), QColor("#fff3cd"))
    painter.setPen(QColor("#5c4400"))
    painter.setFont(QFont("DejaVu Sans", 8))
    painter.drawText(QRect(8, shot.height() + 4, shot.width() - 16, caption_height - 8),
                     int(Qt.TextWordWrap | Qt.AlignVCenter), CAPTION)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out)):
        raise SystemExit(f"cannot write {out}")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "slicer-panel.png"
    print(render(target))
