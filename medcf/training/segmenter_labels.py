"""Fine-tune the anatomy network on films people labelled (``medcf train segmenter-labels``).

This is how the real-film gap closes: clinicians correct lung and heart masks on real
radiographs (3D Slicer, OHIF through MONAI Label, or ``medcf segment``'s own label map
edited by hand), and the segmenter learns from those corrections, starting from the
weights it has. The labelled pairs come as a manifest (JSON list of ``{"image": FILE,
"label": FILE}``); images are whatever ``medcf segment`` reads, labels whatever ``medcf
edit --masks`` reads (:func:`medcf.anatomy.given.read_masks`).

Choices, and why:
- a label map stops the lungs at the heart border (one label per pixel), while MedCF's
  lungs are the whole projected lung. Under a labelled heart the lung channels are
  therefore *not* trained (their loss weight is 0 there): the label cannot say whether
  lung lies behind the heart, and teaching "no lung" there would undo what the network
  knows about retrocardiac lung;
- normalisation layers keep their running statistics (the network runs in eval mode while
  its weights learn): a handful of films cannot re-estimate batch statistics learned from
  thousands;
- reproducible: initialisation is the given weights; each step's batch and augmentation
  are drawn from a generator seeded by ``(seed, step)``, with MONAI's determinism set;
- the result goes into a new folder (``anatomy_unet.safetensors`` + ``training.json``),
  never over the weights it started from.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from medcf.anatomy.given import read_masks
from medcf.anatomy.network import Letterbox
from medcf.anatomy.segment import default_segmenter
from medcf.bundle import bundle_config
from medcf.errors import InputError
from medcf.io.atomic import new_output_dir, sha256_of_file, write_new_file, write_new_text
from medcf.io.inputs import read_input
from medcf.training.anatomy_augment import training_transform
from medcf.training.label_limits import MIN_LABELS
from medcf.vocab import Organ

if TYPE_CHECKING:  # torch is imported where it is used: `medcf --help` stays light
    import torch

LUNGS = [list(Organ).index(Organ.LUNG_RIGHT), list(Organ).index(Organ.LUNG_LEFT)]
HEART = list(Organ).index(Organ.HEART)


@dataclass
class FinetuneConfig:
    out_dir: Path
    init_weights: Path | None = None  # default: the weights the bundle config names
    steps: int = 100
    batch: int = 4
    learning_rate: float = 1e-4
    seed: int = 0
    min_labels: int = MIN_LABELS


@dataclass
class LabelledFilm:
    """One labelled film at the network's input size: image (1, s, s), target (3, s, s)
    and the per-channel loss weight (3, s, s)."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor


