"""The current headline figures, stated once: ``docs/results/current.json``.

Every figure a reader sees in README.md, docs/bench.md or a model card comes from this one
file, and every figure in it names the run (``source``, a path inside the repository) it was
read from. The docs hold generated tables between marker comments::

    <!-- current:begin TABLE -->
    ...
    <!-- current:end -->

``python -m medcf.eval.current --write`` regenerates them; ``--check`` exits 1 when any
differs (``tests/test_docs.py`` runs the same check). A suite's run becomes current with
``python -m medcf.eval.current --record SECTION RUN_FOLDER``, which reads the run's
``results.json`` through the same extractor the tests use to prove that every recorded figure
is what its source says. Suites do not write this file themselves: most runs (``make bench``,
tests, tuning sweeps) are not the headline, so making one current is a deliberate act.

Lab side (``medcf.eval``): the product never imports this module.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from medcf.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CURRENT = ROOT / "docs" / "results" / "current.json"
SCHEMA = 1

# The seven findings in the order every table lists them.
FINDINGS = ("atelectasis", "cardiomegaly", "consolidation", "edema", "nodule",
            "pleural_effusion", "pneumothorax")
ACTIONS = ("add", "remove")
# The counterfactual suite's methods shown beside ``auto`` (the baselines, their +mask forms
# and MedCF's named methods), in table order.
COMPARISON_METHODS = ("causal", "regulated", "steer", "regulated+steer",
                      "reprompt", "sdedit", "ddim+p2p", "pnp",
                      "reprompt+mask", "sdedit+mask", "ddim+p2p+mask", "pnp+mask")
# Per-row metrics of the counterfactual suite kept as current figures, with their rounding.
CF_METRICS: dict[str, int] = {"flip_rate": 2, "flip_rate_unedited": 2, "model_target_rate": 2,
                              "ssim_out": 4, "dice_lungs": 3, "fidelity_psnr": 1,
                              "truth_gain": 2, "sec_per_edit": 2}


class Section(str, enum.Enum):
    """The sections of current.json; each has one source run."""

    COUNTERFACTUAL_AUTO = "counterfactual_auto"
    COUNTERFACTUAL_METHODS = "counterfactual_methods"
    AUGMENTATION = "augmentation"
    JUDGE = "judge"
    MODEL = "model"
    AUTO_CHOICES = "auto_choices"
    DEMO_JUDGE = "demo_judge"
    SPEED = "speed"


# ------------------------------------------------------------------ load, validate, update


def load_current(path: Path = CURRENT) -> dict[str, Any]:
    """current.json, validated: every section known, with a source and a figures mapping."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no current results file") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    validate(data, path)
    return data


