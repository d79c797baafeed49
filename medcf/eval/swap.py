"""``medcf bench --suite swap``: does the factor model disentangle? (docs/methods.md §5, issue 22)

For every finding, ``n`` held-out patient pairs (a, b) from :data:`SWAP_SEED`: patient a
without the finding, patient b with it. The world renders the exact answer: a's
acquisition (CT, pose, habitus, exposure) with b's lesion. Three films are compared with it:

- ``posterior``: ``decode(z_id(a), z_path(b))``, the factor model's swap, decoded whole;
- ``prior``: a's latent plus the change from "no finding" to b's finding, both codes
  named by the attribute prior (what ``--method causal`` starts from);
- ``autoencoded``: a's film through the autoencoder alone (what any film loses on the
  way through the latent space: the swaps' ceiling outside the lesion);
- ``unchanged``: a's film as it is (the reference every swap must beat on the lesion).

Measures: ``flip_rate`` (the judge finds b's finding on b's side), ``dice_lungs`` (lungs
segmented on the swap vs on the truth: a's anatomy kept), ``ssim_outside_lesion``
(swap vs truth outside b's lesion as drawn on a), ``fidelity_psnr`` (vs truth) and
``truth_gain`` (inside the lesion, :func:`medcf.eval.bench.truth_gain`). Films pass
through the autoencoder only where the factor model acts (the swaps); the truth and the
``unchanged`` row are the renders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medcf.anatomy.segment import segment
from medcf.causal.factors import Attributes
from medcf.editing.api import load_editor
from medcf.editing.methods.causal import require_factors, use_factors
from medcf.eval.bench import aggregate_or_none, bundle_judge, markdown_rows, psnr_capped, ssim_mean, truth_gain
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.metrics import dice
from medcf.viz import Tile, difference, render_grid, save_png
from medcf.vocab import Finding, Side
from medcf.world.ct import load_chest_ct
from medcf.world.pairs import PhantomRequest, plan_sample
from medcf.world.render import World, draw_acquisition
from medcf.world.seeds import SeedRange

SWAP_SEED = SeedRange.SWAP.start
KINDS = ("posterior", "prior", "autoencoded", "unchanged")
MEASURES = ("flip_rate", "dice_lungs", "ssim_outside_lesion", "fidelity_psnr", "truth_gain")


def swap_cases(finding: Finding, n: int, size: int, world, first_seed: int = SWAP_SEED):
    """``n`` triples (a without the finding, b with it, a with b's lesion = the truth, the lesion mask)."""
    request = PhantomRequest(n=2 * n, size=size, seed=first_seed + 1000 * list(Finding).index(finding),
                             findings=(finding,))
    cases = []
    for index in range(n):
        seed_a, view_a, _ = plan_sample(request, 2 * index)
        seed_b, view_b, lesion_b = plan_sample(request, 2 * index + 1)
        a = world.render(draw_acquisition(seed_a, view_a, size), lesion_b)
        b = world.render(draw_acquisition(seed_b, view_b, size), lesion_b)
        cases.append({"a": a.counterfactual, "b": b.factual[lesion_b.severity], "truth": a.factual[lesion_b.severity],
                      "lesion": a.lesion_masks[lesion_b.severity] > 0, "spec": lesion_b, "seeds": (seed_a, seed_b)})
    return cases


def swapped_films(generator, factors, case) -> dict[str, np.ndarray]:
    spec = case["spec"]
    with torch.no_grad():
        z_a, z_b = generator.encode_images(np.stack([case["a"], case["b"]])).float().split(1)
        model = factors.model
        mean_b, _ = model.pathology(z_b)
        posterior = model.decode(model.identity(z_a), mean_b)
        target = Attributes.from_spec(spec.finding, spec.side, spec.zone, spec.severity)
        prior = z_a + model.counterfactual_delta(z_a, [Attributes()], [target])
        films = np.clip(generator.decode_images(torch.cat([posterior, prior, z_a])), 0, 1)
    return {"posterior": films[0], "prior": films[1], "autoencoded": films[2], "unchanged": case["a"]}


def run_swap_suite(out_dir: str | Path, n: int = 5, findings=tuple(Finding), size: int = 256, judge=None,
                   editor=None, factors_folder: str | Path | None = None, progress: bool = True, ct=None) -> dict:
    """Run the swap test; writes ``results.json``, ``results.md`` and ``examples.png``."""
    from tqdm import tqdm


    out = new_output_dir(out_dir)
    judge = judge or bundle_judge()
    editor = editor or load_editor()
    generator = editor.generator
    factors = use_factors(generator, factors_folder) if factors_folder is not None else require_factors(generator)
    world = World(ct or load_chest_ct())
    rows, examples = [], []
    for finding in tqdm(findings, desc="swap test", unit="finding", disable=not progress):
        values = {kind: {m: [] for m in MEASURES} for kind in KINDS}
        for case in swap_cases(finding, n, size, world):
            films = swapped_films(generator, factors, case)
            truth_lungs = segment(case["truth"], editor.segmenter, min_confidence=0.0).lung(Side.BILATERAL)
            side = None if finding is Finding.CARDIOMEGALY else (case["spec"].side or Side.BILATERAL)
            probabilities = judge.probabilities(np.stack([films[k] for k in KINDS]))
            for k, kind in enumerate(KINDS):
                film = films[kind]
                lungs = segment(film, editor.segmenter, min_confidence=0.0).lung(Side.BILATERAL)
                values[kind]["flip_rate"].append(float(judge.present(probabilities[k:k + 1], finding, side)[0]))
                values[kind]["dice_lungs"].append(dice(lungs, truth_lungs))
                values[kind]["ssim_outside_lesion"].append(ssim_mean(film, case["truth"], ~case["lesion"]))
                values[kind]["fidelity_psnr"].append(psnr_capped(film, case["truth"]))
                values[kind]["truth_gain"].append(truth_gain(case["a"], film, case["truth"], case["lesion"]))
            if not any(e[0] is finding for e in examples):  # the first pair of each finding
                examples.append((finding, case, films))
        for kind in KINDS:
            rows.append({"concept": finding.value, "swap": kind, "n": n,
                         **{m: aggregate_or_none(items, m == "truth_gain") for m, items in values[kind].items()}})
    settings = {"n": n, "size": size, "first_seed": SWAP_SEED, "findings": [f.value for f in findings],
                "factors": str(factors.path), "factors_recipe": {k: factors.record.recipe.get(k)
                                                                 for k in ("steps", "data", "rare", "seed")}}
    write_new_text(out / "results.json", json.dumps({"rows": rows, "settings": settings}, indent=1) + "\n")
    write_new_text(out / "results.md", _table(rows, settings))
    _figure(examples, out / "examples.png")
    return {"rows": rows, "settings": settings, "out": str(out)}


def summary(rows: list[dict]) -> list[dict]:
    """Means over concepts per swap kind (medians for truth gain)."""
    result = []
    for kind in KINDS:
        mine = [r for r in rows if r["swap"] == kind]
        result.append({"concept": "ALL", "swap": kind, "n": sum(r["n"] for r in mine),
                       **{m: aggregate_or_none([r[m] for r in mine], m == "truth_gain") for m in MEASURES}})
    return result


def _table(rows: list[dict], settings: dict) -> str:
    head = ("concept", "swap", "n", *MEASURES)
    lines = [f"# MedCF swap test (n = {settings['n']} held-out patient pairs per finding, seeds from "
             f"{settings['first_seed']})", "",
             "Patient a's anatomy with patient b's finding, against the world's exact render of it. Simulated "
             "films; research only, never for diagnosis.", "", *markdown_rows(head, summary(rows) + rows)]
    return "\n".join(lines) + "\n"


def _figure(examples, path: Path) -> None:
    tiles = []
    for finding, case, films in examples:
        tiles += [Tile(case["a"], f"{finding.value}\npatient a (without)"), Tile(case["b"], "patient b (with)"),
                  Tile(case["truth"], "truth: a with b's lesion"), Tile(films["posterior"], "posterior swap"),
                  Tile(films["prior"], "prior swap"),
                  Tile(difference(films["prior"], films["autoencoded"], 4.0), "prior swap - autoencoded a, x4")]
    save_png(render_grid(tiles, "MedCF swap test (simulated films; research only)", tile_size=150, columns=6), path)
