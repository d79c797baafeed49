"""How well can a small finding be told at all, at the judged size? (issue 16; monai_bundle/docs/judge.md)

The judge's nodule AUC is 0.65 and its consolidation and pneumothorax AUCs 0.77 and 0.82,
and every flip rate of those findings is read through it. Is that the judge's limit, or the
film's? This script gives a network every advantage a judge cannot have — it is *told where*
the finding is — and measures what is left:

- **Located crops.** For every factual film of a finding in a world set, a 64 × 64 crop around
  its lesion (centre from the pair's difference, then shifted by up to ±16 px so that the
  centre itself is no cue), and the same crop of the pair's counterfactual film (same
  anatomy, pose, exposure and noise, the finding absent). A small CNN learns crop-with vs
  crop-without on one world set and is scored (AUC, per severity) on another, with
  training-set fractions to show whether more films would help (a learning curve).
- **Optionally a judge's per-severity AUC** (``--judge``) on the held-out set's whole films:
  factual films of the finding at each severity against every counterfactual film.

Nothing here is a benchmark patient or a judge's training range: defaults are the
generator's cached world sets (training seeds 0–2399, held-out seeds from 1 000 000; they are
rendered and cached if absent, ~25 min on two cores). The crop network is a diagnostic and is
not saved.

    python benchmarks/small_finding_limits.py --findings nodule pneumothorax consolidation \\
        --judge monai_bundle/models/judge --out docs/results/small-finding-limits.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SEVERITIES = ("mild", "moderate", "severe")
CROP = 64
JITTER = 16


def located_crops(world, finding: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(crops (2P, 1, CROP, CROP), label (2P,), severity (2P,))`` for the ``P`` pairs whose main
    finding is ``finding``: the factual film's crop (label 1) then its counterfactual's (0)."""
    from medcf.eval.judge import lesion_footprints

    footprints, row = lesion_footprints(world)
    films = world.float_images()
    size = films.shape[-1]
    crops, labels, severities = [], [], []
    for i, record in enumerate(world.records):
        if record["kind"] != "factual" or record["finding"] != finding or row[i] < 0:
            continue
        ys, xs = np.nonzero(footprints[row[i]])
        if len(ys) == 0:
            continue
        centre = np.array([ys.mean(), xs.mean()]).astype(int) + rng.integers(-JITTER, JITTER + 1, 2)
        cy, cx = np.clip(centre, CROP // 2, size - CROP // 2)
        for film, label in ((i, 1), (i + 1, 0)):
            crops.append(films[film, cy - CROP // 2:cy + CROP // 2, cx - CROP // 2:cx + CROP // 2])
            labels.append(label)
            severities.append(record.get("severity"))
    if not crops:
        raise SystemExit(f"error: no {finding} pairs in this world set")
    return np.stack(crops)[:, None], np.array(labels), np.array(severities)


def crop_network() -> nn.Module:
    """Four convolution blocks and a global max: a detector that may fire anywhere in the crop."""
    layers: list[nn.Module] = []
    width = 1
    for out, pool in ((16, True), (32, True), (64, True), (64, False)):
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        width = out
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, 1))


def learnability(train: tuple, heldout: tuple, fraction: float, steps: int, seed: int) -> dict:
    """Train :func:`crop_network` on ``fraction`` of the training pairs; held-out AUC overall and
    per severity."""
    from medcf.eval.judge import auc

    x_train, y_train, _ = train
    x_held, y_held, severity = heldout
    generator = torch.Generator().manual_seed(seed)
    pairs = len(x_train) // 2
    keep = torch.randperm(pairs, generator=generator)[:max(1, int(round(fraction * pairs)))]
    index = torch.stack([2 * keep, 2 * keep + 1], 1).reshape(-1)
    x = torch.from_numpy((x_train[index.numpy()] - 0.5) / 0.25).float()
    y = torch.from_numpy(y_train[index.numpy()]).float()
    torch.manual_seed(seed)
    net = crop_network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (64,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(net(x[batch]).squeeze(1), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        scores = net(torch.from_numpy((x_held - 0.5) / 0.25).float()).squeeze(1).numpy()
    return {"training_pairs": int(len(keep)), "auc": round(auc(scores, y_held), 3),
            **{f"auc_{s}": round(auc(scores[severity == s], y_held[severity == s]), 3) for s in SEVERITIES}}


def judge_by_severity(judge_dir: Path, world, findings: list[str]) -> dict:
    """The judge's presence AUC per finding and severity on ``world``'s whole films."""
    from medcf.eval.judge import Judge, auc
    from medcf.vocab import Finding

    judge = Judge.load(judge_dir)
    probabilities = judge.probabilities(world.float_images())
    order = [f.value for f in Finding]
    negatives = [i for i, r in enumerate(world.records) if r["kind"] == "counterfactual"]
    table = {}
    for finding in findings:
        column = order.index(finding)
        row = {}
        for severity in SEVERITIES:
            positives = [i for i, r in enumerate(world.records)
                         if r["kind"] == "factual" and r["finding"] == finding and r["severity"] == severity]
            scores = np.r_[probabilities[positives, column], probabilities[negatives, column]]
            truth = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
            row[f"auc_{severity}"] = round(auc(scores, truth), 3)
        table[finding] = row
    return table


def main() -> None:
    from medcf.models.data import WorldSetSpec, load_world_set, render_world_set

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", nargs="+", default=["nodule", "pneumothorax", "consolidation", "pleural_effusion"],
                        help="findings to measure (default: the three smallest and effusion for comparison)")
    parser.add_argument("--train-pairs", type=int, default=2400, help="training world set: pairs from seed 0")
    parser.add_argument("--heldout-pairs", type=int, default=280, help="held-out world set: pairs from seed 1000000")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="shares of the training pairs to learn from (a learning curve)")
    parser.add_argument("--steps", type=int, default=1500, help="crop-network steps, batch 64 (default 1500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", type=Path, help="also the per-severity AUC of this judge on the held-out films")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the figures as JSON (new file)")
    args = parser.parse_args()
    if args.out and args.out.exists():
        raise SystemExit(f"error: {args.out} exists; choose a new file")
    if not all(0 < f <= 1 for f in args.fractions):
        raise SystemExit("error: --fractions must lie in (0, 1]")
    torch.set_num_threads(args.threads)

    train = load_world_set(render_world_set(WorldSetSpec(args.train_pairs, seed=0)))
    heldout = load_world_set(render_world_set(WorldSetSpec(args.heldout_pairs, seed=1_000_000, split="heldout")))
    report: dict = {"crop": CROP, "jitter_px": JITTER, "steps": args.steps, "seed": args.seed,
                    "train_set": f"{args.train_pairs} pairs from seed 0",
                    "heldout_set": f"{args.heldout_pairs} pairs from seed 1000000", "located_crops": {}}
    for finding in args.findings:
        rng = np.random.default_rng(args.seed)
        train_crops = located_crops(train, finding, rng)
        held_crops = located_crops(heldout, finding, rng)
        rows = []
        for fraction in args.fractions:
            start = time.perf_counter()
            row = learnability(train_crops, held_crops, fraction, args.steps, args.seed)
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(f"{finding:17s} located crops, {row['training_pairs']:4d} training pairs: AUC {row['auc']:.3f} "
                  f"(mild {row['auc_mild']:.3f}, moderate {row['auc_moderate']:.3f}, severe {row['auc_severe']:.3f}; "
                  f"{len(held_crops[0]) // 2} held-out pairs; {row['seconds']} s)", flush=True)
        report["located_crops"][finding] = rows
    if args.judge:
        report["judge"] = str(args.judge)
        report["judge_whole_film"] = judge_by_severity(args.judge, heldout, args.findings)
        for finding, row in report["judge_whole_film"].items():
            print(f"{finding:17s} judge, whole film: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in row.items()))
    if args.out:
        from medcf.io.atomic import write_new_text

        write_new_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
