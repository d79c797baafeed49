"""``medcf train segmenter``: train the default anatomy network on the simulated world.

Reproducible: the rendered sets are fixed by their seeds (cached under
``$MEDCF_CACHE/anatomy/``), augmentation and initialisation by ``--seed``. Resumable: the
training engine (:mod:`medcf.training.engine`) writes a checkpoint (network, optimiser,
schedule, step, random state) atomically every ``checkpoint_every`` steps into
``OUT/checkpoints``; ``--resume`` continues from the newest. The result is a safetensors
file of the network weights plus a JSON record of the recipe and the held-out figures.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medcf.anatomy.network import build_network, network_definition
from medcf.anatomy.segment import NetworkSegmenter
from medcf.cache import cache_dir
from medcf.errors import InputError
from medcf.io.atomic import sha256_of_file, write_new_file
from medcf.metrics import dice
from medcf.training.anatomy_augment import LUNG_CHANNELS, training_transform
from medcf.training.anatomy_data import DATASET_VERSION, HELD_OUT_SEED, TRAIN_SEED, AnatomySet, render_set
from medcf.training.engine import RunFolder, progress_bar
from medcf.vocab import Organ
from medcf.world.film import FilmLook, ShapeBank, cached_shape_bank, installed_lung_shapes

CHUNK = 200  # patients per cached rendered chunk


@dataclass
class TrainConfig:
    out_dir: Path
    patients: int = 800
    size: int = 256
    steps: int = 4000
    batch: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    eval_patients: int = 40
    checkpoint_every: int = 250
    init_weights: Path | None = None  # start from these weights (fine-tuning) instead of a random draw
    # The world toward real films (medcf.world.film): None trains on renders as they are.
    film_look: FilmLook | None = field(default_factory=FilmLook)
    lung_shapes: int = 48  # real lung outlines to warp toward (0: none), registered once and cached
    lung_shape_source: Path | None = None  # zip of lung masks; None: the installed torchxrayvision's
    shape_patients: int = 50  # training images whose mean lung outline is registered to the real ones
    network: dict = field(default_factory=network_definition)


def rendered_chunks(first_seed: int, patients: int, size: int) -> AnatomySet:
    """The rendered set of ``patients`` from ``first_seed``, cached in chunks of CHUNK
    patients (so an interrupted rendering resumes and chunks can be made in parallel)."""
    folder = cache_dir("anatomy")
    sets = []
    for start in range(first_seed, first_seed + patients, CHUNK):
        count = min(CHUNK, first_seed + patients - start)
        path = folder / f"anatomy-v{DATASET_VERSION}-s{size}-{start}-{count}.npz"
        if not path.exists():
            render_set(count, start, size).save(path)
        sets.append(AnatomySet.load(path))
    return AnatomySet(np.concatenate([s.images for s in sets]), np.concatenate([s.masks for s in sets]),
                      [v for s in sets for v in s.views], np.concatenate([s.seeds for s in sets]),
                      np.concatenate([s.pixel_mm for s in sets]))


class SampleStream(torch.utils.data.Dataset):
    def __init__(self, data: AnatomySet, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        sample = {"image": self.data.images[index][None], "label": self.data.masks[index].astype(np.float32)}
        return self.transform(sample)


def lung_shape_bank(config: TrainConfig, train: AnatomySet) -> ShapeBank | None:
    """The lung-shape fields the run warps with, or None without film look or lung shapes.

    Real outlines come from ``config.lung_shape_source`` or, by default, the V7 Labs lung
    masks inside an installed torchxrayvision (CC BY 4.0; read at train time, never copied
    into MedCF); the fields are cached in ``$MEDCF_CACHE/anatomy`` under a name fixed by
    their inputs, so a resumed run uses the same ones."""
    if config.film_look is None or config.lung_shapes <= 0:
        return None
    source = config.lung_shape_source or installed_lung_shapes()
    if source is None or not Path(source).is_file():
        raise InputError("real lung shapes not found: pip install --no-deps torchxrayvision==1.5.7, give "
                         "--lung-shape-source ZIP, or --lung-shapes 0 to train without them")
    lungs = [masks[list(LUNG_CHANNELS)].any(axis=0) for masks in train.masks[:config.shape_patients * 2:2]]
    return cached_shape_bank(lungs, Path(source), config.lung_shapes, config.seed, cache_dir("anatomy"))


def evaluate(network: torch.nn.Module, data: AnatomySet, size: int) -> dict[str, float]:
    """Mean Dice per organ of the network on ``data`` at the set's own resolution."""
    segmenter = NetworkSegmenter(network, input_size=size)
    scores: dict[str, list[float]] = {organ.value: [] for organ in Organ}
    for image, truth in zip(data.images, data.masks):
        masks = segmenter.segment_image(image)
        for channel, organ in enumerate(Organ):
            scores[organ.value].append(dice(masks.organs[organ], truth[channel]))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def train_segmenter(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train, checkpointing as it goes; returns the exported weights' path."""
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism
    from safetensors.torch import save_file

    out = Path(config.out_dir)
    run = RunFolder(out, resume)
    set_determinism(seed=config.seed)
    started = time.time()
    train = rendered_chunks(TRAIN_SEED, config.patients, config.size)
    held_out = rendered_chunks(HELD_OUT_SEED, config.eval_patients, config.size)
    render_seconds = time.time() - started

    network = build_network(config.network)
    if config.init_weights is not None:
        from safetensors.torch import load_file

        if not Path(config.init_weights).is_file():
            raise InputError(f"--init weights not found: {config.init_weights}")
        network.load_state_dict(load_file(str(config.init_weights)))
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=config.steps,
                                                   pct_start=0.1)
    loss_function = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    step, history, train_seconds = 0, [], 0.0
    state = run.resume_state(resume)
    if state is not None:
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        step, history, train_seconds = state["step"], state["history"], state["train_seconds"]
        torch.set_rng_state(state["torch_rng"])
    # Each step draws its batch from a generator seeded by (seed, step): a resumed run
    # sees the same batches as an uninterrupted one.
    tick = time.time()
    bank = lung_shape_bank(config, train)
    shape_seconds = time.time() - tick
    stream = SampleStream(train, training_transform(config.size, config.seed, config.film_look, bank))
    network.train()
    threads = torch.get_num_threads()
    bar = progress_bar(config.steps, step, "training anatomy network", progress)
    while step < config.steps:
        tick = time.time()
        rng = np.random.default_rng([config.seed, step])
        stream.transform.set_random_state(seed=int(rng.integers(2**31)))
        # Small per-sample transforms lose more to thread hand-offs than they gain.
        torch.set_num_threads(1)
        batch = [stream[int(i)] for i in rng.integers(len(stream), size=config.batch)]
        torch.set_num_threads(threads)
        images = torch.stack([b["image"] for b in batch]).float()
        labels = torch.stack([b["label"] for b in batch]).float()
        loss = loss_function(network(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        train_seconds += time.time() - tick
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            network.eval()
            with torch.no_grad():
                scores = evaluate(network, held_out, config.size)
            network.train()
            history.append({"step": step, "loss": float(loss.item()), "held_out_dice": scores,
                            "train_seconds": round(train_seconds, 1)})
            bar.write(f"step {step}: loss {loss.item():.4f}, held-out Dice " +
                      ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
            run.save(step, {"kind": "segmenter", "network": network.state_dict(), "optimiser": optimiser.state_dict(),
                            "schedule": schedule.state_dict(), "step": step, "history": history,
                            "train_seconds": train_seconds, "torch_rng": torch.get_rng_state()})
    bar.close()

    weights = out / "anatomy_unet.safetensors"
    tensors = {name: value.detach().contiguous() for name, value in network.state_dict().items()}
    write_new_file(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    record = {
        "network": config.network, "weights": weights.name, "recipe": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "network"},
        "data": {"train_seeds": [TRAIN_SEED, TRAIN_SEED + config.patients - 1],
                 "held_out_seeds": [HELD_OUT_SEED, HELD_OUT_SEED + config.eval_patients - 1],
                 "images_per_patient": 2, "size": config.size},
        "init_sha256": sha256_of_file(config.init_weights) if config.init_weights else None,
        "lung_shapes": None if bank is None else {
            "fields": len(bank), "source_sha256": sha256_of_file(config.lung_shape_source or installed_lung_shapes()),
            "dice_to_real_before": round(float(bank.dice_before.mean()), 4),
            "dice_to_real_after": round(float(bank.dice_after.mean()), 4), "seconds": round(shape_seconds, 1)},
        "history": history, "train_seconds": round(train_seconds, 1), "render_seconds": round(render_seconds, 1),
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "torch": torch.__version__,
    }
    write_new_file(out / "training.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2)))
    return weights
