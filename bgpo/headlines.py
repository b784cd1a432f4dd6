"""The book's headline numbers: one number, one source.

A chapter states each of its few headline results once, in its closing "key findings" box, through
:func:`record`: the text it shows is the text it stores in ``book/data/headlines.json``. The landing page
(``index.qmd``) reads that file (:func:`results_table`) and never computes or types a number of its own, so
every number on it is printed, character for character, in the chapter named beside it (a test reads both).

A record is ``{"chapter": "sec-...", "result": short title, "finding": markdown with the numbers,
"source": the data file or function they come from}``, keyed by a name unique in the book; ``order`` sorts
the landing page's rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

HEADLINES = Path(__file__).resolve().parents[1] / "book" / "data" / "headlines.json"


def load(path: Path = HEADLINES) -> dict[str, dict]:
    """Every stored headline, by key (empty when no chapter has recorded one)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def record(key: str, *, chapter: str, result: str, headline: str, finding: str, source: str, order: int,
           reproduced: bool = True, path: Path = HEADLINES) -> str:
    """Store one headline (replacing the key's earlier one) and return what the chapter shows: ``headline`` in
    bold, then ``finding``. ``headline`` is the result's number in a few words, shown on the landing page's first
    screen; ``reproduced`` is False for what the book does not reproduce.

    The file is rewritten only when the record changes, keys sorted, so re-executing a chapter at its defaults
    leaves it byte-identical."""
    found = load(path)
    finding = f"**{headline}.** {finding}"
    entry = {"chapter": chapter, "result": result, "headline": headline, "finding": finding, "source": source,
             "order": order, "reproduced": reproduced}
    if found.get(key) != entry:
        found[key] = entry
        path.write_text(json.dumps(found, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return finding


def key_findings(*findings: str, title: str = "Key findings") -> str:
    """A Quarto callout that closes a chapter: one bullet per finding (show it as Markdown)."""
    bullets = "\n".join(f"* {f}" for f in findings)
    return f"::: {{.callout-tip}}\n## {title}\n\n{bullets}\n:::\n"


def results_table(path: Path = HEADLINES) -> list[tuple[str, str, str]]:
    """(result, finding, ``@sec-`` reference) of every stored headline, in the book's order."""
    rows = sorted(load(path).values(), key=lambda e: (e["order"], e["chapter"]))
    return [(e["result"], e["finding"], f"@{e['chapter']}") for e in rows]


def scope(path: Path = HEADLINES) -> str:
    """The landing page's first box: what the book reproduces and what it does not, each with its headline
    number and its chapter, from the stored records."""
    rows = sorted(load(path).values(), key=lambda e: (e["order"], e["chapter"]))
    item = lambda e: f"* {e['result']}: {e['headline']} (@{e['chapter']})"  # noqa: E731
    done = [item(e) for e in rows if e.get("reproduced", True)]
    not_done = [item(e) for e in rows if not e.get("reproduced", True)]
    return ("::: {.callout-note appearance=\"simple\"}\n## What is reproduced, and what is not\n\n**Reproduced:**\n\n"
            + "\n".join(done) + "\n\n**Not reproduced:**\n\n" + "\n".join(not_done) + "\n:::\n")


def power_of_ten(value: float, digits: int = 1) -> str:
    """``value`` as TeX for a reader, not e-notation: ``2.0e-16`` -> ``$2.0 \\times 10^{-16}$``; 0 -> ``$0$``."""
    if value == 0:
        return "$0$"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10 ** exponent
    if round(abs(mantissa), digits) >= 10:  # 9.96e-17 printed with one digit is 1.0e-16
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"${mantissa:.{digits}f} \\times 10^{{{exponent}}}$"
