"""``medcf model check DIR``: a short smoke test of a model folder as the editor will use it.

Why a check of its own: a site that brings its own model needs to know, in a minute and
before the first real edit, (1) that the folder loads and samples a film that is neither
NaN nor black on the chosen device and dtype, (2) that a film survives the editor's
round trip — encode, invert, re-sample, decode — since every edit rests on it, and (3)
which of MedCF's methods cannot work on this model, said plainly rather than discovered
as a strange edit later.

The round trip is measured twice, on one film at the model's working size (by default
the committed simulated sample study's PA film):

- **autoencoder**: ``decode(encode(x))`` against ``x``, the floor of every edit's fidelity
  inside the region (outside it the editor copies the input);
- **DDPM inversion** (the editor's default, edit-friendly): re-sampling with its noise maps
  must give back ``decode(z0)`` up to float rounding — a large error here is a bug or a
  precision problem, not a property of the model;
- **DDIM inversion** (``--inversion ddim``), unguided: approximate; it tells how well the
  model's prior knows the film.

What will not work is read from the model itself: its attention sites (no cross-attention
→ no steering, no word gating), its tokenizer (a finding word the prompt does not keep as
tokens → no pathology enhancement for that finding), and the measurements its package
lists (:mod:`medcf.models.package`: steering vectors, ``edit_defaults.json``, ``evidence.json``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medcf.devices import loader_kwargs, precision_hint
from medcf.domain.calibration import find_calibration
from medcf.editing.defaults import find_defaults
from medcf.editing.evidence import find_reliability
from medcf.editing.film import check_image
from medcf.editing.inversion import ddim_inversion, edit_friendly_inversion
from medcf.editing.records import find_vectors_path
from medcf.editing.regions import resize_image
from medcf.editing.regulation import ORGAN_WORDS, PATHOLOGY_WORDS, word_tokens
from medcf.editing.steering import denoiser_fingerprint
from medcf.errors import InputError, MedCFError
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.io.images import write_png16
from medcf.io.inputs import read_input
from medcf.metrics import psnr
from medcf.models.base import CROSS, SELF, Generator
from medcf.models.convention import Intensity
from medcf.models.loaders import load_generator
from medcf.models.package import package_of
from medcf.models.sampling import sample
from medcf.models.variants import with_denoiser
from medcf.text.prompts import prompt
from medcf.vocab import Finding, Severity, Side, ViewPosition

SAMPLE_STUDY = Path(__file__).resolve().parents[1] / "data" / "sample_study"
VECTOR_SEEDS = 64  # `medcf steer-vectors`' default, for its cost estimate


def _errors(image: np.ndarray, reference: np.ndarray) -> dict:
    """Mean absolute error and PSNR (dB, peak 1) of two [0, 1] images."""
    return {"mae": round(float(np.mean(np.abs(image - reference))), 5), "psnr_db": round(psnr(reference, image), 2)}


@dataclass
class ModelCheck:
    """What ``medcf model check`` found (:meth:`to_dict` for ``--json``, :meth:`lines` for people)."""

    model: dict
    seconds: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)
    reconstruction: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    unavailable: list[str] = field(default_factory=list)
    films: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        record = asdict(self)
        record.pop("films")
        return record

    def lines(self) -> list[str]:
        m, r, s = self.model, self.reconstruction, self.seconds
        lines = [
            f"model: {m['format']} from {m['source']} (package: {m['package'] or 'no manifest, no optional pieces'})",
            f"  working size {m['image_size'][0]}x{m['image_size'][1]}, latent {m['latent']}, "
            f"{m['prediction_type']}, guidance {m['guidance_scale']:g}, intensity convention "
            f"{(m['convention'] or {}).get('intensity', {}).get('mapping', 'identity (no medcf_convention.json)')}; "
            f"denoiser on {m['device']} in {m['dtype']}, "
            f"autoencoder in {m['autoencoder_dtype']}; attention sites: {m['attention_sites']['self']} self, "
            f"{m['attention_sites']['cross']} cross",
            f"load: {s['load']:.1f} s",
            f"sample ({self.sample['steps']} steps, prompt {self.sample['prompt']!r}): {s['sample']:.1f} s, "
            f"{s['per_step']:.3f} s per step; pixels mean {self.sample['mean']:.3f}, sd {self.sample['std']:.3f}",
            f"round trip of {r['film']} at the working size:",
            f"  autoencoder:           MAE {r['autoencoder']['mae']:.4f}, PSNR {r['autoencoder']['psnr_db']} dB",
            f"  DDPM inversion (edit): MAE {r['ddpm_inversion']['mae']:.4f}, PSNR {r['ddpm_inversion']['psnr_db']} dB "
            f"against the autoencoder's film, {s['ddpm_inversion']:.1f} s",
            f"  DDIM inversion:        MAE {r['ddim_inversion']['mae']:.4f}, PSNR {r['ddim_inversion']['psnr_db']} dB "
            f"against the autoencoder's film (unguided, approximate), {s['ddim_inversion']:.1f} s",
            "methods: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in self.methods.items()),
        ]
        if self.unavailable:
            lines.append("what will not work:")
            lines.extend(f"  - {line}" for line in self.unavailable)
        else:
            lines.append("what will not work: nothing found")
        return lines


def _film(image: str | Path | None, generator: Generator) -> tuple[np.ndarray, str]:
    """The film to reconstruct at the working size, in the model's intensities (its convention)."""
    path = Path(image) if image is not None else SAMPLE_STUDY
    display = read_input(path).display
    convention = generator.convention
    mapping = (convention.intensity if convention is not None else Intensity()).fit(display)
    return mapping.forward(resize_image(display, generator.image_size)), str(path)


