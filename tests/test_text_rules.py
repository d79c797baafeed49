"""Rule classes of the report reader, each on snippets written for these tests (no IU report text)."""

from __future__ import annotations

import pytest

from medcf.text import get_reader
from medcf.text.baseline import BaselineReader
from medcf.text.iu import mesh_to_reference
from medcf.text.rules import RuleReader


@pytest.fixture(scope="module")
def reader() -> RuleReader:
    return get_reader("rules")  # type: ignore[return-value]


def found(reader: RuleReader, text: str, finding: str) -> list:
    return [m for m in reader.parse(text) if m.finding == finding]


def places(reader: RuleReader, text: str, finding: str) -> set[tuple]:
    return {(m.laterality, m.zone) for m in found(reader, text, finding)}


# --- side and zone ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,finding,expected", [
    # two sides, one zone: one bilateral finding
    ("Patchy opacities in the left and right mid lungs.", "opacity", {("bilateral", "middle")}),
    ("Left and right basilar atelectasis.", "atelectasis", {("bilateral", "lower")}),
    # two sides, two zones: one finding per place
    ("Left apical and right basilar airspace disease.", "consolidation", {("left", "upper"), ("right", "lower")}),
    ("Patchy left upper right basilar atelectasis.", "atelectasis", {("left", "upper"), ("right", "lower")}),
    ("Bibasilar and right midlung opacities.", "opacity", {("bilateral", "lower"), ("right", "middle")}),
    ("Calcified granulomas in the right upper lobe and left lower lobe.", "granuloma",
     {("right", "upper"), ("left", "lower")}),
    # one side
    ("Small left pleural effusion.", "pleural_effusion", {("left", None)}),
])
def test_places_of_one_phrase(reader, text, finding, expected) -> None:
    assert places(reader, text, finding) == expected


def test_the_phrase_next_to_the_finding_is_read_first(reader) -> None:
    text = "Small bilateral pleural effusions, larger on the right, with associated left basilar atelectasis."
    assert places(reader, text, "atelectasis") == {("left", "lower")}
    assert places(reader, text, "pleural_effusion") == {("bilateral", None)}


@pytest.mark.parametrize("text,finding,expected", [
    ("Small pleural effusions, right greater than left.", "pleural_effusion", ("bilateral", None)),
    ("Streaky opacities in the lung bases.", "opacity", ("bilateral", "lower")),
    ("Scattered opacities throughout both lungs.", "opacity", ("bilateral", None)),
    ("Calcified granuloma on the left, lungs otherwise clear.", "granuloma", ("left", None)),
    ("Minimal basilar atelectasis on the left.", "atelectasis", ("left", "lower")),
])
def test_bilateral_words_and_side_after_the_finding(reader, text, finding, expected) -> None:
    assert places(reader, text, finding) == {expected}


@pytest.mark.parametrize("text,finding,expected", [
    # coordinated findings share the place named after them
    ("Atelectasis or infiltrate in the right base.", "atelectasis", ("right", "lower")),
    ("Atelectasis and/or infiltrate at the left base.", "atelectasis", ("left", "lower")),
    # an appositive or a finding right after another describes it
    ("Left basilar opacity, subsegmental atelectasis.", "atelectasis", ("left", "lower")),
    ("Left lower lobe atelectasis infiltrate and effusion.", "pleural_effusion", ("left", "lower")),
])
def test_linked_findings_share_a_place(reader, text, finding, expected) -> None:
    assert places(reader, text, finding) == {expected}


@pytest.mark.parametrize("text,expected", [
    ("Left upper lobe opacities. These represent subsegmental atelectasis.", ("left", "upper")),
    ("Right basilar opacity. The appearance suggests atelectasis.", ("right", "lower")),
    ("Right basilar opacity. Subsegmental atelectasis elsewhere.", (None, None)),  # no pointer back
    ("Right basilar opacity. Heart size normal. This represents atelectasis.", (None, None)),  # not adjacent
])
def test_anaphora_takes_the_place_of_the_previous_sentence(reader, text, expected) -> None:
    assert {(m.laterality, m.zone) for m in found(reader, text, "atelectasis")} == {expected}


# --- presence and certainty ------------------------------------------------------------------

