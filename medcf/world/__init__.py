"""The simulated chest radiograph world: radiographs rendered from a real chest
CT, with findings built in 3D, so that every factual image has its exact
counterfactual. Training data, test data and ground truth for MedCF.

Pipeline: :mod:`~medcf.world.ct` (CT + labels) -> :mod:`~medcf.world.pathology`
(3D findings), :mod:`~medcf.world.habitus` (breasts, body fat) -> :mod:`~medcf.world.projector` (cone-beam slabs) ->
:mod:`~medcf.world.physics` (detection, display) -> :mod:`~medcf.world.render`
(one sample) -> :mod:`~medcf.world.pairs` (datasets) / :mod:`~medcf.world.dicom`.
"""

from importlib import import_module

# Names resolve on first use, so that `medcf --help` (which registers the world's
# sub-commands) does not import torch and scipy.
_EXPORTS = {
    "ChestCT": "ct", "fetch_ct": "ct", "load_chest_ct": "ct",
    "LesionSpec": "pathology", "build_lesion": "pathology",
    "Acquisition": "render", "Rendering": "render", "World": "render", "draw_acquisition": "render",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medcf.world' has no attribute {name!r}")
    return getattr(import_module(f"medcf.world.{_EXPORTS[name]}"), name)
