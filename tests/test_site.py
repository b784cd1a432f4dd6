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
    ('<img src="/home/me/fig.png" alt="a figure">', "machine path in a link"),
    ('<ol class="example" type="1"><li></li></ol><p>see Chapter 6.</p>', "empty list item"),
    ('<ul><li><p>one</p></li><li>  </li></ul>', "empty list item"),
    ('<figure><img src="fig.png" class="figure-img"><figcaption>Figure 1</figcaption></figure>',
     "figure without alt text"),
    ('<img src="fig.png" alt="  ">', "figure without alt text"),
])
def test_each_problem_is_caught(body, kind):
    problems = book.page_problems(_page(body))
    assert len(problems) == 1 and problems[0].startswith(kind), problems


def test_a_list_item_with_content_is_not_empty():
    assert book.page_problems(_page('<ol><li><img src="x.png" alt="x"></li><li><a href="#a">a</a></li></ol>')) == []


def test_sidebar_pages_and_a_site_with_a_missing_chapter(tmp_path):
    links = "".join(f'<a href="./{p.with_suffix(".html")}" class="sidebar-item-text sidebar-link">x</a>'
                    for p in book.chapters(ROOT))
    assert book.sidebar_pages(_page(links)) == [str(p.with_suffix(".html")) for p in book.chapters(ROOT)]
    results = ('<style>.scroll { overflow-x: auto }</style><div id="tbl-results" class="scroll"><table><tr><th>result'
               '</th></tr><tr><td>1.5</td></tr></table></div>')
    for rel in book.chapters(ROOT)[:-1]:  # every page but the last
        (tmp_path / rel.with_suffix(".html")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel.with_suffix(".html")).write_text(_page(links + results if rel.name == "index.qmd" else "1.5"))
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


# ---------------------------------------------------------------------------------------------------------
# The layout on a phone, read from the HTML and the stylesheets the page loads (no browser).

def test_wide_content_must_scroll_inside_its_own_box():
    body = ('<div class="cell-output-display"><table><tr><td>x</td></tr></table></div>'
            '<table class="table"><tr><td>y</td></tr></table>'
            '<p><span class="math display">\\[x\\]</span></p><pre>code</pre><img src="f.png" class="img-fluid" alt="f">')
    assert book.layout_problems(_page(body), "") == [
        "wide content without a scrolling box: <table> (a phone scrolls the whole page)",
        "wide content without a scrolling box: <table.table> (a phone scrolls the whole page)",
        "wide content without a scrolling box: <span.display.math> (a phone scrolls the whole page)",
        "wide content without a scrolling box: <pre> (a phone scrolls the whole page)",
        "image wider than a phone: <img.img-fluid> has no max-width: 100%"]
    # overflow on an inline span or a table box does nothing: it must be made a block as well
    half = ".cell-output-display, table, .math.display, pre { overflow-x: auto } .img-fluid { max-width: 100%; }"
    assert [p.split(": ")[1] for p in book.layout_problems(_page(body), half)] == [
        "<table.table> (a phone scrolls the whole page)", "<span.display.math> (a phone scrolls the whole page)"]
    theme = (ROOT / "book" / "theme.scss").read_text()  # the book's own rules (Bootstrap gives pre and img-fluid)
    assert book.layout_problems(_page(body), theme + "pre{display:block;overflow:auto} .img-fluid{max-width:100%}") == []


def test_css_selectors_apply_only_where_they_surely_do():
    css = ("@media (max-width: 767px) { .narrow .box > table { display: block; overflow-x: scroll } }"
           " table:hover { overflow-x: auto } img[alt] { max-width: 100% }")
    inside = '<div class="narrow"><div class="box"><table class="t"><tr><td>1</td></tr></table></div></div>'
    assert book.layout_problems(_page(inside), css) == []
    outside = '<div class="box"><table><tr><td>1</td></tr></table></div><img src="a.png" alt="a">'
    assert len(book.layout_problems(_page(outside), css)) == 2  # no .narrow ancestor; [alt] is not followed


def _png(path: Path, width: int, height: int) -> None:
    """A PNG with only the header a size check reads."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big"))


def test_figures_are_drawn_at_twice_the_size_they_are_shown_and_fit_the_column(tmp_path):
    for name, width in (("retina.png", 1300), ("flat.png", 650), ("wide.png", 1400)):
        _png(tmp_path / name, width, 800)
    body = ('<img src="retina.png" width="650" alt="a"><img src="retina.png" width="651" alt="rounded">'
            '<img src="flat.png" alt="b"><img src="wide.png" width="700" alt="c"><img src="x.svg" alt="d">')
    assert book.figure_problems(_page(body), tmp_path / "page.html") == [
        "figure below 2x resolution: flat.png (650 px shown at 650 px, 1.0x)",
        f"figure wider than the text column: wide.png (700 px > {book.TEXT_COLUMN_PX} px, its text shrinks)"]


def test_every_landing_page_number_is_printed_by_the_chapter_its_row_links_to():
    index = ('<div id="tbl-results"><table><thead><tr><th>result</th><th>measured</th><th>chapter</th></tr></thead>'
             '<tr><td>The bound holds</td><td>gap 5.9e-15; value <span class="math inline">\\(n_t=4\\)</span></td>'
             '<td><a href="notebooks/02.html#sec-x"><span>2 Derivations</span></a></td></tr>'
             '<tr><td>Memory</td><td>ELBO ×32.0, BGPO ×1.00 at 1,024 tokens</td>'
             '<td><a href="notebooks/03.html">3 Memory</a></td></tr></table></div>')
    pages = {"notebooks/02.html": _page("<pre><code>bound gap 2.8e-17 at n_t = 4</code></pre>"),
             "notebooks/03.html": _page("<td>×32.0</td><p>BGPO ×1.00, 1,024 tokens</p>"),
             "notebooks/05.html": _page("<p>5.9e-15</p>")}
    assert book.landing_number_problems(index, pages) == [
        "landing-page number in no chapter: 5.9e-15 (row 'The bound holds'; not printed in notebooks/02.html)"]
    assert book.landing_number_problems(index, pages, "tbl-other") == [
        "landing page: no results table (id 'tbl-other')"]


# ---------------------------------------------------------------------------------------------------------
# The repository links: the address comes from the environment, never from a guess in _quarto.yml.

def test_the_repository_links_come_from_bgpo_repo_url_for_one_render(tmp_path, monkeypatch):
    """A fake quarto prints the profile Quarto would merge and the profiles it would activate; after the render
    the profile file is gone again."""
    quarto = tmp_path / "quarto"
    quarto.write_text('#!/bin/sh\necho "profiles=$QUARTO_PROFILE"\ncat _quarto-repo.yml 2>/dev/null || echo none\n')
    quarto.chmod(0o755)
    monkeypatch.setenv("BGPO_REPO_URL", "https://example.org/team/bgpo-book")
    monkeypatch.setenv("QUARTO_PROFILE", "ci")
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    book.render(tmp_path, str(quarto))
    text = "".join(printed)
    assert "profiles=ci,repo" in text
    assert "repo-url: https://example.org/team/bgpo-book" in text and "repo-actions:\n  - source\n  - issue" in text
    assert not (tmp_path / "_quarto-repo.yml").exists()
    monkeypatch.delenv("BGPO_REPO_URL")
    printed.clear()
    book.render(tmp_path, str(quarto))
    assert "profiles=ci\nnone" in "".join(printed)  # unset: no links, no profile
    monkeypatch.setenv("BGPO_REPO_URL", "github.com/OWNER/REPO/")
    with pytest.raises(book.BGPOError, match="https address"):
        book.render(tmp_path, str(quarto))
