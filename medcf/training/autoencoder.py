"""``medcf train autoencoder``: the default model's KL autoencoder, trained on random crops of
the simulated world's films and measured by reconstruction PSNR on held-out films.

Runs on the training engine (:mod:`medcf.training.engine`): ``--resume`` continues from the
newest checkpoint; the crops of step ``s`` depend only on (seed, s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medcf.metrics import psnr
from medcf.training.world_sets import heldout_world_set, load_world_set, training_world_set
from medcf.models.default import (AUTOENCODER_FILE, CONFIG_NAME, architecture_config, build_autoencoder,
                                  load_weights, read_config)
from medcf.training.engine import (Deadline, RunFolder, due, hardware, newest_checkpoint, progress_bar,
                                   seed_and_device, set_lr, warmup_lr)


def reconstruction_psnr(vae, images: np.ndarray, device="cpu", batch: int = 8) -> list[float]:
    """Per-image PSNR of ``decode(encode_mean(x))`` for float images in [0, 1] (1-channel VAE)."""
    scores = []
    vae.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start:start + batch]).float()[:, None].to(device) * 2 - 1
            out = vae.decode(vae.encode(x).latent_dist.mean).sample
            out = ((out.float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy()
            scores.extend(psnr(a, b) for a, b in zip(images[start:start + batch], out))
    return scores


@dataclass
class AutoencoderOptions:
    out: str
    data: str | None = None
    n_pairs: int = 2400
    size: int = 256
    data_seed: int = 0
    steps: int = 3000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    warmup: int = 100
    kl_weight: float = 1e-6
    edge_weight: float = 0.5
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    heldout_pairs: int = 32
    heldout_data: str | None = None
    threads: int = 1
    max_minutes: float = 0.0
    resume: bool = False
    progress: bool = True
    tiny: bool = False  # the miniature architecture (medcf.models.default.tiny_config), for the trainers' tests
    extra: dict = field(default_factory=dict)


def _edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def train_autoencoder(options: AutoencoderOptions) -> dict:
    """Train the KL autoencoder on random crops of the world set; returns the final figures."""
    run = RunFolder(options.out, options.resume)
    device = seed_and_device(options.seed, options.threads)
    data_path, world = training_world_set(options.data, options.n_pairs, options.size, options.data_seed,
                                          options.progress)
    if options.heldout_data:
        heldout_path, heldout = Path(options.heldout_data), load_world_set(options.heldout_data)
    else:
        heldout_path, heldout = heldout_world_set(options.heldout_pairs, world.images.shape[-1], options.progress)
    # A resumed run keeps the architecture it started with.
    state = run.resume_state(options.resume)
    config = state["config"] if state else architecture_config("tiny" if options.tiny else "default")
    vae = build_autoencoder(config).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=options.lr, weight_decay=0.0)
    step = 0
    if state:
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    run.write_recipe({
        "what": "MedCF default model: autoencoder", "options": {k: v for k, v in vars(options).items() if k != "extra"},
        "architecture": config["autoencoder"], "parameters": sum(p.numel() for p in vae.parameters()),
        "data": {"path": str(data_path), "spec": world.spec, "images": int(len(world.images))},
        "heldout": {"path": str(heldout_path), "spec": heldout.spec, "images": int(len(heldout.images))},
        "loss": f"L1 + {options.edge_weight} * L1(image gradients) + {options.kl_weight} * KL",
        "hardware": hardware(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    size, crop = world.images.shape[-1], min(options.crop, world.images.shape[-1])
    deadline, window = Deadline(options.max_minutes or None), []
    bar = progress_bar(options.steps, step, "autoencoder", options.progress)
    vae.train()
    while step < options.steps:
        rng = np.random.default_rng([options.seed, step])
        index = rng.integers(0, len(world.images), options.batch)
        top, left = rng.integers(0, size - crop + 1, (2, options.batch))
        batch = np.stack([world.images[i, t:t + crop, l:l + crop] for i, t, l in zip(index, top, left)])
        x = torch.from_numpy(batch.astype(np.float32) / 65535.0)[:, None].to(device) * 2 - 1
        tick = time.perf_counter()
        set_lr(optimizer, warmup_lr(step, options.lr, options.warmup))
        posterior = vae.encode(x).latent_dist
        generator = torch.Generator(device=device).manual_seed(options.seed * 1_000_003 + step)
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator, device=device)
        out = vae.decode(z).sample
        recon = (out - x).abs().mean()
        edges = sum((a - b).abs().mean() for a, b in zip(_edges(out), _edges(x)))
        kl = posterior.kl().mean()
        loss = recon + options.edge_weight * edges + options.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append(time.perf_counter() - tick)
        bar.update(1)
        if due(step, options.log_every, options.steps):
            run.log(step=step, loss=loss.item(), l1=recon.item(), edges=edges.item(), kl=kl.item(),
                    lr=optimizer.param_groups[0]["lr"], s_per_step=float(np.mean(window)))
            bar.set_postfix(loss=f"{loss.item():.4f}", s_step=f"{np.mean(window):.2f}")
            window = []
        over_time = deadline.passed()
        if due(step, options.checkpoint_every, options.steps) or over_time:
            figures = {}
            if due(step, 4 * options.checkpoint_every, options.steps) or over_time:
                scores = reconstruction_psnr(vae, heldout.float_images(), device)
                figures = {"heldout_psnr_db": float(np.mean(scores)), "heldout_psnr_min_db": float(np.min(scores))}
                run.log(step=step, **figures)
                vae.train()
            run.save(step, {"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "config": config, "figures": figures, "kind": "autoencoder"})
        if over_time:
            break
    bar.close()
    scores = reconstruction_psnr(vae, heldout.float_images(), device)
    result = {"step": step, "heldout_psnr_db": float(np.mean(scores)), "heldout_psnr_min_db": float(np.min(scores)),
              "heldout_images": len(scores), "seconds_this_session": deadline.seconds()}
    run.log(final=True, **result)
    return result


def autoencoder_from_run(folder: str | Path):
    """The autoencoder and its config from the newest checkpoint of a ``medcf train autoencoder`` run,
    or from an exported model folder (``medcf_generator.json`` + weights, e.g. ``monai_bundle/models``):
    ``(autoencoder, config, weights or checkpoint path, training steps)``."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        config = read_config(folder)
        vae = build_autoencoder(config)
        load_weights(vae, folder / AUTOENCODER_FILE)
        return (vae.eval().requires_grad_(False), config, folder / AUTOENCODER_FILE,
                int(config.get("training", {}).get("autoencoder_steps", 0)))
    checkpoint, state = newest_checkpoint(folder, "autoencoder", "run `medcf train autoencoder` first")
    vae = build_autoencoder(state["config"])
    vae.load_state_dict(state["model"])
    return vae.eval().requires_grad_(False), state["config"], checkpoint, int(state["step"])


