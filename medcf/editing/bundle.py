"""What ``monai_bundle/configs/*.json`` instantiate: the bundle shell holds no logic of its own.

``python -m monai.bundle run --config_file monai_bundle/configs/inference.json
--prompt "PA chest radiograph. Normal chest radiograph." --seed 3`` builds
:class:`GenerateImages` (``_target_``) around :meth:`DefaultGenerator.from_folder
<medcf.models.default.DefaultGenerator.from_folder>` and calls ``run()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import medcf
from medcf.bundle import bundle_root as root
from medcf.devices import loader_kwargs
from medcf.editing.initno import optimize_initial_noise
from medcf.editing.regulation import pathology_tokens
from medcf.errors import InputError
from medcf.io.atomic import write_new_text
from medcf.io.images import write_png16
from medcf.models.default import CONFIG_NAME
from medcf.models.loaders import load_generator
from medcf.models.sampling import sample
from medcf.vocab import Finding


def bundle_root() -> str:
    """The bundle folder (:func:`medcf.bundle.bundle_root`), as configs want it: a string."""
    return str(root())


def trained_model_dir(root: str | Path | None = None) -> Path:
    """The bundle's ``models/`` folder, with a clear error while it holds no trained model."""
    folder = Path(root or bundle_root()) / "models"
    if not (folder / CONFIG_NAME).is_file():
        raise InputError(f"{folder} holds no trained default model yet ({CONFIG_NAME} is missing): train it with "
                         "`medcf train autoencoder` + `medcf train generator` and `medcf model export`, "
                         "or pass --model DIR")
    return folder


def resolve_model_dir(model: str | Path | None) -> Path:
    """``model``, or the bundle's trained model when None."""
    return Path(model) if model is not None else trained_model_dir()


@dataclass
class GenerateImages:
    """Sample ``num_images`` images for ``prompt`` and write them into ``output_dir``."""

    generator: object
    output_dir: str
    prompt: str
    seed: int = 0
    num_images: int = 1
    steps: int = 25
    guidance_scale: float | None = None
    progress: bool = True
    optimize_noise: bool = False  # InitNO (medcf.editing.initno) before each image: rare findings

    def run(self) -> list[Path]:
        if not str(self.prompt).strip():
            raise InputError("the prompt is empty")
        if not self.optimize_noise:
            result = sample(self.generator, [str(self.prompt)] * int(self.num_images), seed=int(self.seed),
                            steps=int(self.steps), guidance_scale=self.guidance_scale, progress=self.progress)
            return write_samples(result, self.output_dir, self.generator)
        paths = []
        for seed in range(int(self.seed), int(self.seed) + int(self.num_images)):  # one optimised noise per image
            noise, report = optimized_prompt_noise(self.generator, str(self.prompt), seed, int(self.steps))
            result = sample(self.generator, [str(self.prompt)], seed=seed, steps=int(self.steps),
                            guidance_scale=self.guidance_scale, progress=self.progress, latents=noise)
            paths += write_samples(result, self.output_dir, self.generator, {"noise_optimization": report.to_dict()})
        return paths


def optimized_prompt_noise(generator, prompt: str, seed: int, steps: int):
    """InitNO's noise for ``prompt`` from ``seed``: every finding the prompt names
    (:data:`medcf.editing.regulation.PATHOLOGY_WORDS`) must be attended to at the first step."""
    text = generator.encode_text([prompt])
    tokens = sorted({token for finding in Finding for token in pathology_tokens(text, finding)})
    if not tokens:
        raise InputError("--optimize-noise: the prompt names no finding whose tokens could be attended to")
    return optimize_initial_noise(generator, text, tokens, seed, steps)


def write_samples(result, output_dir: str | Path, generator, extra: dict | None = None) -> list[Path]:
    """One 16-bit PNG and one JSON record per image (plus ``extra``); new files only."""
    out = Path(output_dir)
    paths = []
    for image, prompt, seed in zip(result.images, result.prompts, result.seeds):
        stem = f"generated-seed{seed}-steps{result.steps}"
        paths.append(write_png16(out / f"{stem}.png", image))
        record = {
            "prompt": prompt, "seed": seed, "steps": result.steps, "guidance_scale": result.guidance_scale,
            "sampler": result.settings, "model": {"format": generator.format, "source": generator.source},
            "placement": generator.placement(),
            "medcf": medcf.__version__, "seconds": round(result.seconds, 2), "image": f"{stem}.png",
            "notice": medcf.RESEARCH_ONLY_NOTICE, **(extra or {}),
        }
        paths.append(write_new_text(out / f"{stem}.json", json.dumps(record, indent=2) + "\n"))
    return paths


def generate_to_folder(model: str | Path | None, prompt: str, out: str | Path, seed: int = 0, steps: int = 25,
                       guidance_scale: float | None = None, num_images: int = 1, text_encoder=None,
                       progress: bool = True, placement=None, optimize_noise: bool = False) -> list[Path]:
    """``medcf generate``: load any supported model folder (on ``placement``, a
    :class:`medcf.devices.Placement`; default CPU float32) and write samples."""
    generator = load_generator(resolve_model_dir(model), text_encoder=text_encoder, **loader_kwargs(placement))
    return GenerateImages(generator, str(out), prompt, seed, num_images, steps, guidance_scale, progress,
                          optimize_noise).run()
