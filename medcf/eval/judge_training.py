"""``medcf train judge`` (the lab's instrument, trained here with the shared engine): the benchmark's finding judge (:mod:`medcf.eval.judge`), trained on
rendered films of the simulated world and their copies through the model's autoencoder
(never on sampled or edited films), then calibrated on held-out films and saved.

Runs on the training engine (:mod:`medcf.training.engine`): checkpoints in ``OUT/run``,
``--resume`` continues, ``--max-minutes`` stops cleanly; the batch of step ``s`` depends
only on (seed, s). Training augments the films' *look* (:func:`_look`) so that the judge
reads findings, not the renderer's sharpness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medcf.bundle import bundle_root
from medcf.eval.judge import (HELDOUT_SEED, LABELS, TRAIN_SEED, Judge, build_network, evaluate_looks, input_channels,
                              labels_of, network_definition, normalised, resized, with_coordinates)
from medcf.errors import InputError
from medcf.eval.judge_report import judge_field_reports
from medcf.io.atomic import new_output_dir
from medcf.metrics import gaussian_blur
from medcf.training.world_sets import WorldSet, WorldSetSpec, autoencoded_world_set, load_world_set, render_world_set
from medcf.models.loaders import load_generator
from medcf.training.engine import (Deadline, RunFolder, cosine_lr, due, hardware, progress_bar, seed_and_device,
                                   set_lr, step_generator)


@dataclass
class JudgeOptions:
    out: Path
    n_pairs: int = 3000
    heldout_pairs: int = 300
    size: int = 256
    steps: int = 8000
    batch: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    threads: int = 1
    checkpoint_every: int = 250
    resume: bool = False
    max_minutes: float | None = None
    comorbidity: float = 0.3
    progress: bool = True
    data: Path | list[Path] | None = None  # world set .npz file(s) instead of the default rendered one
    heldout_data: Path | None = None
    network: dict | None = None  # default: network_definition()
    autoencoded: bool = True  # also train (and evaluate) on the films through the generator's autoencoder
    look: bool = True  # look augmentation (_look): blur, noise texture, contrast curves
    model: Path | None = None  # generator whose autoencoder gives the look (default: the bundle's)
    reports: bool = True  # after training: normal-sample false alarms and sham flips (medcf.eval.judge_report)


def _chance(batch: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(batch, 1, 1, 1, generator=generator) < p).float()


def _patch_weight(batch: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Per film 1 everywhere (half the films) or a smooth random patch (the other half):
    look changes happen to a whole film or to part of it, and neither is a finding."""
    field = torch.rand(batch, 1, 6, 6, generator=generator)
    field = F.interpolate(field, size=size, mode="bicubic", align_corners=False)
    patch = ((field - 0.6) / 0.15).clamp(0, 1)
    return torch.where(_chance(batch, 0.5, generator) > 0, torch.ones_like(patch), patch)