def validate(data: Any, path: Path | str = CURRENT) -> None:
    """Raise InputError (one line) unless ``data`` has current.json's shape."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("sections"), dict):
        raise InputError(f"{path}: expected {{'schema': {SCHEMA}, 'sections': {{...}}}}")
    known = {s.value for s in Section}
    for name, section in data["sections"].items():
        if name not in known:
            raise InputError(f"{path}: unknown section {name!r} (known: {', '.join(sorted(known))})")
        if not isinstance(section, dict) or not isinstance(section.get("source"), str) \
                or not section["source"] or not isinstance(section.get("figures"), dict):
            raise InputError(f"{path}: section {name!r} needs a non-empty 'source' and a 'figures' mapping")


def update_current(section: Section | str, figures: Mapping[str, Any], source: str,
                   *, measured: str | None = None, note: str | None = None,
                   path: Path = CURRENT) -> dict[str, Any]:
    """Replace one section of current.json and write the file atomically (temp file + rename).

    ``source`` is the run folder or file (repository-relative) the figures were read from;
    ``measured`` the date of the run. Other sections are kept as they are.
    """
    name = Section(section).value
    data = load_current(path) if Path(path).exists() else {"schema": SCHEMA, "sections": {}}
    entry: dict[str, Any] = {"source": source}
    if measured:
        entry["measured"] = measured
    if note:
        entry["note"] = note
    entry["figures"] = json.loads(json.dumps(figures))
    data["sections"][name] = entry
    data["sections"] = {s.value: data["sections"][s.value] for s in Section if s.value in data["sections"]}
    validate(data, path)
    _write_atomic(Path(path), json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return data


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ extractors (run files -> figures)


def _read_json(source: str | Path) -> Any:
    path = ROOT / source if not Path(source).is_absolute() else Path(source)
    if path.is_dir():
        path = path / "results.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found (the section's source run)") from None


def _cf_means(rows: list[dict[str, Any]], method: str, action: str) -> dict[str, float]:
    """Over the seven findings, as the suite's own ``ALL`` row states them: means, except truth
    gain, the median of the per-finding medians (one finding's large negative gain would
    otherwise stand for all seven)."""
    chosen = [r for r in rows if r["method"] == method and r["action"] == action]
    if not chosen:
        raise InputError(f"no rows for {method} {action} in the source run")
    pool = {k: (statistics.median if k == "truth_gain" else statistics.fmean) for k in CF_METRICS}
    return {k: round(pool[k]([r[k] for r in chosen]), nd) for k, nd in CF_METRICS.items()}


def counterfactual_auto_figures(source: str | Path) -> dict[str, Any]:
    """``medcf bench --suite counterfactual --methods auto``: means and every cell of ``auto``."""
    rows = _read_json(source)["rows"]
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["method"] == "auto":
            cells.setdefault(r["concept"], {})[r["action"]] = {k: round(r[k], nd) for k, nd in CF_METRICS.items()}
    n = sorted({r["n"] for r in rows if r["method"] == "auto"})
    return {"n_per_cell": n[0] if len(n) == 1 else n,
            "mean": {a: _cf_means(rows, "auto", a) for a in ACTIONS},
            "cells": {f: cells[f] for f in FINDINGS if f in cells}}


def counterfactual_methods_figures(source: str | Path) -> dict[str, Any]:
    """The comparison methods' means per action (every method the run holds except ``auto``)."""
    rows = _read_json(source)["rows"]
    present = {r["method"] for r in rows}
    return {a: {m: _cf_means(rows, m, a) for m in COMPARISON_METHODS if m in present} for a in ACTIONS}


def augmentation_figures(source: str | Path) -> dict[str, Any]:
    """Macro AUC per arm, and ``+medcf/auto`` minus ``+reprompt`` paired by classifier seed."""
    run = _read_json(source)
    summary = run["summary"]
    arms = {arm: {"macro_auc": round(s["macro_auc"], 3), "macro_auc_sd": round(s["macro_auc_sd"], 3),
                  "auc": {f: round(s["auc"][f], 3) for f in FINDINGS if f in s["auc"]}}
            for arm, s in summary.items()}
    figures: dict[str, Any] = {"arms": arms, "classifier_seeds": len(next(iter(summary.values()))["macro_per_repeat"])}
    if "+medcf/auto" in summary and "+reprompt" in summary:
        diff = [a - b for a, b in zip(summary["+medcf/auto"]["macro_per_repeat"], summary["+reprompt"]["macro_per_repeat"])]
        figures["auto_minus_reprompt"] = {
            "mean": round(statistics.fmean(diff), 3),
            "standard_error": round(statistics.stdev(diff) / len(diff) ** 0.5, 3),
            "ahead": sum(d > 0 for d in diff), "seeds": len(diff)}
    return figures


