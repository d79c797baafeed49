"""How far can the editor's own check (medcf.editing.evidence) be trusted, per finding?

Renders N tuning patients per finding with and without it (the editor's tuning seeds,
apart from every benchmark range), scores every film with the default model's evidence
check inside the edit region the editor would use, and prints per finding the AUC, the
share of films with the finding scored > 0 and of films without it scored > 0 (the
check's threshold is 0, never fitted), and seconds per check. ``--write`` stores the
AUCs beside the model's weights as ``evidence.json``, which the editor reads to decide
whether the check may drive extra passes (AUC >= MIN_RELIABLE_AUC).

    python benchmarks/bench_evidence.py --n 8 [--write monai_bundle/models/evidence.json]
    python benchmarks/bench_evidence.py --n 6 --model DIR --write monai_bundle/models/denoisers/NAME/evidence.json
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import numpy as np
import torch

from medcf.eval.bench import TUNING_SEED  # the editor's tuning patients


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="patients per finding (default 8)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", default=None, help="write the reliability JSON here (a new file)")
    parser.add_argument("--model", default=None,
                        help="model folder (default: the bundle's), e.g. an alternative denoiser's folder with the "
                             "autoencoder copied beside it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from medcf.editing.api import load_editor
    from medcf.editing.edit import EvidenceChecker, prepare
    from medcf.editing.evidence import MIN_RELIABLE_AUC, EvidenceReliability, EvidenceSettings
    from medcf.eval.bench import _spec, render_cases
    from medcf.eval.judge import auc
    from medcf.editing.spec import Method
    from medcf.editing.steering import denoiser_fingerprint
    from medcf.vocab import Action, Finding

    editor = load_editor(args.model)
    cases = render_cases(tuple(Finding), args.n, 256, TUNING_SEED, editor.segmenter)
    scores: dict[str, list[tuple[bool, float]]] = {}
    seconds = []
    for case in tqdm(cases, desc="evidence check", unit="film"):
        spec = _spec(case, Method.STEER, {})
        inputs = prepare(case.source, case.masks, spec, editor.generator, case.view)
        checker = EvidenceChecker(inputs, spec, editor.generator)
        tick = time.perf_counter()
        score = checker.score(inputs.z0).value
        seconds.append(time.perf_counter() - tick)
        scores.setdefault(case.finding.value, []).append((case.action is Action.REMOVE, score))  # remove: has it
    aucs = {}
    print(f"{'finding':18s} {'AUC':>5s} {'with>0':>7s} {'without>0':>9s}")
    for finding, items in scores.items():
        has = np.array([h for h, _ in items])
        value = np.array([s for _, s in items])
        aucs[finding] = round(float(auc(value, has)), 4)
        print(f"{finding:18s} {aucs[finding]:5.2f} {np.mean(value[has] > 0):7.2f} {np.mean(value[~has] > 0):9.2f}"
              + ("" if aucs[finding] >= MIN_RELIABLE_AUC else "   (unreliable: reported, never acted on)"))
    print(f"seconds per check: {np.median(seconds):.2f} (median, {torch.get_num_threads()} thread(s))")
    if args.write:
        record = EvidenceReliability(aucs, args.n, {**asdict(EvidenceSettings()), "patients_seed": TUNING_SEED,
                                                    "films_per_finding": 2 * args.n},
                                     denoiser_fingerprint(editor.generator))
        print(record.save(args.write))


if __name__ == "__main__":
    main()
