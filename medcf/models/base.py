"""The one interface every generative model sits behind, and its attention sites.

A :class:`Generator` is a latent diffusion model taken apart into the pieces the
sampler and the editor need: text encoding, autoencoder encode/decode, one
denoiser call, the scheduler it was trained with, and the list of its attention
layers (:class:`AttentionSite`).

Attention sites are the seam of docs/methods.md §0: every site, whatever the
architecture (diffusers UNet, diffusers PixArt DiT, MONAI DiffusionModelUNet),
runs its attention through a MedCF :class:`AttentionProcessor` once one is
installed, with the same arguments everywhere:

- ``attend(site, query, key, value, scale=..., bias=...)`` with query/key/value
  shaped ``(batch, heads, tokens, head_dim)``: return the attended values, same
  shape as ``query``. Override it to add a bias to the logits, reweight or record
  the probabilities (:func:`attention_logits`, :func:`attention_probabilities`).
- ``output(site, hidden)``: the layer output after the output projection and before
  the residual add, ``(batch, tokens, channels)``; override it to steer activations.

Image tokens are in row-major order over ``site.grid_for(latent_hw)``; for
classifier-free guidance the batch is ``[unconditional..., conditional...]``
(:func:`medcf.models.sampling.sample` says so through ``branches``).
With no MedCF processor installed a site runs the model's own code, bit for bit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medcf.errors import InputError

SELF, CROSS = "self", "cross"


# --- text -------------------------------------------------------------------


@dataclass
class TextEncoding:
    """Encoded prompts: token embeddings ``(batch, tokens, dim)``, the attention mask
    ``(batch, tokens)`` (1 = real token) when the model uses one, and the token strings,
    so the editor can find the tokens that name a finding or an organ."""

    embeddings: torch.Tensor
    tokens: list[list[str]]
    prompts: list[str]
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def token_indices(self, word: str, prompt_index: int = 0) -> list[int]:
        """Indices of the tokens of ``word`` (sub-word pieces included) in one prompt."""
        pieces = [t.lower().removeprefix("##").removeprefix("▁").removesuffix("</w>").strip("Ġ")
                  for t in self.tokens[prompt_index]]
        word = word.lower()
        hits: list[int] = []
        for start in range(len(pieces)):
            joined = ""
            for end in range(start, len(pieces)):
                joined += pieces[end]
                if joined == word:
                    hits.extend(range(start, end + 1))
                    break
                if not word.startswith(joined):
                    break
        return hits

    @staticmethod
    def cat(parts: Sequence["TextEncoding"]) -> "TextEncoding":
        masks = [p.mask for p in parts]
        mask = None if any(m is None for m in masks) else torch.cat(masks)  # type: ignore[arg-type]
        return TextEncoding(torch.cat([p.embeddings for p in parts]), [t for p in parts for t in p.tokens],
                            [s for p in parts for s in p.prompts], mask)

    def repeat(self, times: int) -> "TextEncoding":
        mask = None if self.mask is None else self.mask.repeat(times, 1)
        return TextEncoding(self.embeddings.repeat(times, 1, 1), self.tokens * times, self.prompts * times, mask)


# --- attention processors ---------------------------------------------------------


def attention_logits(query: torch.Tensor, key: torch.Tensor, scale: float,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """``QKᵀ·scale + bias``, shape ``(batch, heads, queries, keys)``."""
    logits = torch.einsum("bhqd,bhkd->bhqk", query.float(), key.float()) * scale
    return logits if bias is None else logits + bias.float()


def attention_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float,
                            bias: torch.Tensor | None = None) -> torch.Tensor:
    return attention_logits(query, key, scale, bias).softmax(dim=-1)


class AttentionProcessor:
    """What an attention site runs once installed. This base class reproduces
    standard scaled dot-product attention; subclasses override :meth:`attend`
    and/or :meth:`output`. One instance may serve many sites (it gets the site)."""

    def attend(self, site: "AttentionSite", query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
               scale: float, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scale)

    def output(self, site: "AttentionSite", hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class RecordingProcessor(AttentionProcessor):
    """Keeps the attention probabilities of every call, per site name (opt-in, for
    maps, energies and tests): ``maps[name]`` is a list of ``(batch, heads, q, k)``."""

    def __init__(self, keep: Iterable[str] | None = None):
        self.keep = None if keep is None else set(keep)
        self.maps: dict[str, list[torch.Tensor]] = {}
        self.outputs: dict[str, list[torch.Tensor]] = {}

    def attend(self, site, query, key, value, *, scale, bias=None):
        probabilities = attention_probabilities(query, key, scale, bias)
        if self.keep is None or site.name in self.keep:
            self.maps.setdefault(site.name, []).append(probabilities.detach())
        return torch.einsum("bhqk,bhkd->bhqd", probabilities.to(value.dtype), value)

    def output(self, site, hidden):
        if self.keep is None or site.name in self.keep:
            self.outputs.setdefault(site.name, []).append(hidden.detach())
        return hidden


class _TokenCounter(AttentionProcessor):
    """Probe: how many image tokens each site sees at the native latent size."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}

    def attend(self, site, query, key, value, *, scale, bias=None):
        self.tokens[site.name] = int(query.shape[2])
        return super().attend(site, query, key, value, scale=scale, bias=bias)