@pytest.mark.parametrize("text,finding", [
    ("No change in the small left pleural effusion.", "pleural_effusion"),
    ("No significant change in the right basilar atelectasis.", "atelectasis"),
    ("No interval change in the left upper lobe nodule.", "nodule"),
])
def test_pseudo_negation_keeps_the_finding_present(reader, text, finding) -> None:
    mentions = found(reader, text, finding)
    assert mentions and all(m.present and not m.uncertain for m in mentions)


@pytest.mark.parametrize("text,finding", [
    ("The left apical pneumothorax has resolved.", "pneumothorax"),
    ("Interval resolution of the right pleural effusion.", "pleural_effusion"),
    ("Resolved left lower lobe consolidation.", "consolidation"),
    ("Previously seen edema has cleared.", "edema"),
])
def test_resolved_is_absent(reader, text, finding) -> None:
    assert [m.present for m in found(reader, text, finding)] == [False]


@pytest.mark.parametrize("text,findings", [
    ("No focal consolidation, pleural effusion or pneumothorax.", ("consolidation", "pleural_effusion",
                                                                   "pneumothorax")),
    ("Negative for pneumothorax, effusion, or airspace disease.", ("pneumothorax", "pleural_effusion",
                                                                    "consolidation")),
])
def test_one_negation_covers_a_list(reader, text, findings) -> None:
    mentions = reader.parse(text)
    assert {m.finding for m in mentions} == set(findings)
    assert not any(m.present for m in mentions)


def test_one_hedge_covers_a_list(reader) -> None:
    mentions = reader.parse("The differential diagnosis includes pneumonia and mass.")
    assert {m.finding for m in mentions} == {"pneumonia", "mass"}
    assert all(m.present and m.uncertain for m in mentions)


def test_or_between_findings_is_not_a_hedge(reader) -> None:
    mentions = {m.finding: m for m in reader.parse("Streaky left basilar opacities, atelectasis or scarring.")}
    assert not mentions["opacity"].uncertain and not mentions["atelectasis"].uncertain
    assert mentions["scarring"].present


@pytest.mark.parametrize("text,finding", [
    ("Interstitial opacities which may be compatible with mild pulmonary edema.", "edema"),
    ("Right basilar opacity may be consistent with pneumonia.", "pneumonia"),
    ("Question small right pleural effusion.", "pleural_effusion"),
])
def test_a_hedge_that_contains_a_terminator_still_hedges(reader, text, finding) -> None:
    assert [(m.present, m.uncertain) for m in found(reader, text, finding)] == [(True, True)]


@pytest.mark.parametrize("text,finding", [
    # every form of a hedge verb hedges (issue 23: "suggests" did, "suggest" did not)
    ("Hilar calcifications suggest prior granulomatous disease.", "granuloma"),
    # an adverb inside an exclusion hedge leaves it a hedge
    ("A small left pleural effusion cannot be entirely excluded.", "pleural_effusion"),
    ("Early pneumonia cannot be completely ruled out.", "pneumonia"),
    ("A tiny right effusion would be difficult to exclude.", "pleural_effusion"),
    # a possibility, a doubt, a consideration
    ("Findings raise the possibility of mild pulmonary edema.", "edema"),
    ("A left pleural effusion is doubtful.", "pleural_effusion"),
    ("Considerations include atelectasis or pneumonia.", "pneumonia"),
    ("Right basilar atelectasis is favored.", "atelectasis"),
    # "represents" ends a scope, but not inside "likely represents"
    ("Left basilar opacity likely represents atelectasis.", "atelectasis"),
])
def test_hedge_variants_hedge(reader, text, finding) -> None:
    assert [(m.present, m.uncertain) for m in found(reader, text, finding)] == [(True, True)]


def test_partial_resolution_is_still_present(reader) -> None:
    text = "Partial resolution of the left pleural effusion."
    assert [(m.present, m.uncertain) for m in found(reader, text, "pleural_effusion")] == [(True, False)]


def test_age_indeterminate_fracture_is_certain(reader) -> None:
    assert [(m.present, m.uncertain) for m in found(reader, "Age-indeterminate fracture of the right 9th rib.",
                                                    "fracture")] == [(True, False)]


