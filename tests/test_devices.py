"""--device and --dtype: one resolver, one option helper on every command that runs a
network, half precision on every loader (autoencoder kept float32), the output guard
naming the flag, and the placement recorded in what an edit writes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.devices import Placement, precision_hint, resolve_placement
from medcf.editing.edit import edit
from medcf.editing.spec import EditSpec
from medcf.errors import InputError, OutputError
from medcf.models.loaders import load_generator
from medcf.models.sampling import sample
from medcf.vocab import Action, Finding, Side
from tests import model_fixtures
from tests.test_editing import phantom_masks

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_STUDY = ROOT / "medcf" / "data" / "sample_study"
PROMPT = "PA chest radiograph. Moderate left pleural effusion."
NETWORK_COMMANDS = (("edit",), ("pairs",), ("generate",), ("steer-vectors",), ("bench",), ("segment",), ("demo",),
                    ("model", "info"), ("model", "check"))


def inversion_bound(dtype: torch.dtype, steps: int) -> float:
    """The largest mean absolute error (film in [0, 1]) between a replayed DDPM inversion and the
    autoencoder's film that rounding in ``dtype`` explains, over ``steps`` steps.

    Why there is any error: the replay recomputes each step's prediction on a latent that equals
    the inverted one up to float32 rounding (latents stay float32). The network casts it to
    ``dtype``; where a value lies on the other side of a rounding boundary it moves by one unit
    in the last place, and the prediction with it, by up to the dtype's epsilon ε relative
    (unit-scale latents and predictions, so ε absolute). Which values flip depends on the CPU's
    kernels (their summation order, bf16 instructions or not), so the error differs between CPUs
    and is often exactly 0. Each step adds at most one such error: ``steps * ε``, times a gain of 2
    for the DDIM step and the decoder that carry a latent error into the film (measured at 3
    steps, error / (steps·ε): at most 1.3 over the five fixture models in float16 and bfloat16).
      bfloat16: 8 significant bits, ε = 2^-7 = 0.0078; 3 steps → 0.047 (measured 0.0055 on a
        2-core x86 VM, under 1e-3 on the machine where this test was first written);
      float16: 11 significant bits, ε = 2^-10 ≈ 0.00098; 2 steps → 0.0039, 3 steps → 0.0059
        (measured up to 0.0037 at 3 steps);
      float32: 24 significant bits, ε ≈ 1.2e-7: steps·ε is far below the float32 arithmetic of
        the autoencoder's decoder, whose rounding sets the floor instead: 1e-3 (measured 1e-5 to
        1.4e-4 from 3 to 12 steps; the report rounds to 1e-5).
    A failed inversion lies far above each bound: DDIM's approximate inversion of the same film
    is off by 0.085 to 0.26 on these models. The bound is for the few steps these tests run (2 or
    3): over more steps a flipped value feeds every later prediction and errors compound faster
    than linearly (float16, PixArt fixture, 6 steps: 0.078; bfloat16, default fixture, 12: 0.095)."""
    return max(FLOAT32_FLOOR, 2 * steps * torch.finfo(dtype).eps)


FLOAT32_FLOOR = 1e-3  # see inversion_bound


def _medcf(*args):
    return subprocess.run([sys.executable, "-m", "medcf", *map(str, args)], capture_output=True, text=True)


def _subparser(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    return {name: build(root / name.replace("-", "_")) for name, build in model_fixtures.BUILDERS.items()}


# --- the resolver and the options ----------------------------------------------------------


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_placement("auto").device == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_placement("auto").device == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    placement = resolve_placement("auto", "bfloat16")
    assert placement.device == torch.device("cuda") and placement.dtype is torch.bfloat16
    assert placement.to_dict() == {"device": "cuda", "dtype": "bfloat16", "requested_device": "auto"}


def test_missing_devices_and_unknown_names_are_one_line_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, words in (("cuda", "no CUDA GPU"), ("cuda:0", "no CUDA GPU"), ("mps", "not available"),
                          ("tpu", "choose one of")):
        with pytest.raises(InputError, match=words) as caught:
            resolve_placement(device)
        assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="--dtype float8"):
        resolve_placement("cpu", "float8")


def test_float16_on_cpu_is_accepted_with_a_warning():
    with pytest.warns(UserWarning, match="slower"):
        placement = resolve_placement("cpu", "float16")
    assert placement.dtype is torch.float16 and placement.half
    assert precision_hint(torch.float16).endswith("rerun with --dtype bfloat16 or float32)")
    assert precision_hint(torch.bfloat16).endswith("rerun with --dtype float32)")
    assert precision_hint(torch.float32) == ""


def test_every_command_that_runs_a_network_has_both_options():
    from medcf.cli import build_parser

    parser = build_parser()
    for path in NETWORK_COMMANDS:
        options = {o: a for a in _subparser(parser, path)._actions for o in a.option_strings}
        assert options["--device"].choices == ("auto", "cpu", "cuda", "mps"), path
        assert options["--dtype"].choices == ("float32", "float16", "bfloat16"), path
        assert options["--device"].default == "auto" and options["--dtype"].default == "float32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cli_refuses_an_absent_gpu_in_one_line_before_loading(tmp_path):
    done = _medcf("generate", "--prompt", PROMPT, "--device", "cuda", "--out", tmp_path / "out")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "no CUDA GPU" in done.stderr
    assert not (tmp_path / "out").exists()


# --- half precision on every loader ---------------------------------------------------------


@pytest.mark.parametrize("name", list(model_fixtures.BUILDERS))
def test_half_precision_keeps_the_autoencoder_in_float32_and_edits_only_the_region(folders, name):
    full = load_generator(folders[name])
    half = load_generator(folders[name], dtype=torch.float16)
    assert next(half.denoiser.parameters()).dtype is torch.float16
    assert half.placement() == {"device": "cpu", "dtype": "float16", "autoencoder_dtype": "float32"}
    assert half.describe()["dtype"] == "float16"
    assert next(half.text.model.parameters()).dtype is torch.float32  # only its embeddings are cast
    # the same film in both precisions (the denoiser's rounding only), no NaN, not black. The bound is
    # float16's (ε = 2^-10): after 3 steps the largest pixel difference measured at most 0.019 over the
    # five fixtures (about 20 ε: the decoder spreads each latent's rounding over many pixels), so 0.05
    # leaves 2.5x; a film from other noise differs by about its own spread (std 0.09 to 0.29). It is not
    # a bfloat16 bound: 8x coarser (ε = 2^-7), bfloat16 measured up to 0.12 on the same fixtures.
    ref = sample(full, [PROMPT], seed=1, steps=3, progress=False).images[0]
    got = sample(half, [PROMPT], seed=1, steps=3, progress=False).images[0]
    assert np.isfinite(got).all() and got.std() > 1e-3 and np.abs(got - ref).max() < 0.05
    # an edit in float16: exact outside the region, like float32
    shape = (80, 72)
    image = np.clip(0.5 + 0.1 * np.random.default_rng(0).standard_normal(shape), 0, 1).astype(np.float32)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method="regulated", steps=4, strength=3.0)
    result = edit(image, phantom_masks(shape), spec, half, progress=False, check=False)
    outside = ~result.region.native_region
    assert np.array_equal(result.image[outside], image[outside])
    assert np.abs(result.image - image)[result.region.native_region].max() > 1e-5


def test_the_output_guard_names_the_flag_to_change(folders, monkeypatch):
    shape = (64, 64)
    image = np.clip(0.5 + 0.1 * np.random.default_rng(0).standard_normal(shape), 0, 1).astype(np.float32)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method="regulated", steps=3)
    for dtype, hint in ((torch.float16, "--dtype bfloat16 or float32"), (torch.float32, None)):
        generator = load_generator(folders["medcf-default"], dtype=dtype)
        decode = generator.decode
        calls = []

        def black_after_first(latents, decode=decode, calls=calls):  # the input decodes, the edit comes back black
            calls.append(1)
            out = decode(latents)
            return out if len(calls) % 2 == 0 else torch.zeros_like(out)

        monkeypatch.setattr(generator, "decode", black_after_first)
        with pytest.raises(OutputError) as caught:
            edit(image, phantom_masks(shape), spec, generator, progress=False, check=False)
        message = str(caught.value)
        assert "blank" in message and "\n" not in message
        assert (hint in message) if hint else "--dtype" not in message
        monkeypatch.setattr(generator, "decode", lambda latents: torch.full((1, 1, 64, 64), float("nan")))
        with pytest.raises(InputError, match="NaN" + (".*--dtype" if hint else "")):
            sample(generator, [PROMPT], steps=2, progress=False)


def test_a_segmenter_without_a_network_module_cannot_be_moved():
    from medcf.anatomy.outputs import place_segmenter

    class Boxes:
        name = "boxes"

        def segment_image(self, image):
            return phantom_masks(image.shape)

    cpu = Placement(torch.device("cpu"), torch.float32)
    assert place_segmenter(Boxes(), cpu).placement is cpu
    with pytest.raises(InputError, match="--masks"):
        place_segmenter(Boxes(), Placement(torch.device("cpu"), torch.float16))


@pytest.mark.parametrize("name", list(model_fixtures.BUILDERS))
@pytest.mark.integration  # a chain of medcf subprocesses
def test_edit_cli_in_float16_records_the_placement_in_edit_json_and_the_dicom_provenance(tmp_path, folders, name):
    import nibabel

    from medcf.io.inputs import read_input

    done = _medcf("edit", SAMPLE_STUDY, "--finding", "pleural_effusion", "--action", "add", "--side", "left",
                  "--method", "regulated", "--steps", "4", "--model", folders[name], "--device", "cpu",
                  "--dtype", "float16", "--quiet", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    written = next((tmp_path / "out" / "dicom").glob("*.dcm"))
    source, output = read_input(SAMPLE_STUDY).display, read_input(written).display
    region = np.asarray(nibabel.load(tmp_path / "out" / "masks" / "edit_region.nii.gz").dataobj).squeeze().T > 0
    assert np.abs(output - source)[~region].max() < 1e-3  # outside the region: the input (stored-value rounding)
    record = json.loads((tmp_path / "out" / "edit.json").read_text())
    expected = {"device": "cpu", "dtype": "float16", "autoencoder_dtype": "float32"}
    assert record["extra"]["placement"] == expected and "placement" not in record["extra"]["model"]  # stated once
    assert record["extra"]["anatomy"]["placement"] == {"device": "cpu", "dtype": "float16", "requested_device": "cpu"}
    beside = json.loads(next((tmp_path / "out" / "dicom").glob("*.json")).read_text())
    assert beside["extra"]["placement"] == expected


# --- medcf model check --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(model_fixtures.BUILDERS))
def test_model_check_samples_and_reconstructs_on_every_loader(folders, name):
    from medcf.editing.modelcheck import check_model

    placement = resolve_placement("cpu", "bfloat16" if name == "diffusers-sd" else "float32")
    steps = 3
    check = check_model(folders[name], placement=placement, steps=steps)
    assert check.model["format"] == name.split("+")[0] and check.model["autoencoder_dtype"] == "float32"
    assert check.model["dtype"] == placement.dtype_name
    r = check.reconstruction
    # the editor's DDPM inversion gives the autoencoder's film back (rounding in the dtype only)
    assert r["ddpm_inversion"]["mae"] < inversion_bound(placement.dtype, steps), r
    assert r["ddim_inversion"]["mae"] > r["ddpm_inversion"]["mae"]  # DDIM is approximate
    assert set(check.seconds) >= {"load", "sample", "per_step", "ddpm_inversion", "ddim_inversion", "total"}
    assert check.methods["regulated"] and not check.methods["steer"]  # no vectors for random weights
    assert any("steer-vectors --model" in line for line in check.unavailable)
    assert any("edit_defaults.json" in line for line in check.unavailable)
    text = "\n".join(check.lines())
    assert "DDPM inversion" in text and "what will not work:" in text


def test_model_check_says_plainly_what_a_model_without_cross_attention_cannot_do(folders, monkeypatch):
    from medcf.editing.modelcheck import check_model
    from medcf.models.adapters import DiffusersUNetGenerator
    from medcf.models.base import CROSS

    own = DiffusersUNetGenerator._attention_modules
    monkeypatch.setattr(DiffusersUNetGenerator, "_attention_modules",
                        lambda self: [m for m in own(self) if m[1] != CROSS])
    check = check_model(folders["diffusers-sd"], steps=2)
    assert check.model["attention_sites"]["cross"] == 0
    assert not check.methods["regulated"] and not check.methods["steer"] and check.methods["baselines"]
    assert "no cross-attention" in check.unavailable[0]


def test_model_check_finds_finding_words_the_tokenizer_loses(tmp_path):
    from medcf.editing.modelcheck import check_model

    folder = model_fixtures.make_sd_pipeline(tmp_path / "sd")
    config = folder / "tokenizer" / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "model_max_length": 8}))  # prompts cut after "PA chest radiograph ."
    check = check_model(folder, steps=2)
    lost = [line for line in check.unavailable if "do not keep" in line]
    assert lost and any(line.startswith("pleural_effusion:") for line in lost)
    assert len(lost) == len(Finding)


@pytest.mark.integration  # a chain of medcf subprocesses
def test_model_check_cli_prints_json_writes_films_and_refuses_a_bad_folder(tmp_path, folders):
    done = _medcf("model", "check", folders["medcf-default"], "--steps", "2", "--json", "--dtype", "float16",
                  "--out", tmp_path / "check")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"]["dtype"] == "float16"
    assert report["reconstruction"]["ddpm_inversion"]["mae"] < inversion_bound(torch.float16, 2), report
    assert {p.name for p in (tmp_path / "check").iterdir()} == {"check.json", "sample.png", "input.png",
                                                               "autoencoder.png", "ddpm.png", "ddim.png"}
    bad = _medcf("model", "check", tmp_path / "nowhere")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_the_weights_keep_their_identity_in_half_precision(folders):
    """Vectors, edit_defaults.json and evidence.json are tied to the weights, not to the dtype
    they run in: the fingerprint is taken before the cast (a bfloat16 cast rounds them)."""
    from medcf.editing.steering import denoiser_fingerprint, estimate_vectors, load_vectors

    folder = folders["diffusers-sd"]
    full, half = load_generator(folder), load_generator(folder, dtype=torch.bfloat16)
    assert denoiser_fingerprint(half) == denoiser_fingerprint(full)
    vectors = estimate_vectors(full, [Finding.NODULE], [0, 1], steps=2, progress=False)
    assert load_vectors(vectors.save(folder / "v.safetensors"), half).fingerprint == vectors.fingerprint


@pytest.mark.skipif(not (ROOT / "monai_bundle" / "models" / "unet.safetensors").is_file(),
                    reason="the default model's weights are not committed in this checkout")
def test_the_default_model_keeps_its_vectors_and_measured_files_in_bfloat16():
    from medcf.editing.api import load_editor
    from medcf.editing.defaults import find_defaults
    from medcf.editing.evidence import find_reliability

    editor = load_editor(placement=resolve_placement("cpu", "bfloat16"))
    assert editor.generator.placement()["dtype"] == "bfloat16" and editor.vectors is not None
    assert find_defaults(editor.generator) is not None and find_reliability(editor.generator) is not None


@pytest.mark.integration  # a chain of medcf subprocesses
def test_a_monai_bundle_without_its_text_encoder_edits_with_text_encoder(tmp_path, folders):
    """--text-encoder on every command that loads a model for editing: edit, pairs (same
    options) and steer-vectors; without it the bundle is refused in one line naming the flag."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folders["monai-ldm"], bare)
    shutil.rmtree(bare / "models" / "text_encoder")
    encoder = folders["monai-ldm"] / "models" / "text_encoder"
    args = ("edit", SAMPLE_STUDY, "--finding", "pleural_effusion", "--action", "add", "--side", "left",
            "--method", "regulated", "--steps", "3", "--model", bare, "--quiet")
    refused = _medcf(*args, "--out", tmp_path / "refused")
    assert refused.returncode == 2 and "--text-encoder" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()
    done = _medcf(*args, "--text-encoder", encoder, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "edit.json").is_file()
    vectors = _medcf("steer-vectors", "--finding", "nodule", "--seeds", "2", "--steps", "2", "--model", bare,
                     "--text-encoder", encoder, "--quiet", "--out", tmp_path / "v.safetensors")
    assert vectors.returncode == 0, vectors.stderr
