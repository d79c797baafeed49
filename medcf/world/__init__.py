"""The simulated chest radiograph world: radiographs rendered from a real chest
CT, with findings built in 3D, so that every factual image has its exact
counterfactual. Training data, test data and ground truth for MedCF.

Pipeline: :mod:`~medcf.world.ct` (CT + labels) -> :mod:`~medcf.world.pathology`
(3D findings), :mod:`~medcf.world.habitus` (breasts, body fat) -> :mod:`~medcf.world.projector` (cone-beam slabs) ->
:mod:`~medcf.world.physics` (detection, display) -> :mod:`~medcf.world.render`
(one sample) -> :mod:`~medcf.world.pairs` (datasets) / :mod:`~medcf.world.dicom`.
"""

from medcf.world.ct import ChestCT, fetch_ct, load_chest_ct
from medcf.world.pathology import LesionSpec, build_lesion
from medcf.world.render import Acquisition, Rendering, World, draw_acquisition

__all__ = ["Acquisition", "ChestCT", "LesionSpec", "Rendering", "World", "build_lesion", "draw_acquisition",
           "fetch_ct", "load_chest_ct"]
