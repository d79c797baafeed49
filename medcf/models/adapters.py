"""Adapters: each model family behind the :class:`~medcf.models.base.Generator` interface.

- :class:`DiffusersUNetGenerator` — a diffusers ``UNet2DConditionModel`` + ``AutoencoderKL``
  (Stable-Diffusion family, e.g. RoentGen-style CXR models; also MedCF's default model).
- :class:`PixArtGenerator` — a diffusers ``PixArtTransformer2DModel`` (DiT with
  cross-attention; the MedSteer backbone) + ``AutoencoderKL`` + T5.
- :class:`MonaiLDMGenerator` — MONAI ``DiffusionModelUNet`` + ``AutoencoderKL`` (the MONAI
  model-zoo CXR latent diffusion bundle) + a CLIP text encoder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from medcf.models.base import (CROSS, SELF, DiffusersBackend, Generator, MonaiBackend, SiteBackend, TextEncoding)

TextFn = Callable[[Sequence[str]], TextEncoding]


def diffusers_attention_modules(network: torch.nn.Module, backend: SiteBackend):
    """``(name, kind, module, heads, backend)`` of every diffusers ``Attention`` in ``network``."""
    found = []
    for key in network.attn_processors:  # "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor"
        name = key.removesuffix(".processor")
        module = network.get_submodule(name)
        found.append((name, CROSS if module.is_cross_attention else SELF, module, int(module.heads), backend))
    return found


class DiffusersVAEMixin:
    """Grey images in [0, 1] <-> a diffusers ``AutoencoderKL`` (1 or 3 channels, [-1, 1])."""

    vae: torch.nn.Module

    def _vae_factors(self) -> tuple[float, float]:
        config = self.vae.config
        return float(getattr(config, "scaling_factor", 1.0) or 1.0), float(getattr(config, "shift_factor", 0.0) or 0.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        scale, shift = self._vae_factors()
        x = images.to(self.device, self.vae.dtype) * 2.0 - 1.0
        if self.vae.config.in_channels == 3:
            x = x.repeat(1, 3, 1, 1)
        mean = self.vae.encode(x).latent_dist.mean
        return ((mean - shift) * scale).to(self.latent_dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        scale, shift = self._vae_factors()
        x = self.vae.decode(latents.to(self.vae.dtype) / scale + shift).sample
        x = x.mean(dim=1, keepdim=True) if x.shape[1] != 1 else x
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


class TextConditionedGenerator(Generator):
    """What the three loaded formats share: a text function, the training scheduler's
    configuration and the prediction type it implies, a guidance scale."""

    def _condition_on(self, text: TextFn, scheduler_config: dict, guidance_scale: float) -> None:
        self.text = text
        self._scheduler_config = dict(scheduler_config)
        self.prediction_type = self._scheduler_config.get("prediction_type", "epsilon")
        self.guidance_scale = guidance_scale

    @property
    def scheduler_config(self) -> dict:
        return self._scheduler_config

    def encode_text(self, prompts):
        return self.text(prompts)


class DiffusersUNetGenerator(DiffusersVAEMixin, TextConditionedGenerator):
    format = "diffusers-sd"

    def __init__(self, unet, vae, text: TextFn, scheduler_config: dict, source: str,
                 image_size: tuple[int, int] | None = None, guidance_scale: float = 7.5,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        sample = unet.config.sample_size
        sample = (sample, sample) if isinstance(sample, int) else tuple(sample)
        image_size = image_size or (sample[0] * factor, sample[1] * factor)
        super().__init__(source, image_size, int(unet.config.in_channels), factor, device, dtype)
        self.unet = self._place_denoiser(unet)
        self.vae = vae.to(self.device, torch.float32).eval().requires_grad_(False)  # always fp32: medcf.devices
        self._condition_on(text, scheduler_config, guidance_scale)

    @property
    def denoiser(self):
        return self.unet

    def denoise(self, latents, timesteps, text):
        out = self.unet(latents.to(self.dtype), timesteps,
                        encoder_hidden_states=text.embeddings.to(self.device, self.dtype)).sample
        return out.to(self.latent_dtype)

    def _attention_modules(self):
        return diffusers_attention_modules(self.unet, DiffusersBackend())


class PixArtGenerator(DiffusersVAEMixin, TextConditionedGenerator):
    format = "diffusers-pixart"

    def __init__(self, transformer, vae, text: TextFn, scheduler_config: dict, source: str,
                 image_size: tuple[int, int] | None = None, guidance_scale: float = 4.5,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        sample = int(transformer.config.sample_size)
        image_size = image_size or (sample * factor, sample * factor)
        latent_channels = int(transformer.config.in_channels)
        super().__init__(source, image_size, latent_channels, factor, device, dtype)
        self.transformer = self._place_denoiser(transformer)
        self.vae = vae.to(self.device, torch.float32).eval().requires_grad_(False)  # always fp32: medcf.devices
        self._condition_on(text, scheduler_config, guidance_scale)
        self.learned_sigma = int(transformer.config.out_channels or latent_channels) == 2 * latent_channels

    @property
    def denoiser(self):
        return self.transformer

    def denoise(self, latents, timesteps, text):
        conditions = {"resolution": None, "aspect_ratio": None}
        if getattr(self.transformer, "use_additional_conditions", False):
            batch = latents.shape[0]
            size = torch.tensor([self.image_size], dtype=self.dtype, device=self.device).repeat(batch, 1)
            ratio = torch.tensor([[self.image_size[0] / self.image_size[1]]], dtype=self.dtype,
                                 device=self.device).repeat(batch, 1)
            conditions = {"resolution": size, "aspect_ratio": ratio}
        mask = None if text.mask is None else text.mask.to(self.device)
        out = self.transformer(latents.to(self.dtype), encoder_hidden_states=text.embeddings.to(self.device, self.dtype),
                               encoder_attention_mask=mask, timestep=timesteps,
                               added_cond_kwargs=conditions).sample
        out = out.to(self.latent_dtype)
        return out[:, : self.latent_channels] if self.learned_sigma else out

    def _attention_modules(self):
        return diffusers_attention_modules(self.transformer, DiffusersBackend())


class MonaiLDMGenerator(TextConditionedGenerator):
    format = "monai-ldm"

    def __init__(self, unet, autoencoder, text: TextFn, scheduler_config: dict, scale_factor: float, source: str,
                 image_size: tuple[int, int], guidance_scale: float = 7.0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        factor = 2 ** (len(autoencoder.encoder.channels) - 1) if hasattr(autoencoder.encoder, "channels") else 8
        super().__init__(source, image_size, int(unet.in_channels), factor, device, dtype)
        self.unet = self._place_denoiser(unet)
        self.autoencoder = autoencoder.to(self.device, torch.float32).eval().requires_grad_(False)  # medcf.devices
        self._condition_on(text, scheduler_config, guidance_scale)
        self.scale_factor = float(scale_factor)

    @property
    def denoiser(self):
        return self.unet

    def encode(self, images):
        z_mu, _ = self.autoencoder.encode(images.to(self.device, torch.float32))
        return (z_mu * self.scale_factor).to(self.latent_dtype)

    def decode(self, latents):
        x = self.autoencoder.decode_stage_2_outputs(latents.float() / self.scale_factor)
        return x.float().clamp(0.0, 1.0)

    def denoise(self, latents, timesteps, text):
        out = self.unet(latents.to(self.dtype), timesteps=timesteps, context=text.embeddings.to(self.device, self.dtype))
        return out.to(self.latent_dtype)

    def _attention_modules(self):
        from monai.networks.blocks import CrossAttentionBlock, SABlock

        backend = MonaiBackend()
        conditioned = bool(getattr(self.unet, "with_conditioning", False))
        found = []
        for name, module in self.unet.named_modules():
            if isinstance(module, CrossAttentionBlock):
                kind = CROSS if conditioned else SELF
            elif isinstance(module, SABlock):
                kind = SELF
            else:
                continue
            found.append((name, kind, module, int(module.num_heads), backend))
        return found