def probe_token_counts(sites: Sequence["AttentionSite"], call: Callable[[], object]) -> dict[str, int]:
    """How many image tokens each of ``sites`` sees during ``call()`` (one denoiser call, run
    without gradients), keyed by site name; the sites' own attention is restored after."""
    counter = _TokenCounter()
    for site in sites:
        site.set_processor(counter)
    try:
        with torch.no_grad():
            call()
    finally:
        for site in sites:
            site.set_processor(None)
    return counter.tokens


# --- attention sites ----------------------------------------------------------------


@dataclass(eq=False)
class AttentionSite:
    """One attention layer of a denoiser.

    ``name`` is the module's dotted name in the denoiser, ``kind`` is ``"self"`` or
    ``"cross"``, ``stride`` how many latent pixels one image token spans per side
    (so ``grid_for(latent_hw)`` is the token grid ``(h, w)``), ``heads`` the head count.
    """

    name: str
    kind: str
    module: torch.nn.Module
    heads: int
    backend: "SiteBackend"
    stride: int = 0
    latent_size: tuple[int, int] = (0, 0)
    processor: AttentionProcessor | None = field(default=None, repr=False)

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(h, w)`` at the model's native latent size."""
        return self.grid_for(self.latent_size)

    def grid_for(self, latent_hw: tuple[int, int]) -> tuple[int, int]:
        if self.stride <= 0:
            raise RuntimeError(f"attention site {self.name}: token grid not probed yet")
        return math.ceil(latent_hw[0] / self.stride), math.ceil(latent_hw[1] / self.stride)

    def set_processor(self, processor: AttentionProcessor | None) -> None:
        """Route this site through ``processor``; ``None`` restores the model's own code."""
        if processor is None:
            if self.processor is not None:
                self.backend.remove(self)
        else:
            self.backend.install(self, processor)
        self.processor = processor


class SiteBackend(ABC):
    """How processors are installed on one family of attention modules."""

    @abstractmethod
    def install(self, site: AttentionSite, processor: AttentionProcessor) -> None: ...

    @abstractmethod
    def remove(self, site: AttentionSite) -> None: ...


class DiffusersBackend(SiteBackend):
    """diffusers ``Attention`` modules: through their own ``set_processor``."""

    def __init__(self) -> None:
        self._original: dict[int, Any] = {}

    def install(self, site, processor):
        if id(site.module) not in self._original:
            self._original[id(site.module)] = site.module.processor
        site.module.set_processor(_DiffusersBridge(site, processor))

    def remove(self, site):
        original = self._original.pop(id(site.module), None)
        if original is not None:
            site.module.set_processor(original)


