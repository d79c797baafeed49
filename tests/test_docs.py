"""The docs state each figure once and point only inside the repository.

- Every generated table (README.md, docs/bench.md, the model cards) equals what
  ``docs/results/current.json`` renders, and every figure in current.json is what its
  source run's files say.
- README.md stays one page (at most 120 lines).
- No code comment cites a file outside the repository; every ``docs/methods.md §N`` cited
  exists.
- Every repository-relative link in the Markdown pages points to a file that exists.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from medcf.errors import InputError
from medcf.eval import current as cur

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 120
# Where code lives (comments and docstrings are checked there).
CODE_DIRS = ("medcf", "MedCFExtension", "monailabel_app", "benchmarks", "tests", "scripts")
CODE_SUFFIXES = {".py", ".ui", ".txt", ".json", ".cfg", ".toml", ".sh", ".cmake"}
# Pages whose links must resolve.
LINKED_PAGES = ["README.md", "CHANGELOG.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
                *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "monai_bundle" / "docs").glob("*.md"))]
# A citation of the workspace outside the repository: a relative path up into the shared folder,
# its absolute path, or its docs/ and seeds/ folders named bare.
_SHARED = "sha" + "red"  # spelled in two parts so that this file does not match itself
OUTSIDE = re.compile(rf"(\.\./{_SHARED}\b|/work/{_SHARED}\b|(?<![\w./-]){_SHARED}/(docs|seeds)/)")
METHODS_CITE = re.compile(r"(?<![\w/])((?:docs/)?methods\.md)`{0,2}\s*§\s*(\d+)(?:\s*[–-]\s*(\d+))?")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def _code_files() -> list[Path]:
    files = []
    for d in CODE_DIRS:
        files += [p for p in (ROOT / d).rglob("*") if p.is_file() and p.suffix in CODE_SUFFIXES
                  and "__pycache__" not in p.parts]
    return files + [ROOT / "Makefile", ROOT / "setup.py", ROOT / "CMakeLists.txt"]


# ------------------------------------------------------------------ figures


def test_generated_tables_agree_with_current_json() -> None:
    assert cur.stale_pages() == [], "python -m medcf.eval.current --write"


@pytest.mark.parametrize("section", list(cur.EXTRACTORS), ids=lambda s: s.value)
def test_every_recorded_figure_is_what_its_source_run_says(section: cur.Section) -> None:
    entry = cur.load_current()["sections"][section.value]
    assert (ROOT / entry["source"]).exists(), f"{section.value}: source {entry['source']} is not in the repository"
    assert cur.EXTRACTORS[section](entry["source"]) == entry["figures"]


def test_sections_without_a_results_file_name_the_script_that_prints_them() -> None:
    data = cur.load_current()
    assert set(data["sections"]) == {s.value for s in cur.Section}
    for name, entry in data["sections"].items():
        assert (ROOT / entry["source"]).exists(), f"{name}: source {entry['source']} missing"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", entry.get("measured", "")), f"{name}: no measured date"


def test_a_table_edited_by_hand_is_found_and_rewritten(tmp_path: Path) -> None:
    for page in cur.pages():
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    flips = re.search(r"\| (\d+) % / (\d+) % \|", text)
    assert flips, "README's headline table lost the auto flip row"
    readme.write_text(text.replace(flips.group(0), "| 99 % / 99 % |", 1))
    assert cur.stale_pages(root=tmp_path) == ["README.md"]
    assert cur.write_pages(root=tmp_path) == ["README.md"]
    assert readme.read_text() == text and cur.stale_pages(root=tmp_path) == []


def test_a_page_without_its_markers_is_refused() -> None:
    with pytest.raises(InputError, match="missing markers"):
        cur.render_page("no tables here\n", "docs/bench.md", cur.load_current())


def test_update_current_replaces_one_section_atomically_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "current.json"
    shutil.copy(cur.CURRENT, path)
    before = json.loads(path.read_text())
    after = cur.update_current(cur.Section.DEMO_JUDGE, {"input": 0.1, "add": 0.9, "remove": 0.2},
                               "benchmarks/judge_demo.py", measured="2026-12-07", path=path)
    assert json.loads(path.read_text()) == after
    assert after["sections"]["demo_judge"]["figures"] == {"input": 0.1, "add": 0.9, "remove": 0.2}
    assert {k: v for k, v in after["sections"].items() if k != "demo_judge"} == \
        {k: v for k, v in before["sections"].items() if k != "demo_judge"}
    assert [p.name for p in tmp_path.iterdir()] == ["current.json"]  # no temp file left behind
    with pytest.raises(ValueError):
        cur.update_current("no_such_section", {}, "x", path=path)
    with pytest.raises(InputError, match="source"):
        cur.update_current(cur.Section.SPEED, {}, "", path=path)
    assert json.loads(path.read_text()) == after  # a refused update writes nothing


def test_a_malformed_results_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "current.json"
    bad.write_text('{"schema": 1, "sections": {"speed": {"figures": {}}}}')
    with pytest.raises(InputError, match="source"):
        cur.load_current(bad)


def test_readme_is_one_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    assert "make demo" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------ citations and links


def test_no_code_cites_a_file_outside_the_repository() -> None:
    hits = []
    for path in _code_files():
        if not path.exists():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not hits, "citations outside the repository:\n" + "\n".join(hits)


def test_every_methods_section_cited_exists() -> None:
    headings = {int(m) for m in re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "methods.md").read_text(), re.M)}
    missing = []
    for path in _code_files() + [ROOT / p for p in LINKED_PAGES]:
        if not path.exists():
            continue
        for m in METHODS_CITE.finditer(path.read_text(errors="replace")):
            first, last = int(m.group(2)), int(m.group(3) or m.group(2))
            if path.suffix != ".md" and m.group(1) != "docs/methods.md":
                missing.append(f"{path.relative_to(ROOT)}: cites {m.group(0)!r}, not docs/methods.md")
            missing += [f"{path.relative_to(ROOT)}: §{n} is not a section of docs/methods.md"
                        for n in range(first, last + 1) if n not in headings]
    assert not missing, "\n".join(missing)


def _broken_links(page: str) -> list[str]:
    path = ROOT / page
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks hold commands, not links
    broken = []
    for m in LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, or an anchor on the same page
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            broken.append(f"{page}: {target}")
    return broken


@pytest.mark.parametrize("page", LINKED_PAGES)
def test_repository_links_point_to_files_that_exist(page: str) -> None:
    assert _broken_links(page) == []
