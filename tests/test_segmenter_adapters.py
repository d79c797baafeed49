"""Segmenters sites already have (``medcf.anatomy.adapters``): TorchXRayVision's ChestX-Det
PSPNet on a random-weight instance of its architecture built here, through ``medcf segment
--segmenter torchxrayvision --weights FILE``; its sides and preprocessing on a stand-in
network; and the one-line refusals. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medcf.anatomy import adapters
from medcf.anatomy.masks import LABEL_LEGEND
from medcf.anatomy.network import Letterbox
from medcf.cli import main
from medcf.vocab import Organ

HAVE_XRV = importlib.util.find_spec("torchxrayvision") is not None
needs_xrv = pytest.mark.skipif(not HAVE_XRV, reason="torchxrayvision is not installed")
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def film(tmp_path_factory) -> Path:
    from medcf.training.anatomy_data import AnatomySet
    from medcf.io.images import write_png16

    image = AnatomySet.load(DATA / "anatomy_heldout.npz").images[0]
    return write_png16(tmp_path_factory.mktemp("film") / "film.png", image)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory, film) -> Path:
    """A random-weight PSPNet, saved as the published file is (DataParallel ``module.`` keys).
    Only the biases of the three classes MedCF reads are set, so that each is drawn on about a
    third of the film: random weights otherwise leave an organ empty, which MedCF refuses."""
    from medcf.io.inputs import read_input

    torch.manual_seed(0)
    network = adapters.build_xrv_pspnet().eval()
    image = read_input(film).display
    segmenter = adapters.XRVPSPNetSegmenter(network)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ptsemseg's F.upsample
        logits = network(segmenter.prepare(Letterbox(image.shape, adapters.XRV_INPUT_SIZE), image))[0]
        for organ, target in adapters.XRV_ORGANS.items():
            channel = adapters.XRV_TARGETS.index(target)
            network.classification.bias[channel] -= torch.quantile(logits[channel].flatten()[::16], 0.67)
    path = tmp_path_factory.mktemp("weights") / "pspnet_random.pth"
    torch.save({f"module.{k}": v for k, v in network.state_dict().items()}, path)
    return path


@needs_xrv
@pytest.mark.integration  # TorchXRayVision's network, through medcf segment
def test_segment_with_torchxrayvision_weights_file(tmp_path, film, random_weights, capsys):
    out = tmp_path / "seg"
    assert main(["segment", str(film), "--out", str(out), "--segmenter", "torchxrayvision",
                 "--weights", str(random_weights), "--min-confidence", "0", "--accept-anatomy"]) == 0
    record = json.loads((out / "anatomy.json").read_text())
    assert record["segmenter"] == "torchxrayvision-pspnet"
    assert record["weights"] == {"path": str(random_weights),
                                 "sha256": hashlib.sha256(random_weights.read_bytes()).hexdigest()}
    labels = np.asarray(nib.load(out / "anatomy.nii.gz").dataobj)[:, :, 0].T
    assert labels.shape == tuple(record["shape"]) == (256, 256)
    assert set(np.unique(labels)) <= set(LABEL_LEGEND.values())
    assert all(record["areas_px"][organ.value] > 0 for organ in Organ)
    assert 0.0 <= record["confidence"] <= 1.0
    assert "torchxrayvision-pspnet" in capsys.readouterr().out


class _StandIn(torch.nn.Module):
    """14 logit maps: 'Right Lung' on the image's left third, 'Left Lung' on its right third,
    'Heart' in the middle, everything else off; it records what it was given."""

    def forward(self, x):
        self.seen = x
        size = x.shape[-1]
        logits = torch.full((1, len(adapters.XRV_TARGETS), size, size), -10.0)
        third = size // 3
        logits[0, adapters.XRV_TARGETS.index("Right Lung"), size // 8:-size // 8, :third] = 10
        logits[0, adapters.XRV_TARGETS.index("Left Lung"), size // 8:-size // 8, -third:] = 10
        logits[0, adapters.XRV_TARGETS.index("Heart"), size // 2:-size // 8, third:-third] = 10
        return logits


def test_patient_sides_and_preprocessing():
    network = _StandIn()
    image = np.linspace(0, 1, 300 * 200, dtype=np.float32).reshape(300, 200)
    masks = adapters.XRVPSPNetSegmenter(network).segment_image(image)
    assert masks.shape == (300, 200) and masks.segmenter == "torchxrayvision-pspnet"
    right, left = (np.nonzero(masks.organs[o])[1].mean() for o in (Organ.LUNG_RIGHT, Organ.LUNG_LEFT))
    assert right < 100 < left  # PA: the patient's right lung on the image's left
    assert masks.organs[Organ.HEART].any() and masks.confidence() > 0.99
    seen = network.seen
    assert seen.shape == (1, 3, 512, 512)
    assert torch.equal(seen[:, 0] * 0.229 + 0.485, seen[:, 1] * 0.224 + 0.456) or \
        torch.allclose(seen[:, 0] * 0.229 + 0.485, seen[:, 1] * 0.224 + 0.456, atol=1e-5)
    unnormalised = seen[0, 0] * 0.229 + 0.485
    assert -1e-5 <= float(unnormalised.min()) and float(unnormalised.max()) <= 1 + 1e-5


@needs_xrv
def test_state_dict_prefixes(tmp_path):
    network = adapters.build_xrv_pspnet()
    for prefix in ("", "model.", "module."):
        path = tmp_path / f"w{prefix}pt"
        torch.save({prefix + k: v for k, v in network.state_dict().items()}, path)
        loaded = adapters.xrv_pspnet_segmenter(path)
        assert loaded.weights_path == path
        key = "classification.weight"
        assert torch.equal(loaded.network.state_dict()[key], network.state_dict()[key])


def test_refusals_are_one_line(tmp_path, film, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    small = tmp_path / "small.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), small)
    base = ["segment", str(film), "--segmenter"]
    cases = [
        (["nope"], "no segmenter named 'nope'"),
        (["torchxrayvision"], "needs --weights FILE"),
        (["torchxrayvision", "--weights", str(tmp_path / "absent.pt")], "weights not found"),
    ]
    if HAVE_XRV:
        cases += [(["torchxrayvision", "--weights", str(text)], "is not a PyTorch state dict"),
                  (["torchxrayvision", "--weights", str(small)], "does not fit TorchXRayVision's ChestX-Det PSPNet")]
    for index, (args, message) in enumerate(cases):
        out = tmp_path / f"out{index}"
        assert main(base + args + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("medcf: error: ") and message in err[0], err
        assert "Traceback" not in err[0] and not out.exists()


def test_edit_refuses_unknown_segmenter_before_the_model_loads(tmp_path, film, capsys):
    assert main(["edit", str(film), "--finding", "pleural_effusion", "--action", "add", "--side", "left", "--out",
                 str(tmp_path / "e"), "--segmenter", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no segmenter named 'nope'" in err[0]


def test_medcf_name_is_the_default_network():
    from medcf.anatomy.outputs import load_segmenter

    assert load_segmenter("medcf").name == "medcf-unet"
