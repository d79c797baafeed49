"""How far the benchmark's judge can be trusted on the films it is asked about (issue 15).

Held-out AUC on renders says the judge sees findings; it does not say the judge keeps
quiet where there is nothing to see. Two reports answer that:

- :func:`normal_sample_false_alarms` — films the generator samples from the *normal*
  prompt at its default guidance (seeds from :data:`NORMAL_SAMPLE_SEED`, used nowhere
  else): the share the judge calls each finding. A judge that reads the generator's look
  as disease makes "remove" impossible and "add" noise.
- :func:`sham_flip_rates` — on benchmark inputs, edits that carry no finding, made in the
  very region a real edit of that concept would use (the editor's region, feathered and
  transferred the same way): the region blurred, noise added, its contrast changed, or
  replaced by the autoencoder's reconstruction. A sham *flip* is a film the judge did not
  call done before the sham and calls done after it: a flip rate counted by such a judge
  would be partly sham.

Both run on any :class:`~medcf.models.base.Generator`, so they are re-run whenever the
default model changes (``medcf bench --suite judge``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medcf.anatomy.outputs import load_segmenter
from medcf.bundle import bundle_root
from medcf.devices import loader_kwargs
from medcf.editing.regions import EditRegion, resize_image
from medcf.editing.spec import Method
from medcf.errors import InputError
from medcf.eval.bench import BENCH_SEED, _spec, bundle_judge, in_target_state, render_cases
from medcf.io.atomic import new_output_dir, write_new_text
from medcf.metrics import gaussian_blur
from medcf.models.loaders import load_generator
from medcf.models.sampling import sample
from medcf.text.prompts import prompt
from medcf.viz import Tile, render_grid, save_png
from medcf.vocab import Action, Finding, ViewPosition
from medcf.world.seeds import SeedRange
from medcf.eval.judge import TARGETS, Judge, targets_met

NORMAL_SAMPLE_SEED = SeedRange.NORMAL_SAMPLES.start  # apart from every training, held-out, tuning and benchmark range
NORMAL_SAMPLES = 60
SHAM_PATIENTS = 10  # per finding (× add and remove): benchmark inputs, seeds from bench.BENCH_SEED


@dataclass(frozen=True)
class Sham:
    """A change with no finding in it, applied inside the edit region."""

    name: str
    what: str


SHAMS = (
    Sham("blur", "the region blurred (Gaussian, σ = 1.5 px at 256²)"),
    Sham("noise", "Gaussian noise added (σ = 0.03 of the display range)"),
    Sham("contrast", "contrast stretched by 1.25 about the region's mean"),
    Sham("autoencoder", "the region replaced by the generator's autoencoder reconstruction"),
)


def normal_sample_false_alarms(judge, generator, n: int = NORMAL_SAMPLES, first_seed: int = NORMAL_SAMPLE_SEED,
                               batch: int = 8, progress: bool = True) -> dict:
    """``{"n", "seeds", "guidance", "rates": {finding: share called present}}`` on ``n`` films
    the generator samples from the normal prompt (PA and AP alternating, as the world draws
    both) at its default guidance."""
    from tqdm import tqdm


    views = [ViewPosition.PA if i % 2 == 0 else ViewPosition.AP for i in range(n)]
    films = []
    for start in tqdm(range(0, n, batch), desc="normal samples", unit="batch", disable=not progress):
        chosen = views[start:start + batch]
        seeds = [first_seed + start + i for i in range(len(chosen))]
        films.append(sample(generator, [prompt(view) for view in chosen], seed=seeds, progress=False).images)
    films = np.concatenate(films)
    probabilities = judge.probabilities(films)
    rates = {f.value: round(float(judge.present(probabilities, f).mean()), 4) for f in Finding}
    return {"n": n, "seeds": [first_seed, first_seed + n - 1], "guidance": generator.guidance_scale,
            "prompt": "normal (PA and AP alternating)", "rates": rates}


def sham_film(sham: str, source: np.ndarray, weight: np.ndarray, generator, seed: int) -> np.ndarray:
    """``source`` with sham change ``sham`` inside the feathered region ``weight``."""
    scale = source.shape[0] / 256  # the stated sizes are at 256²
    if sham == "blur":
        changed = gaussian_blur(torch.as_tensor(source), 1.5 * scale).numpy()
    elif sham == "noise":
        changed = source + 0.03 * np.random.default_rng(seed).standard_normal(source.shape).astype(np.float32)
    elif sham == "contrast":
        inside = weight > 0.5
        mean = float(source[inside].mean()) if inside.any() else float(source.mean())
        changed = mean + 1.25 * (source - mean)
    elif sham == "autoencoder":
        small = resize_image(source, tuple(generator.image_size))
        with torch.no_grad():
            reconstruction = generator.decode_images(generator.encode_images(small))[0]
        changed = resize_image(reconstruction, source.shape)
    else:
        raise ValueError(f"unknown sham {sham!r}")
    return np.clip(source + weight * (changed - source), 0.0, 1.0).astype(np.float32)


def region_weight(case, generator) -> np.ndarray:
    """The feathered native-size weight of the region the editor would use for ``case``."""
    return EditRegion.build(case.masks, _spec(case, Method.STEER, {}), tuple(generator.image_size)).native_weight


def sham_flip_rates(judge, generator, segmenter=None, n: int = SHAM_PATIENTS, cases=None,
                    progress: bool = True) -> dict:
    """Per sham, finding and action: the share of benchmark inputs not in the target state
    that a sham edit puts there in the judge's eyes (``flip``), and how many inputs could
    flip (``n``). The region is the editor's for that concept."""
    from tqdm import tqdm


    if cases is None:
        cases = render_cases(tuple(Finding), n, 256, BENCH_SEED, segmenter or load_segmenter())
    before = in_target_state(judge, np.stack([case.source for case in cases]), cases)
    weights = [region_weight(case, generator) for case in cases]
    counts: dict[str, dict[str, dict[str, list[int]]]] = {}
    for sham in tqdm(SHAMS, desc="sham edits", unit="sham", disable=not progress):
        films = [sham_film(sham.name, case.source, weight, generator, case.seed)
                 for case, weight in zip(cases, weights)]
        after = in_target_state(judge, np.stack(films), cases)
        for case, was, now in zip(cases, before, after):
            entry = counts.setdefault(sham.name, {}).setdefault(case.finding.value, {}).setdefault(
                case.action.value, [0, 0])
            if not was:
                entry[0] += int(now)
                entry[1] += 1
    rates = {sham: {finding: {action: {"flip": round(flips / max(total, 1), 4) if total else None, "n": total}
                              for action, (flips, total) in actions.items()}
                    for finding, actions in findings.items()}
             for sham, findings in counts.items()}
    worst = max((entry["flip"] for findings in rates.values() for actions in findings.values()
                 for entry in actions.values() if entry["flip"] is not None), default=None)
    return {"patients_per_finding": len(cases) // (2 * len({c.finding for c in cases})) if cases else 0,
            "first_seed": BENCH_SEED, "shams": {s.name: s.what for s in SHAMS},
            "already_done_before": round(float(np.mean(before)), 4), "worst": worst, "rates": rates}


