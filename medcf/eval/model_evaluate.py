"""Is a MedCF-format model fit to edit with? Figures on the simulated world.

- Autoencoder reconstruction PSNR on held-out renders (seeds >= 1 000 000): what any edit
  in its latent space loses before the editor transfers the change back at native size.
- Prompt faithfulness, by the counterfactual benchmark's judge (the bundle's
  ``models/judge`` unless another is given): per finding, the share of samples from
  held-out prompts in which the judge finds the prompted finding, on the prompted side;
  and per finding, the share of samples from the normal prompt that it calls that finding
  (false alarms). Both at one or several guidance scales side by side, because guidance
  trades sharpness of the prompt against the film's look, and an editor can only draw
  what its model draws (``model_target_rate`` in the benchmark).

The judge replaced an earlier stand-in (a logistic probe on block means) once it existed:
one instrument for the model, the benchmark and the editor's defaults. Its own AUC per
finding is reported beside the rates: a finding it cannot see well (nodule, consolidation,
pneumothorax on the committed judge) gives rates that say more about the judge than the
model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medcf.editing.bundle import resolve_model_dir
from medcf.errors import InputError
from medcf.eval.bench import bundle_judge
from medcf.eval.judge import Judge
from medcf.metrics import psnr
from medcf.models.loaders import load_generator
from medcf.models.sampling import sample
from medcf.training.world_sets import HELD_OUT_SEED_START, NONE, WorldSetSpec, load_world_set, render_world_set
from medcf.viz import Tile, render_grid, save_png
from medcf.vocab import Finding, Side


def _share(values) -> float | None:
    values = list(values)
    return round(float(np.mean(values)), 3) if values else None


def _prompt_sets(records: list[dict], per_finding: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """Per finding, the first ``per_finding`` held-out films' records with that finding alone
    (no co-occurring one, so the prompt names one thing); and twice as many normal ones."""
    alone = [r for r in records if not r.get("background")]
    findings = sorted({r["finding"] for r in alone} - {NONE})
    by_finding = {f: [r for r in alone if r["finding"] == f][:per_finding] for f in findings}
    normal = [r for r in alone if r["finding"] == NONE][:2 * per_finding]
    return by_finding, normal


def _sample_all(generator, records: list[dict], first_seed: int, steps: int, guidance: float) -> np.ndarray:
    films = []
    for start in range(0, len(records), 8):
        chunk = records[start:start + 8]
        films.append(sample(generator, [r["prompt"] for r in chunk], seed=first_seed + start, steps=steps,
                            guidance_scale=guidance, progress=False).images)
    return np.concatenate(films) if films else np.zeros((0, *generator.image_size), np.float32)


def prompt_faithfulness(generator, judge, by_finding: dict[str, list[dict]], normal: list[dict],
                        guidance: float, steps: int = 25, progress: bool = True) -> dict:
    """At one guidance scale: per finding the share of its samples the judge finds it in (on
    the prompted side), per finding the share of normal samples called it, and the films."""
    from tqdm import tqdm


    carried, films = {}, {}
    for index, (finding, records) in enumerate(tqdm(by_finding.items(), desc=f"samples at guidance {guidance:g}",
                                                    unit="finding", disable=not progress)):
        images = _sample_all(generator, records, HELD_OUT_SEED_START + 10_000 * index, steps, guidance)
        probabilities = judge.probabilities(images)
        found = [bool(judge.present(probabilities[i:i + 1], Finding(finding),
                                    Side(r["side"]) if r.get("side") else None)[0]) for i, r in enumerate(records)]
        carried[finding], films[finding] = _share(found), (images, found)
    normal_images = _sample_all(generator, normal, HELD_OUT_SEED_START + 900_000, steps, guidance)
    probabilities = judge.probabilities(normal_images)
    called = {f: judge.present(probabilities, Finding(f)) for f in by_finding}
    alarms = {f: _share(calls) for f, calls in called.items()}
    flagged = np.any(list(called.values()), axis=0) if called else []
    rated = [v for v in carried.values() if v is not None]
    return {"guidance_scale": guidance, "carried": {"mean": _share(rated), "per_finding": carried},
            "normal_false_alarms": {"any_finding": _share(flagged), "per_finding": alarms},
            "films": films, "normal_films": normal_images}


def evaluate_model(model: str | Path | None, per_finding: int = 10, steps: int = 25, out: str | Path | None = None,
                   heldout_pairs: int = 280, progress: bool = True, heldout_data: str | Path | None = None,
                   judge: str | Path | None = None, guidance_scales: list[float] | None = None) -> dict:
    """Autoencoder PSNR and, per guidance scale (default: the model's own), the judge's
    prompt-faithfulness figures; a sample panel into ``out`` if given."""
    generator = load_generator(resolve_model_dir(model))
    if judge is None:
        judge_model = bundle_judge()
    else:
        judge_model = Judge.load(judge)
    scales = list(dict.fromkeys(guidance_scales or [generator.guidance_scale]))
    if any(not np.isfinite(g) or g < 0 for g in scales):
        raise InputError(f"--guidance-scales must be finite and >= 0, got {scales}")
    if heldout_data is None:
        heldout_data = render_world_set(WorldSetSpec(n_pairs=heldout_pairs, size=generator.image_size[0],
                                                     seed=HELD_OUT_SEED_START, split="heldout"), progress=progress)
    heldout = load_world_set(heldout_data)
    if min(r["seed"] for r in heldout.records) < HELD_OUT_SEED_START:
        raise InputError(f"{heldout_data} holds training seeds (< {HELD_OUT_SEED_START}); evaluate on held-out seeds only")
    images = heldout.float_images()
    scores = []
    for start in range(0, len(images), 16):
        recon = generator.decode_images(generator.encode_images(images[start:start + 16]))
        scores.extend(psnr(a, b) for a, b in zip(images[start:start + 16], recon))
    by_finding, normal = _prompt_sets(heldout.records, per_finding)
    runs = [prompt_faithfulness(generator, judge_model, by_finding, normal, g, steps, progress) for g in scales]
    judge_auc = judge_model.record.get("heldout_report", {}).get("auc", {})
    report = {
        "model": generator.source,
        "autoencoder_psnr_db": {"mean": round(float(np.mean(scores)), 2), "min": round(float(np.min(scores)), 2),
                                "images": len(scores),
                                "seeds": f"{HELD_OUT_SEED_START}..{HELD_OUT_SEED_START + len(images) // 2 - 1}"},
        "prompt_faithfulness": [{k: v for k, v in run.items() if k not in ("films", "normal_films")} for run in runs],
        "judge": {"folder": str(judge) if judge is not None else "the bundle's models/judge",
                  "auc_on_heldout_renders": {f: judge_auc.get(f) for f in by_finding},
                  "notice": "rates for a finding the judge sees poorly (AUC < 0.95) are the judge's verdict, "
                            "not a fact about the film"},
        "samples": {"per_finding": {f: len(r) for f, r in by_finding.items()}, "normal": len(normal),
                    "steps": steps, "model_guidance_scale": generator.guidance_scale,
                    "prompts": "held-out world prompts naming one finding (sides, zones, severities as drawn)"},
    }
    if out is not None:
        report["panel"] = str(_panel(runs, by_finding, Path(out) / "samples.png"))
    return report


def _panel(runs: list[dict], by_finding: dict[str, list[dict]], path: Path) -> Path:
    """Per finding one sample per guidance scale, the judge's verdict under each; a normal sample last."""
    tiles = []
    for finding, records in by_finding.items():
        for run in runs:
            images, found = run["films"][finding]
            if len(images):
                tiles.append(Tile(images[0], f"{records[0]['prompt'].split('. ', 1)[-1]}\n"
                                             f"guidance {run['guidance_scale']:g}: judge "
                                             f"{'finds it' if found[0] else 'does not'}"))
    for run in runs:
        if len(run["normal_films"]):
            tiles.append(Tile(run["normal_films"][0], f"normal prompt\nguidance {run['guidance_scale']:g}"))
    title = "MedCF default model: samples (synthetic; learned from simulated radiographs)"
    return save_png(render_grid(tiles, title, tile_size=256, columns=max(2, len(runs) * 2)), path)


__all__ = ["evaluate_model", "prompt_faithfulness"]
