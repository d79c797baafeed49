"""``medcf generate`` and ``medcf model info|check``.

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


def positive(kind):
    """An argparse type: a number of ``kind`` above 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be positive")
        return value
    return parse


def cmd_generate(args: argparse.Namespace) -> int:
    from medcf.editing.bundle import generate_to_folder

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


def cmd_package(args: argparse.Namespace) -> int:
    from medcf.models.packaging import write_manifest

    packaged = write_manifest(args.model, name=args.name, text_encoder=args.text_encoder)
    for line in packaged.pieces:
        print(line)
    for note in packaged.notes:
        print(f"note: {note}", file=sys.stderr)
    print(packaged.manifest)
    return 0


def cmd_calibrate_domain(args: argparse.Namespace) -> int:
    from medcf.domain.calibration import DomainRule
    from medcf.domain.films import calibrate_folder, film_paths
    from medcf.models.loaders import load_generator
    from medcf.models.packaging import write_manifest

    rule = DomainRule(args.quantile, args.margin)  # a bad rule or folder fails before the model loads
    film_paths(args.films)
    generator = load_generator(args.model, text_encoder=args.text_encoder, **loader_kwargs(placement_from_args(args)))
    done = calibrate_folder(generator, args.model, args.films, rule)
    packaged = write_manifest(args.model, text_encoder=args.text_encoder)
    print(done.path)
    print(packaged.manifest)
    print(f"cost: {done.seconds:.1f} s for {done.calibration.n_films} films on {generator.device}", file=sys.stderr)
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


def add_model_parsers(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """``medcf generate`` and ``medcf model info|check`` under ``sub``; returns the
    ``model`` actions, where the lab adds ``export`` (:mod:`medcf.training.cli`) and ``evaluate`` (:mod:`medcf.eval.cli`)."""
    generate = sub.add_parser(
        "generate", help="generate synthetic chest radiographs from a prompt",
        description="Sample images from a generative model in a local folder (MedCF bundle, diffusers SD or "
                    "PixArt pipeline, MONAI LDM bundle): DDIM, classifier-free guidance. Writes 16-bit PNGs and "
                    "a JSON record per image into OUT (new files only).", epilog=EPILOG)
    generate.add_argument("--prompt", required=True, help='e.g. "PA chest radiograph. Moderate left pleural effusion."')
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.add_argument("--model", type=Path, default=None, help="model folder (default: the MedCF bundle)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    generate.add_argument("--n", type=positive(int), default=1, help="number of images (seeds SEED..SEED+N-1)")
    generate.add_argument("--steps", type=positive(int), default=25, help="DDIM steps (default 25)")
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
    info = model_sub.add_parser("info", help="what a model folder holds: format, sizes, attention sites",
                                description="Load a model folder and describe it as MedCF sees it.", epilog=EPILOG)
    info.add_argument("model", type=Path, help="model folder")
    info.add_argument("--sites", action="store_true", help="list every attention site")
    info.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    add_device_options(info)
    info.set_defaults(func=cmd_info)
    package = model_sub.add_parser(
        "package", help="write or refresh a model folder's manifest (medcf_model.json)",
        description="List the model's weights and the optional pieces beside them (steering vectors, per-finding "
                    "settings, evidence for the model's own check, the causal factor model, the segmenter, alternative "
                    "denoisers in denoisers/<name>/), each file with its SHA-256 and each piece with the fingerprint of "
                    "the weights it was made for, in medcf_model.json beside the weights (replaced if there). The "
                    "editor uses only what the manifest lists; run it again after changing any listed file.",
        epilog=EPILOG)
    package.add_argument("model", type=Path, help="model folder (any format `medcf model info` reads)")
    package.add_argument("--name", default=None, help="the package's name (default: the bundle's or the folder's)")
    package.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    package.set_defaults(func=cmd_package)
    domain = model_sub.add_parser(
        "calibrate-domain", help="measure a model's film domain on held-out films of its own kind",
        description="Measure each film as an edit's input is measured (autoencoder reconstruction error and "
                    "denoising error at fixed noise levels, inside the lungs and over the whole film), keep the "
                    "quantiles per measure in domain_calibration.json beside the weights, tied to the model's "
                    "fingerprints, and refresh medcf_model.json. From then on `medcf edit` refuses a film beyond "
                    "QUANTILE x MARGIN on any measure (or writes it marked, with --allow-out-of-domain). Give films "
                    "the model was NOT trained on but that are of the kind it was trained on (at least 20; 100 "
                    "or more place the 99.5th percentile well).", epilog=EPILOG)
    domain.add_argument("model", type=Path, help="model folder (any format `medcf model info` reads)")
    domain.add_argument("--films", type=Path, nargs="+", required=True, metavar="FOLDER",
                        help="folder(s) of DICOM, PNG or NIfTI films of the model's own domain, read recursively")
    domain.add_argument("--quantile", type=float, default=0.995,
                        help="the quantile of the films' values a film must stay below (default 0.995)")
    domain.add_argument("--margin", type=float, default=1.25,
                        help="times the quantile (default 1.25: chosen on the default model's tuning renders, "
                             "docs/models.md)")
    domain.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    add_device_options(domain)
    domain.set_defaults(func=cmd_calibrate_domain)
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
    check.add_argument("--steps", type=positive(int), default=25, help="sampling and inversion steps (default 25)")
    check.add_argument("--seed", type=int, default=0, help="seed of the sample and the DDPM inversion (default 0)")
    check.add_argument("--text-encoder", type=Path, default=None, help="local CLIP folder for MONAI bundles")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.add_argument("--out", type=Path, default=None, help="also write check.json and the films into this new folder")
    add_device_options(check)
    check.set_defaults(func=cmd_check)
    return model_sub


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: medcf generate ... | medcf model ...")
