"""The anatomy label map's legend and the app's own constants, in plain Python.

Why a module of its own: the server cannot import MedCF (its environment holds pydicom 2
and numpy 1), so the legend that ``medcf segment`` writes is repeated here; a test in
MedCF's environment imports this file and checks it against
``medcf.anatomy.masks.LABEL_LEGEND``, and every anatomy result is checked against it at
run time too (:mod:`lib.infers.anatomy`).
"""

from __future__ import annotations

#: label value of each organ in ``anatomy.nii.gz``, as ``medcf segment`` names them
LABELS: dict[str, int] = {"lung_right": 1, "lung_left": 2, "heart": 3}

ANATOMY_MODEL = "medcf_anatomy"
COUNTERFACTUAL_MODEL = "medcf_counterfactual"
STRATEGY = "medcf_least_sure"
APP_VERSION = "1.0"
COUNTERFACTUAL_REGION_MODEL = "medcf_counterfactual_region"
#: the one segment ``medcf_counterfactual_region`` returns: where the edit changed the film
REGION_LABELS: dict[str, int] = {"edited_region": 1}
