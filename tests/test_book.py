"""The book is consistent: _quarto.yml lists exactly the chapters that exist, notebooks are papermill-ready
(a `parameters` cell, the `python3` kernel), committed outputs stay small, every citation resolves."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from bgpo import book
from bgpo.errors import BGPOError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTER_SUFFIXES = {".qmd", ".ipynb"}


def _chapter_files() -> set[Path]:
    """Every chapter-like file in the repository (index, book/*.qmd, notebooks/*.ipynb)."""
    found = {ROOT / "index.qmd"} | set((ROOT / "book").glob("*.qmd")) | set(NOTEBOOKS)
    return {p.relative_to(ROOT) for p in found if p.is_file() and ".failed" not in p.name}


def test_quarto_lists_every_chapter_and_nothing_else():
    config = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    assert config["project"]["type"] == "book" and config["project"]["output-dir"] == "_book"
    assert config["execute"]["freeze"] is False  # the landing page reads headlines.json, which chapters rewrite
    assert (ROOT / config["bibliography"]).is_file()
    listed = book.chapters(ROOT)
    assert listed[0] == Path("index.qmd")
    assert len(listed) == len(set(listed)), "a chapter is listed twice"
    assert not [p for p in listed if not (ROOT / p).is_file()], "listed chapters that do not exist"
    assert set(listed) == _chapter_files(), "chapter files that _quarto.yml does not list"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_papermill_ready_and_small(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "exactly one code cell tagged `parameters`"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: the chapter title"
    assert path.stat().st_size < 1_000_000, f"{path.name} is {path.stat().st_size} bytes; keep outputs < 1 MB"
    executed = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert executed, f"{path.name} is committed without outputs; run `python -m bgpo.book --only {path.stem}`"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name} is committed with an error output"


def _cited_keys(text: str) -> set[str]:
    # Pandoc citations: [@key], [@key; @other], @key in text; skip e-mail-like and cross-refs (@sec-, @fig-, @tbl-, @eq-).
    keys = set(re.findall(r"(?<![\w.])@([A-Za-z][\w:-]*\w)", text))
    return {k for k in keys if not re.match(r"(sec|fig|tbl|eq|lst|thm)-", k)}


def test_every_citation_is_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    entries = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    cited = set()
    for rel in book.chapters(ROOT):
        path = ROOT / rel
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
        else:
            text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # citations live in prose, not code
        cited |= _cited_keys(text)
    assert cited, "the book cites nothing"
    assert cited <= entries, f"cited but not in book/references.bib: {sorted(cited - entries)}"


def test_data_files_carry_a_source():
    import pandas as pd

    for path in sorted((ROOT / "book" / "data").glob("*.csv")):
        df = pd.read_csv(path)
        assert "source" in df.columns and df["source"].notna().all(), f"{path.name} needs a source on every row"


def test_environment_and_versions_reports_and_chapters_errors(tmp_path):
    import torch

    report = book.environment_report()  # what the full-scale chapter checks on a node
    assert set(report) == {"python", "cpu cores", "cuda available", "gpus", "flash-attn"}
    assert report["cpu cores"] >= 1 and report["cuda available"] == torch.cuda.is_available()
    assert report["gpus"] == "none" or report["cuda available"]
    versions = book.versions_report()  # what index.qmd shows: versions only, never the build machine
    assert versions["torch"] == torch.__version__ and versions["bgpo"] and "quarto" in versions
    assert not [v for v in versions.values() if "/" in v], versions
    (tmp_path / "_quarto.yml").write_text("project:\n  type: book\n")
    with pytest.raises(BGPOError, match="chapters"):
        book.chapters(tmp_path)


def test_quarto_binary_honours_the_quarto_variable(tmp_path, monkeypatch):
    fake = tmp_path / "quarto"
    fake.write_text("#!/bin/sh\necho 9.9.9\n")
    fake.chmod(0o755)
    monkeypatch.setenv("QUARTO", str(fake))
    assert book.quarto_binary() == str(fake) and book.quarto_version() == "9.9.9"
    monkeypatch.setenv("QUARTO", str(tmp_path / "nothing"))
    with pytest.raises(BGPOError, match="QUARTO="):
        book.quarto_binary()


def test_render_fails_on_an_error_and_in_strict_mode_on_a_warning(tmp_path):
    quarto = tmp_path / "quarto"
    quarto.write_text("#!/bin/sh\necho 'WARNING (a.qmd) Unable to resolve crossref @fig-x'\nexit ${EXIT:-0}\n")
    quarto.chmod(0o755)
    assert book.render(tmp_path, str(quarto)) >= 0  # a warning alone passes without --strict
    with pytest.raises(BGPOError, match="warned 1 time"):
        book.render(tmp_path, str(quarto), strict=True)
    book.os.environ["EXIT"] = "1"
    try:
        with pytest.raises(BGPOError, match="quarto render failed"):
            book.render(tmp_path, str(quarto))
    finally:
        del book.os.environ["EXIT"]


def test_elbo_variance_falls_with_n_t():
    import torch

    from bgpo.model import LLaDAModelLM, preset_config

    torch.manual_seed(0)
    model = LLaDAModelLM(preset_config("tiny")).eval()
    ids = torch.randint(3, model.config.vocab_size, (4, 24))
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 8:] = True
    table = book.elbo_variance_table(model, ids, response, [1, 8], repeats=16)
    assert list(table["n_t"]) == [1, 8]
    v1, v8 = table["variance"]
    assert v8 < v1 / 3  # stratified MC: at least ~1/n_t-like reduction
    with pytest.raises(BGPOError):
        book.elbo_estimates(model, ids, response, n_t=2, repeats=1)


def test_render_masked_marks_masked_and_eos():
    import torch

    from bgpo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    ids = torch.tensor(tok("12+3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    response = torch.tensor([False, True, True, True, True])
    mask = torch.tensor([False, False, True, False, False])
    assert book.render_masked(tok, ids, mask, response) == "2▒3·"


def test_settings_vs_paper_flags_mismatches():
    from bgpo.config import load_config

    table = book.settings_vs_paper(load_config("llada8b-math"), "math")
    assert table.loc["n_t", "paper"] == "16" and table.loc["train_steps", "config"] == "700"
    assert table["match"].all()
    changed = book.settings_vs_paper(load_config("llada8b-math", ["objective.n_t=4"]), "math")
    assert not changed.loc["n_t", "match"]
    with pytest.raises(BGPOError, match="no paper settings"):
        book.settings_vs_paper(load_config("llada8b-math"), "chess")


def test_launch_preflight_blocks_only_real_launches(tmp_path):
    notes = book.launch_preflight(str(tmp_path), gpus_per_node=64, dry_run=True)
    assert any("would block" in n for n in notes)
    with pytest.raises(BGPOError, match="GPU"):
        book.launch_preflight(str(tmp_path), gpus_per_node=64, dry_run=False)


def test_run_streaming_reports_failure(capsys):
    import sys

    book.run_streaming([sys.executable, "-c", "print('hello')"])
    assert "hello" in capsys.readouterr().out
    with pytest.raises(BGPOError, match="status 3"):
        book.run_streaming([sys.executable, "-c", "raise SystemExit(3)"])


def _chapter_text(rel: Path) -> str:
    path = ROOT / rel
    if path.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    return path.read_text()


def test_every_section_reference_has_a_target():
    texts = {rel: _chapter_text(rel) for rel in book.chapters(ROOT) if (ROOT / rel).is_file()}
    defined = {m for text in texts.values() for m in re.findall(r"\{#(sec-[\w-]+)", text)}
    used = {m for text in texts.values() for m in re.findall(r"@(sec-[\w-]*\w)", text)}
    assert used <= defined, f"@sec references without a {{#sec-...}} heading: {sorted(used - defined)}"


def test_qmd_notebook_takes_only_python_chunks(tmp_path):
    page = tmp_path / "page.qmd"
    page.write_text("# Title\n\n```bash\nmake book\n```\n\n```{python}\nx = 1\n```\n\ntext\n\n"
                    "```{python echo=false}\n#| label: tbl-x\nprint(x + 1)\n```\n")
    nb = book.qmd_notebook(page)
    assert [c.source for c in nb.cells] == ["x = 1", "#| label: tbl-x\nprint(x + 1)"]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    (tmp_path / "prose.qmd").write_text("# References\n\n::: {#refs}\n:::\n")
    assert book.qmd_notebook(tmp_path / "prose.qmd") is None
    assert book.execute_page(tmp_path / "prose.qmd") is None


@pytest.mark.parametrize("rel", [p for p in book.chapters(ROOT) if p.suffix == ".qmd"], ids=str)
def test_qmd_chapters_execute_without_quarto(rel):
    """`make book` runs a .qmd page's python chunks (index.qmd: the environment check); so does the suite."""
    seconds = book.execute_page(ROOT / rel)
    assert seconds is None or seconds > 0


def test_execute_notebook_draws_inline_and_keeps_the_chapter_on_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as under `make`: Agg would drop every figure from the outputs
    path = tmp_path / "fig.ipynb"
    cells = [nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfig = plt.figure(); plt.plot([0, 1])")]
    kernelspec = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)
    assert book.execute_notebook(path) > 0
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs
    assert book.os.environ["MPLBACKEND"] == "Agg"  # restored for the caller

    broken = tmp_path / "broken.qmd"
    broken.write_text("```{python}\nraise ValueError('boom')\n```\n")
    with pytest.raises(BGPOError, match=r"broken.qmd \(python chunks\) failed in cell 1: ValueError: boom"):
        book.execute_page(broken)


def test_book_only_must_match_a_chapter():
    with pytest.raises(BGPOError, match="matches no chapter"):
        book.main(["--only", "no-such-chapter", "--no-render"])


# ---------------------------------------------------------------------------------------------------------
# Rendering checks that need no Quarto: what the rendered site would get wrong, caught in the sources and
# the committed outputs. Quarto numbers sections itself (number-sections), turns a `fig-` labelled cell with
# several outputs into sub-figures (a), (b), ..., and shows table cells and display math at their natural
# width, so these mistakes are visible here already.

def _options(cell) -> dict:
    """A code cell's Quarto options: the leading `#|` lines, parsed as YAML exactly as Quarto reads them
    (a double-quoted caption holding `\\ge` is a YAML error there, and fails here)."""
    lines = []
    for line in cell.source.splitlines():
        if not line.startswith("#|"):
            break
        lines.append(line[2:].removeprefix(" "))
    options = yaml.safe_load("\n".join(lines)) if lines else None
    assert options is None or isinstance(options, dict), f"cell options are not a YAML mapping: {lines}"
    return options or {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cell_options_are_valid_yaml(path):
    for i, cell in enumerate(c for c in _notebook(path).cells if c.cell_type == "code"):
        try:
            _options(cell)
        except yaml.YAMLError as err:
            pytest.fail(f"{path.name}, code cell {i + 1}: its #| options are not valid YAML (Quarto stops): {err}")


def test_yaml_options_catch_a_tex_escape_in_double_quotes():
    bad = nbformat.v4.new_code_cell('#| label: fig-x\n#| fig-cap: "Left: $e^z \\ge 1+z$"\nplot()')
    with pytest.raises(yaml.YAMLError):
        _options(bad)
    good = nbformat.v4.new_code_cell("#| label: fig-x\n#| fig-cap: 'Left: $e^z \\ge 1+z$, Jensen''s gap'\nplot()")
    assert _options(good) == {"label": "fig-x", "fig-cap": "Left: $e^z \\ge 1+z$, Jensen's gap"}


def _outputs(cell) -> list:
    return [o for o in cell.get("outputs", []) if o.output_type in ("display_data", "execute_result")]


def _images(cell) -> list:
    return [o for o in _outputs(cell) if any(k.startswith("image/") for k in o.get("data", {}))]


def _html_tables(cell) -> list[str]:
    return [o["data"]["text/html"] for o in _outputs(cell) if "<table" in o.get("data", {}).get("text/html", "")]


def _markdown_tables(cell) -> list[str]:
    """Tables shown as Markdown (bgpo.book.markdown): Quarto typesets the TeX in them."""
    return [o["data"]["text/markdown"] for o in _outputs(cell) if "\n|---" in o.get("data", {}).get("text/markdown", "")]


def _notebook(path: Path):
    return nbformat.read(path, as_version=4)


def _book_prose() -> str:
    """The markdown of every chapter (where @fig-/@tbl- references live)."""
    return "\n".join(_chapter_text(rel) for rel in book.chapters(ROOT) if (ROOT / rel).is_file())


def _markdown_outside_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _chapter_markdown(rel: Path) -> str:
    """A chapter's prose only: notebook markdown cells, or a .qmd page without its code blocks."""
    return _markdown_outside_code(_chapter_text(rel))


HAND_NUMBERED = re.compile(r"^#{1,6}\s+(?:\d+(?:\.\d+)*[.)]|\(\s*[0-9a-zA-Z]{1,3}\s*\))\s", re.M)


@pytest.mark.parametrize("rel", book.chapters(ROOT), ids=str)
def test_headings_are_not_numbered_by_hand(rel):
    """number-sections is on: a heading "## 1. The bound" renders as "2.1 1. The bound"."""
    found = HAND_NUMBERED.findall(_chapter_markdown(rel))
    lines = [line for line in _chapter_markdown(rel).splitlines() if HAND_NUMBERED.match(line)]
    assert not found, f"{rel}: headings numbered by hand (Quarto numbers them): {lines}"


# Pandoc reads "(@label) text" at the start of a line as an item of a numbered example list: a wrapped
# cross-reference "(@fig-x) the ..." inside a bullet rendered as "1. the ..." in chapter 05.
EXAMPLE_LIST_ITEM = re.compile(r"^\s*\(@[\w-]*\)\s", re.M)


@pytest.mark.parametrize("rel", book.chapters(ROOT), ids=str)
def test_no_prose_line_starts_with_a_bare_cross_reference(rel):
    lines = [line for line in _chapter_markdown(rel).splitlines() if EXAMPLE_LIST_ITEM.match(line)]
    assert not lines, f"{rel}: a line starting '(@label) ' becomes a numbered list item; rewrap it: {lines}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_label_caption_and_a_reference(path):
    """A plot without `label: fig-...` + `fig-cap` is an unnumbered image; a labelled cell with a table *and*
    a plot becomes sub-figures (a) table, (b) plot with the caption on neither. References: `@fig-...`."""
    prose = _book_prose()
    for i, cell in enumerate(c for c in _notebook(path).cells if c.cell_type == "code"):
        opts, images = _options(cell), _images(cell)
        label = opts.get("label", "")
        where = f"{path.name}, code cell {i + 1} ({cell.source.splitlines()[0][:60]!r})"
        if images:
            assert label.startswith("fig-") and opts.get("fig-cap"), f"{where}: a figure without label/fig-cap"
        if label.startswith("fig-"):
            assert len(images) <= 1 and len(_outputs(cell)) == len(images), (
                f"{where}: a fig- cell must show exactly its one figure (other outputs become sub-figures); "
                "put tables and prints in their own cell")
            if images:
                assert f"@{label}" in prose, f"{where}: {label} is never referred to (@{label})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_table_has_a_label_caption_and_a_reference(path):
    prose = _book_prose()
    for i, cell in enumerate(c for c in _notebook(path).cells if c.cell_type == "code"):
        tables, opts = _html_tables(cell) + _markdown_tables(cell), _options(cell)
        if not tables:
            continue
        where = f"{path.name}, code cell {i + 1} ({cell.source.splitlines()[0][:60]!r})"
        label = opts.get("label", "")
        assert label.startswith("tbl-") and opts.get("tbl-cap"), f"{where}: a table without label/tbl-cap"
        assert len(tables) == 1 and len(_outputs(cell)) == 1, f"{where}: one table per labelled cell"
        assert f"@{label}" in prose, f"{where}: {label} is never referred to (@{label})"


RAW_MISSING = re.compile(r"(?<![\w.])(?:NaN|nan|<NA>|NaT)(?![\w])")


def _output_texts(cell) -> list[str]:
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append(out.text)
        data = out.get("data", {})
        texts += [data[k] for k in ("text/html", "text/plain", "text/markdown") if k in data]
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_shown_outputs_have_no_raw_missing_values(path):
    """Missing values read "—" with a note saying why, never pandas' NaN."""
    for i, cell in enumerate(c for c in _notebook(path).cells if c.cell_type == "code"):
        for text in _output_texts(cell):
            hit = RAW_MISSING.search(text)
            assert not hit, f"{path.name}, code cell {i + 1}: raw {hit.group()!r} in an output: " \
                            f"...{text[max(0, hit.start() - 80):hit.end() + 20]!r}"


def _table_width(html: str) -> int:
    """Rough rendered width of an HTML table in characters: widest cell of each column, plus padding."""
    widths: dict[int, int] = {}
    for row in re.findall(r"<tr.*?</tr>", html, flags=re.S):
        for j, (attrs, cell) in enumerate(re.findall(r"<t[hd]([^>]*)>(.*?)</t[hd]>", row, flags=re.S)):
            if re.search(r'colspan="([2-9]|\d\d)', attrs):
                continue  # a header spanning several columns wraps over all of them
            text = re.sub(r"<[^>]+>", "", cell).strip()
            longest = max((len(w) for w in text.split()), default=0)  # the browser wraps at spaces
            widths[j] = max(widths.get(j, 0), min(len(text), max(longest, 14)))
    return sum(w + 3 for w in widths.values())


TEXT_COLUMN_CHARS = 100  # Quarto's body column at the table font size, with a margin


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tables_fit_the_text_column(path):
    for i, cell in enumerate(c for c in _notebook(path).cells if c.cell_type == "code"):
        for html in _html_tables(cell):
            width = _table_width(html)
            assert width <= TEXT_COLUMN_CHARS, (f"{path.name}, code cell {i + 1}: table ~{width} characters wide "
                                                f"(> {TEXT_COLUMN_CHARS}): split or transpose it")


def _math_width(tex: str) -> float:
    """Rough width (in characters) of one line of display math: spacing commands by their em width,
    fractions by their wider part, a cases/matrix block by its widest row, other commands as one glyph,
    braces and the markup of scripts as nothing."""
    tex = re.sub(r"\\begin\{(cases|[pbv]?matrix|array)\}(.*?)\\end\{\1\}",
                 lambda m: "x" * int(max(_math_width(row) for row in re.split(r"\\\\", m.group(2)))), tex, flags=re.S)
    tex = re.sub(r"\\(?:text|mathrm|operatorname|mathbf)\{([^{}]*)\}", lambda m: m.group(1), tex)
    width = 4 * tex.count(r"\qquad") + 2 * tex.count(r"\quad")
    tex = re.sub(r"\\qquad|\\quad", "", tex)
    tex = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", lambda m: "x" * max(len(m.group(1)), len(m.group(2))), tex)
    tex = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg|begin\{\w+\}|end\{\w+\}|[,;:! ])", "", tex)
    tex = re.sub(r"\\[A-Za-z]+", "x", tex)
    tex = re.sub(r"[{}^_&\s]", "", tex)
    return width + len(tex)


def _math_lines(block: str) -> list[str]:
    """The rendered lines of a display-math block: split at ``\\\\`` outside cases/matrix blocks."""
    nested = re.compile(r"\\begin\{(cases|[pbv]?matrix|array)\}.*?\\end\{\1\}", re.S)
    blocks = iter([m.group(0) for m in nested.finditer(block)])
    return [re.sub("\0", lambda _: next(blocks), line) for line in re.split(r"\\\\", nested.sub("\0", block))]


MATH_COLUMN_CHARS = 62  # display math is set larger than text; ~62 glyphs fill Quarto's body column


@pytest.mark.parametrize("rel", book.chapters(ROOT), ids=str)
def test_display_math_fits_the_text_column(rel):
    """MathJax never breaks a display equation: a long one is cut at the column edge. Split it with aligned."""
    text = _chapter_markdown(rel)
    for block in re.findall(r"\$\$(.*?)\$\$", text, flags=re.S):
        for line in _math_lines(block):
            assert _math_width(line) <= MATH_COLUMN_CHARS, (
                f"{rel}: display math line ~{_math_width(line):.0f} glyphs wide: {line.strip()[:90]!r}")


def _repo_files() -> set[str]:
    import subprocess

    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(listed.split())


DOC_FILE = re.compile(r"(?<![\w/.-])([\w.-]+\.md)\b")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:bgpo|book|tests|notebooks)/[\w./-]*\.(?:py|md|csv|json|yaml|yml|ipynb|qmd|bib))\b")


def _texts_that_cite_files() -> dict[str, str]:
    """Chapter prose and code, the package's sources and configs, the data READMEs: where a reader meets a
    file name and expects to open it."""
    texts = {str(rel): _chapter_text(rel) + "\n".join(
        c.source for c in _notebook(ROOT / rel).cells if c.cell_type == "code") if rel.suffix == ".ipynb"
        else (ROOT / rel).read_text() for rel in book.chapters(ROOT) if (ROOT / rel).is_file()}
    for path in [ROOT / "README.md", *(ROOT / "bgpo").rglob("*.py"), *(ROOT / "bgpo" / "configs").glob("*.yaml"),
                 *(ROOT / "book" / "data").rglob("*.md")]:
        texts[str(path.relative_to(ROOT))] = path.read_text()
    return texts


# files that no longer exist but are read from git history on purpose, by the one file that reads them
# (bgpo/sandbox/bench.py compares the sandbox package with the single-file module it replaced, `git show
# <commit>:bgpo/sandbox.py`); anywhere else such a path is a stale reference
IN_GIT_HISTORY = {"bgpo/sandbox/bench.py": {"bgpo/sandbox.py"}}


def test_no_reference_to_files_outside_the_repository():
    """A cited document (``bgpo-math.md``) or path must be one the reader can open in this repository."""
    files = _repo_files()
    names = {Path(f).name for f in files}
    missing = []
    for where, text in _texts_that_cite_files().items():
        for name in DOC_FILE.findall(text):
            if name not in names:
                missing.append(f"{where}: {name}")
        for path in REPO_PATH.findall(text):
            if path not in files and not (ROOT / path).exists() and path not in IN_GIT_HISTORY.get(where, ()):
                missing.append(f"{where}: {path}")
    assert not missing, "references to files that are not in the repository:\n" + "\n".join(sorted(set(missing)))


PARAMETER_LINE_CHARS = 100


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cells_fit_the_text_column(path):
    cell = next(c for c in _notebook(path).cells if "parameters" in c.get("metadata", {}).get("tags", []))
    long = [line for line in cell.source.splitlines() if len(line) > PARAMETER_LINE_CHARS]
    assert not long, f"{path.name}: parameters lines over {PARAMETER_LINE_CHARS} characters: {long}"


def test_quarto_wraps_code_and_outputs_and_links_no_placeholder_repository():
    config = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    html = config["format"]["html"]
    assert html.get("code-overflow") == "wrap", "long source lines must wrap, not scroll off the page"
    assert html["theme"]["light"][1] == html["theme"]["dark"][1] == "book/theme.scss", "one layout, both themes"
    rules = (ROOT / "book" / "theme.scss").read_text()
    # Quarto styles the <code> inside an output's <pre> as `white-space: pre`: the rule must reach the code
    assert re.search(r"\.cell-output pre code[^{]*\{[^}]*white-space:\s*pre-wrap", rules), \
        "printed outputs must wrap: set white-space: pre-wrap on .cell-output pre code"
    repo = config["book"].get("repo-url")
    if repo is None:
        assert "repo-actions" not in config["book"], "repo-actions without repo-url"
    else:
        assert "github.com/bgpo-book/bgpo-book" not in repo and "OWNER" not in repo, f"placeholder repo-url {repo}"


def test_display_table_shows_missing_values_as_a_dash():
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"a": [1.0, np.nan], "b": ["x", None], "c": [True, False], "d": [0.12345, 2.0],
                       "e": np.array([3, 40], dtype=np.int64)})
    shown = book.display_table(df, {"d": "{:.2f}"})
    assert shown.to_dict("list") == {"a": ["1", "—"], "b": ["x", "—"], "c": ["True", "False"], "d": ["0.12", "2.00"],
                                     "e": ["3", "40"]}
    assert not RAW_MISSING.search(shown.to_html())


# ---------------------------------------------------------------------------------------------------------
# The landing page's results table (index.qmd): every row computed, none typed in.

def test_score_check_reads_the_committed_table():
    rows = book.score_check(ROOT / "book" / "data" / "score-check.md")
    assert len(rows) >= 6 and ("gsm8k_instruct_256_128", 76.37, 76.37) in rows


# ---------------------------------------------------------------------------------------------------------
# Stale outputs: a chapter executed before a change of the planner would print yesterday's plan. Re-plan here
# and compare with what the committed notebooks print.

def _printed(path: Path, marker: str) -> str:
    """The printed output of the one code cell of ``path`` whose source contains ``marker``."""
    cells = [c for c in _notebook(path).cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells contain {marker!r}"
    return "".join(o.text for o in cells[0].get("outputs", []) if o.output_type == "stream")


@pytest.mark.parametrize("name, marker", [("06-full-scale.ipynb", "memory.table()")])
def test_printed_memory_plans_are_todays(name, marker):
    """Chapter 6 prints the plan of llada8b-math on 8 x 80 GB with its default parameters (the only printout of
    a plan: chapter 3 shows the same budget as a table and links there)."""
    from bgpo.plan import plan

    expected = plan("llada8b-math", gpus=8, gpu_memory_gb=80.0).table()
    assert expected in _printed(ROOT / "notebooks" / name, marker), (
        f"{name} prints another plan than bgpo.plan gives today: re-execute it "
        f"(python -m bgpo.book --only {name.split('-')[0]}- --no-render)")


def test_markdown_tables_have_one_header_row_and_keep_row_labels():
    import pandas as pd

    df = pd.DataFrame({"BGPO": [34.9, 36.94]}, index=pd.Index([1, 16], name="$n_t$"))
    text = book.markdown(df, default="{:.1f}").data
    assert text.splitlines()[:4] == ["| $n_t$ | BGPO |", "|:--------|:--------|", "| 1 | 34.9 |", "| 16 | 36.9 |"]


def test_the_doctor_report_shown_in_chapters_03_and_06_names_its_source():
    from bgpo.book import doctor_report, repo_root

    text = doctor_report(repo_root()).data
    assert "book/data/" in text and "doctor.json" in text and "packed attention" in text
    assert "/work/" not in text and "/tmp/" not in text


def test_no_committed_notebook_names_a_machine_path():
    """Outputs and papermill's metadata alike: paths are relative to the repository."""
    import re

    from bgpo.book import repo_root

    for path in sorted((repo_root() / "notebooks").glob("*.ipynb")):
        assert re.findall(r"(?<![\w.~-])/(?:tmp|work|root|home)/[\w.~-]", path.read_text()) == [], path.name
