"""``medcf model export``: the bundle's ``models/`` folder (weights and ``medcf_generator.json``)
from the newest checkpoints of an autoencoder run and a generator run, with both runs'
recipes recorded in the config's ``training`` entry."""

from __future__ import annotations

import json
from pathlib import Path

from medcf.errors import InputError
from medcf.models.default import build_unet, save_default_model
from medcf.training.autoencoder import autoencoder_from_run
from medcf.training.engine import newest_checkpoint


def export_default_model(autoencoder_run: str | Path, generator_run: str | Path, out: str | Path,
                         half: bool = True, use_ema: bool = True) -> list[Path]:
    """Write the bundle's ``models/`` folder from the newest checkpoints of both runs."""
    generator_run = Path(generator_run)
    _, state = newest_checkpoint(generator_run, "generator", "run `medcf train generator` first")
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