class _DiffusersBridge:
    """A diffusers attention processor that hands q, k, v to a MedCF processor
    (the steps of diffusers' AttnProcessor2_0, with the attention itself delegated)."""

    def __init__(self, site: AttentionSite, processor: AttentionProcessor):
        self.site, self.processor = site, processor

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, source_length, _ = hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        bias = None
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, source_length, batch)
            bias = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = self.processor.attend(self.site, query, key, value, scale=attn.scale, bias=bias)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        hidden_states = self.processor.output(self.site, hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class MonaiBackend(SiteBackend):
    """MONAI ``SABlock`` / ``CrossAttentionBlock``: they have no processor slot, so the
    module's ``forward`` is replaced on the instance (and deleted to restore it)."""

    def install(self, site, processor):
        module = site.module

        def forward(x: torch.Tensor, context: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None):
            return _monai_attention(module, site, processor, x, context, attn_mask)

        module.forward = forward  # instance attribute shadows the class method

    def remove(self, site):
        site.module.__dict__.pop("forward", None)


def _monai_attention(module, site, processor, x, context, attn_mask):
    if getattr(module, "rel_positional_embedding", None) is not None or getattr(module, "causal", False):
        raise InputError(f"attention site {site.name}: relative position embeddings and causal masks are not "
                         "supported by MedCF's attention control")
    if getattr(module, "use_combined_linear", False):
        q, k, v = module.input_rearrange(module.qkv(x))
    else:
        source = x if context is None else context
        q = module.input_rearrange(module.to_q(x))
        k = module.input_rearrange(module.to_k(source))
        v = module.input_rearrange(module.to_v(source))
    if module.attention_dtype is not None:
        q, k = q.to(module.attention_dtype), k.to(module.attention_dtype)
    bias = None
    if attn_mask is not None:  # SABlock semantics: (batch, keys), 0 = masked
        bias = torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(attn_mask == 0, float("-inf"))
        bias = bias[:, None, None, :]
    out = processor.attend(site, q, k, v.to(q.dtype), scale=module.scale, bias=bias)
    out = module.out_rearrange(out.to(x.dtype))
    if getattr(module, "include_fc", True):
        out = module.out_proj(out)
    out = module.drop_output(out)
    return processor.output(site, out)


# --- the generator ---------------------------------------------------------------


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters: names, shapes and float32 values."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class Generator(ABC):
    """A text-conditioned latent diffusion model, as the sampler and the editor see it.

    Images are ``(batch, 1, H, W)`` float tensors in [0, 1], bright = dense
    (MONOCHROME2 display values, as :mod:`medcf.io` and the simulated world produce);
    each adapter converts to its model's own convention (RGB in [-1, 1] for
    Stable-Diffusion VAEs, ...). Latents are already multiplied by the model's
    scaling factor, i.e. what the denoiser sees.
    """

    #: short name of the folder format ("medcf-default", "diffusers-sd", "diffusers-pixart", "monai-ldm")
    format: str = ""
    #: what the denoiser predicts: "epsilon", "v_prediction" or "sample"
    prediction_type: str = "epsilon"
    #: default classifier-free guidance scale of this model
    guidance_scale: float = 4.0
    #: dtype of the latents, the scheduler's arithmetic and the inversions: float32 whatever
    #: ``dtype`` is. Only the denoiser runs in ``dtype`` (each adapter's :meth:`denoise` casts in
    #: and out): latents kept in bfloat16 broke the edit-friendly inversion's exact round trip
    #: (0.07 mean absolute error on a tiny SD model against < 1e-4 with float32 latents).
    latent_dtype: torch.dtype = torch.float32
    #: the model's input convention (:mod:`medcf.models.convention`), when its folder states one
    convention: Any = None

    def __init__(self, source: str, image_size: tuple[int, int], latent_channels: int, vae_factor: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.source = source
        self.image_size = tuple(image_size)
        self.latent_channels = latent_channels
        self.vae_factor = vae_factor
        self.device = torch.device(device)
        self.dtype = dtype
        self._sites: list[AttentionSite] | None = None
        self._fingerprint: str | None = None  # set when the denoiser was cast at load (:meth:`weights_fingerprint`)
        #: the model this one is an alternative denoiser of (:mod:`medcf.models.variants`), sharing its
        #: autoencoder and text encoder, so records tied to those are found beside the model's weights
        self.base: Generator | None = None

    # -- what each adapter provides ------------------------------------------------
    @property
    @abstractmethod
    def denoiser(self) -> torch.nn.Module:
        """The network called once per step (UNet or DiT)."""

    @abstractmethod
    def encode_text(self, prompts: Sequence[str]) -> TextEncoding: ...

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 1, H, W)`` in [0, 1] to scaled latents (the posterior mean)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents to images ``(B, 1, H, W)`` in [0, 1] (clipped)."""

    @abstractmethod
    def denoise(self, latents: torch.Tensor, timesteps: torch.Tensor, text: TextEncoding) -> torch.Tensor:
        """One denoiser call: the prediction (``prediction_type``), same shape as ``latents``, in
        ``latent_dtype`` (the network itself runs in ``dtype``)."""

    @property
    @abstractmethod
    def scheduler_config(self) -> dict:
        """The noise schedule the model was trained with, as diffusers scheduler config keys."""

    @abstractmethod
    def _attention_modules(self) -> list[tuple[str, str, torch.nn.Module, int, SiteBackend]]:
        """``(name, kind, module, heads, backend)`` of every attention layer of the denoiser."""

    # -- shared ----------------------------------------------------------------------
    @property
    def latent_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.vae_factor, self.image_size[1] // self.vae_factor

    def make_scheduler(self, kind: str = "ddim"):
        """A fresh diffusers scheduler on this model's noise schedule (DDIM by default)."""
        from diffusers import DDIMScheduler, DDPMScheduler

        config = dict(self.scheduler_config)
        config["prediction_type"] = self.prediction_type
        # Configs written for other samplers (PixArt's DPM-Solver) do not state these, and
        # DDIM's defaults (clip x0 to [-1, 1], a last step to alpha = 1) are pixel-space
        # defaults that corrupt latents and leave the last step without noise to invert.
        config.setdefault("clip_sample", False)
        config.setdefault("set_alpha_to_one", False)
        cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[kind]
        return cls.from_config(config)

    def attention_sites(self) -> list[AttentionSite]:
        """Every attention layer, with its kind and token grid (probed once with one
        denoiser call at the native latent size)."""
        if self._sites is None:
            sites = [AttentionSite(name, kind, module, heads, backend, latent_size=self.latent_size)
                     for name, kind, module, heads, backend in self._attention_modules()]
            latents = torch.zeros(1, self.latent_channels, *self.latent_size, device=self.device,
                                  dtype=self.latent_dtype)
            tokens = probe_token_counts(
                sites, lambda: self.denoise(latents, torch.tensor([1], device=self.device), self.encode_text([""])))
            area = self.latent_size[0] * self.latent_size[1]
            for site in sites:
                if site.name not in tokens:
                    raise RuntimeError(f"attention site {site.name} was not called by the denoiser")
                site.stride = max(1, round(math.sqrt(area / tokens[site.name])))
            self._sites = sites
        return self._sites

    def set_attention_processor(self, processor: AttentionProcessor | Mapping[str, AttentionProcessor | None] | None,
                                kinds: Iterable[str] = (SELF, CROSS)) -> None:
        """Install one processor on every site of ``kinds`` (or a per-name mapping);
        ``None`` restores the model's own attention everywhere."""
        kinds = set(kinds)
        for site in self.attention_sites():
            if isinstance(processor, Mapping):
                if site.name in processor:
                    site.set_processor(processor[site.name])
            else:
                site.set_processor(processor if site.kind in kinds else None)

    def unconditional(self, batch: int, negative_prompt: str = "") -> TextEncoding:
        return self.encode_text([negative_prompt] * batch)

    def encode_images(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Numpy/tensor images ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` in [0, 1] to latents."""
        tensor = torch.as_tensor(np.asarray(images, dtype=np.float32)) if isinstance(images, np.ndarray) else images
        if tensor.ndim == 2:
            tensor = tensor[None, None]
        elif tensor.ndim == 3:
            tensor = tensor[:, None]
        with torch.no_grad():
            return self.encode(tensor.to(self.device, torch.float32))

    def decode_images(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to float32 numpy images ``(B, H, W)`` in [0, 1]."""
        with torch.no_grad():
            return self.decode(latents.to(self.device, self.latent_dtype))[:, 0].float().cpu().numpy()

    def weights_fingerprint(self) -> str:
        """The identity of the denoiser's weights (:func:`module_fingerprint`), which steering
        vectors, ``edit_defaults.json`` and ``evidence.json`` are tied to. Taken *before* a
        ``--dtype`` cast when there was one (a float32 model run in bfloat16 is still the same
        model, and its files still apply); otherwise hashed afresh on every call, so weights
        changed in place (training) get a new identity."""
        return self._fingerprint or module_fingerprint(self.denoiser)

    def _place_denoiser(self, module: torch.nn.Module) -> torch.nn.Module:
        """The denoiser frozen on ``device`` in ``dtype``; its fingerprint is kept first if the
        cast could round its weights."""
        first = next(module.parameters(), None)
        if first is not None and first.dtype != self.dtype:
            self._fingerprint = module_fingerprint(module)
        module = module.to(self.device) if first is None or first.dtype == self.dtype else module.to(self.device, self.dtype)
        return module.eval().requires_grad_(False)

    def placement(self) -> dict:
        """Where and in which precision each part runs (every output's provenance records it):
        the denoiser on ``device`` in ``dtype``; the autoencoder (and the text encoder) in
        float32 whatever ``dtype`` is (:mod:`medcf.devices` says why)."""
        autoencoder = getattr(self, "vae", None) or getattr(self, "autoencoder", None)
        first = next(autoencoder.parameters(), None) if autoencoder is not None else None
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "autoencoder_dtype": str(first.dtype).removeprefix("torch.") if first is not None else None}

    def describe(self) -> dict:
        sites = self.attention_sites()
        return {
            "format": self.format, "source": self.source, "image_size": list(self.image_size), **self.placement(),
            "latent": [self.latent_channels, *self.latent_size], "prediction_type": self.prediction_type,
            "denoiser_parameters": sum(p.numel() for p in self.denoiser.parameters()),
            "attention_sites": {"self": sum(s.kind == SELF for s in sites), "cross": sum(s.kind == CROSS for s in sites),
                                "grids": sorted({s.grid for s in sites}, reverse=True)},
        }
