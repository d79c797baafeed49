"""Alternative denoisers shipped beside a model's weights, for the findings they draw better.

A fine-tune can draw one finding more readily than the model it came from and others less
(the attention-grounded fine-tune adds and removes pleural effusion more often on tuning
patients, and draws consolidation where none was asked). Rather than ship one denoiser that
is worse for most findings, the bundle keeps the alternative in
``<weights>/denoisers/<name>/`` (``unet.safetensors``, ``medcf_generator.json``, and its own
steering vectors), listed in the model's package (:mod:`medcf.models.package`), and
``--method auto``'s measured choice (:mod:`medcf.editing.defaults`) names it for the (finding, action) cells where it was measured best. The autoencoder and
the text encoder are the model's own, shared and not reloaded, so latents, masks and
prompts mean the same thing whichever denoiser runs.
"""

from __future__ import annotations

from medcf.errors import InputError
from medcf.models.base import Generator
from medcf.models.default import FORMAT, DefaultGenerator, build_unet, load_weights, read_config
from medcf.models.package import DENOISERS_DIR, Role, attach_package, package_of

__all__ = ["DENOISERS_DIR", "SHARED", "with_denoiser"]

SHARED = ("autoencoder", "text_encoder", "image_size")  # what an alternative must have in common with the model


def with_denoiser(generator: Generator, name: str) -> Generator:
    """``generator`` with denoiser ``name`` (listed in its package) in place of its own, on
    the same device and dtype, sharing its autoencoder and text encoder. Loaded once per
    generator and name."""
    loaded = generator.__dict__.setdefault("_denoiser_variants", {})
    if name not in loaded:
        if generator.format != FORMAT:
            raise InputError(f"alternative denoisers are a {FORMAT} model's; this model is {generator.format}")
        package = package_of(generator).denoiser(name)
        config = read_config(package.folder)
        differ = [key for key in SHARED if config.get(key) != generator.config.get(key)]
        if differ:
            raise InputError(f"denoiser '{name}' ({package.folder}) does not fit {generator.source}: its "
                             f"{', '.join(differ)} differ")
        unet = build_unet(config)
        load_weights(unet, package.weights_file(Role.DENOISER).path)
        variant = DefaultGenerator(config, unet, generator.vae, source=str(package.folder), text=generator.text,
                                   device=generator.device, dtype=generator.dtype)
        variant.base = generator
        attach_package(variant, package)  # pieces tied to the shared autoencoder (the factor model) are the parent's
        loaded[name] = variant
    return loaded[name]
