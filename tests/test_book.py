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
    assert config["execute"]["freeze"] == "auto"
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


def test_environment_report_and_chapters_errors(tmp_path):
    report = book.environment_report()  # what index.qmd's environment check shows
    assert set(report) == {"python", "platform", "cpu cores", "torch", "transformers", "accelerate", "bgpo",
                           "cuda available", "gpus", "flash-attn", "quarto"}
    import torch

    assert report["torch"] == torch.__version__ and report["cpu cores"] >= 1 and report["bgpo"]
    assert report["cuda available"] == torch.cuda.is_available()
    assert report["gpus"] == "none" or report["cuda available"]
    (tmp_path / "_quarto.yml").write_text("project:\n  type: book\n")
    with pytest.raises(BGPOError, match="chapters"):
        book.chapters(tmp_path)


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
