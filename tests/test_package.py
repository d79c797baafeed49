"""The model package (medcf.models.package): the committed manifest matches the committed
files, a changed file is one clear error at load, a bring-your-own model gets a package
with only what it has, and a folder without a manifest still loads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medcf.errors import InputError
from medcf.models.loaders import load_generator
from medcf.models.package import (
    MANIFEST_FILE,
    PIECE_FILES,
    Identity,
    ModelPackage,
    PieceKind,
    Role,
    package_of,
    segmenter_weights,
)
from medcf.models.packaging import write_manifest
from tests import model_fixtures

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_MODELS = ROOT / "monai_bundle" / "models"
needs_weights = pytest.mark.skipif(not (BUNDLE_MODELS / "unet.safetensors").is_file(),
                                   reason="the default model's weights are not committed in this checkout")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed(entry: dict, base: Path) -> dict[Path, str]:
    """Every file a manifest entry (the model's or a denoiser's) lists, with its SHA-256."""
    files = {base / f["path"]: f["sha256"] for f in entry.get("weights", {}).values()}
    for piece in entry.get("pieces", {}).values():
        files.update({base / f["path"]: f["sha256"] for f in piece["files"].values()})
    for denoiser in entry.get("denoisers", {}).values():
        files.update(_listed(denoiser, base / denoiser["folder"]))
    return files


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    return {"medcf-default": model_fixtures.make_default_model(root / "default"),
            "diffusers-sd": model_fixtures.make_sd_pipeline(root / "sd")}


# --- the shipped default model ------------------------------------------------------------------


@needs_weights
def test_the_committed_manifest_fingerprints_match_the_committed_files():
    manifest = json.loads((BUNDLE_MODELS / MANIFEST_FILE).read_text())
    listed = _listed(manifest, BUNDLE_MODELS)
    assert len(listed) == 15  # 3 weights + 8 piece files (7 + the domain calibration), and the denoiser's 2 + 2
    wrong = [str(path) for path, sha in listed.items() if not path.is_file() or _sha256(path) != sha]
    assert not wrong, f"refresh with `medcf model package monai_bundle`: {wrong}"
    # every piece beside the weights is listed; the lab's judge is not part of the model
    for kind, names in PIECE_FILES.items():
        assert kind.value in manifest["pieces"] and all(BUNDLE_MODELS / n in listed for n in names.values())
    assert not any("judge" in str(path) or "candidates" in str(path) for path in listed)


@needs_weights
def test_each_shipped_piece_was_made_for_the_shipped_weights():
    """``made_for`` names the weights each piece was measured on: the denoiser's parameter
    fingerprint (the identity the editor compares), or the autoencoder's for the factor model,
    or both for the domain calibration."""
    manifest = json.loads((BUNDLE_MODELS / MANIFEST_FILE).read_text())
    own = manifest["fingerprints"]
    for name, piece in manifest["pieces"].items():
        kind = PieceKind(name)
        assert piece["made_for"] == ({i.value: own[i.value] for i in kind.identities} or None)
    assert PieceKind.DOMAIN.identities == (Identity.DENOISER, Identity.AUTOENCODER)
    defaults = json.loads((BUNDLE_MODELS / "edit_defaults.json").read_text())
    assert own["denoiser"] == defaults["denoiser_sha256"]  # the record itself says the same
    grounded = manifest["denoisers"]["attention-grounded"]
    assert grounded["pieces"]["evidence"]["made_for"] == {"denoiser": grounded["fingerprints"]["denoiser"]}
    assert grounded["fingerprints"]["denoiser"] != own["denoiser"]


@needs_weights
def test_the_default_package_loads_typed_and_frozen():
    package = ModelPackage.load(ROOT / "monai_bundle")  # the bundle, or its models/ folder: the same package
    assert package.manifest == BUNDLE_MODELS / MANIFEST_FILE
    assert package.model_format == "medcf-default" and package.weights_file(Role.DENOISER).path.name == "unet.safetensors"
    assert all(getattr(package, kind.value) is not None for kind in PieceKind)
    grounded = package.denoiser("attention-grounded")
    assert grounded.parent is package and grounded.edit_defaults is None and grounded.evidence is not None
    assert grounded.find(PieceKind.FACTORS) is package.factors  # the shared autoencoder's factor model
    assert segmenter_weights(ROOT / "monai_bundle") == package.segmenter.path(Role.WEIGHTS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        package.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        package.pieces[PieceKind.EVIDENCE] = None  # type: ignore[index]
    with pytest.raises(InputError, match="lists no such denoiser \\(has: attention-grounded\\)"):
        package.denoiser("fine-grid")


@needs_weights
def test_a_changed_file_is_one_clear_error_at_load(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for path in BUNDLE_MODELS.iterdir():
        if path.is_file():
            (models / path.name).symlink_to(path)
    (models / "denoisers").symlink_to(BUNDLE_MODELS / "denoisers")
    (models / "evidence.json").unlink()
    (models / "evidence.json").write_text((BUNDLE_MODELS / "evidence.json").read_text().replace("0.", "1.", 1))
    with pytest.raises(InputError) as caught:
        load_generator(models)
    message = str(caught.value)
    assert "\n" not in message and "evidence.json does not match" in message and "medcf model package" in message
    (models / "evidence.json").unlink()
    with pytest.raises(InputError, match="lists evidence record evidence.json, which is missing"):
        ModelPackage.load(models)


# --- bring-your-own models -----------------------------------------------------------------------


def test_a_folder_without_a_manifest_loads_with_no_optional_pieces_and_a_note(folders, caplog):
    folder = folders["diffusers-sd"]
    assert not (folder / MANIFEST_FILE).exists()
    with caplog.at_level(logging.WARNING, logger="medcf.models.package"):
        generator = load_generator(folder)
    notes = [r.getMessage() for r in caplog.records if r.name == "medcf.models.package"]
    assert len(notes) == 1 and "\n" not in notes[0] and "medcf model package" in notes[0]
    package = package_of(generator)
    assert package.manifest is None and not package.pieces and not package.denoisers
    assert all(getattr(package, kind.value) is None for kind in PieceKind)


def test_a_bring_your_own_model_gets_a_package_with_only_what_it_has(folders, tmp_path):
    import shutil

    from medcf.editing.api import own_vectors
    from medcf.editing.steering import estimate_vectors
    from medcf.vocab import Finding

    folder = tmp_path / "sd"
    shutil.copytree(folders["diffusers-sd"], folder)
    packaged = write_manifest(folder)
    assert packaged.manifest == folder / MANIFEST_FILE and packaged.pieces == [] and packaged.notes == []
    manifest = json.loads(packaged.manifest.read_text())
    assert manifest["model_format"] == "diffusers-sd" and manifest["pieces"] == {}
    assert {"model_index.json", "unet/config.json", "vae/config.json"} <= set(manifest["weights"])
    generator = load_generator(folder)
    assert manifest["fingerprints"]["denoiser"] == generator.weights_fingerprint()
    assert package_of(generator).steering_vectors is None

    # vectors estimated for this model and saved beside it are used once the package lists them
    vectors = estimate_vectors(generator, [Finding.NODULE], [0, 1], steps=2, progress=False)
    vectors.save(folder / PIECE_FILES[PieceKind.STEERING_VECTORS][Role.VECTORS])
    assert package_of(load_generator(folder)).steering_vectors is None  # not listed yet
    assert write_manifest(folder).pieces == ["steering_vectors: steering_vectors.safetensors"]
    reloaded = load_generator(folder)
    loaded, path = own_vectors(reloaded)
    assert path == folder / "steering_vectors.safetensors" and loaded.fingerprint == vectors.fingerprint
    assert package_of(reloaded).steering_vectors.made_for == generator.weights_fingerprint()


def test_a_piece_made_for_other_weights_is_listed_noted_and_not_used(folders, tmp_path):
    import shutil

    from medcf.editing.defaults import Choice, EditDefaults, find_defaults
    from medcf.editing.evidence import find_reliability

    folder = tmp_path / "default"
    shutil.copytree(folders["medcf-default"], folder)
    EditDefaults({"nodule": {"add": Choice("regulated", 0.7, 8.0, 1.0, 20.0)}}, "rule", {},
                 "0" * 64).save(folder / "edit_defaults.json")
    packaged = write_manifest(folder)
    assert packaged.pieces == ["edit_defaults: edit_defaults.json"]
    assert len(packaged.notes) == 1 and "edit_defaults was made for other weights" in packaged.notes[0]
    generator = load_generator(folder)
    assert package_of(generator).edit_defaults.made_for == "0" * 64
    assert find_defaults(generator) is None and find_reliability(generator) is None


@pytest.mark.integration  # a chain of `medcf model package` subprocesses (about a minute of CPU)
def test_the_package_command_writes_the_manifest_and_refuses_a_missing_folder(folders, tmp_path):
    import shutil

    folder = tmp_path / "default"
    shutil.copytree(folders["medcf-default"], folder)

    def medcf(*args):
        return subprocess.run([sys.executable, "-m", "medcf", "model", "package", *map(str, args)],
                              capture_output=True, text=True)

    done = medcf(folder, "--name", "tiny")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(folder / MANIFEST_FILE)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["name"] == "tiny" and set(manifest["weights"]) == {"config", "denoiser", "autoencoder"}
    assert manifest["weights"]["denoiser"]["sha256"] == _sha256(folder / "unet.safetensors")
    again = medcf(folder)  # refreshing replaces the manifest: it is derived from the folder
    assert again.returncode == 0, again.stderr
    missing = medcf(tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