def judge_figures(source: str | Path) -> dict[str, Any]:
    """The committed judge's record: presence and side AUCs on renders and autoencoded renders,
    thresholds, false alarms on the model's normal samples, sham flips."""
    record = _read_json(source)
    reports = {"renders": record["heldout_report"], "autoencoded": record["heldout_report_autoencoded"]}
    shams = record["sham_flip_rate"]["rates"]
    cells = [(sham, f, a, v["flip"]) for sham, per in shams.items() for f, acts in per.items() for a, v in acts.items()]
    worst = max(cells, key=lambda c: c[3])
    r4 = lambda x: round(x, 4)  # noqa: E731
    per_finding = {}
    for f in FINDINGS:
        row: dict[str, Any] = {
            "auc": {k: r4(rep["auc"][f]) for k, rep in reports.items()},
            "threshold": r4(record["heldout_report"]["threshold"][f]),
            "normal_false_alarm": r4(record["normal_sample_false_alarms"]["rates"][f]),
            "sham_flip": {sham: {a: r4(shams[sham][f][a]["flip"]) for a in ACTIONS} for sham in shams},
        }
        if f"{f}_left" in record["heldout_report"]["auc"] and f in record["heldout_report"].get("side_accuracy", {}):
            row["side_auc_left_right"] = {k: [r4(rep["auc"][f"{f}_left"]), r4(rep["auc"][f"{f}_right"])]
                                          for k, rep in reports.items()}
            row["side_margin_auc"] = {k: r4(rep["side_margin_auc"][f]) for k, rep in reports.items()}
            row["side_accuracy"] = {k: r4(rep["side_accuracy"][f]) for k, rep in reports.items()}
        per_finding[f] = row
    return {"findings": per_finding, "normal_samples": record["normal_sample_false_alarms"]["n"],
            "sham_cells_over_0_05": sum(c[3] > 0.05 for c in cells), "sham_cells": len(cells),
            "sham_worst": {"sham": worst[0], "finding": worst[1], "action": worst[2], "flip": round(worst[3], 2)}}


def model_figures(source: str | Path) -> dict[str, Any]:
    """``medcf model evaluate``: autoencoder PSNR and how often samples carry the prompted finding."""
    record = _read_json(source)
    by_guidance = {str(int(p["guidance_scale"])) if float(p["guidance_scale"]).is_integer() else str(p["guidance_scale"]):
                   {"carried_mean": round(p["carried"]["mean"], 2),
                    "carried": {f: round(p["carried"]["per_finding"][f], 2) for f in FINDINGS}}
                   for p in record["prompt_faithfulness"]}
    ae = record["autoencoder_psnr_db"]
    return {"autoencoder_psnr_db": {"mean": ae["mean"], "min": ae["min"], "images": ae["images"], "seeds": ae["seeds"]},
            "prompt_faithfulness": by_guidance}


def auto_choices_figures(source: str | Path) -> dict[str, Any]:
    """The shipped per-finding settings of ``--method auto`` and their tuning figures."""
    record = _read_json(source)
    keys = ("method", "depth", "guidance", "renoise", "denoiser", "flip_rate", "fidelity_psnr")
    cells = {f: {a: {k: record["choices"][f][a].get(k) for k in keys} for a in ACTIONS if a in record["choices"][f]}
             for f in FINDINGS if f in record["choices"]}
    for per in cells.values():
        for c in per.values():
            c["flip_rate"] = round(c["flip_rate"], 2)
            c["fidelity_psnr"] = round(c["fidelity_psnr"], 1)
    return {"rule": record["rule"], "cells": cells}


# Sections whose figures are read from a results file by an extractor; the others
# (demo_judge, speed) are printed by a script and recorded with that script named as source.
EXTRACTORS: dict[Section, Callable[[str | Path], dict[str, Any]]] = {
    Section.COUNTERFACTUAL_AUTO: counterfactual_auto_figures,
    Section.COUNTERFACTUAL_METHODS: counterfactual_methods_figures,
    Section.AUGMENTATION: augmentation_figures,
    Section.JUDGE: judge_figures,
    Section.MODEL: model_figures,
    Section.AUTO_CHOICES: auto_choices_figures,
}


# ------------------------------------------------------------------ rendering


def _pct(x: float) -> str:
    return f"{round(100 * x)} %"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _src(current: dict[str, Any], section: Section) -> str:
    return current["sections"][section.value]["source"]


def _link(source: str, from_dir: str) -> str:
    """A Markdown link to ``source`` (repository-relative) from a page in ``from_dir``."""
    rel = os.path.relpath(ROOT / source, ROOT / from_dir)
    return f"[`{source}`]({rel})"


