"""``medcf train generator``: the default model's text-conditioned UNet, trained on the
autoencoder's latents of the simulated world's films (optionally in whole factual /
counterfactual pairs, or with a grounding loss).

Runs on the training engine (:mod:`medcf.training.engine`): the run folder keeps
``latents.pt`` (the training set encoded once by the autoencoder) beside the checkpoints;
``--resume`` continues from the newest one, and the batch of step ``s`` depends only on
(seed, s), so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medcf.editing.regulation import pathology_tokens
from medcf.errors import InputError
from medcf.io.atomic import write_new_file
from medcf.training.world_sets import NONE, pair_starts, training_world_set
from medcf.models.default import UNET_FILE, build_unet, denoiser_for, load_weights
from medcf.training.grounding import (GroundingProcessor, cross_sites, grounding_loss, lesion_footprints, lesion_masks,
                                    token_grids)
from medcf.models.text import minilm_encoder, offline
from medcf.training.autoencoder import autoencoder_from_run
from medcf.training.engine import (Deadline, RunFolder, due, ema_decay, ema_update, hardware, progress_bar,
                                   seed_and_device, set_lr, step_generator, warmup_lr)
from medcf.vocab import Finding


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


def encode_world(vae, world, device, batch: int = 16, progress: bool = True) -> torch.Tensor:
    """The autoencoder's latent means of every film of ``world``, once per run (``latents.pt``)."""
    from tqdm import tqdm

    chunks = []
    with torch.no_grad():
        for start in tqdm(range(0, len(world.images), batch), desc="encoding the training set", unit="batch",
                          disable=not progress):
            x = torch.from_numpy(world.float_images(slice(start, start + batch)))[:, None].to(device) * 2 - 1
            chunks.append(vae.encode(x).latent_dist.mean.cpu())
    return torch.cat(chunks)


def generator_batch(options: GeneratorOptions, step: int, n_films: int, latent_shape: tuple[int, ...],
                    num_train_timesteps: int, pairs: np.ndarray | None = None):
    """The films, timesteps and noise of step ``step`` (a function of (seed, step) only, so a
    resumed run sees what an uninterrupted one would), and the step's generator for the rest.

    With ``pairs`` (from :func:`medcf.training.world_sets.pair_starts`) the batch holds whole pairs, each pair's two
    films adjacent under one noise and one timestep."""
    rng = np.random.default_rng([options.seed, step, 1])
    generator = step_generator(options.seed, step)
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
    from diffusers import DDPMScheduler

    if options.paired and (options.batch < 2 or options.batch % 2):
        raise InputError(f"--paired needs an even batch of at least 2 (two films a pair), not {options.batch}")
    if options.ground < 0:
        raise InputError(f"--ground is a loss weight, at least 0, not {options.ground:g}")
    if not (options.init or options.autoencoder):
        raise InputError("name the autoencoder: --autoencoder RUN, or --init MODEL_FOLDER to fine-tune a model")
    offline()
    run = RunFolder(options.out, options.resume)
    device = seed_and_device(options.seed, options.threads)
    vae, config, ae_checkpoint, ae_step = autoencoder_from_run(options.init or options.autoencoder)
    vae.to(device)
    resumed = run.resume_state(options.resume)
    # The denoiser's architecture is the one this run started with when resuming, the
    # initial model's when fine-tuning one, else today's default (the miniature for a
    # miniature autoencoder) -- never the copy the autoencoder run wrote into its
    # checkpoint when *it* started, which may be older.
    if resumed is not None:
        config["unet"] = resumed["config"]["unet"]
    elif not options.init:
        config["unet"] = denoiser_for(config)
    data_path, world = training_world_set(options.data, options.n_pairs, options.size, options.data_seed,
                                          options.progress)
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
    deadline, window = Deadline(options.max_minutes or None), []
    bar = progress_bar(options.steps, step, "generator", options.progress)
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
        set_lr(optimizer, warmup_lr(step, options.lr, options.warmup))
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
        ema_update(ema, unet, ema_decay(step, options.ema_decay))
        window.append(time.perf_counter() - tick)
        bar.update(1)
        if due(step, options.log_every, options.steps):
            run.log(step=step, loss=loss.item(), lr=optimizer.param_groups[0]["lr"], s_per_step=float(np.mean(window)),
                    **extras)
            bar.set_postfix(loss=f"{loss.item():.4f}", s_step=f"{np.mean(window):.2f}")
            window = []
        over_time = deadline.passed()
        if due(step, options.checkpoint_every, options.steps) or over_time:
            run.save(step, {"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                            "step": step, "config": config, "kind": "generator",
                            "autoencoder_checkpoint": str(ae_checkpoint)})
        if over_time:
            break
    bar.close()
    result = {"step": step, "seconds_this_session": deadline.seconds()}
    run.log(final=True, **result)
    return result


def _grounding(options: GeneratorOptions, world, encoded, prompt_index: torch.Tensor, unet,
               latent_hw: tuple[int, int]) -> dict:
    """What ``--ground`` needs for the whole run: the lesion masks of every factual film at the
    denoiser's cross-attention grids, each film's finding-token weights, and the processor
    (installed on the training copy's cross-attention sites only, never on the EMA copy)."""
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
