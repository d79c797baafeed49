"""A model's input convention (medcf_convention.json): the intensity maps round-trip, bad
files are one-line errors, and the editor follows the convention — it encodes the mapped
input, prompts in the model's style, works at the convention's size and still leaves
everything outside the region untouched — on a random-weight SD-family model at 512²."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medcf.editing.edit import edit, prepare
from medcf.editing.regions import resize_image
from medcf.editing.spec import EditSpec
from medcf.errors import InputError
from medcf.models.convention import CONVENTION_FILE, Intensity, read_convention
from medcf.models.loaders import load_generator
from medcf.vocab import Action, Finding, Side
from tests import model_fixtures
from tests.test_editing import phantom_masks

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_STUDY = ROOT / "medcf" / "data" / "sample_study"
MIMIC_STYLE = {"intensity": {"mapping": "equalize"}, "image_size": [512, 512],
               "prompt_template": "{finding}", "normal_phrase": "No acute cardiopulmonary process.",
               "guidance_scale": 6.0, "notes": "MIMIC-CXR-JPG style (test)"}


def _film(shape=(300, 260), seed=0) -> np.ndarray:
    """A film with a skewed histogram (most pixels dark), as radiographs have."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    base = 0.15 + 0.5 * np.exp(-((cols - shape[1] / 2) / (shape[1] / 6)) ** 2) * (rows / shape[0])
    return np.clip(base + 0.03 * rng.standard_normal(shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def sd512(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    folder = model_fixtures.make_sd_pipeline(tmp_path_factory.mktemp("conv") / "sd")
    (folder / CONVENTION_FILE).write_text(json.dumps(MIMIC_STYLE))
    return folder


# --- the maps -------------------------------------------------------------------------------


def test_equalisation_flattens_the_histogram_and_its_inverse_gives_the_film_back():
    film = _film()
    mapping = Intensity("equalize").fit(film)
    equalised = mapping.forward(film)
    counts, _ = np.histogram(equalised, bins=8, range=(0, 1))
    assert counts.min() > 0.6 * counts.mean()  # roughly flat, where the film's own histogram is not
    assert np.histogram(film, bins=8, range=(0, 1))[0].min() < 0.1 * counts.mean()
    assert np.abs(mapping.inverse(equalised) - film).max() <= 1.0 / 256 + 1e-6  # within one bin
    assert np.all(np.diff(mapping.forward(np.linspace(0, 1, 1000))) >= 0)  # monotone


def test_window8_quantises_inside_the_window_and_saturates_outside():
    film = _film()
    mapping = Intensity("window8", (1.0, 99.0)).fit(film)
    low, high = np.percentile(film, [1.0, 99.0])
    mapped = mapping.forward(film)
    assert len(np.unique(mapped)) <= 256 and mapped.min() == 0.0 and mapped.max() == 1.0
    inside = (film >= low) & (film <= high)
    back = mapping.inverse(mapped)
    assert np.abs(back - film)[inside].max() <= (high - low) / 255 / 2 + 1e-6
    assert np.allclose(back[film < low], low) and np.allclose(back[film > high], high)


def test_identity_is_the_array_itself():
    film = _film()
    mapping = Intensity().fit(film)
    assert mapping.forward(film) is film and mapping.inverse(film) is film


@pytest.mark.parametrize("data, words", [
    ({"intensity": {"mapping": "clahe"}}, "intensity.mapping"),
    ({"intensity": {"mapping": "window8", "percentiles": [99, 1]}}, "percentiles"),
    ({"prompt_template": "{view} only"}, "{finding}"),
    ({"prompt_template": "{finding} {age}"}, "nothing else"),
    ({"image_size": [512]}, "image_size"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"guidance": 7}, "unknown key"),
])
def test_bad_conventions_are_one_line_errors(tmp_path, data, words):
    path = tmp_path / CONVENTION_FILE
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=words.replace("{", r"\{").replace("}", r"\}")) as caught:
        read_convention(path)
    assert "\n" not in str(caught.value) and CONVENTION_FILE in str(caught.value)


def test_a_size_the_latent_grid_cannot_hold_is_refused_at_load(tmp_path):
    folder = model_fixtures.make_sd_pipeline(tmp_path / "sd")
    (folder / CONVENTION_FILE).write_text(json.dumps({"image_size": [500, 500]}))
    with pytest.raises(InputError, match="not a multiple of the model's 8-pixel latent cell"):
        load_generator(folder)


# --- the editor under a convention ------------------------------------------------------------


def test_the_loader_applies_size_guidance_and_prompt_style(sd512):
    generator = load_generator(sd512)
    assert generator.image_size == (512, 512) and generator.latent_size == (64, 64)
    assert generator.guidance_scale == 6.0 and generator.convention.intensity.mapping == "equalize"
    small = load_generator(sd512, image_size=(64, 64))  # the caller's size wins
    assert small.image_size == (64, 64) and small.guidance_scale == 6.0


@pytest.mark.slow  # an edit at 512 x 512
def test_edit_at_512_encodes_the_equalised_input_and_changes_nothing_outside_the_region(sd512):
    generator = load_generator(sd512)
    film = _film((600, 520))
    masks = phantom_masks(film.shape)
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method="regulated", steps=2, strength=3.0,
                    depth=1.0)
    inputs = prepare(film, masks, spec, generator)
    expected = Intensity("equalize").fit(film).forward(resize_image(film, (512, 512)))
    assert np.array_equal(inputs.small, expected)  # the model sees its own intensities
    assert inputs.prompts == {"source": "No acute cardiopulmonary process.",
                              "target": "Moderate left pleural effusion.", "finding": "Moderate left pleural effusion."}
    result = edit(film, masks, spec, generator, progress=False, check=False)
    outside = ~result.region.native_region
    assert outside.any() and np.array_equal(result.image[outside], film[outside])
    assert np.abs(result.image - film)[result.region.native_region].max() > 1e-4
    assert result.settings["convention"]["intensity"] == {"mapping": "equalize"}
    assert result.settings["working_size"] == [512, 512]
    # the change comes back through the inverse: the same edit without the convention differs inside
    plain = load_generator(sd512)
    plain.convention = None
    other = edit(film, masks, spec, plain, progress=False, check=False)
    assert not np.allclose(other.image, result.image)