def render_readme_headline(current: dict[str, Any]) -> str:
    """README's short table: the few figures a newcomer needs, each with its source."""
    s = current["sections"]
    auto, methods = s["counterfactual_auto"]["figures"], s["counterfactual_methods"]["figures"]
    add, rem = auto["mean"]["add"], auto["mean"]["remove"]
    best_mask = max(("reprompt+mask", "sdedit+mask", "ddim+p2p+mask", "pnp+mask"),
                    key=lambda m: methods["add"][m]["fidelity_psnr"])
    aug = s["augmentation"]["figures"]
    d = aug["auto_minus_reprompt"]
    demo = s["demo_judge"]["figures"]
    speed = s["speed"]["figures"]
    model = s["model"]["figures"]
    link = lambda sec: _link(_src(current, sec), ".")  # noqa: E731
    rows = [
        ["`auto` (default) finding added / removed, by the judge",
         f"{_pct(add['flip_rate'])} / {_pct(rem['flip_rate'])}", link(Section.COUNTERFACTUAL_AUTO)],
        ["`auto` fidelity to the true counterfactual, add / remove",
         f"{add['fidelity_psnr']} / {rem['fidelity_psnr']} dB", link(Section.COUNTERFACTUAL_AUTO)],
        ["`auto` SSIM outside the region; lung Dice input vs output, add / remove",
         f"{min(add['ssim_out'], rem['ssim_out'])}; {add['dice_lungs']} / {rem['dice_lungs']}",
         link(Section.COUNTERFACTUAL_AUTO)],
        ["`causal` added / removed; fidelity add",
         f"{_pct(methods['add']['causal']['flip_rate'])} / {_pct(methods['remove']['causal']['flip_rate'])}; "
         f"{methods['add']['causal']['fidelity_psnr']} dB", link(Section.COUNTERFACTUAL_METHODS)],
        ["former default (`steer`) added / removed",
         f"{_pct(methods['add']['steer']['flip_rate'])} / {_pct(methods['remove']['steer']['flip_rate'])}",
         link(Section.COUNTERFACTUAL_METHODS)],
        [f"best region-composited baseline (`{best_mask}`) fidelity add",
         f"{methods['add'][best_mask]['fidelity_psnr']} dB", link(Section.COUNTERFACTUAL_METHODS)],
        ["the model draws the asked-for finding in its own films (add)",
         _pct(add["model_target_rate"]), link(Section.COUNTERFACTUAL_AUTO)],
        ["demo: judge's effusion probability, input / added / removed",
         f"{demo['input']} / {demo['add']} / {demo['remove']}", f"`{_src(current, Section.DEMO_JUDGE)}`"],
        ["augmentation: `auto` pairs minus re-prompted pairs, macro AUC",
         f"{d['mean']:+.3f} ± {d['standard_error']:.3f} (ahead on {d['ahead']} of {d['seeds']} seeds)",
         link(Section.AUGMENTATION)],
        ["autoencoder PSNR (mean)", f"{model['autoencoder_psnr_db']['mean']} dB", link(Section.MODEL)],
        ["whole edit of a 2800 × 2300 DICOM: time; peak memory",
         f"{speed['edit_seconds']} s; {speed['peak_rss_gb']} GB", f"`{_src(current, Section.SPEED)}`"],
    ]
    return _table(["figure", "current value", "source"], rows)


def _cf_row(m: dict[str, float]) -> list[str]:
    return [f"{m['flip_rate']:.2f}", f"{m['flip_rate_unedited']:.2f}", f"{m['model_target_rate']:.2f}",
            f"{m['ssim_out']:.4f}", f"{m['dice_lungs']:.3f}", f"{m['fidelity_psnr']:.1f}",
            f"{m['truth_gain']:.2f}", f"{m['sec_per_edit']:.2f}"]


CF_HEADER = ["flip rate", "floor", "model draws", "SSIM out", "lung Dice", "fidelity PSNR",
             "truth gain", "s/edit"]


