"""Training the default model: ``medcf train autoencoder`` then ``medcf train generator``,
and ``medcf model export`` into the bundle.

Each run owns one output folder::

    run.json                 recipe: options, data set, seed, versions, hardware (written once)
    log.jsonl                one line per logged step (loss, seconds, learning rate)
    checkpoints/step-NNNNNNN.pt   written atomically every --checkpoint-every steps (last 3 kept)
    latents.pt               (generator) the training set encoded once by the autoencoder

``--resume`` continues from the newest checkpoint in the folder; the batch drawn at step
``s`` depends only on (seed, s), so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medcf.errors import InputError, OutputError
from medcf.io.atomic import write_new_file, write_new_text
from medcf.models.data import pair_starts

KEEP_CHECKPOINTS = 3


# --- run folders -------------------------------------------------------------------------


class RunFolder:
    def __init__(self, folder: str | Path, resume: bool):
        self.folder = Path(folder)
        self.checkpoints = self.folder / "checkpoints"
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder} is a file, not a run folder")
        if not resume and self.folder.exists() and any(self.folder.iterdir()):
            raise OutputError(f"{self.folder} is not empty: pass --resume to continue that run, or choose a new --out")
        if resume and not self.latest():
            raise InputError(f"--resume: no checkpoint in {self.checkpoints}")
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        found = sorted(self.checkpoints.glob("step-*.pt")) if self.checkpoints.is_dir() else []
        return found[-1] if found else None

    def save(self, step: int, state: dict) -> Path:
        path = write_new_file(self.checkpoints / f"step-{step:07d}.pt", lambda tmp: torch.save(state, tmp))
        for old in sorted(self.checkpoints.glob("step-*.pt"))[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        return path

    def log(self, **values) -> None:
        with open(self.folder / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(values) + "\n")

    def write_recipe(self, recipe: dict) -> None:
        path = self.folder / "run.json"
        if not path.exists():
            write_new_text(path, json.dumps(recipe, indent=2) + "\n")


def hardware() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__}


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as error:
        raise InputError(f"cannot read checkpoint {path}: {' '.join(str(error).split())[:200]}") from None


def _lr(step: int, base: float, warmup: int) -> float:
    return base * min(1.0, (step + 1) / max(1, warmup))


def _setup(seed: int, threads: int) -> torch.device:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _world_set(data: str | None, n_pairs: int, size: int, seed: int, progress: bool):
    from medcf.models.data import WorldSetSpec, load_world_set, render_world_set

    if data:
        return Path(data), load_world_set(data)
    path = render_world_set(WorldSetSpec(n_pairs=n_pairs, size=size, seed=seed), progress=progress)
    return path, load_world_set(path)


def _heldout(n_pairs: int, size: int, progress: bool):
    from medcf.models.data import HELD_OUT_SEED_START, WorldSetSpec, load_world_set, render_world_set

    path = render_world_set(WorldSetSpec(n_pairs=n_pairs, size=size, seed=HELD_OUT_SEED_START, split="heldout"),
                            progress=progress)
    return path, load_world_set(path)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB for images in [0, 1]."""
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


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


# --- autoencoder ------------------------------------------------------------------------


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
    from tqdm import tqdm

    from medcf.models.default import architecture_config, build_autoencoder

    run = RunFolder(options.out, options.resume)
    device = _setup(options.seed, options.threads)
    data_path, world = _world_set(options.data, options.n_pairs, options.size, options.data_seed, options.progress)
    if options.heldout_data:
        from medcf.models.data import load_world_set

        heldout_path, heldout = Path(options.heldout_data), load_world_set(options.heldout_data)
    else:
        heldout_path, heldout = _heldout(options.heldout_pairs, world.images.shape[-1], options.progress)
    # A resumed run keeps the architecture it started with.
    state = load_checkpoint(run.latest()) if options.resume else None
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
    started, window = time.perf_counter(), []
    bar = tqdm(total=options.steps, initial=step, desc="autoencoder", unit="step", disable=not options.progress)
    vae.train()
    while step < options.steps:
        rng = np.random.default_rng([options.seed, step])
        index = rng.integers(0, len(world.images), options.batch)
        top, left = rng.integers(0, size - crop + 1, (2, options.batch))
        batch = np.stack([world.images[i, t:t + crop, l:l + crop] for i, t, l in zip(index, top, left)])
        x = torch.from_numpy(batch.astype(np.float32) / 65535.0)[:, None].to(device) * 2 - 1
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, options.lr, options.warmup)
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
        if step % options.log_every == 0 or step == options.steps:
            run.log(step=step, loss=loss.item(), l1=recon.item(), edges=edges.item(), kl=kl.item(),
                    lr=optimizer.param_groups[0]["lr"], s_per_step=float(np.mean(window)))
            bar.set_postfix(loss=f"{loss.item():.4f}", s_step=f"{np.mean(window):.2f}")
            window = []
        over_time = options.max_minutes and (time.perf_counter() - started) > 60 * options.max_minutes
        if step % options.checkpoint_every == 0 or step == options.steps or over_time:
            figures = {}
            if step % (4 * options.checkpoint_every) == 0 or step == options.steps or over_time:
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
              "heldout_images": len(scores), "seconds_this_session": time.perf_counter() - started}
    run.log(final=True, **result)
    return result


