"""Alternative denoisers shipped beside a model's weights, for the findings they draw better.

A fine-tune can draw one finding more readily than the model it came from and others less
(the attention-grounded fine-tune adds and removes pleural effusion more often on tuning
patients, and draws consolidation where none was asked). Rather than ship one denoiser that
is worse for most findings, the bundle keeps the alternative in
``<weights>/denoisers/<name>/`` (``unet.safetensors``, ``medcf_generator.json``, and its own
steering vectors) and ``--method auto``'s measured choice (:mod:`medcf.editing.defaults`)
names it for the (finding, action) cells where it was measured best. The autoencoder and
the text encoder are the model's own, shared and not reloaded, so latents, masks and
prompts mean the same thing whichever denoiser runs.
"""

from __future__ import annotations

from pathlib import Path

from medcf.bundle import WEIGHTS_DIR
from medcf.errors import InputError
from medcf.models.base import Generator

DENOISERS_DIR = "denoisers"  # beside the weights (the model folder or its models/)
SHARED = ("autoencoder", "text_encoder", "image_size")  # what an alternative must have in common with the model


def denoiser_folder(generator: Generator, name: str) -> Path:
    """``<weights>/denoisers/<name>``; one line naming what is missing when it is not there."""
    from medcf.models.default import CONFIG_NAME, UNET_FILE

    source = Path(generator.source)
    for base in (source, source / WEIGHTS_DIR):
        folder = base / DENOISERS_DIR / name
        if (folder / UNET_FILE).is_file() and (folder / CONFIG_NAME).is_file():
            return folder
    raise InputError(f"the measured choice names denoiser '{name}', but {source / DENOISERS_DIR / name} "
                     f"lacks {UNET_FILE} or {CONFIG_NAME}")


def with_denoiser(generator: Generator, name: str) -> Generator:
    """``generator`` with denoiser ``name`` in place of its own, on the same device and dtype,
    sharing its autoencoder and text encoder. Loaded once per generator and name."""
    from medcf.models.default import FORMAT, UNET_FILE, DefaultGenerator, build_unet, load_weights, read_config

    loaded = generator.__dict__.setdefault("_denoiser_variants", {})
    if name not in loaded:
        if generator.format != FORMAT:
            raise InputError(f"alternative denoisers are a {FORMAT} model's; this model is {generator.format}")
        folder = denoiser_folder(generator, name)
        config = read_config(folder)
        differ = [key for key in SHARED if config.get(key) != generator.config.get(key)]
        if differ:
            raise InputError(f"denoiser '{name}' ({folder}) does not fit {generator.source}: its "
                             f"{', '.join(differ)} differ")
        unet = build_unet(config)
        load_weights(unet, folder / UNET_FILE)
        variant = DefaultGenerator(config, unet, generator.vae, source=str(folder), text=generator.text,
                                   device=generator.device, dtype=generator.dtype)
        variant.base = generator  # records tied to the shared autoencoder (the factor model) are the model's
        loaded[name] = variant
    return loaded[name]
