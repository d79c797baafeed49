"""``medcf bench --suite augmentation``: does adding MedCF's counterfactual pairs to a small
training set help a finding classifier more than adding the same number of re-prompted
images? (The MedSteer paper's third experiment, on the simulated world; issue 7.)

Three training sets, one classifier recipe, AUC on the same held-out renders:

- ``rendered``: ``n`` rendered pairs of the simulated world (a film with one finding and the
  same patient without it; seeds from :data:`TRAIN_SEED`);
- ``+medcf/<method>`` (one arm per MedCF method asked for): the same plus ``generated``
  pairs made from scratch by :func:`medcf.editing.pairs.generate_pair` (a sample, then the
  same initial noise re-sampled with the method, everything outside the edit region held);
- ``+reprompt``: the same plus the same factual samples, each with its counterfactual
  re-prompted from the same seed (:func:`medcf.editing.pairs.reprompted`).

The generated films are labelled by their prompts (what a user of the pairs would do): an
``add`` pair is "no finding" → "finding on side", a ``remove`` pair the reverse. Pair specs
(finding, side, severity, action, view) are drawn once from :data:`PAIR_SEED` and shared by
every generated arm, whose factual films are therefore identical: only the counterfactual
method differs. The classifier is the judge's recipe (:func:`medcf.eval.judge_training.train_judge`,
MONAI DenseNet) with the same steps and seed for every arm, repeated with ``repeats`` seeds
— without the judge's autoencoded copies and look augmentation (:data:`CLASSIFIER_RECIPE`):
those would give the rendered arm the generator's look and blur the very difference
between arms the suite measures;
presence AUC per finding on ``heldout`` held-out rendered pairs (seeds from
:data:`HELDOUT_SEED`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from medcf.devices import cpu_model
from medcf.editing.api import load_editor
from medcf.editing.defaults import auto_choices
from medcf.editing.pairs import generate_pair_retrying, reprompted, resample_pair
from medcf.editing.spec import SIDELESS, EditSpec, Method
from medcf.errors import InputError
from medcf.eval.judge_training import JudgeOptions, train_judge
from medcf.eval.suite_names import DEFAULT_PAIR_METHODS
from medcf.io.atomic import new_output_dir, replace_own_text
from medcf.training.world_sets import NONE, WorldSetSpec, render_world_set, save_world_set
from medcf.viz import Tile, difference, render_grid, save_png
from medcf.vocab import Action, Finding, Severity, Side, ViewPosition
from medcf.world.ct import load_chest_ct
from medcf.world.seeds import SeedRange

TRAIN_SEED = SeedRange.AUGMENT_TRAIN.start  # rendered training pairs (apart from the model's, segmenter's and judge's ranges)
HELDOUT_SEED = SeedRange.AUGMENT_HELD_OUT.start  # held-out rendered pairs (apart from every other evaluation range)
PAIR_SEED = SeedRange.PAIRS.start  # the generator's noise seeds and the pair specs
RENDERED, REPROMPT = "rendered", "+reprompt"
CLASSIFIER_RECIPE = {"autoencoded": False, "look": False, "reports": False}  # the classifier learns from its arm only
FILM_SIZE = 256  # rendered films are made at the default model's size; generated ones are resized to it


@dataclass
class AugmentOptions:
    """Settings of the augmentation suite (defaults: the documented full run, docs/bench.md)."""

    out: Path
    n: int = 100  # rendered training pairs (2 films each)
    generated: int | None = None  # generated pairs added per arm (default: n)
    heldout: int = 300  # held-out rendered pairs
    steps: int = 2000  # classifier training steps, every arm
    size: int = 128  # classifier input size
    batch: int = 16
    repeats: int = 2  # classifier seeds first_seed..first_seed+repeats-1
    first_seed: int = 0  # a later run can add seeds to an earlier one (combine_runs)
    methods: tuple[Method, ...] = DEFAULT_PAIR_METHODS  # MedCF's methods for the pairs, one arm each
    threads: int = 1
    network: dict | None = None  # default: the judge's network_definition()
    progress: bool = True
    reuse: tuple[Path, ...] = ()  # earlier runs (--out folders) whose classifiers this run would train identically
    train_arms: tuple[str, ...] = ()  # the arms classifiers are trained (or taken) for; empty: every arm

    def __post_init__(self) -> None:
        self.generated = self.n if self.generated is None else self.generated
        for name in ("n", "generated", "heldout", "steps", "repeats", "batch"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be at least 1, not {getattr(self, name)}")
        if self.first_seed < 0:
            raise InputError(f"--classifier-first-seed must be at least 0, not {self.first_seed}")
        if not 32 <= self.size <= 1024:
            raise InputError(f"--size {self.size} is outside 32..1024")
        self.methods = tuple(dict.fromkeys(Method(m) for m in self.methods))
        if not self.methods:
            raise InputError("--pair-methods is empty")
        self.reuse = tuple(Path(p) for p in self.reuse)
        self.train_arms = tuple(dict.fromkeys(self.train_arms))
        unknown = [arm for arm in self.train_arms if arm not in self.arms]
        if unknown:
            raise InputError(f"--train-arms {' '.join(unknown)}: not an arm of this run "
                             f"(its arms: {' '.join(self.arms)})")
        for run in self.reuse:
            if not (run / "results.json").is_file():
                raise InputError(f"--reuse-classifiers {run}: no results.json (not an augmentation run's --out folder)")

    @property
    def arms(self) -> tuple[str, ...]:
        """Every training set the run builds (and records by digest)."""
        return (RENDERED, *(medcf_arm(m) for m in self.methods), REPROMPT)

    @property
    def trained_arms(self) -> tuple[str, ...]:
        """The arms classifiers are trained for: ``train_arms`` in the run's order, else every arm.
        Two arms compared seed by seed need not wait for the rest (about 5 min a classifier)."""
        return tuple(arm for arm in self.arms if arm in self.train_arms) if self.train_arms else self.arms


def medcf_arm(method: Method) -> str:
    return f"+medcf/{method.value}"


def plan_pair_specs(count: int, method: Method, first_seed: int = PAIR_SEED) -> list[tuple[EditSpec, ViewPosition]]:
    """``count`` pair requests: findings in turn (so every finding is equally represented),
    add and remove alternating per round, side, severity and view drawn from ``first_seed``."""
    rng = np.random.default_rng(first_seed)
    findings = list(Finding)
    plans = []
    for index in range(count):
        finding = findings[index % len(findings)]
        action = Action.ADD if (index // len(findings)) % 2 == 0 else Action.REMOVE
        if finding in SIDELESS:
            side = None
        elif finding is Finding.EDEMA:
            side = Side.BILATERAL
        else:
            side = (Side.LEFT, Side.RIGHT, Side.BILATERAL)[rng.integers(3)]
        severity = list(Severity)[rng.integers(len(Severity))]
        view = (ViewPosition.PA, ViewPosition.AP)[rng.integers(2)]
        plans.append((EditSpec(finding, action, side, None, severity, method, seed=first_seed + index), view))
    return plans


def film_record(spec: EditSpec, view: ViewPosition, finding_present: bool, kind: str) -> dict:
    """A world-set record for a generated film, labelled by its prompt."""
    return {"seed": spec.seed, "kind": kind, "view": view.value, "generated": True,
            "finding": spec.finding.value if finding_present else NONE,
            "side": spec.side.value if finding_present and spec.side else None, "background": []}


def _to_size(films: np.ndarray, size: int) -> np.ndarray:
    if films.shape[-2:] == (size, size):
        return films
    import torch
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(films[:, None]), size=(size, size), mode="area")[:, 0].numpy()


def generate_arms(editor, plans: list[tuple[EditSpec, ViewPosition]], methods: tuple[Method, ...],
                  progress: bool = True) -> dict:
    """Films and records of every generated arm (factual films shared) and a few examples:
    ``{arm: (films, records)}`` plus ``"examples"``."""
    from tqdm import tqdm


    spare = itertools.count(PAIR_SEED + len(plans))
    arms = [*(medcf_arm(m) for m in methods), REPROMPT]
    factual, counterfactual, records = [], {arm: [] for arm in arms}, {arm: [] for arm in arms}
    for index, (spec, view) in enumerate(tqdm(plans, desc="generating pairs", unit="pair", disable=not progress)):
        first = generate_pair_retrying(editor.generator, replace(spec, method=methods[0]), editor.segmenter,
                                       editor.vectors, spare, what=f"generated pair {index}", view=view)
        factual.append(first.factual)
        for method in methods:  # the same accepted seed: the same factual film, re-sampled by each method
            pair = first if method is methods[0] else resample_pair(editor.generator, first, method, editor.vectors)
            counterfactual[medcf_arm(method)].append(pair.counterfactual)
        counterfactual[REPROMPT].append(reprompted(editor.generator, first))
        removing = spec.action is Action.REMOVE
        for arm in arms:
            records[arm] += [film_record(first.spec, view, removing, "factual"),
                             film_record(first.spec, view, not removing, f"counterfactual ({arm})")]
    factual = _to_size(np.stack(factual).astype(np.float32), FILM_SIZE)
    result = {"examples": {"factual": factual[:4], "specs": [p for p, _ in plans[:4]]}}
    for arm in arms:
        films = _to_size(np.stack(counterfactual[arm]).astype(np.float32), FILM_SIZE)
        # factual 0, its counterfactual 0, factual 1, …
        result[arm] = (np.stack([factual, films], 1).reshape(-1, FILM_SIZE, FILM_SIZE), records[arm])
        result["examples"][arm] = films[:4]
    return result


def summarize(rows: list[dict], arms: tuple[str, ...]) -> dict:
    """Per arm: mean AUC per finding over repeats, their mean (macro AUC) and the spread of
    the macro AUC over repeats."""
    summary = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm and r["auc"] is not None]
        per_finding = {f.value: float(np.mean([r["auc"] for r in mine if r["finding"] == f.value]))
                       for f in Finding if any(r["finding"] == f.value for r in mine)}
        macros = [float(np.mean([r["auc"] for r in mine if r["repeat"] == k]))
                  for k in sorted({r["repeat"] for r in mine})]
        summary[arm] = {"auc": per_finding, "macro_auc": float(np.mean(macros)) if macros else float("nan"),
                        "macro_auc_sd": float(np.std(macros)) if macros else float("nan"), "macro_per_repeat": macros}
    return summary


def run_augmentation_suite(options: AugmentOptions, editor=None, ct=None, placement=None) -> dict:
    """Render, generate, train every arm ``repeats`` times, evaluate; write ``results.json``,
    ``results.md`` and ``examples.png`` (and the data and classifiers) into ``options.out``."""
    out = new_output_dir(options.out)
    (out / "data").mkdir()
    editor = editor or load_editor(placement=placement)  # the generator and segmenter; classifiers stay on CPU
    ct = ct or load_chest_ct()
    timings = {}
    tick = time.perf_counter()
    train_spec = WorldSetSpec(options.n, FILM_SIZE, TRAIN_SEED)
    heldout_spec = WorldSetSpec(options.heldout, FILM_SIZE, HELDOUT_SEED, split="heldout")
    rendered_path = render_world_set(train_spec, out / "data" / "rendered-train.npz", ct, options.progress)
    heldout_path = render_world_set(heldout_spec, out / "data" / "rendered-heldout.npz", ct, options.progress)
    timings["render_s"] = round(time.perf_counter() - tick, 1)
    tick = time.perf_counter()
    plans = plan_pair_specs(options.generated, options.methods[0])
    generated = generate_arms(editor, plans, options.methods, options.progress)
    timings["generate_s"] = round(time.perf_counter() - tick, 1)
    sets = {RENDERED: [rendered_path]}
    train_films = {RENDERED: 2 * options.n}  # a rendered pair is two films
    for arm in options.arms[1:]:
        films, records = generated[arm]
        train_films[arm] = train_films[RENDERED] + len(records)
        sets[arm] = [rendered_path, save_world_set(out / "data" / f"generated-{arm_folder(arm)}.npz", films,
                                                   records, {"pairs": len(plans), "arm": arm})]
    digests = {"heldout": world_set_digest(heldout_path),
               **{arm: world_set_digest(paths[-1]) for arm, paths in sets.items()}}
    seeds = list(range(options.first_seed, options.first_seed + options.repeats))
    earlier = reusable_rows([json.loads((run / "results.json").read_text()) for run in options.reuse],
                            asdict(options), digests)
    _examples(generated["examples"], out / "examples.png")
    settings = {"placement": editor.generator.placement(),
                **{k: v for k, v in asdict(options).items() if k not in ("out", "methods", "reuse")},
                "methods": [m.value for m in options.methods], "arms": list(options.trained_arms),
                "train_films": train_films,
                "heldout_films": 2 * options.heldout, "seeds": {"rendered_train": TRAIN_SEED,
                                                                 "rendered_heldout": HELDOUT_SEED,
                                                                 "pairs": PAIR_SEED},
                "labels": "generated films are labelled by their prompts", "data_sha256": digests,
                "machine": machine_description(), **timings}
    if Method.AUTO in options.methods:
        settings["auto_choices"] = auto_choices(editor.generator)
    tick = time.perf_counter()

    def publish(rows: list[dict], reused: dict[str, list[int]], done: list[int]) -> dict:
        """Write results.json and results.md for the seeds trained so far (after every seed, so
        a run stopped part-way keeps every classifier it finished; ``partial`` says so)."""
        now = {**settings, "repeats": len(done), "classifier_seeds": done,
               "reused_classifiers": {"runs": [str(run) for run in options.reuse], "seeds": reused},
               "train_s": round(time.perf_counter() - tick, 1)}
        if len(done) < len(seeds):
            now["partial"] = (f"written after {len(done)} of {len(seeds)} classifier seeds while the run went on; "
                              "a run stopped here keeps these seeds")
        summary = summarize(rows, options.trained_arms)
        replace_own_text(out / "results.json", json.dumps({"rows": rows, "summary": summary, "settings": now},
                                                         indent=1) + "\n")
        replace_own_text(out / "results.md", augmentation_table(summary, now))
        return {"rows": rows, "summary": summary, "settings": now, "out": str(out)}

    with _torch_threads_kept():
        return _train_arms(options, out, seeds, sets, heldout_path, earlier, publish)


def machine_description() -> str:
    """The CPU (and its count) a run's data were made on: two machines render the same sets
    with other bits (CPU sums differ in the last place), so a reader of pooled runs sees
    which seeds shared a machine."""
    import os
    import platform


    return f"{cpu_model() or platform.machine()}, {os.cpu_count()} CPUs"


@contextmanager
def _torch_threads_kept():
    """Training sets torch's thread count for the whole process; restore it after, so a later
    suite in the same process generates its pairs under the count it would have had alone
    (CPU sums are split by thread: pairs made under another count differ in the last bit,
    and so do their digests)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_arms(options: AugmentOptions, out: Path, seeds: list[int], sets: dict[str, list[Path]],
                heldout_path: Path, earlier: dict[tuple[str, int], list[dict]],
                publish: Callable[[list[dict], dict[str, list[int]], list[int]], dict]) -> dict:
    """One classifier per arm and seed, taken from ``earlier`` where it holds it; after each
    seed, ``publish(rows, reused, seeds done)`` with the AUC rows so far (one per finding)
    and, per arm, the seeds taken. Returns the last publication."""
    rows: list[dict] = []
    reused: dict[str, list[int]] = {}
    published: dict = {}
    for index, repeat in enumerate(seeds):
        for arm in options.trained_arms:
            if (arm, repeat) in earlier:
                rows += earlier[arm, repeat]
                reused.setdefault(arm, []).append(repeat)
                continue
            report = train_judge(JudgeOptions(
                out=out / "classifiers" / f"{arm_folder(arm)}-seed{repeat}", size=options.size,
                steps=options.steps, batch=options.batch, seed=repeat, threads=options.threads,
                progress=options.progress, data=sets[arm], heldout_data=heldout_path, network=options.network,
                checkpoint_every=max(options.steps, 1), **CLASSIFIER_RECIPE))
            rows += [{"arm": arm, "repeat": repeat, "finding": f.value, "auc": report["auc"][f.value]}
                     for f in Finding]
        published = publish(rows, reused, seeds[:index + 1])
    return published