# --- generator ----------------------------------------------------------------------------


@dataclass
class GeneratorOptions:
    out: str
    autoencoder: str | None = None
    data: str | None = None
    n_pairs: int = 2400
    size: int = 256
    data_seed: int = 0
    steps: int = 8000
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 200
    prompt_dropout: float = 0.1
    ema_decay: float = 0.999
    snr_gamma: float = 5.0
    seed: int = 0
    checkpoint_every: int = 250
    log_every: int = 10
    threads: int = 1
    max_minutes: float = 0.0
    resume: bool = False
    progress: bool = True
    init: str | None = None
    paired: bool = False
    ground: float = 0.0
    extra: dict = field(default_factory=dict)


def autoencoder_from_run(folder: str | Path):
    """The autoencoder and its config from the newest checkpoint of a ``medcf train autoencoder`` run,
    or from an exported model folder (``medcf_generator.json`` + weights, e.g. ``monai_bundle/models``)."""
    from medcf.models.default import AUTOENCODER_FILE, CONFIG_NAME, build_autoencoder, load_weights, read_config

    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        config = read_config(folder)
        vae = build_autoencoder(config)
        load_weights(vae, folder / AUTOENCODER_FILE)
        return (vae.eval().requires_grad_(False), config, folder / AUTOENCODER_FILE,
                int(config.get("training", {}).get("autoencoder_steps", 0)))
    checkpoints = sorted((folder / "checkpoints").glob("step-*.pt")) if (folder / "checkpoints").is_dir() else []
    if not checkpoints:
        raise InputError(f"{folder} holds no autoencoder checkpoint (checkpoints/step-*.pt); run `medcf train autoencoder` first")
    state = load_checkpoint(checkpoints[-1])
    if state.get("kind") != "autoencoder":
        raise InputError(f"{checkpoints[-1]} is not an autoencoder checkpoint")
    vae = build_autoencoder(state["config"])
    vae.load_state_dict(state["model"])
    return vae.eval().requires_grad_(False), state["config"], checkpoints[-1], int(state["step"])


def encode_world(vae, world, device, batch: int = 16, progress: bool = True) -> torch.Tensor:
    from tqdm import tqdm

    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(world.images), batch), desc="encoding the training set", unit="batch",
                          disable=not progress):
            x = torch.from_numpy(world.float_images(slice(start, start + batch)))[:, None].to(device) * 2 - 1
            chunks.append(vae.encode(x).latent_dist.mean.cpu())
    return torch.cat(chunks)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for target, source in zip(ema.parameters(), model.parameters()):
            target.lerp_(source, 1.0 - decay)


