"""Generative models behind MedCF's editor: one :class:`Generator` interface and its
adapters, one sampler and the loaders for real
chest radiograph diffusion models kept in local folders.

- :mod:`~medcf.models.base` — :class:`Generator`, :class:`AttentionSite`,
  :class:`AttentionProcessor` (the seam the editor's attention control plugs into).
- :mod:`~medcf.models.sampling` — :func:`sample`: DDIM with classifier-free guidance for any Generator.
- :mod:`~medcf.models.adapters` — diffusers UNet (Stable-Diffusion family), diffusers PixArt,
  MONAI DiffusionModelUNet bundles.
- :mod:`~medcf.models.default` — MedCF's default model (the MONAI bundle in ``monai_bundle/``).
- :mod:`~medcf.models.loaders` — :func:`load_generator`: any of the above from a local folder.
- :mod:`~medcf.training.world_sets` — world sets from the simulated world (training is in the lab:
  :mod:`medcf.training.autoencoder`, :mod:`medcf.training.generator`).

Heavy libraries (torch, diffusers, transformers) are imported on first use: importing
this package costs nothing, so ``medcf --help`` stays fast.
"""

from importlib import import_module

_EXPORTS = {
    "AttentionProcessor": "base", "AttentionSite": "base", "Generator": "base", "TextEncoding": "base",
    "RecordingProcessor": "base", "sample": "sampling", "SampleResult": "sampling",
    "DefaultGenerator": "default", "load_generator": "loaders", "detect_format": "loaders",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'medcf.models' has no attribute {name!r}")
    return getattr(import_module(f"medcf.models.{_EXPORTS[name]}"), name)
