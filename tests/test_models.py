"""medcf.models: the Generator interface on tiny random-weight models of every
architecture MedCF loads (diffusers SD-family UNet, diffusers PixArt DiT, MONAI
DiffusionModelUNet bundle, MedCF's default bundle), one sampler, attention sites,
loader errors, training/resume/export, world training sets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.errors import InputError, OutputError
from medcf.models.base import AttentionProcessor, RecordingProcessor, TextEncoding
from medcf.models.loaders import detect_format, load_generator
from medcf.models.sampling import COND, UNCOND, sample
from tests import model_fixtures

PROMPT = "PA chest radiograph. Moderate left pleural effusion."
NORMAL = "PA chest radiograph. Normal chest radiograph."
BUILDERS = model_fixtures.BUILDERS


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    return {name: build(root / name.replace("-", "_")) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def generators(folders):
    return {name: load_generator(folder) for name, folder in folders.items()}


# --- loading and the interface ------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_folder_format_is_detected_and_loaded(folders, generators, name):
    assert detect_format(folders[name]) == name
    generator = generators[name]
    assert generator.format == name
    images = np.random.default_rng(0).random((2, *generator.image_size)).astype(np.float32)
    latents = generator.encode_images(images)
    assert latents.shape == (2, generator.latent_channels, *generator.latent_size)
    decoded = generator.decode_images(latents)
    assert decoded.shape == (2, *generator.image_size) and decoded.min() >= 0 and decoded.max() <= 1
    text = generator.encode_text([PROMPT, ""])
    assert text.embeddings.shape[0] == 2 and len(text.tokens[0]) == text.embeddings.shape[1]
    prediction = generator.denoise(latents, torch.tensor([500, 500]), text)
    assert prediction.shape == latents.shape and torch.isfinite(prediction).all()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_attention_sites_have_kind_grid_and_record_probabilities(generators, name):
    generator = generators[name]
    sites = generator.attention_sites()
    kinds = {site.kind for site in sites}
    assert kinds == {"self", "cross"}, kinds
    names = [site.name for site in sites]
    assert len(names) == len(set(names))
    latent_tokens = generator.latent_size[0] * generator.latent_size[1]
    for site in sites:
        h, w = site.grid
        assert h * w <= latent_tokens and latent_tokens % (h * w) == 0
        assert generator.denoiser.get_submodule(site.name) is site.module

    recorder = RecordingProcessor()
    generator.set_attention_processor(recorder)
    try:
        result = sample(generator, [PROMPT], steps=2, seed=3, guidance_scale=3.0, progress=False)
    finally:
        generator.set_attention_processor(None)
    assert result.images.shape == (1, *generator.image_size)
    text_tokens = generator.encode_text([PROMPT]).embeddings.shape[1]
    assert set(recorder.maps) == set(names)
    for site in sites:
        maps = recorder.maps[site.name]
        assert len(maps) == 2  # one call per step
        probabilities = maps[0]
        tokens = site.grid[0] * site.grid[1]
        keys = tokens if site.kind == "self" else text_tokens
        assert probabilities.shape == (2, site.heads, tokens, keys)  # guided: [uncond, cond]
        assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-4)
        hidden = recorder.outputs[site.name][0]
        assert hidden.shape[:2] == (2, tokens)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_base_processor_reproduces_the_model_and_removal_restores_it(generators, name):
    generator = generators[name]
    torch.manual_seed(0)
    latents = torch.randn(1, generator.latent_channels, *generator.latent_size)
    text = generator.encode_text([PROMPT])
    t = torch.tensor([400])
    with torch.no_grad():
        native = generator.denoise(latents, t, text)
        generator.set_attention_processor(AttentionProcessor())
        bridged = generator.denoise(latents, t, text)

        class Blind(AttentionProcessor):
            """Cross-attention that sees only the first text token: must change the output."""

            def attend(self, site, query, key, value, *, scale, bias=None):
                bias = torch.full(key.shape[:2] + (query.shape[2], key.shape[2]), float("-inf"))
                bias[..., 0] = 0.0
                return super().attend(site, query, key, value, scale=scale, bias=bias)

        generator.set_attention_processor(Blind(), kinds=("cross",))
        blind = generator.denoise(latents, t, text)

        class Steer(AttentionProcessor):
            def output(self, site, hidden):
                return hidden + 1.0

        generator.set_attention_processor({site.name: Steer() for site in generator.attention_sites()[:1]})
        steered = generator.denoise(latents, t, text)
        generator.set_attention_processor(None)
        restored = generator.denoise(latents, t, text)
    assert torch.allclose(native, bridged, atol=1e-4)
    assert not torch.allclose(native, blind, atol=1e-4)
    assert not torch.allclose(blind, steered, atol=1e-4)
    assert torch.equal(native, restored)


def test_sampling_is_seeded_per_image_and_guidance_matters(generators):
    generator = generators["medcf-default"]
    pair = sample(generator, [NORMAL, PROMPT], seed=5, steps=3, progress=False)
    alone = sample(generator, [PROMPT], seed=6, steps=3, progress=False)
    again = sample(generator, [PROMPT], seed=6, steps=3, progress=False)
    np.testing.assert_allclose(pair.images[1], alone.images[0], atol=1e-5)
    assert np.array_equal(alone.images, again.images)
    other = sample(generator, [PROMPT], seed=7, steps=3, progress=False)
    assert not np.allclose(other.latents, alone.latents)
    unguided = sample(generator, [PROMPT], seed=6, steps=3, guidance_scale=1.0, progress=False)
    assert not torch.allclose(unguided.latents, alone.latents)
    assert alone.settings["timesteps"][0] > alone.settings["timesteps"][-1]


def test_a_guidance_map_guides_each_latent_cell_at_its_own_scale(generators):
    generator = generators["medcf-default"]
    h, w = generator.image_size[0] // generator.vae_factor, generator.image_size[1] // generator.vae_factor
    flat = sample(generator, [PROMPT], seed=6, steps=3, guidance_scale=6.0, progress=False, decode=False)
    as_map = sample(generator, [PROMPT], seed=6, steps=3, guidance_scale=torch.full((1, 1, h, w), 6.0),
                    progress=False, decode=False)
    torch.testing.assert_close(as_map.latents, flat.latents)  # a uniform map is the scalar
    split = torch.full((1, 1, h, w), 6.0)
    split[..., w // 2:] = 12.0
    mixed = sample(generator, [PROMPT], seed=6, steps=1, guidance_scale=split, progress=False, decode=False)
    low = sample(generator, [PROMPT], seed=6, steps=1, guidance_scale=6.0, progress=False, decode=False)
    high = sample(generator, [PROMPT], seed=6, steps=1, guidance_scale=12.0, progress=False, decode=False)
    # one step: every cell takes its own scale exactly (later steps mix cells through the network)
    torch.testing.assert_close(mixed.latents[..., : w // 2], low.latents[..., : w // 2])
    torch.testing.assert_close(mixed.latents[..., w // 2:], high.latents[..., w // 2:])
    assert mixed.guidance_scale == 12.0


def test_sampler_reports_branches_and_lets_the_observer_replace_latents(generators):
    generator = generators["diffusers-sd"]

    class Observer:
        def __init__(self):
            self.seen = []

        def begin_step(self, index, timestep, branches):
            self.seen.append((index, timestep, branches))

        def end_step(self, index, timestep, latents):
            return torch.zeros_like(latents)

    observer = Observer()
    result = sample(generator, [PROMPT], steps=3, guidance_scale=5.0, observer=observer, progress=False)
    assert [s[0] for s in observer.seen] == [0, 1, 2]
    assert all(s[2] == (UNCOND, COND) for s in observer.seen)
    assert torch.count_nonzero(result.latents) == 0
    observer = Observer()
    sample(generator, [PROMPT], steps=2, guidance_scale=1.0, observer=observer, progress=False, decode=False)
    assert observer.seen[0][2] == (COND,)


def test_token_indices_find_finding_words(generators):
    text = generators["medcf-default"].encode_text([PROMPT])
    effusion = text.token_indices("effusion")
    pleural = text.token_indices("pleural")
    assert effusion and pleural and max(pleural) < min(effusion)
    assert "".join(t.removeprefix("##") for t in (text.tokens[0][i] for i in effusion)) == "effusion"
    assert text.token_indices("cardiomegaly") == []
    assert isinstance(TextEncoding.cat([text, text]).embeddings, torch.Tensor)


def test_pixart_learned_sigma_is_split_off(generators):
    generator = generators["diffusers-pixart"]
    assert generator.learned_sigma and generator.transformer.config.out_channels == 2 * generator.latent_channels


def test_monai_schedule_is_taken_exactly(generators):
    from monai.networks.schedulers import DDIMScheduler

    generator = generators["monai-ldm"]
    reference = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0205,
                              schedule="scaled_linear_beta", prediction_type="v_prediction")
    ours = generator.make_scheduler()
    assert generator.prediction_type == "v_prediction"
    np.testing.assert_allclose(ours.betas.numpy(), reference.betas.numpy(), rtol=1e-5)


# --- loader errors -------------------------------------------------------------------------


def test_bad_folders_give_one_line_input_errors(tmp_path, folders):
    cases = []
    cases.append((tmp_path / "nowhere", "does not exist"))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    cases.append((file, "is a file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((empty, "is not a model folder MedCF knows"))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    cases.append((unknown, "names pipeline 'FluxPipeline'"))
    broken_json = tmp_path / "brokenjson"
    broken_json.mkdir()
    (broken_json / "model_index.json").write_text("{not json")
    cases.append((broken_json, "is not valid JSON"))
    no_unet = tmp_path / "no_unet"
    no_unet.mkdir()
    (no_unet / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    cases.append((no_unet, "lacks its unet/ component"))
    for folder, words in cases:
        with pytest.raises(InputError) as caught:
            load_generator(folder)
        message = str(caught.value)
        assert words in message and "\n" not in message, message


def test_wrong_weights_and_missing_text_encoder(tmp_path, folders):
    import shutil

    from medcf.models.default import UNET_FILE

    default = tmp_path / "default"
    shutil.copytree(folders["medcf-default"], default)
    config = json.loads((default / "medcf_generator.json").read_text())
    config["unet"]["block_out_channels"] = [16, 32, 64]
    (default / "medcf_generator.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="does not fit the architecture|has shape"):
        load_generator(default)
    (default / UNET_FILE).write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_generator(default)
    # structured finding tokens were tried and not shipped: such a model is refused by name
    config["finding_tokens"] = {"slots": 3}
    (default / "medcf_generator.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="structured finding tokens, which MedCF no longer loads .* commit 836c212"):
        load_generator(default)

    monai = tmp_path / "monai"
    shutil.copytree(folders["monai-ldm"], monai)
    shutil.rmtree(monai / "models" / "text_encoder")
    with pytest.raises(InputError, match="no local CLIP text encoder.*--text-encoder"):
        load_generator(monai)
    (monai / "models" / "model.pt").unlink()
    with pytest.raises(InputError, match="weights file .*model.pt is missing"):
        load_generator(monai, text_encoder=folders["monai-ldm"] / "models" / "text_encoder")


@pytest.mark.integration  # a chain of medcf subprocesses
def test_generate_cli_writes_images_and_refuses_bad_input(tmp_path, folders):
    def medcf(*args):
        return subprocess.run([sys.executable, "-m", "medcf", *args], capture_output=True, text=True)

    out = tmp_path / "out"
    done = medcf("generate", "--model", str(folders["diffusers-sd"]), "--prompt", PROMPT, "--out", str(out),
                 "--seed", "4", "--steps", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "generated-seed4-steps2.json").read_text())
    assert record["prompt"] == PROMPT and record["model"]["format"] == "diffusers-sd"
    assert "research only" in record["notice"]
    from medcf.io.images import read_png

    assert read_png(out / "generated-seed4-steps2.png").shape == (64, 64)
    again = medcf("generate", "--model", str(folders["diffusers-sd"]), "--prompt", PROMPT, "--out", str(out),
                  "--seed", "4", "--steps", "2", "--quiet")
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    missing = medcf("generate", "--model", str(tmp_path / "nope"), "--prompt", PROMPT, "--out", str(out))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr


def test_cli_import_and_parser_do_not_load_heavy_libraries():
    """`medcf --help`, `medcf inspect` and every command's parsing stay fast: building the whole
    parser (the lab's commands included) imports no torch, MONAI, diffusers or transformers
    (importing MONAI alone takes about 8 s on the project's 2-core machine)."""
    code = ("import sys, medcf.cli; medcf.cli.build_parser(); heavy = [m for m in ('torch', 'diffusers', "
            "'transformers', 'monai') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# --- training -----------------------------------------------------------------------------


def _synthetic_world_set(path: Path, n: int = 12, size: int = 64) -> Path:
    """Smooth blobs with prompts: enough to exercise training, resume and export."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, records = [], []
    for i in range(n):
        cx, cy = rng.random(2)
        image = 0.3 + 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)
        images.append(np.rint(image * 65535).astype(np.uint16))
        records.append({"prompt": PROMPT if i % 2 else NORMAL, "finding": "pleural_effusion" if i % 2 else "none"})
    return model_fixtures.write_world_set(path, images, records)


def test_training_resumes_exactly_and_exports_a_loadable_bundle(tmp_path):
    from medcf.models.default import CONFIG_NAME
    from medcf.training.autoencoder import AutoencoderOptions, train_autoencoder
    from medcf.training.engine import load_checkpoint
    from medcf.training.export import export_default_model
    from medcf.training.generator import GeneratorOptions, train_generator

    data = _synthetic_world_set(tmp_path / "set.npz")
    common = dict(data=str(data), heldout_data=str(data), batch=2, crop=32, checkpoint_every=2, progress=False,
                  tiny=True, log_every=1)
    straight = train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae_a"), steps=4, **common))
    train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae_b"), steps=2, **common))
    with pytest.raises(OutputError, match="not empty: pass --resume"):
        train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae_b"), steps=4, **common))
    resumed = train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae_b"), steps=4, resume=True, **common))
    a = load_checkpoint(tmp_path / "ae_a" / "checkpoints" / "step-0000004.pt")["model"]
    b = load_checkpoint(tmp_path / "ae_b" / "checkpoints" / "step-0000004.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["heldout_psnr_db"] == pytest.approx(resumed["heldout_psnr_db"])
    recipe = json.loads((tmp_path / "ae_a" / "run.json").read_text())
    assert recipe["options"]["seed"] == 0 and recipe["hardware"]["cpu_count"] >= 1

    # an autoencoder run that started before the denoiser's default changed must not impose the old one
    ae_last = tmp_path / "ae_a" / "checkpoints" / "step-0000004.pt"
    stale = load_checkpoint(ae_last)
    stale["config"]["unet"]["block_out_channels"] = [64, 64, 64]
    torch.save(stale, ae_last)
    gen = dict(autoencoder=str(tmp_path / "ae_a"), data=str(data), batch=2, checkpoint_every=2, progress=False,
               log_every=1)
    train_generator(GeneratorOptions(out=str(tmp_path / "gen"), steps=3, **gen))
    from medcf.models.default import tiny_config

    architecture = json.loads((tmp_path / "gen" / "run.json").read_text())["architecture"]
    assert architecture["block_out_channels"] == tiny_config()["unet"]["block_out_channels"]
    log = [json.loads(line) for line in (tmp_path / "gen" / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]
    assert all(np.isfinite(entry["loss"]) for entry in log if "loss" in entry)
    written = export_default_model(tmp_path / "ae_a", tmp_path / "gen", tmp_path / "bundle_models")
    assert {p.name for p in written} == {CONFIG_NAME, "autoencoder.safetensors", "unet.safetensors"}
    config = json.loads((tmp_path / "bundle_models" / CONFIG_NAME).read_text())
    assert config["training"]["generator_steps"] == 3 and config["training"]["dtype"] == "float16"
    assert config["autoencoder"]["scaling_factor"] > 0
    generator = load_generator(tmp_path / "bundle_models")
    assert sample(generator, [PROMPT], steps=2, progress=False).images.shape == (1, 64, 64)
    with pytest.raises(OutputError):
        export_default_model(tmp_path / "ae_a", tmp_path / "gen", tmp_path / "bundle_models")


def _paired_world_set(path: Path, n_pairs: int = 6, size: int = 64) -> Path:
    """Pairs as render_world_set writes them: a film with a blob, then the same film without."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images, records = [], []
    for i in range(n_pairs):
        base = 0.3 + 0.1 * rng.random() * yy
        cx, cy = rng.random(2)
        blob = 0.5 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02)
        for kind, image, prompt in (("factual", base + blob, PROMPT), ("counterfactual", base, NORMAL)):
            images.append(np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
            records.append({"seed": 100 + i, "kind": kind, "prompt": prompt})
    return model_fixtures.write_world_set(path, images, records)


def test_paired_batches_hold_whole_pairs_under_one_noise_and_timestep(tmp_path):
    from medcf.training.world_sets import load_world_set, pair_starts
    from medcf.training.generator import GeneratorOptions, generator_batch

    world = load_world_set(_paired_world_set(tmp_path / "pairs.npz"))
    pairs = pair_starts(world)
    assert pairs.tolist() == [0, 2, 4, 6, 8, 10]
    options = GeneratorOptions(out="unused", batch=8, paired=True)
    index, timesteps, noise, _ = generator_batch(options, 5, len(world.images), (4, 8, 8), 1000, pairs)
    assert index.shape == (8,) and torch.all(index[0::2] % 2 == 0) and torch.equal(index[1::2], index[0::2] + 1)
    assert torch.equal(timesteps[0::2], timesteps[1::2]) and torch.equal(noise[0::2], noise[1::2])
    assert len(set(timesteps[0::2].tolist())) > 1 or len(set(index[0::2].tolist())) > 1  # pairs differ
    again = generator_batch(options, 5, len(world.images), (4, 8, 8), 1000, pairs)
    assert torch.equal(again[0], index) and torch.equal(again[2], noise)  # a function of (seed, step)
    single = generator_batch(GeneratorOptions(out="unused", batch=8), 5, len(world.images), (4, 8, 8), 1000)
    assert not torch.equal(single[2][0::2], single[2][1::2])
    unpaired = load_world_set(_synthetic_world_set(tmp_path / "set.npz"))
    with pytest.raises(InputError, match="--paired needs a world set of factual/counterfactual pairs"):
        pair_starts(unpaired)


def test_fine_tuning_starts_from_an_exported_model_and_records_it(tmp_path):
    from medcf.models.default import CONFIG_NAME, UNET_FILE
    from medcf.training.autoencoder import AutoencoderOptions, train_autoencoder
    from medcf.training.export import export_default_model
    from medcf.training.generator import GeneratorOptions, train_generator
    from safetensors.torch import load_file

    data = _paired_world_set(tmp_path / "pairs.npz")
    train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae"), data=str(data), heldout_data=str(data), batch=2,
                                         crop=32, steps=2, progress=False, tiny=True))
    train_generator(GeneratorOptions(out=str(tmp_path / "gen"), autoencoder=str(tmp_path / "ae"), data=str(data),
                                     batch=2, steps=2, progress=False))
    first = tmp_path / "first"
    export_default_model(tmp_path / "ae", tmp_path / "gen", first, half=False)
    with pytest.raises(InputError, match="even batch"):
        train_generator(GeneratorOptions(out=str(tmp_path / "odd"), init=str(first), data=str(data), batch=3,
                                         paired=True, progress=False))
    # a learning rate of ~0: the fine-tuned weights must be the initial model's
    train_generator(GeneratorOptions(out=str(tmp_path / "tune"), init=str(first), data=str(data), batch=4, steps=2,
                                     paired=True, lr=1e-12, progress=False))
    recipe = json.loads((tmp_path / "tune" / "run.json").read_text())
    assert recipe["batches"].startswith("paired") and recipe["initialised_from"]["folder"] == str(first)
    second = tmp_path / "second"
    export_default_model(first, tmp_path / "tune", second, half=False)
    before, after = load_file(str(first / UNET_FILE)), load_file(str(second / UNET_FILE))
    assert max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-6
    config = json.loads((second / CONFIG_NAME).read_text())
    first_config = json.loads((first / CONFIG_NAME).read_text())
    assert config["autoencoder"]["scaling_factor"] == first_config["autoencoder"]["scaling_factor"]
    assert config["initialised_from"]["training"]["generator_steps"] == 2
    assert config["training"]["generator_steps"] == 2 and config["training"]["recipes"]["generator"]["initialised_from"]
    assert sample(load_generator(second), [PROMPT], steps=2, progress=False).images.shape == (1, 64, 64)


def test_resume_without_checkpoint_is_an_input_error(tmp_path):
    from medcf.training.autoencoder import AutoencoderOptions, train_autoencoder

    with pytest.raises(InputError, match="--resume: no checkpoint"):
        train_autoencoder(AutoencoderOptions(out=str(tmp_path / "fresh"), resume=True, progress=False))


# --- world training sets and the probe -------------------------------------------------------


def test_world_set_seed_ranges_never_overlap():
    from medcf.training.world_sets import HELD_OUT_SEED_START, WorldSetSpec

    WorldSetSpec(n_pairs=10, seed=HELD_OUT_SEED_START - 10)
    with pytest.raises(InputError, match="must lie in 0..999999"):
        WorldSetSpec(n_pairs=10, seed=HELD_OUT_SEED_START - 9)
    with pytest.raises(InputError, match="held-out seeds start at 1000000"):
        WorldSetSpec(n_pairs=1, seed=5, split="heldout")
    assert WorldSetSpec(3).filename != WorldSetSpec(3, seed=1).filename


def test_world_set_renders_pairs_with_prompts(tmp_path):
    from medcf.training.world_sets import WorldSetSpec, load_world_set, render_world_set
    from medcf.world.ct import load_chest_ct

    ct = load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz")
    path = render_world_set(WorldSetSpec(n_pairs=2, size=64, seed=0), tmp_path / "set.npz", ct=ct, progress=False)
    world = load_world_set(path)
    assert world.images.shape == (4, 64, 64) and world.images.dtype == np.uint16
    factual, counterfactual = world.records[0], world.records[1]
    assert factual["kind"] == "factual" and factual["finding"] == "pleural_effusion"
    assert "pleural effusion" in factual["prompt"] and factual["prompt"].endswith(".")
    assert counterfactual["prompt"].endswith("Normal chest radiograph.") and counterfactual["finding"] == "none"
    assert factual["seed"] == counterfactual["seed"] == 0 and world.records[2]["seed"] == 1
    assert not np.array_equal(world.images[0], world.images[1])
    assert render_world_set(WorldSetSpec(n_pairs=2, size=64, seed=0), path, ct=ct) == path  # cached


def test_a_world_set_rendered_meanwhile_by_another_process_is_taken_not_an_error(tmp_path, monkeypatch):
    import medcf.training.world_sets as data
    from medcf.world.ct import load_chest_ct

    ct = load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz")
    original = data.save_world_set

    def racing(path, *args):
        original(path, *args)  # the other process publishes the same set first
        return original(path, *args)  # ours then finds the file there

    monkeypatch.setattr(data, "save_world_set", racing)
    path = data.render_world_set(data.WorldSetSpec(n_pairs=1, size=64, seed=0), tmp_path / "set.npz", ct=ct,
                                 progress=False)
    assert path == tmp_path / "set.npz" and data.load_world_set(path).images.shape == (2, 64, 64)


def test_evaluate_reports_psnr_and_judged_rates_per_guidance(tmp_path, folders):
    from medcf.training.world_sets import HELD_OUT_SEED_START, WorldSetSpec, render_world_set
    from medcf.eval.model_evaluate import evaluate_model
    from medcf.world.ct import load_chest_ct

    ct = load_chest_ct(Path(__file__).parent / "data" / "ct_fixture.npz")
    heldout = render_world_set(WorldSetSpec(n_pairs=14, size=64, seed=HELD_OUT_SEED_START, split="heldout"),
                               tmp_path / "heldout.npz", ct=ct, progress=False)
    report = evaluate_model(folders["medcf-default"], per_finding=1, steps=2, heldout_data=heldout,
                            progress=False, out=tmp_path / "figures", guidance_scales=[1.0, 6.0])
    assert 0 < report["autoencoder_psnr_db"]["mean"] < 60 and report["autoencoder_psnr_db"]["images"] == 28
    findings = {"pleural_effusion", "consolidation", "atelectasis", "cardiomegaly", "pneumothorax", "nodule", "edema"}
    assert [run["guidance_scale"] for run in report["prompt_faithfulness"]] == [1.0, 6.0]
    for run in report["prompt_faithfulness"]:
        assert set(run["carried"]["per_finding"]) == findings == set(run["normal_false_alarms"]["per_finding"])
        assert all(v in (0.0, 1.0) for v in run["carried"]["per_finding"].values())  # one film each
    assert set(report["judge"]["auc_on_heldout_renders"]) == findings
    assert report["samples"]["normal"] == 2 and Path(report["panel"]).is_file()
    training = render_world_set(WorldSetSpec(n_pairs=1, size=64, seed=0), tmp_path / "train.npz", ct=ct,
                                progress=False)
    with pytest.raises(InputError, match="holds training seeds"):
        evaluate_model(folders["medcf-default"], heldout_data=training, progress=False)
    with pytest.raises(InputError, match="guidance"):
        evaluate_model(folders["medcf-default"], heldout_data=heldout, progress=False, guidance_scales=[-1.0])


class _SideJudge:
    """A judge that sees every finding, and on the left side only."""

    record: dict = {}

    def probabilities(self, images):
        return np.zeros((len(images), 1))

    def present(self, probabilities, finding, side=None):
        from medcf.vocab import Side

        return np.full(len(probabilities), side in (None, Side.LEFT))


def test_prompt_faithfulness_asks_the_judge_about_the_prompted_side(folders):
    from medcf.eval.model_evaluate import prompt_faithfulness
    from medcf.models.loaders import load_generator

    generator = load_generator(folders["medcf-default"])
    prompt = "PA chest radiograph. Moderate {} pleural effusion."
    by_finding = {"pleural_effusion": [{"prompt": prompt.format(s), "side": s}
                                       for s in ("left", "left", "right", "right")],
                  "cardiomegaly": [{"prompt": "PA chest radiograph. Cardiomegaly.", "side": None}]}
    normal = [{"prompt": "PA chest radiograph. Normal chest radiograph.", "side": None}] * 2
    run = prompt_faithfulness(generator, _SideJudge(), by_finding, normal, guidance=2.0, steps=2, progress=False)
    assert run["carried"]["per_finding"] == {"pleural_effusion": 0.5, "cardiomegaly": 1.0}
    assert run["carried"]["mean"] == 0.75
    assert run["normal_false_alarms"] == {"any_finding": 1.0, "per_finding": {"pleural_effusion": 1.0,
                                                                              "cardiomegaly": 1.0}}


def test_a_resumed_autoencoder_run_keeps_its_architecture_and_its_generator_takes_the_matching_denoiser(tmp_path):
    from medcf.models.default import architecture_config, tiny_config
    from medcf.training.autoencoder import AutoencoderOptions, train_autoencoder
    from medcf.training.engine import load_checkpoint
    from medcf.training.generator import GeneratorOptions, train_generator

    data = _synthetic_world_set(tmp_path / "set.npz")
    common = dict(data=str(data), heldout_data=str(data), batch=2, crop=32, checkpoint_every=1, progress=False)
    train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae"), steps=1, tiny=True, **common))
    # resuming without tiny=True continues the run's own (miniature) architecture
    train_autoencoder(AutoencoderOptions(out=str(tmp_path / "ae"), steps=2, resume=True, **common))
    state = load_checkpoint(tmp_path / "ae" / "checkpoints" / "step-0000002.pt")
    assert state["config"]["architecture"] == "tiny"
    assert state["config"]["autoencoder"]["block_out_channels"] == tiny_config()["autoencoder"]["block_out_channels"]
    train_generator(GeneratorOptions(out=str(tmp_path / "gen"), autoencoder=str(tmp_path / "ae"), data=str(data),
                                     batch=2, steps=1, progress=False))
    recipe = json.loads((tmp_path / "gen" / "run.json").read_text())
    assert recipe["architecture"]["block_out_channels"] == tiny_config()["unet"]["block_out_channels"]
    with pytest.raises(InputError, match="unknown architecture 'fine'; one of default, tiny"):
        architecture_config("fine")  # tried and not shipped (monai_bundle/docs/README.md)