def _look(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augment the *look* of films ``(B, 1, H, W)`` in [0, 1] without touching their content:
    a contrast curve (gamma 0.75–1.35), a blur (σ 0.5–1.5 px) and a noise texture (σ up to
    0.03, slightly correlated), each on a random share of films, over the whole film or a
    random patch. These are the ways the generator's films differ from renders — and the
    ways a sham edit would try to pass for a finding."""
    batch, size = x.shape[0], tuple(x.shape[-2:])
    gamma = 0.75 + 0.6 * torch.rand(batch, 1, 1, 1, generator=generator)
    curved = x.clamp(0, 1) ** gamma
    x = x + _chance(batch, 0.5, generator) * _patch_weight(batch, size, generator) * (curved - x)
    sigma = float(0.5 + torch.rand(1, generator=generator))
    x = x + _chance(batch, 0.3, generator) * _patch_weight(batch, size, generator) * (gaussian_blur(x, sigma) - x)
    texture = gaussian_blur(torch.randn(x.shape, generator=generator), 0.7) * 1.6  # unit sd after the blur
    level = 0.03 * torch.rand(batch, 1, 1, 1, generator=generator)
    x = x + _chance(batch, 0.3, generator) * _patch_weight(batch, size, generator) * level * texture
    return x.clamp(0, 1)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter and small shifts: the judge should read findings, not one
    renderer's exact grey levels. No flips: sides matter."""
    batch = x.shape[0]
    gain = 1 + 0.15 * (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1)
    bias = 0.1 * (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1)
    shift = torch.randint(-8, 9, (2,), generator=generator)
    shifts = (int(shift[0]), int(shift[1]))
    return torch.roll(x * gain + bias, shifts=shifts, dims=(2, 3))


def _with_autoencoded(paths: list[Path], generator, progress: bool) -> list[Path]:
    """The world sets ``paths`` and, after them, their copies through ``generator``'s autoencoder."""
    return [*paths, *(autoencoded_world_set(path, generator, progress=progress) for path in paths)]


def train_judge(options: JudgeOptions) -> dict:
    """Train, checkpoint (resumable), evaluate on held-out films and save the judge into ``out``.

    Returns the held-out report on renders (``heldout_report``), and with ``autoencoded``
    the same on the autoencoded held-out films; with ``reports`` the judge's record also
    carries its normal-sample false alarms and sham flip rates."""
    device = seed_and_device(options.seed, options.threads)
    run = RunFolder(Path(options.out) / "run", options.resume)
    train_spec = WorldSetSpec(options.n_pairs, options.size, TRAIN_SEED, options.comorbidity)
    heldout_spec = WorldSetSpec(options.heldout_pairs, options.size, HELDOUT_SEED, options.comorbidity, "heldout")
    sources = options.data if isinstance(options.data, (list, tuple)) else [options.data] if options.data else []
    sources = [Path(path) for path in sources] or [render_world_set(train_spec, progress=options.progress)]
    generator = None
    if options.autoencoded or options.reports:
        generator = load_generator(options.model or bundle_root())
    if options.autoencoded:
        sources = _with_autoencoded(sources, generator, options.progress)
    train = WorldSet.join([load_world_set(path) for path in sources])
    targets = np.stack([labels_of(r)[0] for r in train.records])
    known = np.stack([labels_of(r)[1] for r in train.records])
    definition = options.network or network_definition()
    network = build_network(definition).to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.learning_rate, weight_decay=1e-4)
    step = 0
    state = run.resume_state(options.resume)
    if state is not None:
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
    train_source = [str(path) for path in sources]
    heldout_path = Path(options.heldout_data) if options.heldout_data else None
    heldout_source = str(heldout_path) if heldout_path else asdict(heldout_spec)
    run.write_recipe({"options": {k: str(v) for k, v in asdict(options).items()}, "network": definition,
                      "labels": LABELS, "train": train_source, "heldout": heldout_source, "hardware": hardware()})
    deadline = Deadline(options.max_minutes)
    network.train()
    with progress_bar(options.steps, step, "judge", options.progress) as bar:
        while step < options.steps:
            generator_ = step_generator(options.seed, step)  # batch s depends on (seed, s)
            index = torch.randint(0, len(train.images), (options.batch,), generator=generator_).numpy()
            x = resized(train.float_images(index), options.size)
            if options.look:
                x = _look(x, generator_)
            x = _augment(normalised(x), generator_)
            x = with_coordinates(x, input_channels(network)).to(device)
            y, m = torch.from_numpy(targets[index]).to(device), torch.from_numpy(known[index]).to(device)
            set_lr(optimiser, cosine_lr(step, options.learning_rate, options.steps))
            logits = network(x)
            loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * m).sum() / m.sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            bar.update(1)
            if step % 50 == 0:
                run.log(step=step, loss=round(float(loss.detach()), 5))
            stop = deadline.passed()
            if due(step, options.checkpoint_every, options.steps) or stop:
                run.save(step, {"kind": "judge", "network": network.state_dict(), "optimiser": optimiser.state_dict(),
                                "step": step})
            if stop:
                return {"stopped_at": step, "resume": "run again with --resume"}
    judge = Judge(network.cpu().eval(), options.size)
    judge.record = {"network": definition, "steps": options.steps, "seed": options.seed,
                    "train": train_source, "heldout": heldout_source,
                    "train_seconds": round(deadline.seconds(), 1), "hardware": hardware(),
                    "recipe": {"autoencoded": options.autoencoded, "look_augmentation": options.look},
                    "notice": "trained on simulated radiographs only; a benchmark instrument, not a diagnostic"}
    return calibrate_and_save(judge, heldout_path or render_world_set(heldout_spec, progress=options.progress),
                              generator if options.autoencoded else None, generator if options.reports else None,
                              Path(options.out) / "judge", options.progress)


def calibrate_and_save(judge: Judge, heldout_path: Path, look_generator, report_generator, out: Path,
                       progress: bool) -> dict:
    """Calibrate ``judge`` on the held-out films (and, given ``look_generator``, on their
    autoencoded copies), add the field reports when ``report_generator`` is given, save it
    into the new folder ``out``; returns the held-out report on renders."""
    heldout = {"heldout_report": heldout_path}
    if look_generator is not None:
        heldout["heldout_report_autoencoded"] = autoencoded_world_set(heldout_path, look_generator,
                                                                      progress=progress)
    reports = evaluate_looks(judge, heldout)
    judge.record.update(reports)
    if report_generator is not None:
        judge.record.update(judge_field_reports(judge, report_generator, progress=progress))
    judge.save(new_output_dir(out))
    return reports["heldout_report"]


def recalibrate_judge(folder: str | Path, out: str | Path, model: Path | None = None, reports: bool = True,
                      progress: bool = True) -> dict:
    """A trained judge's decisions calibrated anew, without training: the same weights, the
    held-out films its training run used (re-rendered from the recorded spec; a recorded
    file path is read as it is), thresholds, side calibration and field reports re-made,
    saved into the new folder ``out`` (``reports``: the field reports too, which sample and
    edit with the generator). For judges saved before a calibration existed (issue 16: the
    side margins); the training record (steps, seconds, data) is kept."""
    judge = Judge.load(folder)
    new_output_dir(out)  # fail before the work, not after it
    judge.thresholds, judge.side_margins, judge.side_thresholds = {}, {}, {}
    heldout = judge.record.get("heldout")
    if isinstance(heldout, dict):
        heldout_path = render_world_set(WorldSetSpec(**heldout), progress=progress)
    elif isinstance(heldout, str) and Path(heldout).is_file():
        heldout_path = Path(heldout)
    else:
        raise InputError(f"{folder}: the judge's record names no held-out films that can be re-made ({heldout!r})")
    autoencoded = judge.record.get("recipe", {}).get("autoencoded", False)
    generator = load_generator(model or bundle_root()) if autoencoded or reports else None
    return calibrate_and_save(judge, heldout_path, generator if autoencoded else None,
                               generator if reports else None, Path(out), progress)