def world_set_digest(path: Path) -> str:
    """SHA-256 of a world set's films and records. The ``.npz`` bytes themselves carry zip
    timestamps, so two identical renders on two days differ as files, not in this digest."""
    import hashlib

    with np.load(path) as data:
        digest = hashlib.sha256(np.ascontiguousarray(data["images"]).tobytes())
        digest.update(str(data["records"]).encode())
    return digest.hexdigest()


# settings that must agree before two runs' classifiers can be pooled; timings, threads and
# progress may differ, the classifier seeds must not overlap
COMBINE_KEYS = ("n", "generated", "heldout", "steps", "size", "batch", "network", "methods", "arms",
                "train_films", "heldout_films", "seeds", "auto_choices")


# settings a classifier's result depends on beside its seed, its arm's training data and the
# held-out films (those three are matched by seed and content digest)
CLASSIFIER_KEYS = ("steps", "size", "batch", "network")


def reusable_rows(earlier: list[dict], options: dict, digests: dict[str, str]) -> dict[tuple[str, int], list[dict]]:
    """The rows (one per finding) of earlier runs' classifiers that this run would train
    identically, by ``(arm, seed)``: the same :data:`CLASSIFIER_KEYS` settings, the same
    held-out films and, for that arm, the same training films (the rendered set and the arm's
    own generated set, by content digest). On one machine the suite is deterministic (a
    re-run reproduced the committed rendered and reprompt figures exactly, and equal digests
    of every set), so a session there that changes one arm's pairs re-trains that arm only
    and still compares it, seed by seed, with the arms it did not change. Another machine
    rendered the same sets with other digests, so nothing is taken across machines. Runs
    that recorded no digests are not reused."""
    found: dict[tuple[str, int], list[dict]] = {}
    for result in earlier:
        settings = result["settings"]
        recorded = settings.get("data_sha256", {})
        if any(settings.get(key) != options.get(key) for key in CLASSIFIER_KEYS) \
                or recorded.get("heldout") != digests["heldout"] or recorded.get(RENDERED) != digests[RENDERED]:
            continue
        mine: dict[tuple[str, int], list[dict]] = {}
        for row in result["rows"]:
            if row["arm"] in digests and recorded.get(row["arm"]) == digests[row["arm"]]:
                mine.setdefault((row["arm"], row["repeat"]), []).append(row)
        for key, rows in mine.items():  # the first run that holds a classifier gives it
            found.setdefault(key, rows)
    return found


