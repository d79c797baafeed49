"""``medcf train factors``: the causal factor model (:mod:`medcf.causal.factors`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medcf.errors import InputError

DEFAULT_SETS = ((1200, 0), (1200, 1200))  # (pairs, first seed): the default model's comorbidity-free renders
HELDOUT_SET = (300, 1_300_000)  # the judge's held-out renders (seeds from 1300000): latent errors only


def parse_rare(values: list[str] | None) -> dict[str, float]:
    """``--rare FINDING/SIDE/ZONE=SHARE`` (``*`` for any attribute) → {pattern: share}."""
    rare = {}
    for value in values or []:
        pattern, _, share = value.partition("=")
        try:
            share_value = float(share)
        except ValueError:
            raise InputError(f"--rare {value!r}: write FINDING/SIDE/ZONE=SHARE, e.g. pneumothorax/right/*=0.01") from None
        if len(pattern.split("/")) != 3 or not 0.0 <= share_value < 1.0:
            raise InputError(f"--rare {value!r}: write FINDING/SIDE/ZONE=SHARE with SHARE in [0, 1)")
        rare[pattern] = share_value
    return rare


def cmd_train_factors(args: argparse.Namespace) -> int:
    from medcf.causal.factors import CONFIG_FILE, FactorConfig, save_factors
    from medcf.causal.skew import skewed_subset
    from medcf.causal.training import (FactorOptions, autoencoder_fingerprint, cached_pair_latents, latent_errors,
                                       record_for, train_factors)
    from medcf.bundle import bundle_root
    from medcf.models.data import WorldSetSpec, render_world_set
    from medcf.models.loaders import load_generator
    from medcf.models.packaging import refresh_package

    if args.export is not None and (args.export / CONFIG_FILE).exists():
        raise InputError(f"--export {args.export} already holds a factor model (MedCF never overwrites)")
    rare = parse_rare(args.rare)
    generator = load_generator(args.model or bundle_root())
    paths = [Path(p) for p in args.data] if args.data else \
        [render_world_set(WorldSetSpec(n, seed=seed), progress=not args.quiet) for n, seed in DEFAULT_SETS]
    pairs = cached_pair_latents(paths, generator, progress=not args.quiet)
    kept, frequencies = skewed_subset(pairs, rare, seed=args.seed) if rare else (pairs, None)
    options = FactorOptions(out=str(args.out), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                            threads=args.threads, resume=args.resume, checkpoint_every=args.checkpoint_every,
                            posterior_steps=args.posterior_steps,
                            config=FactorConfig(latent_channels=pairs.factual.shape[1], latent_size=pairs.factual.shape[-1],
                                                width=args.width, blocks=args.blocks))
    model, recipe = train_factors(options, kept, autoencoder_fingerprint(generator), [p.name for p in paths],
                                  progress=not args.quiet)
    if rare:
        recipe["rare"] = {"shares": rare, "pairs_kept": len(kept), "frequencies": frequencies}
    if args.heldout is not None:
        heldout_paths, described = [args.heldout], args.heldout.name
    else:
        n, seed = HELDOUT_SET
        heldout_paths = [render_world_set(WorldSetSpec(n, seed=seed, comorbidity=0.3, split="heldout"),
                                          progress=not args.quiet)]
        described = f"{n} pairs from seed {seed} (comorbidity 0.3)"
    heldout = cached_pair_latents(heldout_paths, generator, progress=not args.quiet)
    figures = {"heldout_latent_mse": {k: round(v, 5) for k, v in latent_errors(model, heldout).items()},
               "heldout": described}
    print(json.dumps({"run": str(args.out), **figures}))
    if args.export is not None:
        written = save_factors(args.export, model, record_for(model, recipe, figures))
        print(f"exported: {', '.join(str(p) for p in written)}")
        packaged = refresh_package(args.export)  # exported beside a model's weights: its package lists them
        if packaged is not None:
            print(f"package: {packaged.manifest}")
    return 0


def add_factor_parser(train_sub: argparse._SubParsersAction, epilog: str = "") -> None:
    """``medcf train factors`` under ``train_sub``."""
    parser = train_sub.add_parser(
        "factors", help="train the causal factor model (anatomy/pathology disentanglement, --method causal)",
        description="Train the two-factor model of methods.md §5 on the default model's autoencoder latents of "
                    "the simulated world's exact pairs (the same patient with and without one finding): an "
                    "identity/anatomy factor, a pathology factor, an attribute prior (finding, side, zone, "
                    "severity) and a decoder, with reconstruction, group-swap, prior-swap, KL, classification, "
                    "cross-patient swap-consistency and HSIC independence losses; then the pathology encoder "
                    "alone is fitted to the frozen rest (--posterior-steps). Reports the held-out latent "
                    "error of the swaps; --export writes causal_factors.json + .safetensors for `medcf edit "
                    "--method causal`; exported into a model folder, they are listed in its package "
                    "(medcf_model.json, as `medcf model package` writes it).",
        epilog=epilog)
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.jsonl, run.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--data", nargs="+", default=None,
                        help="world-set .npz files of factual/counterfactual pairs (default: the default model's "
                             "2 x 1200 comorbidity-free training renders, rendered into the cache if missing)")
    parser.add_argument("--heldout", type=Path, default=None,
                        help="a held-out world set .npz for the latent errors (default: 300 held-out renders, "
                             "seeds from 1300000)")
    parser.add_argument("--model", type=Path, default=None, help="model folder whose autoencoder defines the "
                                                                 "latent space (default: the MedCF bundle)")
    parser.add_argument("--rare", action="append", default=None, metavar="FINDING/SIDE/ZONE=SHARE",
                        help="keep only this share of pairs of a combination (* = any), e.g. "
                             "'pneumothorax/right/*=0.01'; repeatable (the long-tail suite's skewed training set)")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    parser.add_argument("--posterior-steps", type=int, default=500,
                        help="then steps of the pathology encoder alone, the rest frozen (default 500)")
    parser.add_argument("--batch", type=int, default=16, help="pairs per step (default 16)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--width", type=int, default=48, help="channels of every block (default 48)")
    parser.add_argument("--blocks", type=int, default=2, help="residual blocks per encoder/decoder (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default 250)")
    parser.add_argument("--export", type=Path, default=None, help="also write the trained model into this folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_train_factors)
