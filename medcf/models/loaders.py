"""Load any supported generative model from a local folder (never from a hub).

=================  =====================================================================
format             folder
=================  =====================================================================
medcf-default      MedCF's bundle (``monai_bundle/``) or its ``models/`` folder
                   (``medcf_generator.json`` + safetensors)
diffusers-sd       a diffusers Stable-Diffusion-family pipeline (``model_index.json``;
                   ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
diffusers-pixart   a diffusers PixArt-α/Σ pipeline (``transformer/``, ``vae/``, T5
                   ``text_encoder/``, ``tokenizer/``, ``scheduler/``)
monai-ldm          a MONAI bundle with a DiffusionModelUNet + AutoencoderKL
                   (``configs/inference.json``, ``models/*.pt``; the CLIP text encoder from
                   ``models/text_encoder`` + ``models/tokenizer`` or ``text_encoder=``)
=================  =====================================================================

Every problem with a folder is one :class:`~medcf.errors.InputError` line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from medcf.errors import InputError
from medcf.models.adapters import DiffusersUNetGenerator, MonaiLDMGenerator, PixArtGenerator
from medcf.models.base import Generator
from medcf.models.convention import apply_convention, read_convention
from medcf.models.default import DefaultGenerator
from medcf.models.package import CONFIG_FILE, ModelPackage, Role, attach_package, weights_folder
from medcf.models.text import load_text_encoder, offline

FORMATS = ("medcf-default", "diffusers-sd", "diffusers-pixart", "monai-ldm")
_SD_CLASSES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
               "AltDiffusionPipeline")
_PIXART_CLASSES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
_AE_KEYS = ("autoencoder_def", "autoencoder", "ae_def", "stage1_def")
_UNET_KEYS = ("diffusion_def", "network_def", "diffusion_model_def", "unet_def", "diffusion")
_SCHEDULER_KEYS = ("noise_scheduler", "scheduler")
_AE_PATH_KEYS = ("load_autoencoder_path", "autoencoder_path", "load_autoencoder_ckpt")
_UNET_PATH_KEYS = ("load_diffusion_path", "diffusion_path", "load_diffusion_ckpt", "load_pretrain_path")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path}: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})") from None


def detect_format(folder: str | Path) -> str:
    """Which of :data:`FORMATS` ``folder`` holds (raises :class:`InputError` if none)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file; a model is a folder (a MONAI bundle or a diffusers pipeline)")
    if (weights_folder(folder) / CONFIG_FILE).is_file():
        return "medcf-default"
    if (folder / "model_index.json").is_file():
        name = _read_json(folder / "model_index.json").get("_class_name", "")
        if name in _PIXART_CLASSES or "PixArt" in name:
            return "diffusers-pixart"
        if name in _SD_CLASSES or "StableDiffusion" in name:
            return "diffusers-sd"
        raise InputError(f"{folder}/model_index.json names pipeline {name!r}; MedCF loads Stable-Diffusion-family "
                         "and PixArt pipelines")
    for name in ("inference.json", "inference.yaml"):
        if (folder / "configs" / name).is_file():
            return "monai-ldm"
    raise InputError(f"{folder} is not a model folder MedCF knows: expected a MedCF bundle (models/{CONFIG_FILE}), "
                     "a diffusers pipeline (model_index.json) or a MONAI bundle (configs/inference.json)")


def load_generator(folder: str | Path, format: str | None = None, *, text_encoder: str | Path | None = None,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   image_size: tuple[int, int] | None = None, package: ModelPackage | None = None) -> Generator:
    """Load the model in ``folder`` (format detected unless given) as a Generator, with its
    package (:mod:`medcf.models.package`; read from ``folder`` unless given), which the
    editor asks for the model's steering vectors, settings, evidence and factor model."""
    offline()
    folder = Path(folder)
    detected = detect_format(folder)
    if format is not None and format != detected:
        raise InputError(f"{folder} holds a {detected} model, not {format}")
    package = package or ModelPackage.load(folder)  # a file changed since packaging fails here, in one line
    convention = read_convention(package.convention) if package.convention else None  # a bad file fails before loading
    if detected == "medcf-default":
        config = package.weights_file(Role.CONFIG)
        home = config.path.parent if config is not None else weights_folder(folder)
        generator = DefaultGenerator.from_folder(home, device=device, dtype=dtype)
    elif detected == "diffusers-sd":
        generator = load_diffusers_sd(folder, device=device, dtype=dtype, image_size=image_size)
    elif detected == "diffusers-pixart":
        generator = load_diffusers_pixart(folder, device=device, dtype=dtype, image_size=image_size)
    else:
        generator = load_monai_ldm(folder, text_encoder=text_encoder, device=device, dtype=dtype,
                                   image_size=image_size)
    if convention is not None:
        if image_size is not None:  # the caller's size wins over the file's
            convention = replace(convention, image_size=None)
        apply_convention(generator, convention)
    attach_package(generator, package)
    return generator


