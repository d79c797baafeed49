"""Figures of the default model until the [bench] judge exists.

- Autoencoder reconstruction PSNR on held-out simulated images (seeds >= 1000000).
- How often samples carry the prompted finding: per finding, a deliberately simple
  probe — a class-balanced logistic regression on coarse regional intensities (the
  image block-averaged to 16×16, plus its left-right difference) separating images with
  that finding from normal ones — is fitted on held-out renders (first half) and scored
  on the second half (its sensitivity/specificity on renders is reported beside the
  sample figures, so they can be read against it); refitted on all held-out renders, it
  then classifies images sampled from held-out prompts. A finding counts as carried when
  its probe says "present"; normal-prompted samples give the false-alarm rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medcf.models.data import HELD_OUT_SEED_START, NONE

GRID = 16


def features(images: np.ndarray) -> np.ndarray:
    """Block means on a 16×16 grid, z-scored per image, and their left-right differences."""
    n, h, w = images.shape
    blocks = images[:, : h - h % GRID, : w - w % GRID].reshape(n, GRID, h // GRID, GRID, w // GRID).mean(axis=(2, 4))
    blocks = (blocks - blocks.mean(axis=(1, 2), keepdims=True)) / (blocks.std(axis=(1, 2), keepdims=True) + 1e-6)
    mirrored = blocks - blocks[:, :, ::-1]
    return np.concatenate([blocks.reshape(n, -1), mirrored[:, :, : GRID // 2].reshape(n, -1)], axis=1).astype(np.float32)


class FindingProbe:
    """Multinomial logistic regression (L2) on :func:`features`."""

    def __init__(self, classes: list[str], l2: float = 1e-2):
        self.classes, self.l2 = classes, l2

    def fit(self, images: np.ndarray, labels: list[str]) -> "FindingProbe":
        x = torch.from_numpy(features(images))
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        x = (x - self.mean) / self.std
        y = torch.tensor([self.classes.index(label) for label in labels])
        counts = torch.bincount(y, minlength=len(self.classes)).clamp(min=1).float()
        balance = (counts.sum() / (len(self.classes) * counts))
        self.weight = torch.zeros(x.shape[1], len(self.classes), requires_grad=True)
        self.bias = torch.zeros(len(self.classes), requires_grad=True)
        optimizer = torch.optim.LBFGS([self.weight, self.bias], max_iter=300, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ self.weight + self.bias, y, weight=balance)
            loss = loss + self.l2 * self.weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    def predict(self, images: np.ndarray) -> list[str]:
        x = (torch.from_numpy(features(images)) - self.mean) / self.std
        with torch.no_grad():
            return [self.classes[i] for i in (x @ self.weight + self.bias).argmax(1).tolist()]


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def evaluate_model(model: str | Path | None, per_finding: int = 8, steps: int = 25, out: str | Path | None = None,
                   heldout_pairs: int = 280, progress: bool = True, heldout_data: str | Path | None = None) -> dict:
    from medcf.models.bundle import resolve_model_dir
    from medcf.models.data import WorldSetSpec, load_world_set, render_world_set
    from medcf.models.loaders import load_generator
    from medcf.models.sampling import sample
    from medcf.models.train import psnr

    generator = load_generator(resolve_model_dir(model))
    if heldout_data is None:
        heldout_data = render_world_set(WorldSetSpec(n_pairs=heldout_pairs, size=generator.image_size[0],
                                                     seed=HELD_OUT_SEED_START, split="heldout"), progress=progress)
    heldout = load_world_set(heldout_data)
    if min(r["seed"] for r in heldout.records) < HELD_OUT_SEED_START:
        from medcf.errors import InputError

        raise InputError(f"{heldout_data} holds training seeds (< {HELD_OUT_SEED_START}); evaluate on held-out seeds only")
    heldout_pairs = len(heldout.records) // 2
    images = heldout.float_images()
    labels = [r["finding"] for r in heldout.records]
    # 1. autoencoder
    scores = []
    for start in range(0, len(images), 16):
        recon = generator.decode_images(generator.encode_images(images[start:start + 16]))
        scores.extend(psnr(a, b) for a, b in zip(images[start:start + 16], recon))
    # 2. per-finding probes, checked on renders they did not see, then refitted on all
    findings = sorted(set(labels) - {NONE})
    half = len(images) // 2
    probes, render_check = {}, {}
    for finding in findings:
        chosen = [i for i, label in enumerate(labels) if label in (finding, NONE)]
        first, second = [i for i in chosen if i < half], [i for i in chosen if i >= half]
        check = FindingProbe([NONE, finding]).fit(images[first], [labels[i] for i in first])
        guesses = check.predict(images[second])
        truth_second = [labels[i] for i in second]
        render_check[finding] = {
            "sensitivity": _share([g == finding for g, t in zip(guesses, truth_second) if t == finding]),
            "specificity": _share([g == NONE for g, t in zip(guesses, truth_second) if t == NONE])}
        probes[finding] = FindingProbe([NONE, finding]).fit(images[chosen], [labels[i] for i in chosen])
    # 3. samples from held-out prompts: per finding, and normal ones for false alarms
    prompts, truth = [], []
    for label in [*findings, NONE]:
        chosen = [r["prompt"] for r in heldout.records if r["finding"] == label][:per_finding]
        prompts += chosen
        truth += [label] * len(chosen)
    generated = []
    for start in range(0, len(prompts), 8):
        result = sample(generator, prompts[start:start + 8], seed=HELD_OUT_SEED_START + start, steps=steps,
                        progress=progress)
        generated.append(result.images)
    generated_images = np.concatenate(generated)
    normal_images = generated_images[[i for i, t in enumerate(truth) if t == NONE]]
    carried, false_alarm = {}, {}
    for finding in findings:
        mine = generated_images[[i for i, t in enumerate(truth) if t == finding]]
        carried[finding] = _share([g == finding for g in probes[finding].predict(mine)])
        false_alarm[finding] = _share([g == finding for g in probes[finding].predict(normal_images)])
    predicted = [probes[t].predict(generated_images[i:i + 1])[0] if t != NONE else NONE
                 for i, t in enumerate(truth)]
    rated = [v for v in carried.values() if v is not None]
    report = {
        "model": generator.source,
        "autoencoder_psnr_db": {"mean": round(float(np.mean(scores)), 2), "min": round(float(np.min(scores)), 2),
                                "images": len(scores), "seeds": f"{HELD_OUT_SEED_START}..{HELD_OUT_SEED_START + heldout_pairs - 1}"},
        "probe_on_heldout_renders": render_check,
        "samples_carrying_prompted_finding": {"mean": round(float(np.mean(rated)), 3) if rated else None,
                                              "per_finding": carried},
        "normal_samples_flagged_by_probe": false_alarm,
        "samples": {"count": len(prompts), "per_prompt_class": per_finding, "steps": steps,
                    "guidance_scale": generator.guidance_scale},
        "probe": f"per finding vs normal: class-balanced logistic regression on {GRID}x{GRID} block means + "
                 "left-right differences, fitted on held-out renders",
    }
    if out is not None:
        from medcf.viz import Tile, render_grid, save_png

        def caption(label: str, guess: str) -> str:
            if label == NONE:
                return "normal prompt"
            return f"{label}\nprobe: {'present' if guess == label else 'absent'}"

        tiles = [Tile(image, caption(label, guess)) for image, label, guess in
                 zip(generated_images[::max(1, per_finding // 2)], truth[::max(1, per_finding // 2)],
                     predicted[::max(1, per_finding // 2)])]
        report["panel"] = str(save_png(render_grid(tiles, "MedCF default model: samples (synthetic)", tile_size=256,
                                                   columns=4), Path(out) / "samples.png"))
    return report


__all__ = ["FindingProbe", "evaluate_model", "features"]
