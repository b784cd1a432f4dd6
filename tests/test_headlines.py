"""One number, one source: every headline the landing page shows is printed, character for character, in the
chapter that recorded it, and the landing page types no number of its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from bgpo import headlines

ROOT = Path(__file__).resolve().parents[1]
RECORDS = headlines.load()


def _chapter_of(label: str) -> Path:
    """The notebook whose title carries ``{#label}``."""
    found = [p for p in sorted((ROOT / "notebooks").glob("*.ipynb"))
             if f"{{#{label}}}" in nbformat.read(p, as_version=4).cells[0].source]
    assert len(found) == 1, f"{label}: {found}"
    return found[0]


def _shown_markdown(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))


def test_the_book_records_its_headlines():
    chapters = {r["chapter"] for r in RECORDS.values()}
    assert {"sec-derivations", "sec-memory", "sec-small-scale", "sec-results", "sec-full-scale"} <= chapters
    assert len({r["order"] for r in RECORDS.values()}) == len(RECORDS), "two headlines share a row"
    assert all(r["headline"] in r["finding"] for r in RECORDS.values())
    assert [r["result"] for r in RECORDS.values() if not r["reproduced"]] == ["RL of LLaDA-8B itself"]


@pytest.mark.parametrize("key", sorted(RECORDS))
def test_every_headline_is_printed_in_its_chapter(key):
    """The committed chapter shows the stored finding (it was recorded by the run whose outputs are committed)."""
    record = RECORDS[key]
    path = _chapter_of(record["chapter"])
    assert record["finding"] in _shown_markdown(path), (
        f"{key}: book/data/headlines.json holds a finding that {path.name} does not show; re-execute the chapter")


def test_the_landing_page_shows_the_records_and_types_no_number():
    text = (ROOT / "index.qmd").read_text()
    assert "results_table()" in text and "scope()" in text, "index.qmd reads its results from bgpo.headlines"
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    typed = re.findall(r"(?<![\w.^{-])\d+\.\d+(?![\w.])", prose)
    assert typed == [], f"numbers typed into index.qmd's prose: {typed}"
    rows = headlines.results_table()
    assert [r[2] for r in rows][0] == "@sec-derivations" and all(r[2].startswith("@sec-") for r in rows)


def test_record_rewrites_only_a_changed_entry(tmp_path):
    path = tmp_path / "headlines.json"
    shown = headlines.record("a", chapter="sec-x", result="r", headline="h 1.0", finding="f", source="s", order=2,
                             path=path)
    assert shown == "**h 1.0.** f"
    before = path.stat().st_mtime_ns
    headlines.record("a", chapter="sec-x", result="r", headline="h 1.0", finding="f", source="s", order=2, path=path)
    assert path.stat().st_mtime_ns == before
    headlines.record("b", chapter="sec-y", result="q", headline="h", finding="g", source="s", order=1,
                     reproduced=False, path=path)
    assert [row[0] for row in headlines.results_table(path)] == ["q", "r"]
    assert json.loads(path.read_text())["a"]["finding"] == "**h 1.0.** f"
    box = headlines.scope(path)
    assert box.index("* r: h 1.0 (@sec-x)") < box.index("**Not reproduced:**") < box.index("* q: h (@sec-y)")


@pytest.mark.parametrize("value, text", [(2.0e-16, r"$2.0 \times 10^{-16}$"), (2.776e-17, r"$2.8 \times 10^{-17}$"),
                                         (9.96e-17, r"$1.0 \times 10^{-16}$"), (0.0, "$0$"), (0.5, r"$5.0 \times 10^{-1}$")])
def test_power_of_ten(value, text):
    assert headlines.power_of_ten(value) == text


def test_key_findings_is_a_callout():
    box = headlines.key_findings("one", "two")
    assert box.startswith("::: {.callout-tip}\n## Key findings\n") and "* one\n* two\n:::" in box
