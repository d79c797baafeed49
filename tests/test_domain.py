"""The film domain (medcf.domain): a film outside the loaded model's domain is refused in one
line with the three ways on, written and marked with --allow-out-of-domain, never checked
as "reached"; a model is calibrated with `medcf model calibrate-domain`; and a
bring-your-own model edits with the defaults on its first try."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import torch

from medcf.anatomy.given import GivenMasks
from medcf.cli import main
from medcf.domain.assess import DomainStatus, assess, refusal_line, verdict_of
from medcf.domain.calibration import CALIBRATION_FILE, DomainCalibration, calibrate, find_calibration
from medcf.domain.features import DomainFeature, measure
from medcf.editing.api import Editor, domain_verdicts, edit_file
from medcf.editing.edit import TargetCheck, Verdict
from medcf.editing.evidence import EvidenceScore
from medcf.editing.methods import get_method, register, unregister, uses_model
from medcf.editing.methods.guided import Regulated
from medcf.editing.plan import Source, plan_edit
from medcf.editing.spec import EditSpec, Method
from medcf.errors import InputError
from medcf.io.images import write_png16
from medcf.io.inputs import read_input, radiograph_affine, write_nifti_2d
from medcf.models.loaders import load_generator
from medcf.models.package import MANIFEST_FILE, ModelPackage, attach_package
from medcf.models.packaging import write_manifest
from medcf.vocab import Action, Finding, Side
from tests import model_fixtures
from tests.test_editing import SAMPLE_STUDY, phantom_masks

SIZE = 128  # the smallest film medcf reads
FLAGS = ("--method insert", "--model", "--allow-out-of-domain")


def _films(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random films (a bright mediastinum, darker lungs) of SIZE²."""
    rng = np.random.default_rng(seed)
    cols = np.linspace(-1, 1, SIZE)[None, :]
    films = []
    for _ in range(n):
        base = 0.35 + 0.4 * np.exp(-(cols / rng.uniform(0.15, 0.3)) ** 2) + 0.05 * rng.standard_normal((SIZE, 1))
        films.append(np.clip(base + 0.02 * rng.standard_normal((SIZE, SIZE)), 0, 1).astype(np.float32))
    return films


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return model_fixtures.make_default_model(tmp_path_factory.mktemp("tiny") / "model")


def _calibrated(folder: Path, scale: float) -> object:
    """The model in ``folder`` with a calibration whose quantiles are its films' times
    ``scale`` (small: every film is outside), packaged and attached."""
    generator = load_generator(folder)
    lungs = phantom_masks((SIZE, SIZE))
    lungs = lungs.organs[next(iter(lungs.organs))]
    base = calibrate(generator, [(film, lungs) for film in _films(20)], {"test": True})
    quantiles = {f: {q: v * scale for q, v in qs.items()} for f, qs in base.quantiles.items()}
    DomainCalibration(quantiles, base.made_for, base.n_films, base.source).save(folder / CALIBRATION_FILE)
    write_manifest(folder)
    attach_package(generator, ModelPackage.load(folder))
    return generator


def _input(tmp_path: Path) -> tuple[Path, GivenMasks]:
    film = tmp_path / "film.png"
    write_png16(film, _films(1, seed=7)[0])
    masks = phantom_masks((SIZE, SIZE))
    path = write_nifti_2d(tmp_path / "anatomy.nii.gz", masks.label_map(), radiograph_affine(None))
    return film, GivenMasks(masks, path, "label map")


SPEC = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, method=Method.REGULATED, steps=3)


def test_features_are_a_deterministic_function_of_film_and_model(tiny):
    generator = load_generator(tiny)
    film, lungs = _films(1)[0], phantom_masks((SIZE, SIZE)).organs
    lungs = next(iter(lungs.values()))
    first, again = measure(generator, film, lungs), measure(generator, film, lungs)
    assert first == again and set(first) == set(DomainFeature) and all(v > 0 for v in first.values())
    assert measure(generator, 1.0 - film, lungs) != first  # an inverted film is measured differently
    assert measure(generator, film, None)[DomainFeature.RECONSTRUCTION_LUNGS] == \
        pytest.approx(first[DomainFeature.RECONSTRUCTION_FILM])  # no lungs: the whole film stands in


def test_a_model_without_calibration_is_not_calibrated_and_never_refused(tiny, tmp_path):
    generator = load_generator(tiny)
    assert find_calibration(generator) is None
    verdict = assess(generator, _films(1)[0], None)
    assert verdict.status is DomainStatus.NOT_CALIBRATED and not verdict.outside
    film, masks = _input(tmp_path)
    out = edit_file(film, [SPEC], tmp_path / "out", Editor(generator, None, None, None), progress=False,
                    masks=masks, accept_anatomy=True)[0]
    record = json.loads(out.files["provenance"].read_text())
    assert record["extra"]["domain"]["status"] == "not calibrated" and record["domain"] == "not calibrated"