def _words(generator: Generator) -> tuple[dict[str, list[str]], list[str]]:
    """Per finding, its words that the model's tokens of the editor's prompt do not keep;
    and the organ words of the prompts that regulation cannot gate."""
    missing: dict[str, list[str]] = {}
    organs_missing: set[str] = set()
    for finding in Finding:
        side = None if finding is Finding.CARDIOMEGALY else Side.LEFT
        text = generator.encode_text([prompt(ViewPosition.PA, finding, side=side, severity=Severity.MODERATE,
                                             style=generator.convention)])
        lost = [w for w in PATHOLOGY_WORDS[finding] if w in text.prompts[0].lower() and not word_tokens(text, [w])]
        if lost or not word_tokens(text, PATHOLOGY_WORDS[finding]):
            missing[finding.value] = lost or list(PATHOLOGY_WORDS[finding])
        words = text.prompts[0].lower().replace(".", " ").split()
        organs_missing |= {w for w in ORGAN_WORDS if w in words and not text.token_indices(w)}
    return missing, sorted(organs_missing)


def check_model(folder: str | Path, *, text_encoder: str | Path | None = None, placement=None, steps: int = 25,
                image: str | Path | None = None, seed: int = 0) -> ModelCheck:
    """Load ``folder``, sample one film, invert and reconstruct one film (``image``, default
    the committed sample study), and list what will not work (module docstring)."""
    if steps < 2:
        raise InputError(f"--steps {steps}: the check needs at least 2 steps")
    started = time.perf_counter()
    generator = load_generator(folder, text_encoder=text_encoder, **loader_kwargs(placement))
    sites = generator.attention_sites()
    seconds = {"load": round(time.perf_counter() - started, 2)}
    model = {"format": generator.format, "source": generator.source, "image_size": list(generator.image_size),
             "latent": [generator.latent_channels, *generator.latent_size], "prediction_type": generator.prediction_type,
             "guidance_scale": generator.guidance_scale, **generator.placement(),
             "convention": generator.convention.to_dict() if generator.convention is not None else None,
             "package": str(package_of(generator).manifest) if package_of(generator).manifest else None,
             "attention_sites": {"self": sum(s.kind == SELF for s in sites), "cross": sum(s.kind == CROSS for s in sites)}}

    normal = prompt(ViewPosition.PA, style=generator.convention)
    drawn = sample(generator, [normal], seed=seed, steps=steps, progress=False)  # NaN → InputError naming --dtype
    film = drawn.images[0]
    seconds["sample"] = round(drawn.seconds, 2)
    seconds["per_step"] = round(drawn.seconds / steps, 4)
    check_image(film, "the model's sample", hint=precision_hint(generator.dtype))  # blank or saturated
    sampled = {"prompt": normal, "seed": seed, "steps": steps, "mean": round(float(film.mean()), 4),
               "std": round(float(film.std()), 4)}

    source, film_name = _film(image, generator)
    with torch.no_grad():
        z0 = generator.encode_images(source)
        text, uncond = generator.encode_text([normal]), generator.unconditional(1)
    autoencoded = generator.decode_images(z0)[0]
    tick = time.perf_counter()
    guidance = generator.guidance_scale
    trajectory = edit_friendly_inversion(generator, z0, text, uncond, steps, guidance, seed, 0)
    ddpm = sample(generator, [normal], seed=seed, steps=steps, guidance_scale=guidance, latents=trajectory.latents[0],
                  noise_maps=trajectory.noise_maps, progress=False).images[0]
    seconds["ddpm_inversion"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    trajectory = ddim_inversion(generator, z0, text, None, steps, 1.0)
    ddim = sample(generator, [normal], seed=seed, steps=steps, guidance_scale=1.0, latents=trajectory.latents[0],
                  progress=False).images[0]
    seconds["ddim_inversion"] = round(time.perf_counter() - tick, 2)
    reconstruction = {"film": film_name, "autoencoder": _errors(autoencoded, source),
                      "ddpm_inversion": _errors(ddpm, autoencoded), "ddim_inversion": _errors(ddim, autoencoded),
                      "ddpm_inversion_vs_input": _errors(ddpm, source)}

    unavailable: list[str] = []
    cross = model["attention_sites"]["cross"]
    fingerprint = denoiser_fingerprint(generator)
    vectors = find_vectors_path(generator, fingerprint)
    defaults, reliability = find_defaults(generator), find_reliability(generator)
    missing, organs_missing = _words(generator) if cross else ({}, [])
    methods = {"regulated": bool(cross and model["attention_sites"]["self"]), "steer": bool(cross and vectors),
               "regulated+steer": bool(cross and model["attention_sites"]["self"] and vectors),
               "baselines": True}
    if not cross:
        unavailable.append("the denoiser has no cross-attention: steering, pathology enhancement, the anatomy-word "
                           "gating and the energy have nothing to act on; only the baselines (reprompt, sdedit, "
                           "ddim+p2p, pnp) and the DDPM round trip work")
    if not model["attention_sites"]["self"]:
        unavailable.append("the denoiser has no self-attention: regulation's organ gating has nothing to act on")
    for finding, words in missing.items():
        unavailable.append(f"{finding}: the model's tokens of the editor's prompt do not keep {', '.join(words)!s} "
                           "(tokenizer pieces or truncation): no pathology enhancement for this finding, so "
                           "`regulated` cannot add or remove it")
    if organs_missing:
        unavailable.append(f"regulation cannot gate the organ word(s) {', '.join(organs_missing)}: they are not "
                           "tokens of the model's prompts")
    if cross and vectors is None:
        image_steps = (1 + len(Finding)) * VECTOR_SEEDS * steps
        minutes = image_steps * seconds["per_step"] / 60
        unavailable.append(f"no steering vectors for these weights: `steer` and `regulated+steer` need `medcf "
                           f"steer-vectors --model {folder} --finding all` first ({image_steps} sampled image-steps "
                           f"at {VECTOR_SEEDS} seeds; at most {minutes:.0f} min at this run's one-image speed of "
                           f"{seconds['per_step']:.3f} s per step — it samples 16 seeds to a batch, which took the "
                           "default model from that bound's 82 min to 311 s on one CPU thread)")
    if defaults is None:
        fallback = "steer" if vectors is not None else "regulated (no steering vectors either)"
        unavailable.append(f"no edit_defaults.json measured for these weights in the model's package: --method auto "
                           f"falls back to {fallback} at depth 0.5 (give --method and --depth yourself, or measure "
                           "with the bench's tuning seeds and list it with `medcf model package`)")
    for name in sorted({c.denoiser for actions in (defaults.choices if defaults else {}).values()
                        for c in actions.values() if c.denoiser}):
        try:  # an alternative denoiser the measured choice names must load, or auto fails on those findings
            with_denoiser(generator, name)
        except MedCFError as error:
            unavailable.append(f"--method auto: {error}")
    if reliability is None:
        unavailable.append("no evidence.json measured for these weights in the model's package: the model's own check "
                           "says 'not checked' for every finding, so --passes has no effect")
    if find_calibration(generator) is None:
        unavailable.append(f"no domain calibration for these weights in the model's package: edits are never refused "
                           f"as outside the model's domain and are recorded 'domain: not calibrated' (calibrate with "
                           f"`medcf model calibrate-domain {folder} --films FOLDER` on held-out films of its own kind)")
    seconds["total"] = round(time.perf_counter() - started, 2)
    return ModelCheck(model, seconds, sampled, reconstruction, methods, unavailable,
                      films={"sample": film, "input": source, "autoencoder": autoencoded, "ddpm": ddpm, "ddim": ddim})


def write_check(check: ModelCheck, out: str | Path) -> list[Path]:
    """``check.json`` and the films (16-bit PNGs) into ``out`` (new or empty)."""
    import json


    folder = new_output_dir(out)
    paths = [write_png16(folder / f"{name}.png", film) for name, film in check.films.items()]
    paths.append(write_new_text(folder / "check.json", json.dumps(check.to_dict(), indent=2) + "\n"))
    return paths
