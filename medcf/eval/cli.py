"""``medcf bench``, ``medcf train judge`` and ``medcf model evaluate``: parsing only; each calls one function of
:mod:`medcf.eval`. Nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from medcf.devices import add_device_options, placement_from_args
from medcf.commands.model import positive
from medcf.editing.options import add_namespaced_options, namespaced_values
from medcf.errors import InputError
from medcf.vocab import Finding, StrEnum

EPILOG = ("The benchmark runs on simulated radiographs, where the true counterfactual is known. "
          "MedCF output is synthetic, for research only, never for diagnosis. Details: docs/bench.md.")


def cmd_train_judge(args: argparse.Namespace) -> int:
    from medcf.eval.judge_training import JudgeOptions, recalibrate_judge, train_judge

    if args.recalibrate is not None:
        report = recalibrate_judge(args.recalibrate, args.out / "judge", model=args.model,
                                   reports=not args.no_reports, progress=not args.quiet)
        print(json.dumps(report, indent=2))
        return 0
    report = train_judge(JudgeOptions(out=args.out, n_pairs=args.pairs, steps=args.steps, batch=args.batch,
                                      seed=args.seed, threads=args.threads, resume=args.resume,
                                      max_minutes=args.max_minutes, progress=not args.quiet,
                                      autoencoded=not args.renders_only, look=not args.renders_only,
                                      model=args.model, reports=not args.no_reports))
    print(json.dumps(report, indent=2))
    return 0


def cmd_model_evaluate(args: argparse.Namespace) -> int:
    from medcf.eval.model_evaluate import evaluate_model

    report = evaluate_model(args.model, per_finding=args.per_finding, steps=args.steps, out=args.out,
                            heldout_pairs=args.heldout_pairs, progress=not args.quiet,
                            heldout_data=args.heldout_data, judge=args.judge,
                            guidance_scales=args.guidance_scales)
    print(json.dumps(report, indent=2))
    return 0


class Suite(StrEnum):
    """The suites of ``medcf bench``."""

    COUNTERFACTUAL = "counterfactual"
    AUGMENTATION = "augmentation"
    JUDGE = "judge"
    SWAP = "swap"
    LONGTAIL = "longtail"


OURS_PREFIX = "ours"  # dest prefix of the counterfactual suite's settings for MedCF's methods (schema-generated)


class SuiteOptionError(RuntimeError):
    """The code of one suite read an option of another: a wiring slip, never the user's. Not
    an AttributeError, so that ``getattr(args, name, default)`` cannot swallow it."""


class SuiteArgs:
    """The parsed ``medcf bench`` options one suite may read: the common ones (``--out``,
    ``--quiet``, the device) and its own. Reading another suite's option raises
    :class:`SuiteOptionError`, so an option cannot silently reach the wrong suite (as
    ``--first-seed`` once fed the augmentation suite's ``--classifier-first-seed``)."""

    def __init__(self, args: argparse.Namespace, suite: Suite, scopes: "SuiteScopes"):
        self._args, self._suite, self._scopes = args, suite, scopes

    def __getattr__(self, dest: str):
        if dest.startswith("_"):
            raise AttributeError(dest)
        suites = self._scopes.suites.get(dest)
        if suites is not None and self._suite not in suites:
            raise SuiteOptionError(f"{self._scopes.flags[dest]} is an option of --suite "
                                   f"{' / '.join(s.value for s in sorted(suites))}, read by --suite {self._suite.value}")
        return getattr(self._args, dest)

    def namespaced(self, prefix: str) -> dict:
        """The given options under ``prefix`` (:func:`medcf.editing.options.namespaced_values`)."""
        if any(self._suite not in suites for dest, suites in self._scopes.suites.items()
               if dest.startswith(prefix + ".")):
            raise SuiteOptionError(f"options {prefix}.* do not belong to --suite {self._suite.value}")
        return namespaced_values(self._args, prefix)


class SuiteScopes:
    """Which suites read each suite option, recorded as the option is added: the one
    statement of an option's scope, used both to refuse an option given to a suite that
    ignores it and to build each suite's :class:`SuiteArgs`."""

    def __init__(self) -> None:
        self.suites: dict[str, frozenset[Suite]] = {}
        self.flags: dict[str, str] = {}
        self.defaults: dict[str, object] = {}

    def add(self, container, *flags: str, suites: tuple[Suite, ...], **kwargs) -> argparse.Action:
        action = container.add_argument(*flags, **kwargs)
        self.record(action, suites)
        return action

    def record(self, action: argparse.Action, suites: tuple[Suite, ...]) -> None:
        self.suites[action.dest] = frozenset(suites)
        self.flags[action.dest] = action.option_strings[0]
        self.defaults[action.dest] = action.default

    def view(self, args: argparse.Namespace) -> SuiteArgs:
        """``args`` as the chosen suite may read them; an option it would ignore, given
        with another value than its default, is refused in one line."""
        suite = Suite(args.suite)
        given = [self.flags[dest] for dest, suites in self.suites.items()
                 if suite not in suites and getattr(args, dest) != self.defaults[dest]]
        if given:
            raise InputError(f"{', '.join(given)}: not an option of --suite {suite.value} (see medcf bench --help)")
        return SuiteArgs(args, suite, self)


def cmd_bench(args: argparse.Namespace, scopes: SuiteScopes) -> int:
    suite = scopes.view(args)
    if args.suite == Suite.AUGMENTATION:
        return _bench_augmentation(suite)
    if args.suite == Suite.JUDGE:
        return _bench_judge(suite)
    if args.suite in (Suite.SWAP, Suite.LONGTAIL):
        return _bench_causal(suite)
    return _bench_counterfactual(suite)


def _bench_counterfactual(args: SuiteArgs) -> int:
    from medcf.eval.bench import rescore_suite, run_counterfactual_suite, summary_rows
    from medcf.eval.judge import Judge

    judge = Judge.load(args.judge) if args.judge else None
    if args.films:
        result = rescore_suite(args.films, args.out, judge)
    else:
        findings = tuple(Finding(f) for f in args.findings) if args.findings else tuple(Finding)
        editor = None
        if args.model is not None:  # another model's edits, judged by the same judge
            from medcf.editing.api import load_editor

            editor = load_editor(args.model, placement=placement_from_args(args))
        result = run_counterfactual_suite(_or(args.n, 2), args.out, methods=args.methods, findings=findings,
                                          size=_or(args.size, 256), judge=judge, editor=editor,
                                          progress=not args.quiet,
                                          first_seed=args.first_seed,
                                          ours=args.namespaced(OURS_PREFIX), keep_films=args.keep_films,
                                          placement=placement_from_args(args))
    for row in summary_rows(result["rows"]):
        print(f"{row['action']:6s} {row['method']:16s} flip {row['flip_rate']:.2f} "
              f"(truth {row['truth_flip_rate']:.2f})  ssim_out {row['ssim_out']:.4f}  "
              f"lungs {row['dice_lungs']:.3f}  fidelity {row['fidelity_psnr']:.2f} dB  fid {row['fid']:.3g}  "
              f"{row['sec_per_edit']:.2f} s")
    return _print_outputs(result["out"])


def _bench_augmentation(args: SuiteArgs) -> int:
    from medcf.eval.augment import AugmentOptions, run_augmentation_suite

    options = AugmentOptions(out=args.out, n=_or(args.n, 100), generated=args.generated, heldout=args.heldout,
                             steps=args.steps, size=_or(args.size, 128), repeats=args.repeats,
                             first_seed=args.classifier_first_seed,
                             methods=tuple(args.pair_methods), reuse=tuple(args.reuse_classifiers),
                             train_arms=tuple(args.train_arms),
                             threads=args.threads, progress=not args.quiet)
    result = run_augmentation_suite(options, placement=placement_from_args(args))
    for arm, entry in result["summary"].items():
        print(f"{arm:24s} macro AUC {entry['macro_auc']:.3f} (sd {entry['macro_auc_sd']:.3f} over seeds)")
    return _print_outputs(result["out"])


def _bench_judge(args: SuiteArgs) -> int:
    from medcf.eval.judge_report import run_judge_suite

    result = run_judge_suite(args.out, judge_folder=args.judge, model=args.model, n=_or(args.n, None),
                             progress=not args.quiet, placement=placement_from_args(args))
    for report, misses in result["misses"].items():
        print(f"{report:28s} " + ("targets met" if not misses else "misses: " + ", ".join(misses)))
    return _print_outputs(result["out"])


#: how to make the factor model the long-tail suite needs (its --rare shares are the committed run's)
LONGTAIL_FACTORS_RECIPE = ("medcf train factors --out RUN --export DIR --rare 'pneumothorax/right/*=0.01' "
                           "--rare 'nodule/left/upper=0.005' --rare 'atelectasis/left/middle=0.005'")


def _bench_causal(args: SuiteArgs) -> int:
    from medcf.editing.api import load_editor
    from medcf.eval.judge import Judge

    if args.suite == "longtail" and args.factors is None:
        # Checked before anything loads: the suite needs a factor model trained on a skewed set.
        raise InputError(f"--suite longtail needs --factors DIR: a factor model trained on a skewed set, "
                         f"e.g. `{LONGTAIL_FACTORS_RECIPE}`")
    judge = Judge.load(args.judge) if args.judge else None
    editor = load_editor(placement=placement_from_args(args))
    if args.suite == "swap":
        from medcf.eval.swap import run_swap_suite, summary

        findings = tuple(Finding(f) for f in args.findings) if args.findings else tuple(Finding)
        result = run_swap_suite(args.out, n=_or(args.n, 5), findings=findings, size=_or(args.size, 256), judge=judge,
                                editor=editor, factors_folder=args.factors, progress=not args.quiet)
        for row in summary(result["rows"]):
            print(f"{row['swap']:10s} flip {row['flip_rate']:.2f}  lungs {row['dice_lungs']:.3f}  ssim outside "
                  f"lesion {row['ssim_outside_lesion']:.3f}  fidelity {row['fidelity_psnr']:.2f} dB")
        return _print_outputs(result["out"])
    from medcf.eval.longtail import run_longtail_suite

    result = run_longtail_suite(args.out, args.factors, n=_or(args.n, 4), pair_n=args.pair_n, per_bucket=args.per_bucket,
                                size=_or(args.size, 256), judge=judge, editor=editor, progress=not args.quiet)
    for row in result["summary"]:
        print(f"{row['bucket']:6s} {row['setting']:5s} {row['method']:10s} noise-opt {str(row['noise_optimization']):5s} "
              f"flip {row['flip_rate']:.2f}" + (f"  fidelity {row['fidelity_psnr']:.2f} dB" if row['fidelity_psnr'] else ""))
    return _print_outputs(result["out"])


def _or(value, default):
    """The suite's default where an option was not given (0 is an answer, not a gap)."""
    return default if value is None else value


def _print_outputs(folder: str) -> int:
    for name in ("results.json", "results.md", "examples.png"):
        print(Path(folder) / name)
    return 0


def add_eval_parsers(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction,
                     model_sub: argparse._SubParsersAction) -> None:
    """``medcf bench``, ``medcf train judge`` and ``medcf model evaluate``."""
    from medcf.editing.baseline_names import BASELINES
    from medcf.eval.suite_names import BENCH_SEED, METHODS, OUR_SETTINGS, OURS, TUNING_SEED

    judge = train_sub.add_parser(
        "judge", help="train the benchmark's finding judge (MONAI DenseNet) on rendered films",
        description="Train the finding judge of `medcf bench`: presence of every finding and the side of the "
                    "main one, from simulated renders and their copies through the model's autoencoder (never "
                    "sampled or edited films). Resumable (--resume), stops cleanly with --max-minutes; writes "
                    "OUT/run (checkpoints) and OUT/judge (weights, held-out AUC per finding, calibrated thresholds, "
                    "false alarms on normal samples, sham flips).", epilog=EPILOG)
    judge.add_argument("--out", type=Path, required=True, help="run folder")
    judge.add_argument("--pairs", type=int, default=3000, help="training pairs rendered (default 3000)")
    judge.add_argument("--steps", type=int, default=8000, help="training steps (default 8000)")
    judge.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    judge.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    judge.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    judge.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out/run")
    judge.add_argument("--max-minutes", type=float, default=None, help="stop with a checkpoint after this long")
    judge.add_argument("--renders-only", action="store_true",
                       help="train on sharp renders alone, without the autoencoded copies and look augmentation "
                            "(the first judge's recipe; it reads the generator's films as findings)")
    judge.add_argument("--model", type=Path, default=None,
                       help="generator whose autoencoder gives the films' look and whose normal samples are judged "
                            "(default: the bundle's)")
    judge.add_argument("--no-reports", action="store_true",
                       help="skip the normal-sample false alarms and sham flips after training")
    judge.add_argument("--recalibrate", type=Path, default=None, metavar="JUDGE",
                       help="train nothing: calibrate the trained judge in folder JUDGE anew on its held-out films "
                            "(presence thresholds, the side margins, the field reports) into OUT/judge, same weights")
    judge.add_argument("--quiet", action="store_true", help="no progress bar")
    judge.set_defaults(func=cmd_train_judge)

    from medcf.editing.spec import Method
    from medcf.eval.suite_names import DEFAULT_PAIR_METHODS

    bench = sub.add_parser(
        "bench", help="benchmark counterfactual methods against baselines on the simulated world",
        description="--suite counterfactual: every finding, add and remove, every method (baselines "
                    f"{', '.join(BASELINES)}, each also +mask: composited into MedCF's edit region; MedCF's "
                    f"{', '.join(OURS)}) on N held-out simulated patients "
                    "per finding: flip rate (judge), SSIM/PSNR outside the edit region, lung and heart Dice, "
                    "fidelity to the true counterfactual, truth gain (share of the true change reproduced), "
                    "FID-style distance, seconds per edit. "
                    "--suite augmentation: a finding classifier trained on N rendered pairs alone, plus MedCF "
                    "pairs, or plus as many re-prompted pairs; presence AUC on held-out renders. "
                    "--suite judge: can the judge be trusted on the films it judges? False alarms on films the "
                    "model samples from the normal prompt, and flips it declares for sham edits (blur, noise, "
                    "contrast, autoencoder) in the edit region of benchmark inputs; re-run it whenever the model "
                    "changes. --suite swap: the causal factor model's disentanglement: patient a's anatomy with "
                    "patient b's finding against the world's exact render of it. --suite longtail: flip rate and "
                    "fidelity per frequency bucket (head/medium/tail) of a factor model trained with deliberately "
                    "rare combinations, per method, with and without initial-noise optimisation. "
                    "All write results.json, results.md and examples.png.", epilog=EPILOG)
    bench.add_argument("--suite", choices=[s.value for s in Suite], default=Suite.COUNTERFACTUAL.value,
                       help="the suite to run (default counterfactual)")
    bench.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(bench)  # the generator and the segmenter; the judge and the trained classifiers stay on CPU
    # Every other option belongs to the suites named with it: another suite refuses it, and cannot read it.
    scopes = SuiteScopes()
    cf, aug, judge_suite, swap, longtail = Suite.COUNTERFACTUAL, Suite.AUGMENTATION, Suite.JUDGE, Suite.SWAP, \
        Suite.LONGTAIL
    scopes.add(bench, "--n", type=int, default=None, suites=tuple(Suite),
               help="counterfactual: patients per finding (default 2); augmentation: rendered training "
                    "pairs (default 100); judge: benchmark patients per finding for the shams (default 10); "
                    "swap: patient pairs per finding (default 5); longtail: patients per combination "
                    "(default 4). "
                    "docs/bench.md has the full runs")
    scopes.add(bench, "--size", type=int, default=None, suites=(cf, aug, swap, longtail),
               help="counterfactual, swap, longtail: film size (default 256); augmentation: classifier input "
                    "(default 128)")
    counterfactual = bench.add_argument_group("counterfactual suite")
    scopes.add(counterfactual, "--methods", nargs="+", default=list(METHODS), choices=list(METHODS), suites=(cf,),
               help="default: all")
    scopes.add(counterfactual, "--findings", nargs="+", choices=[f.value for f in Finding], suites=(cf, swap),
               help="default: all (also --suite swap)")
    scopes.add(counterfactual, "--judge", type=Path, suites=(cf, judge_suite, swap, longtail),
               help="judge folder (default: the bundle's models/judge); also for --suite judge, swap, longtail")
    scopes.add(counterfactual, "--first-seed", type=int, default=BENCH_SEED, suites=(cf,),
               help=f"first patient seed (default {BENCH_SEED}, the benchmark's own patients, for "
                    f"reporting; choose settings on the editor's tuning patients, {TUNING_SEED})")
    scopes.add(counterfactual, "--keep-films", type=Path, default=None, suites=(cf,),
               help="also keep every edit's film (judge-free) in this new folder, so that another "
                    "judge can score them later with --films (an n = 10 run: about 0.5 GB)")
    scopes.add(counterfactual, "--films", type=Path, default=None, suites=(cf,),
               help="score films kept by --keep-films with --judge instead of editing again "
                    "(--n, --methods, --findings and --size come from the kept run)")
    scopes.add(counterfactual, "--model", type=Path, default=None, suites=(cf, judge_suite),
               help="--suite judge: the generator to sample from; --suite counterfactual: the model "
                    "whose edits are judged (default: the bundle's)")
    # MedCF's settings, generated from the edit options schema, under their own dest prefix
    for action in add_namespaced_options(counterfactual, OUR_SETTINGS, OURS_PREFIX,
                                         "MedCF methods (as medcf edit, without the bundle's configs/edit.json)"):
        scopes.record(action, (cf,))
    causal = bench.add_argument_group("swap and long-tail suites")
    scopes.add(causal, "--factors", type=Path, default=None, suites=(swap, longtail),
               help="factor model folder (swap default: the one in the model's package; longtail: "
                    "required, a factor model trained with `medcf train factors --rare ... --export DIR`)")
    scopes.add(causal, "--per-bucket", type=int, default=3, suites=(longtail,),
               help="longtail: combinations of different findings per bucket (default 3)")
    scopes.add(causal, "--pair-n", type=int, default=2, suites=(longtail,),
               help="longtail: pairs from scratch per combination, method and noise setting (default 2)")
    augmentation = bench.add_argument_group("augmentation suite")
    scopes.add(augmentation, "--generated", type=int, default=None, suites=(aug,),
               help="generated pairs added per arm (default: --n)")
    scopes.add(augmentation, "--heldout", type=int, default=300, suites=(aug,),
               help="held-out rendered pairs (default 300)")
    scopes.add(augmentation, "--steps", type=int, default=2000, suites=(aug,),
               help="classifier steps per arm (default 2000)")
    scopes.add(augmentation, "--repeats", type=int, default=2, suites=(aug,),
               help="classifier seeds per arm (default 2)")
    scopes.add(augmentation, "--classifier-first-seed", type=int, default=0, suites=(aug,),
               help="first classifier seed (default 0); a run with later seeds can be pooled with "
                    "an earlier one by benchmarks/combine_augmentation.py")
    scopes.add(augmentation, "--pair-methods", nargs="+", choices=[m.value for m in Method],
               default=[m.value for m in DEFAULT_PAIR_METHODS], suites=(aug,),
               help="MedCF methods for the pairs, one arm each (default: "
                    f"{' '.join(m.value for m in DEFAULT_PAIR_METHODS)})")
    scopes.add(augmentation, "--reuse-classifiers", type=Path, nargs="+", default=[], metavar="RUN", suites=(aug,),
               help="earlier runs' --out folders: a classifier one of them trained with the same "
                    "settings, seed, held-out films and training films (by content digest) is taken "
                    "from it instead of trained again, so a change to one arm's pairs re-trains that "
                    "arm only")
    scopes.add(augmentation, "--train-arms", nargs="+", default=[], metavar="ARM", suites=(aug,),
               help="train classifiers for these arms only (e.g. +medcf/auto +reprompt; default: every "
                    "arm); every arm's films are still made and recorded by digest")
    scopes.add(augmentation, "--threads", type=int, default=1, suites=(aug,),
               help="torch threads for training (default 1)")
    bench.set_defaults(func=partial(cmd_bench, scopes=scopes))

    evaluate = model_sub.add_parser(
        "evaluate", help="figures of a model: autoencoder PSNR, how often samples carry the prompted finding",
        description="Autoencoder reconstruction PSNR on held-out simulated films, and prompt faithfulness by the "
                    "benchmark's judge: per finding, the share of samples from held-out prompts in which the judge "
                    "finds the prompted finding on the prompted side, and the share of normal-prompt samples it "
                    "calls each finding (false alarms), at each --guidance-scales side by side. The judge's own AUC "
                    "per finding is printed beside them: a finding it sees poorly gives rates that say more about "
                    "the judge than the model.", epilog=EPILOG)
    evaluate.add_argument("model", type=Path, help="model folder (MedCF bundle)")
    evaluate.add_argument("--per-finding", type=positive(int), default=10,
                          help="samples per finding (default 10; twice as many from the normal prompt)")
    evaluate.add_argument("--steps", type=positive(int), default=25, help="DDIM steps (default 25)")
    evaluate.add_argument("--guidance-scales", type=float, nargs="+", default=None,
                          help="classifier-free guidance scales to compare (default: the model's own)")
    evaluate.add_argument("--judge", type=Path, default=None,
                          help="judge folder (default: the bundle's models/judge)")
    evaluate.add_argument("--heldout-pairs", type=positive(int), default=280,
                          help="held-out pairs for PSNR and the prompts (default 280)")
    evaluate.add_argument("--heldout-data", type=Path, default=None,
                          help="a held-out world set .npz (seeds >= 1000000; default: render it into the cache)")
    evaluate.add_argument("--out", type=Path, default=None, help="also write a sample panel PNG into this folder")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_model_evaluate)