def run_seeds(settings: dict) -> list[int]:
    """A run's classifier seeds (runs before ``classifier_seeds`` was recorded: 0..repeats-1)."""
    return settings.get("classifier_seeds", list(range(settings["repeats"])))


def combine_runs(results: list[dict], across_machines: bool = False) -> dict:
    """Pool the classifier seeds of several augmentation runs over the same data into one
    result (``rows``, ``summary``, ``settings``), so a later session can add seeds to a
    committed table without re-training the ones it holds.

    Runs must agree on every :data:`COMBINE_KEYS` setting and on the data digests they
    record (a run made before digests were recorded is trusted on its settings: the suite is
    deterministic on CPU, which each run's repeated arms show); their seeds must be disjoint.

    ``across_machines``: runs made on different machines render and generate the same sets
    (same seeds, same settings) with other bits, so their digests differ. They may still be
    pooled when every run trained every arm for each of its seeds: then each seed's arms
    learned from one machine's data and were tested on that machine's held-out films, so the
    paired difference per seed stays a like-for-like comparison, and the machines are one
    more source of spread between seeds. The pooled settings keep each run's digests and
    machine."""
    if len(results) < 2:
        raise InputError("combining needs at least two augmentation runs")
    first = results[0]["settings"]
    arms = tuple(first["arms"])
    seen: set[int] = set()
    digests: dict[str, str] = {}
    for index, result in enumerate(results):
        settings = result["settings"]
        for key in COMBINE_KEYS:
            if settings.get(key) != first.get(key):
                raise InputError(f"run {index + 1} differs from run 1 in {key!r}: "
                                 f"{settings.get(key)!r} vs {first.get(key)!r}")
        seeds = run_seeds(settings)
        if seen & set(seeds):
            raise InputError(f"run {index + 1} repeats classifier seeds {sorted(seen & set(seeds))}")
        seen |= set(seeds)
        if across_machines:
            held = {(row["arm"], row["repeat"]) for row in result["rows"]}
            missing = [f"{arm} seed {seed}" for seed in seeds for arm in arms if (arm, seed) not in held]
            if missing:
                raise InputError(f"run {index + 1} lacks {', '.join(missing)}: runs pooled across machines must "
                                 "train every arm for each of their seeds")
            continue
        for arm, digest in settings.get("data_sha256", {}).items():
            if digests.setdefault(arm, digest) != digest:
                raise InputError(f"run {index + 1} trained arm {arm!r} on other data than an earlier run "
                                 "(made on another machine? pool with across_machines, --across-machines)")
    rows = [row for result in results for row in result["rows"]]
    settings = {**{k: first.get(k) for k in COMBINE_KEYS if k in first},
                "repeats": len(seen), "classifier_seeds": sorted(seen),
                "combined_from": [{"classifier_seeds": run_seeds(r["settings"]),
                                   **{k: r["settings"].get(k) for k in ("render_s", "generate_s", "train_s")}}
                                  for r in results]}
    if across_machines:
        for entry, result in zip(settings["combined_from"], results):
            entry.update({k: result["settings"][k] for k in ("machine", "data_sha256") if k in result["settings"]})
        settings["across_machines"] = ("runs made on different machines: each seed's arms share one machine's "
                                       "data (digests per run below), the paired difference per seed is "
                                       "like for like")
    else:
        settings["data_sha256"] = digests
    return {"rows": rows, "summary": summarize(rows, arms), "settings": settings}