def render_counterfactual_auto(current: dict[str, Any]) -> str:
    """docs/bench.md: ``auto`` per finding and action, and the means."""
    f = current["sections"]["counterfactual_auto"]["figures"]
    rows = [[f"*all {len(f['cells'])}*", a] + _cf_row(f["mean"][a]) for a in ACTIONS]
    rows += [[c, a] + _cf_row(f["cells"][c][a]) for c in f["cells"] for a in ACTIONS if a in f["cells"][c]]
    return _table(["finding", "action"] + CF_HEADER, rows) + \
        f"\n\nSource: {_link(_src(current, Section.COUNTERFACTUAL_AUTO), 'docs')} (n = {f['n_per_cell']} per cell)."


def render_counterfactual_methods(current: dict[str, Any]) -> str:
    """docs/bench.md: every comparison method's means over the seven findings, beside ``auto``."""
    s = current["sections"]
    auto, methods = s["counterfactual_auto"]["figures"]["mean"], s["counterfactual_methods"]["figures"]
    rows = []
    for a in ACTIONS:
        rows.append([a, "**auto** (default)"] + _cf_row(auto[a]))
        rows += [[a, m] + _cf_row(methods[a][m]) for m in COMPARISON_METHODS if m in methods[a]]
    return _table(["action", "method"] + CF_HEADER, rows) + \
        f"\n\nSources: `auto` {_link(_src(current, Section.COUNTERFACTUAL_AUTO), 'docs')}; the others " \
        f"{_link(_src(current, Section.COUNTERFACTUAL_METHODS), 'docs')} (same patients and seeds)."


def render_augmentation(current: dict[str, Any]) -> str:
    """docs/bench.md: macro AUC per arm and the paired difference."""
    f = current["sections"]["augmentation"]["figures"]
    rows = [[arm, f"{v['macro_auc']:.3f}", f"{v['macro_auc_sd']:.3f}"] + [f"{v['auc'][x]:.3f}" for x in FINDINGS]
            for arm, v in f["arms"].items()]
    d = f["auto_minus_reprompt"]
    return _table(["arm", f"macro AUC ({f['classifier_seeds']} seeds)", "sd"] + list(FINDINGS), rows) + \
        f"\n\n`+medcf/auto` minus `+reprompt`, paired by classifier seed: **{d['mean']:+.3f} ± " \
        f"{d['standard_error']:.3f}** (standard error), ahead on {d['ahead']} of {d['seeds']} seeds. " \
        f"Source: {_link(_src(current, Section.AUGMENTATION), 'docs')}."


def _judge_table(current: dict[str, Any], from_dir: str) -> str:
    f = current["sections"]["judge"]["figures"]
    rows = [[x, f"{v['auc']['renders']:.2f}", f"{v['auc']['autoencoded']:.2f}", f"{v['normal_false_alarm']:.2f}"]
            for x, v in f["findings"].items()]
    w = f["sham_worst"]
    return _table(["finding", "AUC renders", "AUC autoencoded", "false alarms on normal samples"], rows) + \
        f"\n\nSham cells above 0.05: {f['sham_cells_over_0_05']} of {f['sham_cells']} (worst: {w['finding']} " \
        f"{w['action']} under {w['sham']}, {w['flip']:.2f}). Source: {_link(_src(current, Section.JUDGE), from_dir)}."


