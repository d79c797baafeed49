"""Attention grounding (medcf.training.grounding): lesion masks from a pair's difference, a loss
that moves the finding words' cross-attention into them, and training that applies it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.errors import InputError
from medcf.training.grounding import (GroundingProcessor, cross_sites, grounding_loss, lesion_footprints, lesion_masks,
                                    measure_grounding, token_grids)
from medcf.models.loaders import load_generator
from tests import model_fixtures

EFFUSION_LEFT = "PA chest radiograph. Moderate left pleural effusion."
NORMAL = "PA chest radiograph. Normal chest radiograph."
SIZE = 64


def _pairs(path: Path, n: int = 6) -> Path:
    """Pairs whose factual film has a bright blob low on the image's right (patient left),
    then one unpaired normal film."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    blob = 0.5 * np.exp(-((xx - 0.8) ** 2 + (yy - 0.8) ** 2) / 0.004)
    images, records = [], []
    for i in range(n):
        base = 0.3 + 0.2 * rng.random() * yy
        for kind, image, caption, finding in (("factual", base + blob, EFFUSION_LEFT, "pleural_effusion"),
                                              ("counterfactual", base, NORMAL, "none")):
            images.append(np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
            records.append({"seed": 10 + i, "kind": kind, "prompt": caption, "finding": finding})
    images.append(images[1].copy())
    records.append({"seed": 99, "kind": "factual", "prompt": NORMAL, "finding": "none"})
    return model_fixtures.write_world_set(path, images, records)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from medcf.training.world_sets import load_world_set

    return load_world_set(_pairs(tmp_path_factory.mktemp("grounding") / "pairs.npz"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return model_fixtures.make_default_model(tmp_path_factory.mktemp("plain") / "model")


def test_lesion_masks_are_where_the_pair_differs_and_empty_elsewhere(world):
    starts = np.arange(0, 12, 2)
    footprints = lesion_footprints(world.images, starts, (8, 8))
    assert footprints.shape == (13, 8, 8)
    assert float(footprints[1::2].abs().max()) == 0.0 and float(footprints[12].abs().max()) == 0.0
    masks = lesion_masks(footprints, [(4, 4), (2, 2)])
    cells = masks[(4, 4)][0].reshape(4, 4)
    assert bool(cells[3, 3]) and not bool(cells[:2].any()) and not bool(cells[:, :2].any())
    assert masks[(2, 2)][0].reshape(2, 2).tolist() == [[False, False], [False, True]]
    assert not bool(masks[(4, 4)][1].any()) and not bool(masks[(4, 4)][12].any())
    with pytest.raises(ValueError, match="tile"):
        lesion_footprints(world.images, starts, (5, 5))


def test_the_grounding_loss_moves_the_finding_words_attention_into_the_lesion(world, plain):
    """Fit only the cross-attention query/key projections of a random tiny denoiser to the
    grounding loss: the held share inside the lesion rises from where it began (a loss that
    could not act would leave it)."""
    from medcf.editing.regulation import pathology_tokens
    from medcf.vocab import Finding

    generator = load_generator(plain)
    unet = generator.unet.float()
    sites = cross_sites(unet)
    grids = token_grids(sites, unet, generator.latent_size)
    assert grids == [(4, 4), (2, 2)]
    starts = np.arange(0, 12, 2)
    masks = lesion_masks(lesion_footprints(world.images, starts, generator.latent_size), grids)
    before = np.mean([r["share_inside"] for r in measure_grounding(generator, world, seed=1) if r["grid"] == "4x4"])
    text = generator.encode_text([EFFUSION_LEFT] * len(starts))
    weights = torch.zeros((len(starts), text.embeddings.shape[1]))
    weights[:, pathology_tokens(text, Finding.PLEURAL_EFFUSION, 0)] = 1.0
    with torch.no_grad():
        latents = generator.encode_images(world.float_images(starts)[:, None])
    parameters = [p.requires_grad_(True) for s in sites
                  for p in (*s.module.to_q.parameters(), *s.module.to_k.parameters())]
    optimizer = torch.optim.Adam(parameters, lr=3e-2)
    processor = GroundingProcessor()
    for site in sites:
        site.set_processor(processor)
    index = torch.from_numpy(starts)
    grounded = torch.ones(len(starts), dtype=torch.bool)
    losses = []
    for step in range(25):
        processor.weights, processor.maps = weights, []
        t = torch.full((len(starts),), 500)
        unet(latents + torch.randn_like(latents), t, encoder_hidden_states=text.embeddings)
        loss, share = grounding_loss(processor.maps, masks, index, grounded)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for site in sites:
        site.set_processor(None)
    after_rows = measure_grounding(generator, world, seed=1)
    after = np.mean([r["share_inside"] for r in after_rows if r["grid"] == "4x4"])
    area = np.mean([r["area_share"] for r in after_rows if r["grid"] == "4x4"])
    assert losses[-1] < 0.8 * losses[0]
    assert after > before + 0.1 and after > 2 * area
    assert {r["film"] for r in after_rows} == set(starts.tolist())  # the unpaired film is never measured
    # an add edit's question: the same patients' films without the blob, under the prompt naming it
    normal_rows = measure_grounding(generator, world, seed=1, film="counterfactual")
    assert [r["film"] for r in normal_rows] == [r["film"] for r in after_rows]
    assert [r["area_share"] for r in normal_rows] == [r["area_share"] for r in after_rows]
    with pytest.raises(ValueError, match="counterfactual"):
        measure_grounding(generator, world, film="both")


def test_nothing_grounded_gives_a_zero_loss_that_still_backpropagates():
    attention = torch.rand(2, 16, requires_grad=True)
    masks = {(4, 4): torch.zeros(2, 16, dtype=torch.bool)}
    loss, share = grounding_loss([attention], masks, torch.tensor([0, 1]), torch.tensor([True, True]))
    assert loss.item() == 0.0 and np.isnan(share)
    loss.backward()
    assert attention.grad is not None


def test_training_with_grounding_logs_the_share_and_records_the_recipe(world, plain, tmp_path):
    from medcf.training.generator import GeneratorOptions, train_generator

    data = _pairs(tmp_path / "pairs.npz")
    train_generator(GeneratorOptions(out=str(tmp_path / "run"), init=str(plain), data=str(data), batch=4, steps=3,
                                     ground=1.0, warmup=1, progress=False, log_every=1))
    recipe = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recipe["grounding"]["weight"] == 1.0 and recipe["grounding"]["grounded_films"] == 6
    assert recipe["grounding"]["grids"] == [[4, 4], [2, 2]]
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in logged if "step" in row and "final" not in row]
    assert len(steps) == 3 and all("ground_loss" in row for row in steps)
    assert any(0.0 < row["share_inside"] <= 1.0 for row in steps if row["share_inside"] == row["share_inside"])
    with pytest.raises(InputError, match="--ground"):
        train_generator(GeneratorOptions(out=str(tmp_path / "bad"), init=str(plain), data=str(data), ground=-1.0,
                                         progress=False))
