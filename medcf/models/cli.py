"""``medcf train autoencoder|generator``, ``medcf generate`` and ``medcf model ...``.

Registered from medcf/cli.py with :func:`add_model_parsers`; parsing only, each command
calls one library function. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medcf.devices import add_device_options, loader_kwargs, placement_from_args

EPILOG = (
    "The default model learned from simulated radiographs rendered from one chest CT, not from patients. "
    "MedCF output is synthetic, for research only, never for diagnosis. Documentation: monai_bundle/docs/README.md."
)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value
    return parse


def _common_training(parser: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints, log.jsonl, run.json")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--data", type=Path, default=None,
                        help="a world set .npz (default: render the default set into $MEDCF_CACHE/models once)")
    parser.add_argument("--n-pairs", type=_positive(int), default=2400,
                        help="pairs in the default training set (2 images each; default 2400)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the first training pair (default 0)")
    parser.add_argument("--size", type=_positive(int), default=256, help="image size of the rendered set (default 256)")
    parser.add_argument("--steps", type=_positive(int), default=steps, help=f"total optimizer steps (default {steps})")
    parser.add_argument("--batch", type=_positive(int), default=batch, help=f"batch size (default {batch})")
    parser.add_argument("--lr", type=_positive(float), default=lr, help=f"peak learning rate (default {lr:g})")
    parser.add_argument("--seed", type=int, default=0, help="training seed: weights, batches, noise (default 0)")
    parser.add_argument("--checkpoint-every", type=_positive(int), default=250, help="steps between checkpoints (default 250)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine one thread ran 2-3x faster "
                             "per step than two; 0 = torch's default)")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="stop (with a checkpoint) after this many minutes; --resume continues (default: no limit)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train_autoencoder(args: argparse.Namespace) -> int:
    from medcf.models.train import AutoencoderOptions, train_autoencoder

    result = train_autoencoder(AutoencoderOptions(
        out=str(args.out), data=str(args.data) if args.data else None, n_pairs=args.n_pairs, size=args.size,
        data_seed=args.data_seed, steps=args.steps, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
        checkpoint_every=args.checkpoint_every, threads=args.threads, max_minutes=args.max_minutes,
        resume=args.resume, progress=not args.quiet, heldout_pairs=args.heldout_pairs,
        heldout_data=str(args.heldout_data) if args.heldout_data else None))
    print(json.dumps(result))
    return 0


def cmd_train_generator(args: argparse.Namespace) -> int:
    from medcf.models.train import GeneratorOptions, train_generator

    result = train_generator(GeneratorOptions(
        out=str(args.out), autoencoder=str(args.autoencoder) if args.autoencoder else None,
        init=str(args.init) if args.init else None, paired=args.paired, ground=args.ground, data=str(args.data) if args.data else None,
        n_pairs=args.n_pairs, size=args.size, data_seed=args.data_seed, steps=args.steps, batch=args.batch,
        lr=args.lr, prompt_dropout=args.prompt_dropout, seed=args.seed, checkpoint_every=args.checkpoint_every,
        threads=args.threads, max_minutes=args.max_minutes, resume=args.resume, progress=not args.quiet))
    print(json.dumps(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from medcf.models.train import export_default_model

    for path in export_default_model(args.autoencoder, args.generator, args.out, half=not args.fp32):
        print(path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from medcf.models.bundle import generate_to_folder

    for path in generate_to_folder(args.model, args.prompt, args.out, seed=args.seed, steps=args.steps,
                                   guidance_scale=args.guidance_scale, num_images=args.n,
                                   text_encoder=args.text_encoder, progress=not args.quiet,
                                   placement=placement_from_args(args), optimize_noise=args.optimize_noise):
        print(path)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from medcf.models.loaders import load_generator

    generator = load_generator(args.model, text_encoder=args.text_encoder, **loader_kwargs(placement_from_args(args)))
    info = generator.describe()
    if args.sites:
        info["sites"] = [{"name": s.name, "kind": s.kind, "grid": list(s.grid), "heads": s.heads}
                         for s in generator.attention_sites()]
    print(json.dumps(info, indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from medcf.editing.modelcheck import check_model, write_check

    check = check_model(args.model, text_encoder=args.text_encoder, placement=placement_from_args(args),
                        steps=args.steps, image=args.image, seed=args.seed)
    print(json.dumps(check.to_dict(), indent=2) if args.json else "\n".join(check.lines()))
    if args.out is not None:
        for path in write_check(check, args.out):
            print(path, file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from medcf.models.evaluate import evaluate_model

    report = evaluate_model(args.model, per_finding=args.per_finding, steps=args.steps, out=args.out,
                            heldout_pairs=args.heldout_pairs, progress=not args.quiet,
                            heldout_data=args.heldout_data, judge=args.judge,
                            guidance_scales=args.guidance_scales)
    print(json.dumps(report, indent=2))
    return 0


def add_model_parsers(sub: argparse._SubParsersAction, train_sub: argparse._SubParsersAction) -> None:
    """``medcf train autoencoder|generator`` under ``train_sub``; ``medcf generate`` and
    ``medcf model export|info|evaluate`` under ``sub``."""
    ae = train_sub.add_parser(
        "autoencoder", help="train the default model's KL autoencoder on the simulated world",
        description="Train the default model's autoencoder (1 channel, 256x256 -> 32x32x4) on random crops of "
                    "simulated radiographs (rendered once into the cache, training seeds 0..999999). Reports "
                    "reconstruction PSNR on held-out images (seeds from 1000000). Checkpoints every "
                    "--checkpoint-every steps; --resume continues.", epilog=EPILOG)
    _common_training(ae, steps=3000, batch=8, lr=2e-4)
    ae.add_argument("--crop", type=_positive(int), default=128, help="training crop size in pixels (default 128)")
    ae.add_argument("--heldout-pairs", type=_positive(int), default=32, help="held-out pairs for PSNR (default 32)")
    ae.add_argument("--heldout-data", type=Path, default=None,
                    help="a held-out world set .npz for PSNR (default: render seeds from 1000000 into the cache)")
    ae.set_defaults(func=cmd_train_autoencoder)

    gen = train_sub.add_parser(
        "generator", help="train the default model's text-conditioned UNet (after the autoencoder)",
        description="Train the default model's denoiser (diffusers UNet2DConditionModel, cross-attention to frozen "
                    "MiniLM token embeddings of the world prompts, 10%% prompt dropout for classifier-free "
                    "guidance) on the autoencoder's latents of the simulated world. Keeps an EMA of the weights; "
                    "checkpoints every --checkpoint-every steps; --resume continues.", epilog=EPILOG)
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
                     help="attention grounding (medcf.models.grounding): add WEIGHT x a loss that pulls the "
                          "finding words' cross-attention into the lesion's cells, taken from each pair's "
                          "|factual - counterfactual| (TokenCompose's token loss); 0 = off (default)")
    gen.add_argument("--prompt-dropout", type=float, default=0.1, help="share of empty prompts (default 0.1)")
    gen.set_defaults(func=cmd_train_generator)

    generate = sub.add_parser(
        "generate", help="generate synthetic chest radiographs from a prompt",
        description="Sample images from a generative model in a local folder (MedCF bundle, diffusers SD or "
                    "PixArt pipeline, MONAI LDM bundle): DDIM, classifier-free guidance. Writes 16-bit PNGs and "
                    "a JSON record per image into OUT (new files only).", epilog=EPILOG)
    generate.add_argument("--prompt", required=True, help='e.g. "PA chest radiograph. Moderate left pleural effusion."')
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.add_argument("--model", type=Path, default=None, help="model folder (default: the MedCF bundle)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    generate.add_argument("--n", type=_positive(int), default=1, help="number of images (seeds SEED..SEED+N-1)")
    generate.add_argument("--steps", type=_positive(int), default=25, help="DDIM steps (default 25)")
    generate.add_argument("--guidance-scale", type=float, default=None, help="classifier-free guidance (default: the model's)")
    generate.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    generate.add_argument("--optimize-noise", action="store_true",
                          help="optimise each image's initial noise first so that the findings the prompt names are "
                               "attended to (InitNO, for rare combinations; at most 5 x 11 denoiser calls, recorded "
                               "in each image's .json)")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_options(generate)
    generate.set_defaults(func=cmd_generate)

    model = sub.add_parser("model", help="export, inspect and evaluate generative models",
                           description="Generative-model utilities.", epilog=EPILOG)
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    model_sub.required = True
    export = model_sub.add_parser(
        "export", help="write the bundle's models/ folder from training runs",
        description="Take the newest checkpoints of an autoencoder run and a generator run (EMA weights) and "
                    "write medcf_generator.json + fp16 safetensors into OUT (never over existing files).",
        epilog=EPILOG)
    export.add_argument("--autoencoder", type=Path, required=True,
                        help="run folder of `medcf train autoencoder`, or the model folder a fine-tune started from")
    export.add_argument("--generator", type=Path, required=True, help="run folder of `medcf train generator`")
    export.add_argument("--out", type=Path, required=True, help="e.g. monai_bundle/models")
    export.add_argument("--fp32", action="store_true", help="keep float32 weights (default float16)")
    export.set_defaults(func=cmd_export)
    info = model_sub.add_parser("info", help="what a model folder holds: format, sizes, attention sites",
                                description="Load a model folder and describe it as MedCF sees it.", epilog=EPILOG)
    info.add_argument("model", type=Path, help="model folder")
    info.add_argument("--sites", action="store_true", help="list every attention site")
    info.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    add_device_options(info)
    info.set_defaults(func=cmd_info)
    check = model_sub.add_parser(
        "check", help="smoke-test a model folder: load, sample, invert and reconstruct one film, say what will not work",
        description="Load the model, sample one film from the normal prompt, encode one film (default: the committed "
                    "sample study's PA film) and reconstruct it through the editor's DDPM inversion and through "
                    "unguided DDIM inversion; report the reconstruction errors and seconds, and which of MedCF's "
                    "methods will not work on this model and why (no cross-attention, finding words lost by its "
                    "tokenizer, no steering vectors, no measured defaults or check reliability). Exit status 2 with "
                    "one line if the folder does not load or the film is NaN, black or saturated.", epilog=EPILOG)
    check.add_argument("model", type=Path, help="model folder (any format `medcf model info` reads)")
    check.add_argument("--image", type=Path, default=None,
                       help="film to reconstruct: DICOM, PNG or NIfTI (default: the committed sample study)")
    check.add_argument("--steps", type=_positive(int), default=25, help="sampling and inversion steps (default 25)")
    check.add_argument("--seed", type=int, default=0, help="seed of the sample and the DDPM inversion (default 0)")
    check.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument("--out", type=Path, default=None, help="also write check.json and the films into this new folder")
    add_device_options(check)
    check.set_defaults(func=cmd_check)
    evaluate = model_sub.add_parser(
        "evaluate", help="figures of a model: autoencoder PSNR, how often samples carry the prompted finding",
        description="Autoencoder reconstruction PSNR on held-out simulated films, and prompt faithfulness by the "
                    "benchmark's judge: per finding, the share of samples from held-out prompts in which the judge "
                    "finds the prompted finding on the prompted side, and the share of normal-prompt samples it "
                    "calls each finding (false alarms), at each --guidance-scales side by side. The judge's own AUC "
                    "per finding is printed beside them: a finding it sees poorly gives rates that say more about "
                    "the judge than the model.", epilog=EPILOG)
    evaluate.add_argument("model", type=Path, help="model folder (MedCF bundle)")
    evaluate.add_argument("--per-finding", type=_positive(int), default=10,
                          help="samples per finding (default 10; twice as many from the normal prompt)")
    evaluate.add_argument("--steps", type=_positive(int), default=25, help="DDIM steps (default 25)")
    evaluate.add_argument("--guidance-scales", type=float, nargs="+", default=None,
                          help="classifier-free guidance scales to compare (default: the model's own)")
    evaluate.add_argument("--judge", type=Path, default=None,
                          help="judge folder (default: the bundle's models/judge)")
    evaluate.add_argument("--heldout-pairs", type=_positive(int), default=280,
                          help="held-out pairs for PSNR and the prompts (default 280)")
    evaluate.add_argument("--heldout-data", type=Path, default=None,
                          help="a held-out world set .npz (seeds >= 1000000; default: render it into the cache)")
    evaluate.add_argument("--out", type=Path, default=None, help="also write a sample panel PNG into this folder")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(func=cmd_evaluate)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: medcf train ... | medcf generate ... | medcf model ...")