def render_judge_card(current: dict[str, Any]) -> str:
    """The judge's card: every held-out figure per finding."""
    f = current["sections"]["judge"]["figures"]["findings"]
    pair = lambda d, fmt="{:.3f}": f"{fmt.format(d['renders'])} / {fmt.format(d['autoencoded'])}"  # noqa: E731
    rows = []
    for x, v in f.items():
        side = "side_accuracy" in v
        lr = lambda k: " / ".join(f"{y:.3f}" for y in v["side_auc_left_right"][k]) if side else "– / –"  # noqa: E731
        rows.append([x, f"{v['auc']['renders']:.3f}", f"{v['auc']['autoencoded']:.3f}", lr("renders"), lr("autoencoded"),
                     pair(v["side_margin_auc"]) if side else "– / –", pair(v["side_accuracy"]) if side else "– / –",
                     f"{v['threshold']:.3f}", f"{v['normal_false_alarm']:.3f}"])
    return _table(["finding", "AUC renders", "AUC autoencoded", "left / right AUC renders", "left / right AUC autoencoded",
                   "side (left − right margin) AUC renders / autoencoded", "side accuracy renders / autoencoded",
                   "threshold", "false alarms on normal samples"], rows) + \
        f"\n\nSource: {_link(_src(current, Section.JUDGE), 'monai_bundle/docs')}."


def render_judge_shams(current: dict[str, Any]) -> str:
    """The judge's card: sham flip rate per finding and sham, add / remove."""
    f = current["sections"]["judge"]["figures"]["findings"]
    shams = list(next(iter(f.values()))["sham_flip"])
    rows = [[x] + [f"{v['sham_flip'][s]['add']:.3f} / {v['sham_flip'][s]['remove']:.3f}" for s in shams]
            for x, v in f.items()]
    return _table(["finding"] + shams, rows)


def render_model(current: dict[str, Any]) -> str:
    """The model card: autoencoder PSNR and prompt faithfulness per guidance."""
    f = current["sections"]["model"]["figures"]
    rows = [[f"guidance {g}", f"{v['carried_mean']:.2f}"] + [f"{v['carried'][x]:.2f}" for x in FINDINGS]
            for g, v in f["prompt_faithfulness"].items()]
    ae = f["autoencoder_psnr_db"]
    return _table(["samples carry the prompted finding", "mean"] + list(FINDINGS), rows) + \
        f"\n\nAutoencoder PSNR on held-out renders: {ae['mean']} dB mean, {ae['min']} dB worst " \
        f"({ae['images']} images, seeds {ae['seeds']}). " \
        f"Source: {_link(_src(current, Section.MODEL), 'monai_bundle/docs')}."


def render_model_card_auto(current: dict[str, Any]) -> str:
    """The model card: what the editor gets out of this model with its measured settings."""
    f = current["sections"]["counterfactual_auto"]["figures"]
    rows = [[c] + [f"{f['cells'][c][a]['flip_rate']:.1f} / {f['cells'][c][a]['fidelity_psnr']:.1f} dB" for a in ACTIONS]
            + [f"{f['cells'][c]['add']['model_target_rate']:.1f}"] for c in f["cells"]]
    rows.append(["*mean*"] + [f"{f['mean'][a]['flip_rate']:.2f} / {f['mean'][a]['fidelity_psnr']:.1f} dB" for a in ACTIONS]
                + [f"{f['mean']['add']['model_target_rate']:.2f}"])
    header = ["finding", "`auto` add: flip / fidelity", "`auto` remove: flip / fidelity", "model draws (add)"]
    return _table(header, rows) + \
        f"\n\nSource: {_link(_src(current, Section.COUNTERFACTUAL_AUTO), 'monai_bundle/docs')}."


def render_auto_choices(current: dict[str, Any]) -> str:
    """docs/editing.md: the setting ``auto`` uses per finding and action, with its tuning figures."""
    f = current["sections"]["auto_choices"]["figures"]

    def cell(c: dict[str, Any]) -> str:
        extra = "".join([f", renoise {c['renoise']:g}" if c["renoise"] else "",
                         f", {c['denoiser']} denoiser" if c["denoiser"] else ""])
        return (f"`{c['method']}` {c['depth']:g} / {c['guidance']:g}{extra} "
                f"({c['flip_rate']:.2f}, {c['fidelity_psnr']:.1f} dB)")

    rows = [[x] + [cell(v[a]) for a in ACTIONS] for x, v in f["cells"].items()]
    return _table(["finding", "add: method depth / guidance (tuning flip, fidelity)",
                   "remove: method depth / guidance (tuning flip, fidelity)"], rows) + \
        f"\n\nRule: {f['rule']}. Source: {_link(_src(current, Section.AUTO_CHOICES), 'docs')}."