def judge_field_reports(judge, generator, segmenter=None, progress: bool = True) -> dict:
    """The two reports, as the judge's record keys."""
    return {"normal_sample_false_alarms": normal_sample_false_alarms(judge, generator, progress=progress),
            "sham_flip_rate": sham_flip_rates(judge, generator, segmenter, progress=progress)}


def report_markdown(record: dict) -> str:
    """The judge's reports as Markdown tables (monai_bundle/docs/judge.md, ``medcf bench --suite judge``)."""
    lines = ["| finding | AUC renders | AUC autoencoded | left / right AUC renders | left / right AUC autoencoded "
             "| side (left − right margin) AUC renders / autoencoded | side accuracy renders / autoencoded "
             "| threshold | false alarms on normal samples |", "|---|---|---|---|---|---|---|---|---|"]
    plain = record.get("heldout_report", {}).get("auc", {})
    coded = record.get("heldout_report_autoencoded", {}).get("auc", {})
    alarms = record.get("normal_sample_false_alarms", {}).get("rates", {})
    thresholds = record.get("thresholds", {})

    def fmt(value) -> str:
        return "–" if value is None else f"{value:.3f}"

    reports = [record.get(name, {}) for name in ("heldout_report", "heldout_report_autoencoded")]
    for f in Finding:
        sides = lambda aucs: " / ".join(fmt(aucs.get(f"{f.value}_{s}")) for s in ("left", "right"))  # noqa: E731
        margin = " / ".join(fmt(r.get("side_margin_auc", {}).get(f.value)) for r in reports)
        accuracy = " / ".join(fmt(r.get("side_accuracy", {}).get(f.value)) for r in reports)
        lines.append(f"| {f.value} | {fmt(plain.get(f.value))} | {fmt(coded.get(f.value))} | {sides(plain)} | "
                     f"{sides(coded)} | {margin} | {accuracy} | {fmt(thresholds.get(f.value))} | "
                     f"{fmt(alarms.get(f.value))} |")
    shams = record.get("sham_flip_rate", {}).get("rates", {})
    if shams:
        lines += ["", "Sham flip rate (share of inputs not yet in the target state that the sham puts there; "
                  "add / remove):", "", "| finding | " + " | ".join(shams) + " |", "|---|" + "---|" * len(shams)]
        for f in Finding:
            cells = []
            for sham in shams:
                entry = shams[sham].get(f.value, {})
                cells.append(" / ".join(fmt(entry.get(a.value, {}).get("flip")) for a in Action))
            lines.append(f"| {f.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_judge_suite(out_dir, judge_folder=None, model=None, n: int | None = None, progress: bool = True,
                    placement=None) -> dict:
    """``medcf bench --suite judge``: both reports for a judge and a generator; writes
    ``results.json`` (the reports and which targets miss), ``results.md`` and
    ``examples.png`` (one benchmark input per finding and its four shams)."""
    import json
    from pathlib import Path


    n = SHAM_PATIENTS if n is None else n
    if n < 1:
        raise InputError("--n must be at least 1")
    out = new_output_dir(out_dir)
    judge = Judge.load(judge_folder) if judge_folder else bundle_judge()
    generator = load_generator(model or bundle_root(), **loader_kwargs(placement))
    cases = render_cases(tuple(Finding), n, 256, BENCH_SEED, load_segmenter(placement=placement))
    record = {"heldout_report": judge.record.get("heldout_report", {}),
              "heldout_report_autoencoded": judge.record.get("heldout_report_autoencoded", {}),
              "thresholds": judge.thresholds, "side_margins": judge.side_margins,
              "normal_sample_false_alarms": normal_sample_false_alarms(judge, generator, progress=progress),
              "sham_flip_rate": sham_flip_rates(judge, generator, cases=cases, progress=progress),
              "judge": str(judge_folder or "bundle"), "model": str(Path(model) if model else "bundle"),
              "placement": generator.placement()}
    misses = targets_met(record)
    write_new_text(out / "results.json", json.dumps({**record, "targets": TARGETS, "misses": misses}, indent=1)
                   + "\n")
    write_new_text(out / "results.md", "# Can the judge be trusted?\n\nSimulated films; research only, never for "
                   "diagnosis.\n\n" + report_markdown(record))
    _sham_figure(cases, generator, out / "examples.png")
    return {"record": record, "misses": misses, "out": str(out)}


def _sham_figure(cases, generator, path) -> None:
    tiles = []
    for finding in Finding:
        case = next(c for c in cases if c.finding is finding and c.action is Action.ADD)
        weight = region_weight(case, generator)
        tiles.append(Tile(case.source, f"{finding.value}\ninput"))
        tiles += [Tile(sham_film(s.name, case.source, weight, generator, case.seed), f"sham: {s.name}")
                  for s in SHAMS]
    save_png(render_grid(tiles, "Sham edits in the edit region (no finding added): the judge must not call them done",
                         tile_size=150, columns=1 + len(SHAMS)), path)
