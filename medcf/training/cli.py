"""``medcf train autoencoder|generator|segmenter|segmenter-labels|factors`` and
``medcf model export``: the lab's commands, parsing only; each calls one trainer of
:mod:`medcf.training`. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medcf.errors import InputError
from medcf.world.seeds import SeedRange
from medcf.commands.model import positive

MODEL_EPILOG = (
    "The default model learned from simulated radiographs rendered from one chest CT, not from patients. "
    "MedCF output is synthetic, for research only, never for diagnosis. Documentation: monai_bundle/docs/README.md."
)
ANATOMY_EPILOG = ("The default anatomy model learned from simulated radiographs only. MedCF output is for "
                  "research only, never for diagnosis.")
DEFAULT_SETS = ((1200, 0), (1200, 1200))  # (pairs, first seed): the default model's comorbidity-free renders
HELDOUT_SET = (300, SeedRange.PLAUSIBILITY.start)  # the judge's held-out renders: latent errors only


def _common_training(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.jsonl, run.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--data", type=Path, default=None,
                        help="a world set .npz (default: render the default set into $MEDCF_CACHE/models once)")
    parser.add_argument("--n-pairs", type=positive(int), default=2400,
                        help="pairs in the default training set (2 images each; default 2400)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the first training pair (default 0)")
    parser.add_argument("--size", type=positive(int), default=256, help="image size of the rendered set (default 256)")
    parser.add_argument("--steps", type=positive(int), default=steps, help=f"total optimizer steps (default {steps})")
    parser.add_argument("--batch", type=positive(int), default=batch, help=f"batch size (default {batch})")
    parser.add_argument("--lr", type=positive(float), default=lr, help=f"peak learning rate (default {lr:g})")
    parser.add_argument("--seed", type=int, default=0, help="training seed: weights, batches, noise (default 0)")
    parser.add_argument("--checkpoint-every", type=positive(int), default=250, help="steps between checkpoints (default 250)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine one thread ran 2-3x faster "
                             "per step than two; 0 = torch's default)")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop (with a checkpoint) after this many minutes; --resume continues (default: no limit)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train_autoencoder(args: argparse.Namespace) -> int:
    from medcf.training.autoencoder import AutoencoderOptions, train_autoencoder

    result = train_autoencoder(AutoencoderOptions(
        out=str(args.out), data=str(args.data) if args.data else None, n_pairs=args.n_pairs, size=args.size,
        data_seed=args.data_seed, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
        checkpoint_every=args.checkpoint_every, threads=args.threads, max_minutes=args.max_minutes,
        resume=args.resume, progress=not args.quiet,
        heldout_pairs=args.heldout_pairs,
        heldout_data=str(args.heldout_data) if args.heldout_data else None))
    print(json.dumps(result))
    return 0


def cmd_train_generator(args: argparse.Namespace) -> int:
    from medcf.training.generator import GeneratorOptions, train_generator

    result = train_generator(GeneratorOptions(
        out=str(args.out), autoencoder=str(args.autoencoder) if args.autoencoder else None,
        init=str(args.init) if args.init else None, paired=args.paired, ground=args.ground, data=str(args.data) if args.data else None,
        n_pairs=args.n_pairs, size=args.size, data_seed=args.data_seed, steps=args.steps, batch=args.batch,
        lr=args.lr, prompt_dropout=args.prompt_dropout, seed=args.seed, checkpoint_every=args.checkpoint_every,
        threads=args.threads, max_minutes=args.max_minutes, resume=args.resume, progress=not args.quiet))
    print(json.dumps(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medcf.training.export import export_default_model

    for path in export_default_model(args.autoencoder, args.generator, args.out, half=not args.fp32):
        print(path)
    return 0


def cmd_train_segmenter(args: argparse.Namespace) -> int:
    from medcf.training.segmenter import TrainConfig, train_segmenter
    from medcf.world.film import FilmLook

    config = TrainConfig(out_dir=args.out, patients=args.patients, steps=args.steps, batch=args.batch,
                         learning_rate=args.lr, seed=args.seed, eval_patients=args.eval_patients,
                         checkpoint_every=args.checkpoint_every, init_weights=args.init,
                         film_look=None if args.no_film_look else FilmLook(), lung_shapes=args.lung_shapes,
                         lung_shape_source=args.lung_shape_source)
    weights = train_segmenter(config, resume=args.resume, progress=not args.quiet)
    print(f"weights: {weights}", file=sys.stderr)
    print(f"record: {weights.parent / 'training.json'}", file=sys.stderr)
    return 0


def cmd_train_segmenter_labels(args: argparse.Namespace) -> int:
    from medcf.training.segmenter_labels import FinetuneConfig, finetune_segmenter, read_manifest

    config = FinetuneConfig(out_dir=args.out, init_weights=args.init, steps=args.steps, batch=args.batch,
                            learning_rate=args.lr, seed=args.seed, min_labels=args.min_labels)
    weights = finetune_segmenter(read_manifest(args.pairs), config, progress=not args.quiet)
    print(f"weights: {weights}")
    print(f"record: {weights.parent / 'training.json'}")
    return 0


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
    from medcf.bundle import bundle_root
    from medcf.causal.factors import CONFIG_FILE, FactorConfig, autoencoder_fingerprint, save_factors
    from medcf.models.packaging import refresh_package
    from medcf.training.skew import skewed_subset
    from medcf.training.world_sets import WorldSetSpec, render_world_set
    from medcf.models.loaders import load_generator
    from medcf.training.factors import (FactorOptions, cached_pair_latents, latent_errors, record_for,
                                        train_factors)

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


def add_training_parsers(train_sub: argparse._SubParsersAction, model_sub: argparse._SubParsersAction) -> None:
    """Every ``medcf train MODEL`` under ``train_sub``, and ``medcf model export`` under ``model_sub``."""
    from medcf.training.label_limits import MIN_LABELS

    labels = train_sub.add_parser(
        "segmenter-labels",
        help="fine-tune the anatomy network on films people labelled",
        description="Fine-tune the anatomy network on labelled films, starting from --init (default: the bundle's "
                    "weights), and write OUT/anatomy_unet.safetensors and OUT/training.json. The manifest is a "
                    "JSON list of {\"image\": FILE, \"label\": FILE}: images as `medcf segment` reads them, labels "
                    "as `medcf edit --masks` reads them (label map 1 lung_right, 2 lung_left, 3 heart; Slicer "
                    ".seg.nrrd; DICOM SEG). Lungs are not trained under a labelled heart (docs/monailabel.md).",
        epilog=ANATOMY_EPILOG,
    )
    labels.add_argument("--pairs", type=Path, required=True, metavar="MANIFEST.json", help="labelled films")
    labels.add_argument("--out", type=Path, required=True, help="new or empty folder for the weights and record")
    labels.add_argument("--init", type=Path, default=None, help="start weights (default: the bundle's)")
    labels.add_argument("--steps", type=int, default=100, help="optimiser steps (default 100)")
    labels.add_argument("--batch", type=int, default=4, help="films per step (default 4)")
    labels.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    labels.add_argument("--seed", type=int, default=0, help="seed of batches and augmentation (default 0)")
    labels.add_argument("--min-labels", type=int, default=MIN_LABELS,
                        help=f"refuse to train on fewer labelled films (default {MIN_LABELS})")
    labels.add_argument("--quiet", action="store_true", help="no per-step lines")
    labels.set_defaults(func=cmd_train_segmenter_labels)

    train = train_sub.add_parser(
        "segmenter",
        help="train the anatomy network on the simulated world",
        description="Render training images from the simulated world (cached in $MEDCF_CACHE/anatomy), train the "
                    "MONAI UNet of monai_bundle/configs/anatomy.json with augmentation aimed at real radiographs, "
                    "check Dice on held-out seeds, and write OUT/anatomy_unet.safetensors and OUT/training.json. "
                    "A checkpoint is kept every --checkpoint-every steps; --resume continues an interrupted run.",
        epilog=ANATOMY_EPILOG,
    )
    train.add_argument("--out", type=Path, required=True, help="run folder (new or empty, or the run to --resume)")
    train.add_argument("--patients", type=int, default=800, help="simulated patients, 2 images each (default 800)")
    train.add_argument("--steps", type=int, default=4000, help="optimiser steps (default 4000)")
    train.add_argument("--batch", type=int, default=16, help="images per step (default 16)")
    train.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, one-cycle schedule (default 3e-3)")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and augmentation (default 0)")
    train.add_argument("--eval-patients", type=int, default=40, help="held-out patients checked during training")
    train.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints (default 250)")
    train.add_argument("--init", type=Path, default=None,
                       help="start from these weights (.safetensors) instead of random ones: fine-tuning")
    train.add_argument("--no-film-look", action="store_true",
                       help="train on renders as they are, without the real-film steps (processing, grid lines, "
                            "collimation, lung shapes; docs/anatomy.md)")
    train.add_argument("--lung-shapes", type=int, default=48,
                       help="real lung outlines the renders' lungs are warped toward (default 48; 0: none)")
    train.add_argument("--lung-shape-source", type=Path, default=None, metavar="ZIP",
                       help="zip of lung mask images (default: semantic_masks_v7labs_lungs.zip of an installed "
                            "torchxrayvision, CC BY 4.0)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train_segmenter)

    ae = train_sub.add_parser(
        "autoencoder", help="train the default model's KL autoencoder on the simulated world",
        description="Train the default model's autoencoder (1 channel, 256x256 -> 32x32x4) on random crops of "
                    "simulated radiographs (rendered once into the cache, training seeds 0..999999). Reports "
                    "reconstruction PSNR on held-out images (seeds from 1000000). Checkpoints every "
                    "--checkpoint-every steps; --resume continues.", epilog=MODEL_EPILOG)
    _common_training(ae, steps=3000, batch=8, lr=2e-4)
    ae.add_argument("--crop", type=positive(int), default=128, help="training crop size in pixels (default 128)")
    ae.add_argument("--heldout-pairs", type=positive(int), default=32, help="held-out pairs for PSNR (default 32)")
    ae.add_argument("--heldout-data", type=Path, default=None,
                    help="a held-out world set .npz for PSNR (default: render seeds from 1000000 into the cache)")
    ae.set_defaults(func=cmd_train_autoencoder)

    gen = train_sub.add_parser(
        "generator", help="train the default model's text-conditioned UNet (after the autoencoder)",
        description="Train the default model's denoiser (diffusers UNet2DConditionModel, cross-attention to frozen "
                    "MiniLM token embeddings of the world prompts, 10%% prompt dropout for classifier-free "
                    "guidance) on the autoencoder's latents of the simulated world. Keeps an EMA of the weights; "
                    "checkpoints every --checkpoint-every steps; --resume continues.", epilog=MODEL_EPILOG)
    _common_training(gen, steps=8000, batch=16, lr=2e-4)
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--autoencoder", type=Path, help="run folder of `medcf train autoencoder` (a new denoiser)")
    source.add_argument("--init", type=Path,
                        help="fine-tune an exported model folder (e.g. monai_bundle/models): its autoencoder, "
                             "latent scale and denoiser (as both the weights and their EMA) are the start")
    gen.add_argument("--paired", action="store_true",
                     help="paired batches: each batch holds whole factual/counterfactual pairs, both films of a "
                          "pair under the same noise and timestep, so the prompt is all that tells them apart")
    gen.add_argument("--ground", type=float, default=0.0, metavar="WEIGHT",
                     help="attention grounding (medcf.training.grounding): add WEIGHT x a loss that pulls the "
                          "finding words' cross-attention into the lesion's cells, taken from each pair's "
                          "|factual - counterfactual| (TokenCompose's token loss); 0 = off (default)")
    gen.add_argument("--prompt-dropout", type=float, default=0.1, help="share of empty prompts (default 0.1)")
    gen.set_defaults(func=cmd_train_generator)

    parser = train_sub.add_parser(
        "factors", help="train the causal factor model (anatomy/pathology disentanglement, --method causal)",
        description="Train the two-factor model of docs/methods.md §5 on the default model's autoencoder latents of "
                    "the simulated world's exact pairs (the same patient with and without one finding): an "
                    "identity/anatomy factor, a pathology factor, an attribute prior (finding, side, zone, "
                    "severity) and a decoder, with reconstruction, group-swap, prior-swap, KL, classification, "
                    "cross-patient swap-consistency and HSIC independence losses; then the pathology encoder "
                    "alone is fitted to the frozen rest (--posterior-steps). Reports the held-out latent "
                    "error of the swaps; --export writes causal_factors.json + .safetensors for `medcf edit "
                    "--method causal`; exported into a model folder, they are listed in its package "
                    "(medcf_model.json, as `medcf model package` writes it).",
        epilog=MODEL_EPILOG)
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


    export = model_sub.add_parser(
        "export", help="write the bundle's models/ folder from training runs",
        description="Take the newest checkpoints of an autoencoder run and a generator run (EMA weights) and "
                    "write medcf_generator.json + fp16 safetensors into OUT (never over existing files).",
        epilog=MODEL_EPILOG)
    export.add_argument("--autoencoder", type=Path, required=True,
                        help="run folder of `medcf train autoencoder`, or the model folder a fine-tune started from")
    export.add_argument("--generator", type=Path, required=True, help="run folder of `medcf train generator`")
    export.add_argument("--out", type=Path, required=True, help="e.g. monai_bundle/models")
    export.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16)")
    export.set_defaults(func=cmd_export)