def read_manifest(path: str | Path) -> list[dict]:
    """The ``[{"image": ..., "label": ...}]`` list of a manifest file, checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pairs {path}: no such file")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"--pairs {path} is not JSON: {error}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"image", "label"} <= set(i) for i in items):
        raise InputError(f"--pairs {path} must be a JSON list of {{\"image\": FILE, \"label\": FILE}}")
    return items


def load_labelled(image_path: str | Path, label_path: str | Path, size: int) -> LabelledFilm:
    """Read one film and its label, letterboxed as inference sees it (:class:`Letterbox`)."""
    import torch

    image = read_input(image_path)
    masks = read_masks(label_path, image).masks
    box = Letterbox(image.shape, size)
    packed = box.pack(image.display)[0]
    organs = np.stack([masks.organs[organ] for organ in Organ]).astype(np.float32)
    target = _pack_like(box, torch.from_numpy(organs)) > 0.5
    weight = torch.ones_like(target, dtype=torch.float32)
    for lung in LUNGS:  # lung unknown under a labelled heart (module docstring)
        weight[lung][target[HEART]] = 0.0
    return LabelledFilm(packed, target.float(), weight)


def _pack_like(box, channels: torch.Tensor) -> torch.Tensor:
    """(c, s, s) maps placed in the letterbox the way :meth:`Letterbox.pack` places the image."""
    import torch
    import torch.nn.functional as F

    small = F.interpolate(channels[None], size=box.inner, mode="area")
    (top, left), (rows, cols) = box.offset, box.inner
    return F.pad(small, (left, box.size - cols - left, top, box.size - rows - top))[0]


def masked_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted binary cross-entropy plus a weighted soft Dice per channel."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / weight.sum().clamp(min=1)
    probability = torch.sigmoid(logits) * weight
    truth = target * weight
    dims = (0, 2, 3)
    dice = (2 * (probability * truth).sum(dims) + 1e-5) / (probability.sum(dims) + truth.sum(dims) + 1e-5)
    return bce + (1 - dice).mean()


def _augmented(films: list[LabelledFilm], indices: np.ndarray, transform) -> tuple[torch.Tensor, ...]:
    """A batch through the training augmentation; the weight map rides along as extra label
    channels so that it moves with the geometry."""
    import torch

    images, targets, weights = [], [], []
    for index in indices:
        film = films[int(index)]
        out = transform({"image": film.image, "label": torch.cat([film.target, film.weight])})
        label = torch.as_tensor(out["label"])
        images.append(torch.as_tensor(out["image"]).float())
        targets.append(label[:len(Organ)])
        weights.append(label[len(Organ):])
    return torch.stack(images), torch.stack(targets), torch.stack(weights)


def labelled_dice(network: torch.nn.Module, films: list[LabelledFilm]) -> dict[str, float]:
    """Mean weighted Dice per organ on the labelled films (letterboxed), for the record."""
    import torch

    scores: dict[str, list[float]] = {organ.value: [] for organ in Organ}
    with torch.no_grad():
        for film in films:
            predicted = (torch.sigmoid(network(film.image[None]))[0] > 0.5).float()
            for channel, organ in enumerate(Organ):
                w = film.weight[channel]
                p, t = predicted[channel] * w, film.target[channel] * w
                total = float(p.sum() + t.sum())
                scores[organ.value].append(1.0 if total == 0 else float(2 * (p * t).sum()) / total)
    return {name: round(float(np.mean(values)), 4) for name, values in scores.items()}


def finetune_segmenter(items: list[dict], config: FinetuneConfig, progress: bool = False) -> Path:
    """Fine-tune on ``items`` (manifest entries); returns the new weights' path."""
    import torch

    from monai.utils import set_determinism
    from safetensors.torch import save_file

    if len(items) < config.min_labels:
        raise InputError(f"{len(items)} labelled film(s); fine-tuning needs at least {config.min_labels} "
                         "(label more films, then train again)")
    if config.steps < 1 or config.batch < 1 or not config.learning_rate > 0:
        raise InputError("--steps and --batch must be at least 1 and --lr above 0")
    anatomy = bundle_config("anatomy")
    init = Path(config.init_weights) if config.init_weights else Path(anatomy.get_parsed_content("weights"))
    size = int(anatomy.get("input_size"))
    out = new_output_dir(config.out_dir)
    set_determinism(seed=config.seed)
    network = default_segmenter(init, network=dict(anatomy.get("network_def")), input_size=size).network
    films = [load_labelled(item["image"], item["label"], size) for item in items]
    before = labelled_dice(network.eval(), films)

    # eval(): normalisation keeps its statistics (module docstring); gradients still flow.
    network.eval()
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    transform = training_transform(size, config.seed)
    history, started = [], time.time()
    for step in range(config.steps):
        rng = np.random.default_rng([config.seed, step])
        transform.set_random_state(seed=int(rng.integers(2**31)))
        images, targets, weights = _augmented(films, rng.integers(len(films), size=config.batch), transform)
        loss = masked_loss(network(images), targets, weights)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(round(float(loss.item()), 5))
        if progress:
            print(f"step {step + 1}/{config.steps}: loss {loss.item():.4f}", flush=True)
    seconds = time.time() - started
    after = labelled_dice(network.eval(), films)

    weights_path = out / "anatomy_unet.safetensors"
    tensors = {name: value.detach().contiguous() for name, value in network.state_dict().items()}
    write_new_file(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    record = {
        "kind": "fine-tune on labelled films", "weights": weights_path.name,
        "weights_sha256": sha256_of_file(weights_path),
        "initialised_from": {"path": str(init), "sha256": sha256_of_file(init)},
        "recipe": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()
                   if k not in ("out_dir", "init_weights")},
        "network": dict(anatomy.get("network_def")), "input_size": size,
        "labelled": [{"image": str(i["image"]), "label": str(i["label"]),
                      "image_sha256": sha256_of_file(Path(i["image"])) if Path(i["image"]).is_file() else None,
                      "label_sha256": sha256_of_file(Path(i["label"]))} for i in items],
        "labelled_dice_before": before, "labelled_dice_after": after,
        "loss": history, "train_seconds": round(seconds, 2),
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "torch": torch.__version__,
        "note": "Dice on the films it learned from, not a held-out figure; lungs are not scored under the heart",
    }
    write_new_text(out / "training.json", json.dumps(record, indent=2) + "\n")
    return weights_path