# (page, table name) -> renderer. The page is where the markers live.
TABLES: dict[tuple[str, str], Callable[[dict[str, Any]], str]] = {
    ("README.md", "headline"): render_readme_headline,
    ("docs/bench.md", "counterfactual-methods"): render_counterfactual_methods,
    ("docs/bench.md", "counterfactual-auto"): render_counterfactual_auto,
    ("docs/bench.md", "augmentation"): render_augmentation,
    ("docs/bench.md", "judge"): lambda c: _judge_table(c, "docs"),
    ("docs/editing.md", "auto-choices"): render_auto_choices,
    ("monai_bundle/docs/README.md", "model"): render_model,
    ("monai_bundle/docs/README.md", "auto"): render_model_card_auto,
    ("monai_bundle/docs/judge.md", "judge-card"): render_judge_card,
    ("monai_bundle/docs/judge.md", "judge-shams"): render_judge_shams,
}

_BLOCK = re.compile(r"(<!-- current:begin (?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n?<!-- current:end -->)", re.S)


def render_page(text: str, page: str, current: dict[str, Any]) -> str:
    """``text`` with every marked table of ``page`` regenerated; unknown or missing markers raise."""
    wanted = {name for (p, name) in TABLES if p == page}
    found: set[str] = set()

    def repl(m: re.Match[str]) -> str:
        name = m.group("name")
        if (page, name) not in TABLES:
            raise InputError(f"{page}: unknown generated table {name!r}")
        found.add(name)
        return m.group(1) + TABLES[(page, name)](current) + "\n<!-- current:end -->"

    out = _BLOCK.sub(repl, text)
    if wanted - found:
        raise InputError(f"{page}: missing markers for {', '.join(sorted(wanted - found))}")
    return out


def pages() -> list[str]:
    """The pages that hold generated tables."""
    return sorted({p for (p, _) in TABLES})


def stale_pages(current: dict[str, Any] | None = None, root: Path = ROOT) -> list[str]:
    """Pages whose generated tables differ from current.json."""
    current = current or load_current()
    return [p for p in pages() if render_page((root / p).read_text(), p, current) != (root / p).read_text()]


def write_pages(current: dict[str, Any] | None = None, root: Path = ROOT) -> list[str]:
    """Regenerate every page's tables; return the pages that changed."""
    current = current or load_current()
    changed = []
    for p in pages():
        text = (root / p).read_text()
        new = render_page(text, p, current)
        if new != text:
            _write_atomic(root / p, new)
            changed.append(p)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m medcf.eval.current --check | --write | --record SECTION SOURCE``."""
    parser = argparse.ArgumentParser(prog="python -m medcf.eval.current",
                                     description="The current figures (docs/results/current.json) and the tables "
                                                 "generated from them.")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated table differs from current.json")
    mode.add_argument("--write", action="store_true",
                      help="regenerate the tables in README.md, docs/bench.md, docs/editing.md and the model cards")
    mode.add_argument("--record", nargs=2, metavar=("SECTION", "SOURCE"),
                      help=f"make a run current: read SOURCE (repository-relative run folder or file) into SECTION "
                           f"({', '.join(s.value for s in EXTRACTORS)}), then regenerate the tables")
    parser.add_argument("--measured", help="with --record: the run's date (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    try:
        if args.record:
            section, source = Section(args.record[0]), args.record[1]
            if section not in EXTRACTORS:
                raise InputError(f"{section.value}: recorded by hand (no results file to read); edit current.json")
            update_current(section, EXTRACTORS[section](source), source, measured=args.measured)
            args.write = True
        if args.write:
            for p in write_pages():
                print(f"rewrote {p}")
            return 0
        stale = stale_pages()
        for p in stale:
            print(f"{p}: generated tables differ from docs/results/current.json "
                  f"(python -m medcf.eval.current --write)", file=sys.stderr)
        return 1 if stale else 0
    except (InputError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
