"""The report reader on report snippets written for these tests (no IU report text)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from medcf.errors import InputError
from medcf.text import editable_findings, get_reader, parse_report
from medcf.text.iu import extract_reports, load_reports, mesh_to_reference, parse_report_xml
from medcf.text.llm import LLMConfig, LLMReader
from medcf.text.rules import RuleReader
from medcf.text.schema import FIELDS, validate_report
from medcf.text.scoring import score
from medcf.text.sections import split_sections
from medcf.vocab import Finding, ReportFinding, Severity, Side, Zone


@pytest.fixture(scope="module")
def reader() -> RuleReader:
    return get_reader("rules")  # type: ignore[return-value]


def one(reader: RuleReader, text: str, finding: str):
    found = [m for m in reader.parse(text) if m.finding == finding]
    assert len(found) == 1, (text, reader.parse(text))
    return found[0]


@pytest.mark.parametrize("text", [
    "No pleural effusion.", "There is no pleural effusion or pneumothorax.",
    "Without evidence of pleural effusion.", "No evidence of focal consolidation, pleural effusion or pneumothorax.",
    "Pleural effusion is not seen.", "Interval resolution of the right pleural effusion.",
    "Negative for pleural effusion.",
])
def test_negation(reader, text) -> None:
    assert one(reader, text, "pleural_effusion").present is False


def test_negation_stops_at_the_sentence_end(reader) -> None:
    mentions = reader.parse("No pneumothorax. Small left pleural effusion.")
    assert [(m.finding, m.present) for m in mentions] == [("pneumothorax", False), ("pleural_effusion", True)]
    assert reader.parse("No pneumothorax but there is a small left pleural effusion.")[1].present is True


@pytest.mark.parametrize("text,uncertain", [
    ("Possible small right pleural effusion.", True),
    ("Findings may represent pneumonia.", True),
    ("Cannot exclude a small pneumothorax.", True),
    ("Small pneumothorax cannot be excluded.", True),
    ("Opacity is suspicious for pneumonia.", True),
    ("Likely atelectasis at the left base.", True),
    ("Right lower lobe pneumonia.", False),
])
def test_uncertainty(reader, text, uncertain) -> None:
    mentions = [m for m in reader.parse(text) if m.finding in ("pleural_effusion", "pneumonia", "pneumothorax",
                                                              "atelectasis")]
    assert mentions and all(m.present for m in mentions)
    assert mentions[-1].uncertain is uncertain


def test_characterised_finding_stays_certain_and_lends_its_location(reader) -> None:
    mentions = {m.finding: m for m in reader.parse("Left basilar opacity, likely atelectasis versus pneumonia.")}
    assert mentions["opacity"].uncertain is False
    assert mentions["atelectasis"].uncertain and mentions["pneumonia"].uncertain
    for m in mentions.values():
        assert (m.laterality, m.zone) == ("left", "lower")


@pytest.mark.parametrize("text,side", [
    ("Small left pleural effusion.", "left"), ("Right pneumothorax.", "right"),
    ("Bilateral pleural effusions.", "bilateral"), ("Effusions in both costophrenic angles.", "bilateral"),
    ("Bibasilar atelectasis.", "bilateral"), ("Pleural effusion on the right.", "right"),
    ("Effusions, right and left.", None),
])
def test_side(reader, text, side) -> None:
    finding = "atelectasis" if "atelectasis" in text else "pneumothorax" if "pneumothorax" in text.lower() \
        else "pleural_effusion"
    assert one(reader, text, finding).laterality == side


@pytest.mark.parametrize("text,side,zone", [
    ("Right upper lobe consolidation.", "right", "upper"), ("RML consolidation.", "right", "middle"),
    ("Lingular consolidation.", "left", "middle"), ("LLL consolidation.", "left", "lower"),
    ("Consolidation at the left base.", "left", "lower"), ("Right apical consolidation.", "right", "upper"),
    ("Bilateral perihilar consolidation.", "bilateral", "middle"), ("Retrocardiac consolidation.", "left", "lower"),
])
def test_zone(reader, text, side, zone) -> None:
    m = one(reader, text, "consolidation")
    assert (m.laterality, m.zone) == (side, zone)


@pytest.mark.parametrize("text,finding,severity", [
    ("Mild cardiomegaly.", "cardiomegaly", "mild"), ("Borderline heart size.", "cardiomegaly", "mild"),
    ("The heart is moderately enlarged.", "cardiomegaly", "moderate"), ("Massive cardiomegaly.", "cardiomegaly",
                                                                       "severe"),
    ("Trace left pleural effusion.", "pleural_effusion", "mild"),
    ("Large right pleural effusion.", "pleural_effusion", "severe"),
    ("Small to moderate left pleural effusion.", "pleural_effusion", "moderate"),
    ("Minimal atelectasis.", "atelectasis", "mild"), ("Marked pulmonary edema.", "edema", "severe"),
    ("Left pleural effusion.", "pleural_effusion", None),
])
def test_severity(reader, text, finding, severity) -> None:
    assert one(reader, text, finding).severity == severity


def test_heart_not_enlarged_is_a_negated_cardiomegaly(reader) -> None:
    assert one(reader, "The cardiac silhouette is not enlarged.", "cardiomegaly").present is False


def test_multiple_findings_per_sentence_keep_their_own_modifiers(reader) -> None:
    mentions = reader.parse("Small left pleural effusion and large right pneumothorax with right basilar atelectasis.")
    got = {m.finding: (m.laterality, m.zone, m.severity) for m in mentions}
    assert got == {"pleural_effusion": ("left", None, "mild"), "pneumothorax": ("right", None, "severe"),
                   "atelectasis": ("right", "lower", None)}


def test_longest_phrase_wins(reader) -> None:
    names = [m.finding for m in reader.parse("Small pericardial effusion. Subcutaneous emphysema in the neck.")]
    assert names == ["pericardial_effusion", "subcutaneous_emphysema"]


def test_sections_context_is_not_a_finding(reader) -> None:
    text = ("INDICATION: Evaluate for pneumonia.\nHISTORY: Prior right pleural effusion.\n"
            "COMPARISON: Study showing pneumothorax.\nFINDINGS: No pneumonia. Left pneumothorax.\n"
            "IMPRESSION: Left pneumothorax.")
    mentions = reader.parse(text)
    assert [(m.finding, m.present, m.laterality) for m in mentions] == [
        ("pneumonia", False, None), ("pneumothorax", True, "left")]  # the impression repeat is merged


def test_split_sections_inline_headers() -> None:
    sections = split_sections("Indication: cough. Findings: clear lungs. Impression: normal.")
    assert [(s.name, s.is_current) for s in sections] == [("INDICATION", False), ("FINDINGS", True),
                                                           ("IMPRESSION", True)]
    assert split_sections("Mild cardiomegaly.")[0].name == "BODY"


def test_a_header_word_inside_a_sentence_is_not_a_section(reader) -> None:
    # issue 23: "Chest Comparison:" inside FINDINGS made the rest of the findings context
    text = "FINDINGS: Chest Comparison: There is a small left pleural effusion.\nIMPRESSION: Effusion."
    assert [s.name for s in split_sections(text)] == ["FINDINGS", "IMPRESSION"]
    assert [s.name for s in split_sections("FINDINGS: clear lungs IMPRESSION: normal")] == ["FINDINGS", "IMPRESSION"]
    effusion = [m for m in reader.parse("FINDINGS: Chest Comparison: Small left pleural effusion.")
                if m.finding == "pleural_effusion"]
    assert [(m.present, m.laterality) for m in effusion] == [(True, "left")]


def test_schema_exact_keys_and_values(reader) -> None:
    report = parse_report("FINDINGS: Possible small right pleural effusion. No pneumothorax. Mild cardiomegaly. "
                          "Healed left rib fracture. Calcified granuloma in the RUL.")
    assert set(report) == {"findings"} and report["findings"]
    for item in report["findings"]:
        assert tuple(item) == FIELDS
        assert item["finding"] in {f.value for f in ReportFinding}
        assert isinstance(item["present"], bool) and isinstance(item["uncertain"], bool)
        assert item["laterality"] in {None, *(s.value for s in Side)}
        assert item["zone"] in {None, *(z.value for z in Zone)}
        assert item["severity"] in {None, *(s.value for s in Severity)}
        assert isinstance(item["evidence"], str) and item["evidence"]
    assert validate_report(json.loads(json.dumps(report)))


@pytest.mark.parametrize("bad", [
    [], {"findings": [{"finding": "effusion"}]},
    {"findings": [{"finding": "dragon", "present": True, "uncertain": False, "laterality": None, "zone": None,
                   "severity": None, "evidence": ""}]},
    {"findings": [{"finding": "edema", "present": "yes", "uncertain": False, "laterality": None, "zone": None,
                   "severity": None, "evidence": ""}]},
    {"findings": [{"finding": "edema", "present": True, "uncertain": False, "laterality": "up", "zone": None,
                   "severity": None, "evidence": ""}]},
])
def test_validate_report_refuses(bad) -> None:
    with pytest.raises(InputError):
        validate_report(bad)


def test_editable_subset(reader) -> None:
    mentions = reader.parse("FINDINGS: Small left pleural effusion. Possible right pneumothorax. No edema. "
                            "Right lower lobe opacity. Healed rib fracture. Left upper lobe mass. "
                            "IMPRESSION: Left pleural effusion.")
    got = [(e.finding, e.side, e.zone, e.severity) for e in editable_findings(mentions)]
    assert got == [(Finding.PLEURAL_EFFUSION, Side.LEFT, None, Severity.MILD),
                   (Finding.CONSOLIDATION, Side.RIGHT, Zone.LOWER, None),
                   (Finding.NODULE, Side.LEFT, Zone.UPPER, Severity.SEVERE)]  # a mass: a severe nodule


def test_parse_many_matches_parse(reader) -> None:
    texts = ["No effusion.", "Large left effusion.", "", "FINDINGS: Bibasilar atelectasis."] * 3
    assert list(reader.parse_many(texts, batch_size=5)) == [reader.parse(t) for t in texts]


# --- LLM backend against a local fake server --------------------------------------------------

class _FakeLLM(BaseHTTPRequestHandler):
    answer: str = ""
    seen: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers.get("Authorization"), body))
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).answer}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_llm():
    server = HTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeLLM.seen = []
    yield f"http://127.0.0.1:{server.server_port}", _FakeLLM
    server.shutdown()


GOOD = {"findings": [{"finding": "pleural_effusion", "present": True, "uncertain": False, "laterality": "left",
                      "zone": "lower", "severity": "mild", "evidence": "Small left effusion."}]}


def test_llm_backend_round_trip(fake_llm, monkeypatch) -> None:
    url, handler = fake_llm
    handler.answer = "```json\n" + json.dumps(GOOD) + "\n```"
    monkeypatch.setenv("TEST_LLM_KEY", "secret")
    reader = LLMReader(LLMConfig(url, "tiny", api_key_env="TEST_LLM_KEY"))
    mentions = reader.parse("Small left effusion.")
    assert [m.to_dict() for m in mentions] == GOOD["findings"]
    path, auth, body = handler.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret"
    assert body["model"] == "tiny" and body["messages"][-1]["content"] == "Small left effusion."


@pytest.mark.parametrize("answer,message", [
    ("I think there is an effusion.", "not JSON"),
    (json.dumps({"findings": [{**GOOD["findings"][0], "finding": "unicorn"}]}), "unicorn"),
])
def test_llm_backend_refuses_bad_answers_in_one_line(fake_llm, answer, message) -> None:
    url, handler = fake_llm
    handler.answer = answer
    with pytest.raises(InputError, match=message) as info:
        LLMReader(LLMConfig(url, "tiny")).parse("x")
    assert "\n" not in str(info.value)


def test_llm_backend_needs_configuration(monkeypatch) -> None:
    monkeypatch.delenv("MEDCF_LLM_URL", raising=False)
    monkeypatch.delenv("MEDCF_LLM_MODEL", raising=False)
    with pytest.raises(InputError, match="--llm-url"):
        get_reader("llm")


# --- IU extraction and scorer on a synthetic archive -------------------------------------------

def _xml(findings: str, impression: str, mesh: list[str]) -> str:
    terms = "".join(f"<major>{m}</major>" for m in mesh)
    return (f'<eCitation><MedlineCitation><Article><Abstract>'
            f'<AbstractText Label="INDICATION">Cough, evaluate for pneumonia.</AbstractText>'
            f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
            f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
            f'</Abstract></Article></MedlineCitation><MeSH>{terms}</MeSH></eCitation>')


def test_extraction_never_takes_ids_above_1000(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("ecgen-radiology/1.xml", "ecgen-radiology/1000.xml", "ecgen-radiology/1001.xml",
                     "ecgen-radiology/20000.xml", "ecgen-radiology/notes.txt"):
            data = _xml("Clear lungs.", "Normal.", ["normal"]).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert extract_reports(buffer.getvalue(), tmp_path, max_id=5000) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.xml", "1000.xml"]


def test_mesh_mapping() -> None:
    ref = mesh_to_reference("Pleural Effusion/bilateral/small")
    assert (ref.finding, ref.laterality, ref.zone, ref.severity) == ("pleural_effusion", "bilateral", None, "mild")
    ref = mesh_to_reference("Opacity/lung/base/left")
    assert (ref.finding, ref.laterality, ref.zone) == ("opacity", "left", "lower")
    assert mesh_to_reference("Cardiomegaly/borderline").severity == "mild"
    assert mesh_to_reference("Density/cardiophrenic angle/left") is None
    assert mesh_to_reference("Aorta/tortuous") is None


def test_scorer_on_synthetic_reports(tmp_path: Path, reader) -> None:
    reports = [
        ("Small left pleural effusion. No pneumothorax.", "Left effusion.", ["Pleural Effusion/left/small"]),
        ("Lungs are clear.", "No acute disease.", ["normal"]),
        ("Right upper lobe nodule.", "Nodule.", ["Nodule/lung/upper lobe/right", "Cardiomegaly/mild"]),
        ("Mild cardiomegaly.", "Cardiomegaly.", ["normal"]),
        ("Clear.", "Clear.", ["No Indexing"]),
    ]
    for number, (findings, impression, mesh) in enumerate(reports, 1):
        (tmp_path / f"{number}.xml").write_text(_xml(findings, impression, mesh))
    loaded = load_reports(tmp_path)
    assert [r.id for r in loaded] == [1, 2, 3, 4, 5]
    assert parse_report_xml((tmp_path / "1.xml").read_text(), 1).sections["FINDINGS"].startswith("Small")
    result = score(loaded, reader.parse_many)
    assert result.reports == 4  # "No Indexing" left out
    eff, nod, card = (result.per_finding[n] for n in ("pleural_effusion", "nodule", "cardiomegaly"))
    assert (eff.tp, eff.fp, eff.fn) == (1, 0, 0) and (nod.tp, nod.fp, nod.fn) == (1, 0, 0)
    assert (card.tp, card.fp, card.fn) == (0, 1, 1)
    assert result.micro.precision == pytest.approx(2 / 3) and result.micro.recall == pytest.approx(2 / 3)
    assert result.attribute["laterality"] == [2, 2]
    assert result.attribute["zone"] == [1, 1]
    assert result.attribute["severity"] == [1, 1]


def test_report_halves_are_fixed_balanced_and_not_by_order():
    from medcf.text.iu import HALVES, half_of

    halves = [half_of(i) for i in range(1, 1001)]
    assert set(halves) == set(HALVES)
    assert 450 <= halves.count("dev") <= 550  # about half each
    assert halves == [half_of(i) for i in range(1, 1001)]  # the same split every time
    first, second = halves[:500], halves[500:]
    assert 200 <= first.count("dev") <= 300 and 200 <= second.count("dev") <= 300  # not the first/second 500