def test_a_disclaimer_is_not_a_finding(reader) -> None:
    text = "Please note that fractures may not be demonstrated on this examination."
    assert [m.present for m in found(reader, text, "fracture")] == [False]


def test_a_finding_of_an_earlier_exam_is_not_present(reader) -> None:
    text = "On the previous CT, the right upper lobe was consolidated."
    assert not any(m.present for m in found(reader, text, "consolidation"))


@pytest.mark.parametrize("text,finding", [
    ("Findings favor atelectasis rather than pneumonia.", "pneumonia"),
    ("Right basilar opacity, atelectasis as opposed to pneumonia.", "pneumonia"),
    ("History of pneumonia.", "pneumonia"),
    ("Patient with hx of right lung nodule.", "nodule"),
])
def test_a_rejected_alternative_or_the_history_is_not_present(reader, text, finding) -> None:
    assert not any(m.present for m in found(reader, text, finding))


# --- vocabulary ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,present", [
    ("Density overlying the anterior left 4th rib.", False),
    ("Curvilinear densities over the heart, coronary stents.", False),
    ("Patchy density in the left lung base.", True),
    ("Retrocardiac density.", True),
])
def test_density_is_an_opacity_only_in_the_lung(reader, text, present) -> None:
    assert bool(found(reader, text, "opacity")) is present


def test_nodular_opacity_is_also_a_nodule(reader) -> None:
    mentions = reader.parse("Small nodular opacity in the left upper lobe.")
    assert {(m.finding, m.laterality, m.zone, m.severity) for m in mentions} == {
        ("opacity", "left", "upper", "mild"), ("nodule", "left", "upper", "mild")}


@pytest.mark.parametrize("text,finding", [
    ("Bullae in the right upper lobe.", "bulla"), ("Bullous emphysema.", "emphysema"),
    ("Small left apical pleural air collection.", "pneumothorax"),
    ("The heart XXXX is mildly enlarged.", "cardiomegaly"),
])
def test_vocabulary(reader, text, finding) -> None:
    assert [m.finding for m in reader.parse(text)] == [finding]


@pytest.mark.parametrize("text,present", [
    ("Impacted subcapital fracture of the left hip.", False),
    ("Pelvis: no acute fracture; old fracture of the right femur.", False),
    ("Old healed fractures of the right 5th and 6th ribs.", True),
    ("Fracture of the left humeral neck.", True),  # the shoulder is on the chest film
])
def test_a_fracture_outside_the_chest_is_not_a_chest_finding(reader, text, present) -> None:
    assert any(m.present for m in found(reader, text, "fracture")) is present


@pytest.mark.parametrize("text,finding", [
    ("No mass effect on the trachea.", "mass"),
    ("There is mass effect on the trachea.", "mass"),
    ("Soft tissue edema of the left chest wall.", "edema"),
    ("Subcutaneous edema over the flanks.", "edema"),
])
def test_a_phrase_that_names_something_else_is_not_the_finding(reader, text, finding) -> None:
    assert found(reader, text, finding) == []


def test_pulmonary_edema_beside_soft_tissue_edema_is_read(reader) -> None:
    mentions = found(reader, "Chest wall edema. Mild pulmonary edema.", "edema")
    assert [(m.present, m.severity) for m in mentions] == [(True, "mild")]


# --- baseline and scorer ---------------------------------------------------------------------

def test_baseline_reads_synonyms_and_skips_the_indication() -> None:
    text = "INDICATION: Pneumonia?\nFINDINGS: Left basilar airspace disease. No effusion."
    got = {(m.finding, m.present) for m in BaselineReader().parse(text)}
    assert got == {("consolidation", True), ("pleural_effusion", False)}
    naive = {(m.finding, m.present) for m in BaselineReader(naive=True).parse(text)}
    assert naive == {("pneumonia", True), ("pleural_effusion", False)}


def test_density_at_the_costophrenic_angle_is_a_lung_opacity() -> None:
    ref = mesh_to_reference("Density/costophrenic angle/right")
    assert ref is not None and (ref.finding, ref.laterality, ref.zone) == ("opacity", "right", "lower")
    assert mesh_to_reference("Density/cardiophrenic angle/left") is None
