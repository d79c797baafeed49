"""Initial-noise optimisation (InitNO, docs/methods.md §5): bounded, reproducible, never worse than
the seed's own noise by its own measure, and a pair made from the optimised noise keeps the
pair's contract (both films from one noise, identical outside the region)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from medcf.editing.initno import NoiseOptimization, optimize_initial_noise, round_seed
from medcf.editing.pairs import generate_pair
from medcf.editing.regulation import pathology_tokens
from medcf.editing.spec import EditSpec, Method
from medcf.errors import InputError
from medcf.models.loaders import load_generator
from medcf.models.sampling import initial_noise
from medcf.vocab import Action, Finding, Side
from tests import model_fixtures

PROMPT = "PA chest radiograph. Moderate left lower zone nodule."


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    torch.set_num_threads(1)
    return load_generator(model_fixtures.make_default_model(tmp_path_factory.mktemp("model") / "tiny"))


def test_the_optimisation_is_bounded_reproducible_and_keeps_the_best_noise(generator):
    text = generator.encode_text([PROMPT])
    tokens = pathology_tokens(text, Finding.NODULE)
    settings = NoiseOptimization(rounds=2, iterations=3, learning_rate=0.5, target=0.0)  # never reached: full budget
    noise, report = optimize_initial_noise(generator, text, tokens, 11, 5, settings)
    assert report.denoiser_calls == 2 * (3 + 1) and report.rounds == 2 and not report.reached
    assert report.response_loss_after <= report.response_loss_before and 0.0 <= report.kl
    assert noise.shape == initial_noise(generator, [11]).shape and torch.isfinite(noise).all()
    assert not torch.equal(noise, initial_noise(generator, [11]))  # it moved
    again, _ = optimize_initial_noise(generator, text, tokens, 11, 5, settings)
    assert torch.equal(noise, again)  # same seed, same noise
    # a noise already good enough is kept as it is: one call, the seed's own noise
    kept, report = optimize_initial_noise(generator, text, tokens, 11, 5, replace(settings, target=1.01))
    assert report.denoiser_calls == 1 and report.reached and torch.equal(kept, initial_noise(generator, [11]))
    assert round_seed(11, 0) == 11 and len({round_seed(11, r) for r in range(5)}) == 5
    with pytest.raises(InputError, match="no token of the finding"):
        optimize_initial_noise(generator, text, [], 11, 5, settings)
    with pytest.raises(InputError, match="bound its cost"):
        NoiseOptimization(rounds=50)


def test_a_pair_from_optimised_noise_starts_both_films_there_and_records_it(generator):
    spec = EditSpec(Finding.NODULE, Action.ADD, Side.LEFT, method=Method.REGULATED, steps=3, seed=5)
    plain = generate_pair(generator, spec, model_fixtures.AtlasSegmenter(), None)
    optimised = generate_pair(generator, replace(spec, optimize_noise=True), model_fixtures.AtlasSegmenter(), None)
    assert plain.noise_report is None and optimised.noise_report["denoiser_calls"] >= 1
    assert torch.equal(plain.trajectory.latents[0], initial_noise(generator, [5]))
    start = optimised.trajectory.latents[0]
    assert not torch.equal(start, plain.trajectory.latents[0]) or optimised.noise_report["reached"]
    outside = ~optimised.region.native_region
    assert np.array_equal(optimised.factual[outside], optimised.counterfactual[outside])
    assert not np.array_equal(optimised.factual, plain.factual) or optimised.noise_report["reached"]


def test_generate_with_optimised_noise_records_the_cost(generator, tmp_path):
    import json

    from medcf.editing.bundle import GenerateImages

    paths = GenerateImages(generator, str(tmp_path / "out"), PROMPT, seed=7, num_images=2, steps=3, progress=False,
                           optimize_noise=True).run()
    records = [json.loads(p.read_text()) for p in paths if p.suffix == ".json"]
    assert [r["seed"] for r in records] == [7, 8]
    assert all(1 <= r["noise_optimization"]["denoiser_calls"] <= 5 * 11 for r in records)  # rounds x (iterations + 1)
    plain = GenerateImages(generator, str(tmp_path / "plain"), PROMPT, seed=7, steps=3, progress=False).run()
    assert "noise_optimization" not in json.loads(plain[1].read_text())
    with pytest.raises(InputError, match="names no finding"):
        GenerateImages(generator, str(tmp_path / "none"), "PA chest radiograph. Normal chest radiograph.",
                       steps=3, progress=False, optimize_noise=True).run()