def test_outside_the_domain_an_edit_is_refused_in_one_line_and_nothing_is_written(tiny, tmp_path, capsys):
    generator = _calibrated(tiny, 1e-3)
    film, masks = _input(tmp_path)
    with pytest.raises(InputError) as refused:
        edit_file(film, [SPEC, replace(SPEC, side=Side.RIGHT)], tmp_path / "out", Editor(generator, None, None, None),
                  progress=False, masks=masks, accept_anatomy=True)
    line = str(refused.value)
    assert "\n" not in line and "outside the model's training domain" in line and all(f in line for f in FLAGS)
    assert not (tmp_path / "out").exists()
    # the command line: exit 2, one line, nothing written
    code = main(["edit", str(film), "--finding", "pleural_effusion", "--action", "add", "--side", "left",
                 "--method", "regulated", "--steps", "3", "--model", str(tiny), "--masks", str(masks.path),
                 "--accept-anatomy", "--quiet", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and all(f in err for f in FLAGS) and not (tmp_path / "cli").exists()
    # inside a wide calibration the same film is edited
    generator = _calibrated(tiny, 1e3)
    assert assess(generator, read_input(film).display, None).status is DomainStatus.INSIDE


def test_the_allow_flag_writes_the_edit_marked_outside_and_unchecked(tiny, tmp_path):
    generator = _calibrated(tiny, 1e-3)
    film, masks = _input(tmp_path)
    allowed = replace(SPEC, allow_out_of_domain=True)
    out = edit_file(film, [allowed], tmp_path / "out", Editor(generator, None, None, None), progress=False,
                    masks=masks, accept_anatomy=True)[0]
    record = json.loads(out.files["provenance"].read_text())
    domain = record["extra"]["domain"]
    assert domain["status"] == "outside" and domain["allowed"] is True and domain["exceeded"]
    assert record["extra"]["spec"]["allow_out_of_domain"] is True and "OUTSIDE" in record["domain"]
    check = record["extra"]["settings"]["check"]
    assert check["verdict"] == "not checked" and check["target_reached"] is None and check["outside_domain"]
    assert "not checked" in out.check and "reached" not in out.check.replace("not checked", "")
    assert any("OUTSIDE the model's domain" in note for note in out.notes)


def test_the_dicom_says_the_edit_lies_outside_the_models_domain(tiny, tmp_path, capsys):
    _calibrated(tiny, 1e-3)
    args = ["edit", str(SAMPLE_STUDY), "--finding", "pleural_effusion", "--action", "add", "--side", "left",
            "--method", "regulated", "--steps", "3", "--model", str(tiny), "--quiet"]
    assert main(args + ["--out", str(tmp_path / "refused")]) == 2 and not (tmp_path / "refused").exists()
    capsys.readouterr()
    assert main(args + ["--allow-out-of-domain", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "domain: OUTSIDE the model's domain" in printed and "model check: target not checked" in printed
    assert "target reached" not in printed
    written = next((tmp_path / "out" / "dicom").glob("*.dcm"))
    description = str(pydicom.dcmread(written).DerivationDescription)
    assert "domain=OUTSIDE the model's training domain (allowed)" in description


def test_a_method_that_needs_no_model_is_not_refused(tiny):
    generator = _calibrated(tiny, 1e-3)

    class ModelFree(Regulated):
        name = "test-model-free"
        uses_model = False

    register(ModelFree())
    try:
        assert not uses_model("test-model-free") and uses_model("regulated") and get_method("steer").uses_model
        plans = [SimpleNamespace(method="test-model-free", spec=SPEC)]
        verdicts = domain_verdicts(plans, generator, _films(1)[0], phantom_masks((SIZE, SIZE)), "film")
        assert [v.status for v in verdicts] == [DomainStatus.NOT_ASSESSED]
        with pytest.raises(InputError, match="--method insert"):
            domain_verdicts([SimpleNamespace(method="regulated", spec=SPEC)], generator, _films(1)[0],
                            phantom_masks((SIZE, SIZE)), "film")
    finally:
        unregister("test-model-free")


def test_the_models_check_never_says_reached_where_it_cannot_tell():
    args = (Action.ADD, EvidenceScore(-0.1, 0.01), EvidenceScore(0.3, 0.01))
    good = TargetCheck(*args, True, 1, 1.0, 0.5)
    assert good.verdict is Verdict.REACHED and "target reached" in good.remark() and good.to_dict()["target_reached"]
    for check, why in ((TargetCheck(*args, False, 1, 1.0, 0.5), "check unreliable for this finding"),
                       (TargetCheck(*args, True, 1, 1.0, 0.5, outside_domain=True), "outside the model's domain")):
        record = check.to_dict()
        assert check.verdict is Verdict.NOT_CHECKED and why in check.remark() and why in record["not_checked_because"]
        assert "not checked" in check.remark() and "reached" not in check.remark()
        assert record["target_reached"] is None and record["input_in_target_state"] is None


def test_calibrate_domain_command_writes_the_piece_and_refuses_bad_input(tmp_path, capsys):
    folder = model_fixtures.make_default_model(tmp_path / "model")
    films = tmp_path / "films"
    films.mkdir()
    for index, film in enumerate(_films(20)):
        write_png16(films / f"{index:02d}.png", film)
    assert main(["model", "calibrate-domain", str(folder), "--films", str(films), "--margin", "1.5"]) == 0
    out = capsys.readouterr()
    assert str(folder / CALIBRATION_FILE) in out.out and "cost:" in out.err
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    piece = manifest["pieces"]["domain"]
    assert set(piece["made_for"]) == {"denoiser", "autoencoder"}
    assert piece["made_for"] == {k: manifest["fingerprints"][k] for k in ("denoiser", "autoencoder")}
    calibration = find_calibration(load_generator(folder))
    assert calibration is not None and calibration.n_films == 20 and calibration.rule.margin == 1.5
    # a training film of its own domain is inside
    assert verdict_of(measure(load_generator(folder), _films(1, 3)[0], None), calibration).status is DomainStatus.INSIDE
    few = tmp_path / "few"
    few.mkdir()
    write_png16(few / "one.png", _films(1)[0])
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.png").write_text("not a picture")
    for bad, words in (([str(tmp_path / "nowhere")], "no such folder"), ([str(tmp_path / "empty")], "no DICOM"),
                       ([str(few)], "at least 20"), ([str(tmp_path / "text")], "a.png")):
        assert main(["model", "calibrate-domain", str(folder), "--films", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err and "Traceback" not in err, err
    assert main(["model", "calibrate-domain", str(folder), "--films", str(films), "--margin", "0.5"]) == 2
    assert "margin" in capsys.readouterr().err


def test_a_manifest_must_name_both_parts_the_domain_piece_was_made_for(tmp_path):
    folder = model_fixtures.make_default_model(tmp_path / "model")
    generator = load_generator(folder)
    calibrate(generator, [(f, None) for f in _films(20)], {}).save(folder / CALIBRATION_FILE)
    write_manifest(folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    del manifest["pieces"]["domain"]["made_for"]["autoencoder"]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="autoencoder"):
        ModelPackage.load(folder)


@pytest.mark.parametrize("family", list(model_fixtures.BUILDERS))
def test_a_bring_your_own_model_edits_with_the_defaults_on_its_first_try(family, tmp_path):
    """No steering vectors, no per-finding settings, no evidence, no calibration: auto takes
    a method that needs none and says so; the check says "not checked"; the domain "not calibrated"."""
    generator = load_generator(model_fixtures.BUILDERS[family](tmp_path / "model"))
    spec = EditSpec(Finding.PLEURAL_EFFUSION, Action.ADD, Side.LEFT, steps=3)  # method auto: the default
    plan = plan_edit(spec, generator, has_vectors=False)
    assert plan.method is Method.REGULATED and plan.sources["method"] is Source.FALLBACK and "steering" in plan.note
    assert plan_edit(spec, generator).method is Method.STEER  # unknown vectors: as before
    film, masks = _input(tmp_path)
    out = edit_file(film, [spec], tmp_path / "out", Editor(generator, None, None, None), progress=False,
                    masks=masks, accept_anatomy=True)[0]
    record = json.loads(out.files["provenance"].read_text())
    assert record["method"] == "regulated" and record["extra"]["plan"]["sources"]["method"] == "fallback"
    assert "needs neither" in record["extra"]["plan"]["note"] and any("auto:" in note for note in out.notes)
    assert record["extra"]["domain"]["status"] == "not calibrated"
    assert "not checked" in out.check and record["extra"]["settings"]["check"]["target_reached"] is None


def test_refusal_line_names_the_three_ways_on():
    from medcf.domain.assess import DomainVerdict

    verdict = DomainVerdict(DomainStatus.OUTSIDE, {"denoising_lungs": 3.0}, {"denoising_lungs": 1.0})
    line = refusal_line(verdict, "film.dcm")
    assert line.startswith("film.dcm lies outside") and "denoising lungs 3.0x" in line and all(f in line for f in FLAGS)
