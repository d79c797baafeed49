"""Adapters for segmenters sites already have, loaded from a local weights file only.

``torchxrayvision``: the ChestX-Det PSPNet of TorchXRayVision
(``torchxrayvision.baseline_models.chestx_det.PSPNet``, Lian et al. 2021), 14 anatomical
targets, of which MedCF uses 'Right Lung', 'Left Lung' and 'Heart'. ChestX-Det names
structures by the patient's side, as radiology does: on a PA/AP film shown in the usual
way the patient's right lung lies on the image's left. The sides are mapped one to one
(patient's right -> ``lung_right``); the plausibility check (``lung_sides``) refuses a
film on which they come out the other way round.

TorchXRayVision's ``PSPNet()`` downloads its weights in its constructor, and importing
the package needs torchvision and pandas. The adapter does neither: it builds the same
network (``ptsemseg.pspnet.pspnet(14)``, the module the package itself uses) from the
installed package's source file without importing the package, and loads the weights
with ``torch.load(FILE, map_location="cpu", weights_only=True)``. The file may be the
published ``pspnet_chestxray_best_model_4.pth`` (keys prefixed ``module.``), the
``state_dict()`` of a ``PSPNet`` (prefixed ``model.``), or that of the bare ``pspnet``.

Preprocessing is the package's: a square 512 x 512 input (MedCF letterboxes any film into
it, as for its own network), intensities in [0, 1] (TorchXRayVision's [-1024, 1024] mapped
back by its own ``(x + 1024) / 2048``), repeated to 3 channels and normalised with the
ImageNet mean and standard deviation. Outputs are independent per-target logits
(overlapping structures): a sigmoid gives the probabilities, and MedCF's confidence is
computed from them as for its own network.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from medcf.anatomy.masks import AnatomyMasks, masks_from_probabilities
from medcf.anatomy.network import Letterbox
from medcf.errors import InputError
from medcf.vocab import Organ

XRV_TARGETS = ['Left Clavicle', 'Right Clavicle', 'Left Scapula', 'Right Scapula', 'Left Lung', 'Right Lung',
               'Left Hilus Pulmonis', 'Right Hilus Pulmonis', 'Heart', 'Aorta', 'Facies Diaphragmatica',
               'Mediastinum', 'Weasand', 'Spine']
XRV_ORGANS = {Organ.LUNG_RIGHT: "Right Lung", Organ.LUNG_LEFT: "Left Lung", Organ.HEART: "Heart"}
XRV_INPUT_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PTSEMSEG = "_medcf_xrv_ptsemseg"
_STATE_PREFIXES = ("module.", "model.")


def xrv_pspnet_class():
    """TorchXRayVision's ``ptsemseg.pspnet.pspnet`` class, loaded from the installed package's
    source without importing ``torchxrayvision`` itself (which needs torchvision)."""
    if _PTSEMSEG + ".pspnet" in sys.modules:
        return sys.modules[_PTSEMSEG + ".pspnet"].pspnet
    spec = importlib.util.find_spec("torchxrayvision")  # finds the package, runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise InputError("segmenter 'torchxrayvision' needs the torchxrayvision package "
                         "(pip install --no-deps torchxrayvision==1.5.7: the adapter needs only its source, not torchvision)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "baseline_models" / "chestx_det" / "ptsemseg"
    if not (folder / "pspnet.py").is_file():
        raise InputError(f"torchxrayvision at {folder.parents[2]} has no ChestX-Det PSPNet (ptsemseg/pspnet.py)")
    package_spec = importlib.util.spec_from_file_location(_PTSEMSEG, folder / "__init__.py",
                                                          submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(package_spec)
    sys.modules[_PTSEMSEG] = package
    package_spec.loader.exec_module(package)
    return importlib.import_module(_PTSEMSEG + ".pspnet").pspnet


def build_xrv_pspnet() -> torch.nn.Module:
    """The ChestX-Det PSPNet architecture with random weights (what ``PSPNet().model`` is)."""
    return xrv_pspnet_class()(n_classes=len(XRV_TARGETS))


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, a pickle with code in it, a truncated file
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"{path} is not a PyTorch state dict for 'torchxrayvision': {first}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a PyTorch state dict for 'torchxrayvision'")
    for prefix in _STATE_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


class XRVPSPNetSegmenter:
    """TorchXRayVision's ChestX-Det PSPNet as a MedCF segmenter (see module docstring)."""

    name = "torchxrayvision-pspnet"

    def __init__(self, network: torch.nn.Module, weights_path: Path | None = None,
                 input_size: int = XRV_INPUT_SIZE):
        self.network = network.eval()
        self.weights_path = weights_path
        self.input_size = input_size
        self._channels = [XRV_TARGETS.index(XRV_ORGANS[organ]) for organ in Organ]

    def prepare(self, box: Letterbox, image: np.ndarray) -> torch.Tensor:
        x = box.pack(image).repeat(1, 3, 1, 1)  # [0, 1]: xrv's (x + 1024) / 2048 of its [-1024, 1024] input
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def segment_image(self, image: np.ndarray) -> AnatomyMasks:
        import warnings

        box = Letterbox(image.shape, self.input_size)
        with warnings.catch_warnings():  # ptsemseg still calls the deprecated F.upsample
            warnings.simplefilter("ignore", UserWarning)
            logits = self.network(self.prepare(box, image))[:, self._channels]
        probabilities = torch.sigmoid(box.unpack(logits)).numpy().astype(np.float32)
        return masks_from_probabilities(probabilities, self.name)


def xrv_pspnet_segmenter(weights: str | Path | None = None, input_size: int = XRV_INPUT_SIZE,
                         **_ignored) -> XRVPSPNetSegmenter:
    """Factory for ``--segmenter torchxrayvision --weights FILE``; nothing is downloaded."""
    if not weights:
        raise InputError("segmenter 'torchxrayvision' needs --weights FILE (a local copy of TorchXRayVision's "
                         "pspnet_chestxray_best_model_4.pth; MedCF never downloads it)")
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"torchxrayvision weights not found: {path}")
    state = _state_dict(path)
    network = build_xrv_pspnet()
    expected = network.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("wrongly shaped", reshaped)) if keys]
        raise InputError(f"{path} does not fit TorchXRayVision's ChestX-Det PSPNet: {'; '.join(problems)}")
    network.load_state_dict({k: v.float() for k, v in state.items()})
    return XRVPSPNetSegmenter(network, weights_path=path, input_size=int(input_size))
