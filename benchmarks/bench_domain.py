"""The default model's film domain: its calibration, the rule, and how often it refuses.

Two steps, on three seed ranges that never meet:

``calibrate`` (ships ``monai_bundle/models/domain_calibration.json``): renders held-out
training films of the default model (``SeedRange.GENERATOR_HELD_OUT``: the training
distribution, factual and counterfactual films alike, never trained on), writes them as
16-bit PNGs and calibrates through the product's own path (``medcf model calibrate-domain``'s
:func:`medcf.domain.films.calibrate_folder`: read, segment, measure). Then it chooses the
rule's margin on tuning renders (``SeedRange.TUNING`` + 90 000): the smallest margin of a
grid that refuses none of them, reported with the out-of-domain kinds' refusal at each
margin; and refreshes the manifest.

``measure`` (writes ``docs/results/domain/results.json``): on the benchmark's patients
(``SeedRange.BENCHMARK`` + 90 000, never used to choose anything) the refusal rate of
held-out renders (target <= 1 %), film-look renders (the segmenter's film-look transforms,
:mod:`medcf.world.film`), heavily processed films (every processing step at its strong end),
inverted films, lateral views read as PA, and non-chest images (scikit-image's sample
pictures, grey).

    python benchmarks/bench_domain.py calibrate [--n 160] [--tuning 80]
    python benchmarks/bench_domain.py measure [--n 40] [--n-other 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results" / "domain" / "results.json"
SIZE = 256
OFFSET = 90_000  # inside each range, away from the seeds its other users start at
MARGINS = (1.0, 1.1, 1.2, 1.25, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0)
HEADROOM = 1.1  # the margin stays this far above the farthest tuning render: 40-80 films do not show the tail


def world():
    from medcf.world.ct import load_chest_ct
    from medcf.world.render import World

    ct = load_chest_ct()
    return World(ct), ct


def renders(first: int, n: int, the_world=None) -> Iterator[np.ndarray]:
    """Films as the default model's training sets hold them: sample ``i`` of a request at
    ``first``, its factual film (even ``i``) or its counterfactual (odd ``i``)."""
    from medcf.world.pairs import PhantomRequest, plan_background, plan_sample
    from medcf.world.render import draw_acquisition

    the_world, ct = the_world or world()
    request = PhantomRequest(n=n, size=SIZE, seed=first)
    for index in range(n):
        seed, view, lesion = plan_sample(request, index)
        background = plan_background(request, seed, lesion, ct)
        rendering = the_world.render(draw_acquisition(seed, view, SIZE), lesion, background=background)
        yield rendering.factual[lesion.severity] if index % 2 == 0 else rendering.counterfactual


def laterals(first: int, n: int, the_world=None) -> Iterator[np.ndarray]:
    from medcf.vocab import ViewPosition
    from medcf.world.render import draw_acquisition

    the_world, _ = the_world or world()
    for index in range(n):
        yield the_world.render(draw_acquisition(first + index, ViewPosition.LATERAL, SIZE)).counterfactual


def film_look(films: Iterator[np.ndarray], seed: int, heavy: bool = False) -> Iterator[np.ndarray]:
    """``films`` through the film-look transforms (processing chain, grid lines, collimation);
    ``heavy``: every step always, at the strong end of its range."""
    from medcf.world.film import FilmLook, RandCollimationd, RandFilmProcessingd, RandGridLinesd

    look = FilmLook()
    if heavy:
        look = FilmLook(multiscale_prob=1.0, multiscale_gain=(2.0, 3.0), unsharp_prob=1.0, unsharp_amount=(1.5, 2.5),
                        compression_prob=1.0, compression_strength=(0.6, 0.8), voi_prob=1.0, voi_width=(0.4, 0.7),
                        grid_prob=1.0, collimation_prob=1.0)
    steps = [RandFilmProcessingd(look, prob=1.0), RandGridLinesd(look), RandCollimationd(look)]
    for index, step in enumerate(steps):
        step.set_random_state(seed + index)
    for film in films:
        data = {"image": torch.as_tensor(film)[None], "label": torch.zeros((1,) + film.shape)}
        for step in steps:
            data = step(data)
        yield np.asarray(data["image"][0], dtype=np.float32)


def non_chest(n: int) -> Iterator[np.ndarray]:
    """Grey pictures that are not chest films (scikit-image's bundled samples)."""
    import skimage.data as samples
    from skimage.color import rgb2gray

    names = ("camera", "coins", "moon", "text", "brick", "grass", "gravel", "page", "clock", "horse", "cell",
             "checkerboard", "immunohistochemistry", "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
             "retina", "shepp_logan_phantom")
    for name in names[:n]:
        image = np.asarray(getattr(samples, name)())
        image = rgb2gray(image) if image.ndim == 3 else image.astype(np.float64)
        image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
        yield image.astype(np.float32)


def kinds(first: int, n: int, n_other: int) -> dict[str, Callable[[], Iterator[np.ndarray]]]:
    """Every kind of film the benchmark measures, from seeds at ``first``."""
    shared = world()
    return {
        "held_out_renders": lambda: renders(first, n, shared),
        "film_look_renders": lambda: film_look(renders(first + 10_000, n_other, shared), first),
        "heavily_processed": lambda: film_look(renders(first + 20_000, n_other, shared), first + 1, heavy=True),
        "inverted": lambda: (1.0 - film for film in renders(first + 30_000, n_other, shared)),
        "lateral_as_pa": lambda: laterals(first + 40_000, n_other, shared),
        "non_chest": lambda: non_chest(n_other),
    }


def measure_films(generator, segmenter, films: Iterator[np.ndarray], settings) -> list[dict]:
    from medcf.domain.features import measure
    from medcf.domain.films import lungs_of

    return [{k.value: v for k, v in measure(generator, film, lungs_of(film, segmenter), settings).items()}
            for film in films]


def worst_ratio(values: list[dict], calibration) -> list[float]:
    """Per film, its largest value / quantile over the features (the margin that just refuses it)."""
    from medcf.domain.features import DomainFeature

    q = f"{calibration.rule.quantile:g}"
    return [max(v[f.value] / calibration.quantiles[f.value][q] for f in DomainFeature) for v in values]


def refused(values: list[dict], calibration, margin: float) -> int:
    from medcf.domain.calibration import DomainRule
    from medcf.domain.features import DomainFeature

    rule = calibration.with_rule(DomainRule(calibration.rule.quantile, margin))
    return sum(any(v[f.value] > rule.limit(f) for f in DomainFeature) for v in values)


def cmd_calibrate(args) -> None:
    from medcf.anatomy.outputs import load_segmenter
    from medcf.bundle import bundle_root
    from medcf.domain.calibration import DomainRule
    from medcf.domain.films import calibrate_folder
    from medcf.io.images import write_png16
    from medcf.models.loaders import load_generator
    from medcf.models.packaging import write_manifest
    from medcf.world.seeds import SeedRange

    model = bundle_root() / "models"
    generator, segmenter = load_generator(model), load_segmenter()
    first = SeedRange.GENERATOR_HELD_OUT.start
    with tempfile.TemporaryDirectory() as folder:
        for index, film in enumerate(renders(first, args.n)):
            write_png16(Path(folder) / f"{index:04d}.png", film)
        source = {"films": "held-out renders of the default model's training distribution (world sets: factual "
                           "and counterfactual films alternating), written as 16-bit PNG",
                  "seed_range": [first, first + args.n - 1], "range": SeedRange.GENERATOR_HELD_OUT.name,
                  "made_by": "python benchmarks/bench_domain.py calibrate"}
        done = calibrate_folder(generator, model, [folder], DomainRule(), source, segmenter)
    calibration = done.calibration
    tuning_first = SeedRange.TUNING.start + OFFSET
    started = time.perf_counter()
    tuning = {name: measure_films(generator, segmenter, make(), calibration.settings)
              for name, make in kinds(tuning_first, args.tuning, args.tuning_other).items()}
    by_margin = {f"{m:g}": {name: refused(values, calibration, m) / len(values) for name, values in tuning.items()}
                 for m in MARGINS}
    ratios = {name: worst_ratio(values, calibration) for name, values in tuning.items()}
    farthest = max(ratios["held_out_renders"])
    margin = next((m for m in MARGINS if m >= HEADROOM * farthest), MARGINS[-1])
    notes = {"rule_chosen_on": {"seeds_from": tuning_first, "films": {k: len(v) for k, v in tuning.items()},
                                "refusal_by_margin": by_margin,
                                "largest_ratio": {k: round(max(v), 3) for k, v in ratios.items()},
                                "smallest_ratio": {k: round(min(v), 3) for k, v in ratios.items()},
                                "choice": f"the smallest margin of the grid at least {HEADROOM:g} x the largest "
                                          f"value / quantile ratio of the tuning renders ({farthest:.3f})"},
             "calibration_seconds": round(done.seconds, 1), "tuning_seconds": round(time.perf_counter() - started, 1)}
    calibration = calibration.with_rule(DomainRule(calibration.rule.quantile, margin), notes)
    print(calibration.save(done.path))
    print(write_manifest(model).manifest)
    print(json.dumps({"margin": margin, **notes}, indent=1))


def cmd_measure(args) -> None:
    from medcf.anatomy.outputs import load_segmenter
    from medcf.bundle import bundle_root
    from medcf.domain.assess import verdict_of
    from medcf.domain.calibration import find_calibration
    from medcf.domain.features import DomainFeature
    from medcf.io.atomic import replace_own_text
    from medcf.models.loaders import load_generator
    from medcf.world.seeds import SeedRange

    generator, segmenter = load_generator(bundle_root() / "models"), load_segmenter()
    calibration = find_calibration(generator)
    if calibration is None:
        raise SystemExit("the default model ships no domain calibration: run `bench_domain.py calibrate` first")
    first = SeedRange.BENCHMARK.start + OFFSET
    results = {}
    for name, make in kinds(first, args.n, args.n_other).items():
        started = time.perf_counter()
        values = measure_films(generator, segmenter, make(), calibration.settings)
        verdicts = [verdict_of({DomainFeature(k): v for k, v in value.items()}, calibration) for value in values]
        out = sum(v.outside for v in verdicts)
        results[name] = {"n": len(values), "refused": out, "refusal_rate": round(out / len(values), 4),
                         "median_value_over_limit": {f.value: round(float(np.median(
                             [v[f.value] / calibration.limit(f) for v in values])), 3) for f in DomainFeature},
                         "seconds_per_film": round((time.perf_counter() - started) / len(values), 3)}
        print(name, results[name], flush=True)
    document = {"what": "refusal rate of the default model's domain check (medcf.domain) per kind of film; "
                        "python benchmarks/bench_domain.py measure",
                "seeds_from": first, "range": SeedRange.BENCHMARK.name, "size": SIZE,
                "rule": calibration.rule.to_dict(), "calibration_films": calibration.n_films,
                "target": {"held_out_renders": "refusal <= 0.01"}, "results": results,
                "device": str(generator.device), "threads": torch.get_num_threads()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    print(replace_own_text(RESULTS, json.dumps(document, indent=1) + "\n"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    calibrate = sub.add_parser("calibrate", help="ship the default model's calibration and choose the rule")
    calibrate.add_argument("--n", type=int, default=160, help="held-out training films to calibrate on (default 160)")
    calibrate.add_argument("--tuning", type=int, default=80, help="tuning renders to choose the margin on (default 80)")
    calibrate.add_argument("--tuning-other", type=int, default=10, help="films of each out-of-domain kind in tuning")
    measure = sub.add_parser("measure", help="refusal rate per kind of film on the benchmark's seeds")
    measure.add_argument("--n", type=int, default=40, help="held-out renders (default 40)")
    measure.add_argument("--n-other", type=int, default=20, help="films of each other kind (default 20)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"calibrate": cmd_calibrate, "measure": cmd_measure}[args.step](args)


if __name__ == "__main__":
    main()