def generator_batch(options: GeneratorOptions, step: int, n_films: int, latent_shape: tuple[int, ...],
                    num_train_timesteps: int, pairs: np.ndarray | None = None):
    """The films, timesteps and noise of step ``step`` (a function of (seed, step) only, so a
    resumed run sees what an uninterrupted one would), and the step's generator for the rest.

    With ``pairs`` (from :func:`medcf.models.data.pair_starts`) the batch holds whole pairs, each pair's two
    films adjacent under one noise and one timestep."""
    rng = np.random.default_rng([options.seed, step, 1])
    generator = torch.Generator().manual_seed(options.seed * 1_000_003 + step)
    if pairs is None:
        index = torch.from_numpy(rng.integers(0, n_films, options.batch))
        timesteps = torch.from_numpy(rng.integers(0, num_train_timesteps, options.batch))
        noise = torch.randn((options.batch, *latent_shape), generator=generator)
    else:
        # Both films of a pair differ only by the finding; under one noise and one
        # timestep the prompt is all that tells their targets apart.
        starts = torch.from_numpy(pairs[rng.integers(0, len(pairs), options.batch // 2)])
        index = torch.stack([starts, starts + 1], dim=1).reshape(-1)
        timesteps = torch.from_numpy(rng.integers(0, num_train_timesteps, options.batch // 2)).repeat_interleave(2)
        noise = torch.randn((options.batch // 2, *latent_shape), generator=generator).repeat_interleave(2, 0)
    return index, timesteps, noise, rng


def train_generator(options: GeneratorOptions) -> dict:
    """Train the text-conditioned UNet on the autoencoder's latents of the world set."""
    import copy

    from diffusers import DDPMScheduler
    from tqdm import tqdm

    from medcf.io.atomic import write_new_file
    from medcf.models.default import build_unet
    from medcf.models.grounding import grounding_loss
    from medcf.models.text import minilm_encoder, offline

    if options.paired and (options.batch < 2 or options.batch % 2):
        raise InputError(f"--paired needs an even batch of at least 2 (two films a pair), not {options.batch}")
    if options.ground < 0:
        raise InputError(f"--ground is a loss weight, at least 0, not {options.ground:g}")
    if not (options.init or options.autoencoder):
        raise InputError("name the autoencoder: --autoencoder RUN, or --init MODEL_FOLDER to fine-tune a model")
    offline()
    run = RunFolder(options.out, options.resume)
    device = _setup(options.seed, options.threads)
    vae, config, ae_checkpoint, ae_step = autoencoder_from_run(options.init or options.autoencoder)
    vae.to(device)
    resumed = load_checkpoint(run.latest()) if options.resume else None
    # The denoiser's architecture is the one this run started with when resuming, the
    # initial model's when fine-tuning one, else today's default (the miniature for a
    # miniature autoencoder) -- never the copy the autoencoder run wrote into its
    # checkpoint when *it* started, which may be older.
    if resumed is not None:
        config["unet"] = resumed["config"]["unet"]
    elif not options.init:
        from medcf.models.default import denoiser_for

        config["unet"] = denoiser_for(config)
    data_path, world = _world_set(options.data, options.n_pairs, options.size, options.data_seed, options.progress)
    pairs = pair_starts(world) if options.paired else None
    size = int(world.images.shape[-1])
    factor = 2 ** (len(config["autoencoder"]["block_out_channels"]) - 1)
    if options.init and [int(world.images.shape[-2]), size] != list(config["image_size"]):
        raise InputError(f"--init {options.init} works at {config['image_size']}, the training set's films are "
                         f"{list(world.images.shape[1:])}")
    config["image_size"] = [int(world.images.shape[-2]), size]
    config["autoencoder"]["sample_size"] = size
    config["unet"]["sample_size"] = size // factor
    latents_path = run.folder / "latents.pt"
    if latents_path.is_file():
        cached = torch.load(str(latents_path), map_location="cpu", weights_only=True)
        latents, scaling = cached["latents"], float(cached["scaling_factor"])
    else:
        latents = encode_world(vae, world, device, progress=options.progress)
        # A fine-tuned denoiser keeps the latent scale it learned; a new one takes the set's.
        scaling = float(config["autoencoder"]["scaling_factor"]) if options.init else float(1.0 / latents.std())
        write_new_file(latents_path, lambda tmp: torch.save({"latents": latents, "scaling_factor": scaling}, tmp))
    latents = latents * scaling
    config["autoencoder"]["scaling_factor"] = scaling
    text = minilm_encoder(config["text_encoder"]["max_length"], device=device)
    prompts = world.prompts
    unique = sorted(set(prompts))
    with torch.no_grad():
        encoded = text(unique)
        table = encoded.embeddings.cpu()
        empty = text([""]).embeddings.cpu()
    prompt_index = torch.tensor([unique.index(p) for p in prompts])
    unet = build_unet(config).to(device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    grounding = _grounding(options, world, encoded, prompt_index, unet, latents.shape[-2:]) if options.ground > 0 else None
    optimizer = torch.optim.AdamW(unet.parameters(), lr=options.lr, weight_decay=0.01)
    noise_schedule = DDPMScheduler.from_config(config["scheduler"])
    alphas = noise_schedule.alphas_cumprod.to(device)
    step = 0
    initial = None
    if options.init and resumed is None:
        from medcf.models.default import UNET_FILE, load_weights

        load_weights(unet, Path(options.init) / UNET_FILE)
        ema.load_state_dict(unet.state_dict())
    if options.init:
        initial = {"folder": str(options.init), "training": config.pop("training", None)}
        config["initialised_from"] = initial
    if resumed is not None:
        unet.load_state_dict(resumed["model"])
        ema.load_state_dict(resumed["ema"])
        optimizer.load_state_dict(resumed["optimizer"])
        step = int(resumed["step"])
        if "initialised_from" in resumed["config"]:
            config["initialised_from"] = resumed["config"]["initialised_from"]
    config["prompt_dropout"] = options.prompt_dropout
    run.write_recipe({
        "what": "MedCF default model: text-conditioned UNet", "options": {k: v for k, v in vars(options).items() if k != "extra"},
        "architecture": config["unet"], "scheduler": config["scheduler"],
        "parameters": sum(p.numel() for p in unet.parameters()),
        "autoencoder": {"checkpoint": str(ae_checkpoint), "step": ae_step, "scaling_factor": scaling},
        "data": {"path": str(data_path), "spec": world.spec, "images": int(len(world.images)),
                 "distinct_prompts": len(unique)},
        "text_encoder": config["text_encoder"],
        "loss": f"MSE on epsilon, min-SNR weighting gamma={options.snr_gamma}; prompt dropout {options.prompt_dropout}",
        "batches": ("paired: each batch holds whole factual/counterfactual pairs, both films of a pair under the "
                    "same noise and timestep" if options.paired else "films drawn independently"),
        "initialised_from": initial,
        "grounding": None if grounding is None else {
            "weight": options.ground, "loss": "TokenCompose-style (1 - share of the finding words' cross-attention "
            "inside the lesion's cells)^2, lesion = cells at >= half the peak of |factual - counterfactual|",
            "grids": [list(g) for g in grounding["masks"]], "grounded_films": int(grounding["grounded"].sum())},
        "hardware": hardware(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    started, window = time.perf_counter(), []
    bar = tqdm(total=options.steps, initial=step, desc="generator", unit="step", disable=not options.progress)
    unet.train()
    while step < options.steps:
        index, timesteps, noise, rng = generator_batch(options, step, len(latents), tuple(latents.shape[1:]),
                                                       noise_schedule.config.num_train_timesteps, pairs)
        timesteps = timesteps.to(device)
        drop = torch.from_numpy(rng.random(len(index)) < options.prompt_dropout)
        context = table[prompt_index[index]].clone()
        context[drop] = empty[0]
        x0 = latents[index].to(device)
        noise = noise.to(device)
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, options.lr, options.warmup)
        noisy = noise_schedule.add_noise(x0, noise, timesteps)
        if grounding is not None:
            grounded = grounding["grounded"][index] & ~drop
            grounding["processor"].weights = grounding["weights"][index].to(device) * grounded[:, None].to(device)
            grounding["processor"].maps = []
        prediction = unet(noisy, timesteps, encoder_hidden_states=context.to(device)).sample
        snr = alphas[timesteps] / (1 - alphas[timesteps])
        weight = torch.clamp(snr, max=options.snr_gamma) / snr if options.snr_gamma > 0 else torch.ones_like(snr)
        loss = (weight * F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
        extras = {}
        if grounding is not None:
            ground_loss, share = grounding_loss(grounding["processor"].maps, grounding["masks"], index, grounded)
            extras = {"ground_loss": ground_loss.item(), "share_inside": share}
            loss = loss + options.ground * ground_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        step += 1
        _ema_update(ema, unet, min(options.ema_decay, (1 + step) / (10 + step)))
        window.append(time.perf_counter() - tick)
        bar.update(1)
        if step % options.log_every == 0 or step == options.steps:
            run.log(step=step, loss=loss.item(), lr=optimizer.param_groups[0]["lr"], s_per_step=float(np.mean(window)),
                    **extras)
            bar.set_postfix(loss=f"{loss.item():.4f}", s_step=f"{np.mean(window):.2f}")
            window = []
        over_time = options.max_minutes and (time.perf_counter() - started) > 60 * options.max_minutes
        if step % options.checkpoint_every == 0 or step == options.steps or over_time:
            run.save(step, {"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                            "step": step, "config": config, "kind": "generator",
                            "autoencoder_checkpoint": str(ae_checkpoint)})
        if over_time:
            break
    bar.close()
    result = {"step": step, "seconds_this_session": time.perf_counter() - started}
    run.log(final=True, **result)
    return result


def _grounding(options: GeneratorOptions, world, encoded, prompt_index: torch.Tensor, unet,
               latent_hw: tuple[int, int]) -> dict:
    """What ``--ground`` needs for the whole run: the lesion masks of every factual film at the
    denoiser's cross-attention grids, each film's finding-token weights, and the processor
    (installed on the training copy's cross-attention sites only, never on the EMA copy)."""
    from medcf.editing.regulation import pathology_tokens
    from medcf.models.data import NONE
    from medcf.models.grounding import GroundingProcessor, cross_sites, lesion_footprints, lesion_masks, token_grids
    from medcf.vocab import Finding

    starts = pair_starts(world, needed_by="--ground")
    sites = cross_sites(unet)
    if not sites:
        raise InputError("--ground needs a denoiser with cross-attention")
    latent_hw = tuple(int(v) for v in latent_hw)
    grids = token_grids(sites, unet, latent_hw)
    masks = lesion_masks(lesion_footprints(world.images, starts, latent_hw), grids)
    n, keys = len(world.records), encoded.embeddings.shape[1]
    weights = torch.zeros((n, keys))
    for film in starts:
        record = world.records[film]
        if record.get("finding") in (None, NONE):
            continue
        tokens = pathology_tokens(encoded, Finding(record["finding"]), int(prompt_index[film]))
        weights[film, tokens] = 1.0
    grounded = (weights.sum(dim=1) > 0) & next(iter(masks.values())).any(dim=1)
    processor = GroundingProcessor()
    for site in sites:
        site.set_processor(processor)
    return {"masks": masks, "weights": weights, "grounded": grounded, "processor": processor}


# --- export --------------------------------------------------------------------------------


def export_default_model(autoencoder_run: str | Path, generator_run: str | Path, out: str | Path,
                         half: bool = True, use_ema: bool = True) -> list[Path]:
    """Write the bundle's ``models/`` folder from the newest checkpoints of both runs."""
    from medcf.models.default import build_unet, save_default_model

    generator_run = Path(generator_run)
    checkpoints = sorted((generator_run / "checkpoints").glob("step-*.pt")) if (generator_run / "checkpoints").is_dir() else []
    if not checkpoints:
        raise InputError(f"{generator_run} holds no generator checkpoint; run `medcf train generator` first")
    state = load_checkpoint(checkpoints[-1])
    if state.get("kind") != "generator":
        raise InputError(f"{checkpoints[-1]} is not a generator checkpoint")
    vae, _, ae_checkpoint, ae_step = autoencoder_from_run(autoencoder_run)
    if Path(state["autoencoder_checkpoint"]).name != ae_checkpoint.name:
        raise InputError(f"the generator was trained on the latents of {state['autoencoder_checkpoint']}, "
                         f"but the newest autoencoder checkpoint is {ae_checkpoint}")
    config = state["config"]
    unet = build_unet(config)
    unet.load_state_dict(state["ema" if use_ema else "model"])
    recipes = {}
    for name, folder in (("autoencoder", Path(autoencoder_run)), ("generator", generator_run)):
        recipe = folder / "run.json"
        recipes[name] = json.loads(recipe.read_text()) if recipe.is_file() else {}
    config["training"] = {
        "autoencoder_steps": ae_step, "generator_steps": int(state["step"]), "weights": "EMA" if use_ema else "raw",
        "dtype": "float16" if half else "float32", "recipes": recipes,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return save_default_model(out, config, unet, vae, half=half)