def augmentation_table(summary: dict, settings: dict) -> str:
    findings = [f.value for f in Finding]
    lines = [f"# MedCF augmentation benchmark ({settings['n']} rendered pairs + {settings['generated']} generated "
             f"pairs; classifier {settings['steps']} steps at {settings['size']}², {settings['repeats']} seeds)", "",
             f"Presence AUC on {settings['heldout_films']} held-out rendered films, mean over classifier seeds. "
             "Simulated films; generated films are labelled by their prompts. Research only, never for diagnosis.",
             "", "| arm | macro AUC | sd over seeds | " + " | ".join(findings) + " |",
             "|" + "---|" * (3 + len(findings))]
    for arm, entry in summary.items():
        cells = [f"{entry['auc'][f]:.3f}" if f in entry["auc"] else "–" for f in findings]
        lines.append(f"| {arm} | {entry['macro_auc']:.3f} | {entry['macro_auc_sd']:.3f} | " + " | ".join(cells) + " |")
    if RENDERED in summary:
        base = summary[RENDERED]["macro_auc"]
        lines += ["", "Macro AUC relative to the rendered set alone: "
                  + ", ".join(f"{arm} {summary[arm]['macro_auc'] - base:+.3f}" for arm in summary if arm != RENDERED)
                  + "."]
    if settings.get("partial"):
        lines += ["", f"Partial: {settings['partial']}."]
    if settings.get("across_machines"):
        lines += ["", "Pooled across machines: " + settings["across_machines"] + "."]
    reused = settings.get("reused_classifiers", {}).get("seeds", {})
    if reused:
        lines += ["", "Classifiers taken from " + ", ".join(settings["reused_classifiers"]["runs"])
                  + " (the same settings, held-out films and training films by digest): "
                  + "; ".join(f"{arm} seeds {', '.join(map(str, seeds))}" for arm, seeds in reused.items()) + "."]
    return "\n".join(lines) + "\n"


def arm_folder(arm: str) -> str:
    """``+medcf/regulated+steer`` → ``medcf-regulated-steer`` (a file-system name)."""
    return arm.strip("+").replace("/", "-").replace("+", "-")


def _examples(examples: dict, path: Path) -> None:
    factual, specs = examples["factual"], examples["specs"]
    arms = [arm for arm in examples if arm not in ("factual", "specs")]
    tiles = []
    for index, spec in enumerate(specs):
        words = spec.describe().split()
        tiles.append(Tile(factual[index], "factual: " + " ".join(words[:2]) + "\n" + " ".join(words[2:])))
        for arm in arms:
            name = arm.strip("+")
            tiles += [Tile(examples[arm][index], name),
                      Tile(difference(examples[arm][index], factual[index], 4.0), "its change x4")]
    save_png(render_grid(tiles, "Augmentation suite: generated pairs (one factual film, each counterfactual method)",
                         tile_size=200, columns=1 + 2 * len(arms),
                         footer="Default model learned from simulated radiographs only. Research only, never for "
                                "diagnosis."), path)
