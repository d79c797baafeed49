"""monai_bundle/: the MONAI bundle specification's mandatory metadata, and configs that run.

verify_metadata downloads its JSON schema and cannot run offline, so the mandatory
keys of the bundle specification are checked here directly.
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

from tests import model_fixtures

BUNDLE = Path(__file__).resolve().parents[1] / "monai_bundle"
REPO = BUNDLE.parent
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
    formats = _metadata()["network_data_format"]
    entries = {"generator": formats, **formats["networks"]}
    assert {"autoencoder", "unet"} <= set(formats["networks"])
    for name, entry in entries.items():
        assert entry["inputs"] and entry["outputs"], name
        for side in ("inputs", "outputs"):
            for tensor, spec in entry[side].items():
                absent = [key for key in TENSOR_KEYS if key not in spec]
                assert not absent, (name, side, tensor, absent)
    assert formats["outputs"]["pred"]["spatial_shape"] == [256, 256]
    assert formats["networks"]["unet"]["inputs"]["context"]["num_channels"] == 384


def test_bundle_files_are_present():
    for relative in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "docs/README.md",
                     "LICENSE"):
        assert (BUNDLE / relative).is_file(), relative
    readme = (BUNDLE / "docs" / "README.md").read_text().lower()
    assert "simulated" in readme and "research" in readme and "never" in readme and "diagnosis" in readme


def test_configs_name_medcf_classes_by_target():
    from monai.bundle import ConfigParser

    for name in ("inference.json", "train.json"):
        text = (BUNDLE / "configs" / name).read_text()
        assert '"_target_": "medcf.models.' in text
    parser = ConfigParser(ConfigParser.load_config_file(str(BUNDLE / "configs" / "train.json")))
    parser["bundle_root"] = "/tmp/bundle-root"
    from medcf.models.train import AutoencoderOptions, GeneratorOptions

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
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


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


def test_inference_from_inside_the_bundle_folder_uses_it_as_root(tiny_bundle):
    done = _monai_run("--config_file", "configs/inference.json", "--seed", "11", "--steps", "1", cwd=tiny_bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tiny_bundle / "output" / "generated-seed11-steps1.png").is_file()


def test_missing_weights_are_named_clearly(tmp_path):
    from medcf.errors import InputError
    from medcf.models.bundle import trained_model_dir

    with pytest.raises(InputError, match="holds no trained default model yet"):
        trained_model_dir(tmp_path)


def test_committed_default_model_draws_chest_radiographs_the_segmenter_reads():
    """The shipped weights sample films in which the anatomy segmenter confidently finds both
    lungs and the heart where a frontal chest radiograph has them (a check on the trained
    model, not on the code: random or broken weights draw nothing the segmenter accepts)."""
    from medcf.anatomy.masks import MIN_CONFIDENCE
    from medcf.anatomy.outputs import load_segmenter
    from medcf.anatomy.segment import segment
    from medcf.errors import InputError
    from medcf.models.bundle import trained_model_dir
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
