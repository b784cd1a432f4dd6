"""The rendered website: what a reader must never see (bgpo.book.page_problems) is caught, and the sidebar lists
every chapter. `make test` renders the site and runs the same checks on it (`python -m bgpo.book --render-only
--strict`); set BGPO_SITE=_book to run them here on a site you rendered."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bgpo import book

ROOT = Path(__file__).resolve().parents[1]


def _page(body: str) -> str:
    return f"<html><head><script>var x = '$a$ NaN /tmp/x';</script></head><body>{body}</body></html>"


def test_a_clean_page_has_no_problems():
    body = ('<p>Memory grows with <span class="math inline">\\(n_t\\)</span>; see <a href="./x.html">Figure 3.1</a>.</p>'
            '<div class="sourceCode"><pre class="sourceCode"><code class="sourceCode">x = float("nan")  # NaN</code>'
            '</pre></div><div class="cell-output"><pre><code>$ bgpo plan --config llada8b-math</code></pre></div>'
            '<p>a run folder such as runs/x/metrics.jsonl, or /models/LLaDA-8B-Instruct on a cluster</p>')
    assert book.page_problems(_page(body)) == []


@pytest.mark.parametrize("body, kind", [
    ("<p>see ?@fig-memory</p>", "unresolved reference"),
    ("<table><tr><th>$n_t$</th></tr></table>", "raw TeX outside math"),
    ("<table><tr><td>NaN</td></tr></table>", "raw missing value"),
    ('<div class="cell-output"><pre><code>loss nan</code></pre></div>', "raw missing value"),
    ('<div class="cell-output"><pre><code>--config /work/main/bgpo/configs/x.yaml</code></pre></div>', "machine path"),
    ("<td>quarto 1.10 (/root/.cache/quarto/bin/quarto)</td>", "machine path"),
    ('<img src="/home/me/fig.png">', "machine path in a link"),
])
def test_each_problem_is_caught(body, kind):
    problems = book.page_problems(_page(body))
    assert len(problems) == 1 and problems[0].startswith(kind), problems


def test_sidebar_pages_and_a_site_with_a_missing_chapter(tmp_path):
    links = "".join(f'<a href="./{p.with_suffix(".html")}" class="sidebar-item-text sidebar-link">x</a>'
                    for p in book.chapters(ROOT))
    assert book.sidebar_pages(_page(links)) == [str(p.with_suffix(".html")) for p in book.chapters(ROOT)]
    for rel in book.chapters(ROOT)[:-1]:  # every page but the last
        (tmp_path / rel.with_suffix(".html")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel.with_suffix(".html")).write_text(_page(links if rel.name == "index.qmd" else ""))
    last = str(book.chapters(ROOT)[-1].with_suffix(".html"))
    assert book.site_problems(tmp_path, ROOT) == [f"{last}: not rendered"]


def test_quarto_warnings_are_quartos_not_the_kernels():
    log = ("Starting python3 kernel...[IPKernelApp] WARNING | Kernel is running over TCP\n"
           "\x1b[33mWARNING (notebooks/03-memory.ipynb:12) Unable to resolve crossref @fig-nope\x1b[39m\n"
           "[WARNING] Citeproc: citation nobody2020 not found\nOutput created: _book/index.html\n")
    assert book.quarto_warnings(log) == ["WARNING (notebooks/03-memory.ipynb:12) Unable to resolve crossref @fig-nope",
                                         "[WARNING] Citeproc: citation nobody2020 not found"]


@pytest.mark.skipif(not os.environ.get("BGPO_SITE"), reason="set BGPO_SITE=_book to check a rendered site")
def test_rendered_site():
    site = ROOT / os.environ["BGPO_SITE"]
    assert book.site_problems(site, ROOT) == []