@pytest.mark.slow  # an edit at 512 x 512, in a subprocess
def test_edit_cli_dicom_in_and_out_under_the_convention(sd512, tmp_path):
    import nibabel
    import pydicom

    from medcf.io.inputs import read_input

    done = subprocess.run([sys.executable, "-m", "medcf", "edit", str(SAMPLE_STUDY), "--finding", "pleural_effusion",
                           "--action", "add", "--side", "left", "--method", "regulated", "--steps", "2",
                           "--model", str(sd512), "--quiet", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "out" / "edit.json").read_text())
    settings = record["extra"]["settings"]
    assert settings["convention"]["prompt_template"] == "{finding}" and settings["working_size"] == [512, 512]
    assert record["extra"]["prompts"]["source"] == "No acute cardiopulmonary process."
    written = next((tmp_path / "out" / "dicom").glob("*.dcm"))
    assert pydicom.dcmread(written).SyntheticData == "YES"
    source, output = read_input(SAMPLE_STUDY).display, read_input(written).display
    # the written region map is NIfTI, (columns, rows): transposed to the image's (rows, columns)
    region = np.asarray(nibabel.load(tmp_path / "out" / "masks" / "edit_region.nii.gz").dataobj).squeeze().T > 0
    assert output.shape == source.shape and region.any() and (~region).any()
    assert np.abs(output - source)[~region].max() < 1e-3  # outside the region: the input (stored-value rounding)
    assert np.abs(output - source)[region].max() > 1e-3