def _component(folder: Path, sub: str, cls):
    path = folder / sub
    if not (path / "config.json").is_file():
        raise InputError(f"{folder} lacks its {sub}/ component ({sub}/config.json is missing)")
    try:
        return cls.from_pretrained(str(folder), subfolder=sub, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot load {path}: {' '.join(str(error).split())[:300]}") from None


def _scheduler_config(folder: Path) -> dict:
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise InputError(f"{folder} lacks scheduler/scheduler_config.json (the noise schedule the model was trained with)")
    return {k: v for k, v in _read_json(path).items() if not k.startswith("_")}


def load_diffusers_sd(folder: Path, device="cpu", dtype=torch.float32, image_size=None) -> Generator:
    from diffusers import AutoencoderKL, UNet2DConditionModel


    unet = _component(folder, "unet", UNet2DConditionModel)
    vae = _component(folder, "vae", AutoencoderKL)
    text = load_text_encoder(folder / "text_encoder", tokenizer_folder=folder / "tokenizer", kind="clip",
                             device=device, dtype=dtype)
    return DiffusersUNetGenerator(unet, vae, text, _scheduler_config(folder), str(folder), image_size=image_size,
                                  device=device, dtype=dtype)


def load_diffusers_pixart(folder: Path, device="cpu", dtype=torch.float32, image_size=None) -> Generator:
    from diffusers import AutoencoderKL, PixArtTransformer2DModel


    transformer = _component(folder, "transformer", PixArtTransformer2DModel)
    vae = _component(folder, "vae", AutoencoderKL)
    max_length = 300 if "Sigma" in _read_json(folder / "model_index.json").get("_class_name", "") else 120
    text = load_text_encoder(folder / "text_encoder", tokenizer_folder=folder / "tokenizer", kind="t5",
                             max_length=max_length, use_mask=True, device=device, dtype=dtype)
    return PixArtGenerator(transformer, vae, text, _scheduler_config(folder), str(folder), image_size=image_size,
                           device=device, dtype=dtype)


# --- MONAI bundles ---------------------------------------------------------------------


def _modernise_targets(node):
    """MONAI Generative Models (``generative.networks...``) moved into MONAI core."""
    if isinstance(node, dict):
        return {k: (v.replace("generative.networks.", "monai.networks.", 1)
                    if k == "_target_" and isinstance(v, str) else _modernise_targets(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_modernise_targets(v) for v in node]
    return node


def _first_key(config: dict, keys, what: str, path: Path) -> str:
    for key in keys:
        if isinstance(config.get(key), dict) and "_target_" in config[key]:
            return key
    raise InputError(f"{path} defines no {what} (looked for {', '.join(keys)} with a _target_)")


def _load_state(module: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise InputError(f"weights file {path} is missing")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle/zip errors have many types
        raise InputError(f"cannot read weights {path}: {' '.join(str(error).split())[:200]}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state)
        return
    except RuntimeError:
        pass
    if hasattr(module, "load_old_state_dict"):  # checkpoints from MONAI Generative Models
        try:
            module.load_old_state_dict(state)
            return
        except (RuntimeError, KeyError, AssertionError):
            pass
    raise InputError(f"weights {path} do not fit the network defined in the bundle's inference config")


def _weights_path(parser, config: dict, keys, fallbacks, folder: Path, what: str) -> Path:
    for key in keys:
        if key in config:
            value = parser.get_parsed_content(key)
            if isinstance(value, (str, Path)):
                return Path(value)
    for name in fallbacks:
        if (folder / "models" / name).is_file():
            return folder / "models" / name
    raise InputError(f"{folder}: no {what} weights found (looked for {', '.join(keys)} in the config and "
                     f"models/{{{','.join(fallbacks)}}})")


def _diffusers_schedule(scheduler) -> dict:
    """A MONAI scheduler's noise schedule as diffusers scheduler config keys (exact betas)."""
    prediction = getattr(scheduler, "prediction_type", "epsilon")
    prediction = getattr(prediction, "value", prediction)
    return {
        "num_train_timesteps": int(scheduler.num_train_timesteps),
        "trained_betas": [float(b) for b in scheduler.betas],
        "prediction_type": {"v_prediction": "v_prediction", "sample": "sample"}.get(str(prediction), "epsilon"),
        "clip_sample": bool(getattr(scheduler, "clip_sample", False)),
        "set_alpha_to_one": bool(getattr(scheduler, "set_alpha_to_one", True)) if hasattr(scheduler, "set_alpha_to_one") else False,
        "steps_offset": int(getattr(scheduler, "steps_offset", 0)),
        "timestep_spacing": "leading",
    }


def load_monai_ldm(folder: Path, text_encoder: str | Path | None = None, device="cpu", dtype=torch.float32,
                   image_size=None) -> Generator:
    from monai.bundle import ConfigParser


    config_path = next(p for p in (folder / "configs" / "inference.json", folder / "configs" / "inference.yaml")
                       if p.is_file())
    try:
        raw = ConfigParser.load_config_file(str(config_path))
    except Exception as error:
        raise InputError(f"cannot read {config_path}: {' '.join(str(error).split())[:200]}") from None
    raw = _modernise_targets(dict(raw))
    raw["bundle_root"] = str(folder)
    ae_key = _first_key(raw, _AE_KEYS, "autoencoder", config_path)
    unet_key = _first_key(raw, _UNET_KEYS, "diffusion network", config_path)
    scheduler_key = _first_key(raw, _SCHEDULER_KEYS, "noise scheduler", config_path)
    parser = ConfigParser(raw)
    try:
        autoencoder = parser.get_parsed_content(ae_key, instantiate=True)
        unet = parser.get_parsed_content(unet_key, instantiate=True)
        scheduler = parser.get_parsed_content(scheduler_key, instantiate=True)
    except Exception as error:
        raise InputError(f"{config_path}: cannot build the networks ({' '.join(str(error).split())[:300]})") from None
    if not getattr(unet, "with_conditioning", False):
        raise InputError(f"{config_path}: the diffusion network has no text conditioning (with_conditioning is false)")
    _load_state(autoencoder, _weights_path(parser, raw, _AE_PATH_KEYS, ("autoencoder.pt", "autoencoder.pth"),
                                           folder, "autoencoder"))
    _load_state(unet, _weights_path(parser, raw, _UNET_PATH_KEYS,
                                    ("diffusion_model.pt", "diffusion_model.pth", "model.pt", "model.pth"),
                                    folder, "diffusion network"))
    scale_factor = float(parser.get_parsed_content("scale_factor")) if "scale_factor" in raw else 1.0
    guidance = float(parser.get_parsed_content("guidance_scale")) if "guidance_scale" in raw else 7.0
    encoder_dir = Path(text_encoder) if text_encoder else folder / "models" / "text_encoder"
    tokenizer_dir = encoder_dir.parent / "tokenizer" if (encoder_dir.parent / "tokenizer").is_dir() else encoder_dir
    if not encoder_dir.is_dir():
        raise InputError(f"{folder}: no local CLIP text encoder; put one in {encoder_dir} (and its tokenizer in "
                         f"{encoder_dir.parent / 'tokenizer'}) or pass --text-encoder DIR (hubs are never used)")
    text = load_text_encoder(encoder_dir, tokenizer_folder=tokenizer_dir, kind="clip", device=device, dtype=dtype)
    if image_size is None:
        image_size = _monai_image_size(folder)
    return MonaiLDMGenerator(unet, autoencoder, text, _diffusers_schedule(scheduler), scale_factor, str(folder),
                             image_size, guidance_scale=guidance, device=device, dtype=dtype)


def _monai_image_size(folder: Path) -> tuple[int, int]:
    meta = folder / "configs" / "metadata.json"
    if meta.is_file():
        outputs = _read_json(meta).get("network_data_format", {}).get("outputs", {})
        for entry in outputs.values():
            shape = entry.get("spatial_shape") if isinstance(entry, dict) else None
            if isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) for v in shape):
                return int(shape[0]), int(shape[1])
    raise InputError(f"{folder}: image size unknown (configs/metadata.json network_data_format outputs give no "
                     "2-D spatial_shape); pass image_size")
