"""Glue for the book: the ``make book`` driver and the few helpers the chapters share.

``python -m bgpo.book`` executes every chapter listed in ``_quarto.yml`` with papermill, then renders
the website with Quarto when ``quarto`` is installed (and says how to get it when it is not). A notebook
runs in place, at the defaults of its ``parameters`` cell, so its committed outputs are this run's. A
``.qmd`` page's ```` ```{python} ```` chunks run as a throwaway notebook: that checks they execute without
Quarto, while the page's shown outputs are Quarto's own, made when it renders the page.

Notebooks run with their own folder (``notebooks/``) as working directory — the same directory
nbval and Quarto use — and find data through :func:`repo_root`, so relative paths never matter.
"""

from __future__ import annotations

import argparse
import html.parser
import importlib.metadata
import numbers
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
import torch
import yaml

from bgpo.diffusion import draw_masks, elbo_terms
from bgpo.errors import BGPOError

KERNEL = "python3"


def repo_root() -> Path:
    """The repository root (the folder holding ``_quarto.yml``), found from the installed package."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "_quarto.yml").is_file():
        raise BGPOError(f"no _quarto.yml in {root}: the book needs the repository checkout (pip install -e .)")
    return root


def chapters(root: Path | None = None) -> list[Path]:
    """The chapter files listed in ``_quarto.yml``, in reading order (paths relative to the root)."""
    root = root or repo_root()
    config = yaml.safe_load((root / "_quarto.yml").read_text())
    try:
        listed = config["book"]["chapters"]
    except (KeyError, TypeError):
        raise BGPOError(f"{root / '_quarto.yml'} has no book: chapters: list") from None
    out = []
    for item in listed:  # an entry is a path or a part {part: ..., chapters: [...]}
        out.extend(item["chapters"] if isinstance(item, dict) else [item])
    return [Path(p) for p in out]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_report() -> dict[str, object]:
    """The machine a launch will see: CPU/GPU, flash-attn (what the full-scale chapter checks on a node).

    flash-attn is optional: without it the model uses PyTorch SDPA (see the Memory chapter).
    """
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "python": platform.python_version(),
        "cpu cores": os.cpu_count(),
        "cuda available": torch.cuda.is_available(),
        "gpus": ", ".join(gpus) or "none",
        "flash-attn": _version("flash-attn") or _version("flash_attn") or "not installed (PyTorch SDPA is used)",
    }


# The packages whose versions decide the book's numbers and pages (index.qmd shows them).
BUILT_WITH = ("torch", "transformers", "accelerate", "numpy", "pandas", "matplotlib", "papermill")


def versions_report() -> dict[str, str]:
    """The versions the book was built with: Python, the packages of :data:`BUILT_WITH`, bgpo and Quarto.

    Only versions, never the build machine (cores, paths, GPUs): a reader needs to know what to install to
    get the same pages, not what computer made them.
    """
    report = {"python": platform.python_version()}
    report |= {name: _version(name) or "not installed" for name in (*BUILT_WITH, "bgpo")}
    report["quarto"] = quarto_version()
    return report


def quarto_version() -> str:
    """The version of the Quarto that renders (or would render) the book, without its path.

    When Quarto itself executes a page, its launcher exports ``QUARTO_BIN_PATH`` to the kernel even if
    ``quarto`` is not on PATH, so the page names the Quarto that rendered it.
    """
    found = quarto_binary()
    bin_dir = os.environ.get("QUARTO_BIN_PATH")
    if found is None and bin_dir and (Path(bin_dir) / "quarto").is_file():
        found = str(Path(bin_dir) / "quarto")
    if found is None:
        return "not installed (needed only to render the website)"
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = ""
    return version or "unknown version"


@torch.no_grad()
def elbo_estimates(model: torch.nn.Module, input_ids: torch.Tensor, response_mask: torch.Tensor, n_t: int,
                   repeats: int, *, attention_mask: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """``repeats`` independent MC estimates ``ELBO_hat = (1/n_t) sum_j ell_j`` per sequence: ``(repeats, B)``.

    ``ell_j = L * l_j`` with ``l_j`` from :func:`bgpo.diffusion.elbo_terms` on stratified masks
    (:func:`bgpo.diffusion.draw_masks`), so the spread across repeats is the estimator's own noise.
    """
    if repeats < 2:
        raise BGPOError(f"repeats must be >= 2 to measure a variance (got {repeats})")
    generator = torch.Generator().manual_seed(seed)
    L = response_mask.sum(-1).to(torch.float64)  # (B,)
    out = []
    for _ in range(repeats):
        masks = draw_masks(response_mask, n_t, generator)  # (B, n_t, T)
        l = elbo_terms(model, input_ids, masks, response_mask, attention_mask)  # (B, n_t)
        out.append(l.double().mean(1) * L)  # (B,)
    return torch.stack(out)  # (repeats, B)


def elbo_variance_table(model: torch.nn.Module, input_ids: torch.Tensor, response_mask: torch.Tensor,
                        n_t_values: list[int], repeats: int = 32, seed: int = 0) -> pd.DataFrame:
    """Variance (nats²) of the ELBO estimate across repeats, averaged over sequences, for each ``n_t``."""
    rows = []
    for n_t in n_t_values:
        est = elbo_estimates(model, input_ids, response_mask, n_t, repeats, seed=seed + n_t)  # (repeats, B)
        rows.append({"n_t": n_t, "elbo_mean": est.mean().item(), "variance": est.var(0).mean().item(),
                     "repeats": repeats, "sequences": input_ids.shape[0]})
    return pd.DataFrame(rows)


def render_masked(tokenizer, input_ids: torch.Tensor, mask: torch.Tensor, response_mask: torch.Tensor,
                  mask_char: str = "▒", eos_char: str = "·") -> str:
    """One response as text with its masked positions shown as ``mask_char`` (EOS padding as ``eos_char``).

    ``input_ids``, ``mask``, ``response_mask`` are ``(T,)`` for one sequence.
    """
    pieces = []
    for token, masked in zip(input_ids[response_mask].tolist(), mask[response_mask].tolist()):
        if masked:
            pieces.append(mask_char)
        elif token == tokenizer.eos_token_id:
            pieces.append(eos_char)
        else:
            pieces.append(tokenizer.convert_ids_to_tokens(token))
    return "".join(pieces)


MISSING = "—"


def display_table(df: pd.DataFrame, formats: dict[str, str] | None = None, default: str = "{:g}") -> pd.DataFrame:
    """``df`` with every value formatted as text for the page: missing values as ``—``, never NaN.

    ``formats`` maps a column to a format string (``"{:.1f}"``); other numbers use ``default``. Text is
    left as it is. A chapter says in prose or in the caption what a ``—`` stands for.
    """
    formats = formats or {}

    def cell(value: object, fmt: str) -> str:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return MISSING
        if pd.api.types.is_bool(value) or not isinstance(value, numbers.Real):
            return str(value)
        return fmt.format(value)

    out = df.copy().astype(object)
    for column in out.columns:
        fmt = formats.get(column, default)
        out[column] = [cell(v, fmt) for v in df[column]]
    return out


def markdown(df: pd.DataFrame, formats: dict[str, str] | None = None, default: str = "{:g}", index: bool = True):
    """``df`` shown as a Markdown table (a notebook display): one header row, and TeX such as ``$n_t$`` in a
    header or cell is typeset, which pandas' HTML table leaves raw. Values are formatted by :func:`display_table`;
    a named index (or several) becomes the first column(s)."""
    from IPython.display import Markdown

    formats = dict(formats or {})
    if index and any(name is not None for name in df.index.names):
        formats = {name: "{:g}" for name in df.index.names} | formats  # row labels (n_t, lengths) stay as they are
        df = df.reset_index()
    return Markdown(markdown_table(display_table(df, formats, default)))


# paper_settings.csv column -> (config section, field) of a `bgpo.config.Config`
PAPER_SETTINGS = {
    "train_steps": ("trainer", "steps"), "prompt_length": ("rollout", "max_prompt_length"),
    "response_length": ("rollout", "gen_length"), "train_diffusion_steps": ("rollout", "steps"),
    "eval_diffusion_steps": ("trainer", "eval_steps"), "block_length": ("rollout", "block_length"),
    "n_t": ("objective", "n_t"), "lr": ("optim", "lr"), "batch_prompts": ("rollout", "prompts_per_step"),
    "group_size": ("rollout", "group_size"),
}


def settings_vs_paper(cfg, task: str, settings_csv: Path | None = None) -> pd.DataFrame:
    """A config's training settings next to the paper's (``book/data/paper_settings.csv``), with a match flag."""
    path = settings_csv or repo_root() / "book" / "data" / "paper_settings.csv"
    paper = pd.read_csv(path)
    row = paper[paper["task"] == task]
    if row.empty:
        raise BGPOError(f"no paper settings for task {task!r} in {path}; known: {sorted(paper['task'])}")
    row = row.iloc[0]
    out = []
    for column, (section, name) in PAPER_SETTINGS.items():
        ours = getattr(getattr(cfg, section), name)
        match = ours is not None and float(ours) == float(row[column])
        out.append({"setting": column, "config field": f"{section}.{name}", "config": f"{ours:g}" if ours is not None
                    else "-", "paper": f"{row[column]:g}", "match": match})
    return pd.DataFrame(out).set_index("setting")


def launch_preflight(model_path: str, gpus_per_node: int, dry_run: bool) -> list[str]:
    """Checks before a real launch; returns what was found, raises BGPOError on a blocker unless ``dry_run``."""
    found = torch.cuda.device_count()
    notes = [f"GPUs visible here: {found} (need {gpus_per_node} per node)"]
    problems = []
    if found < gpus_per_node:
        problems.append(f"only {found} GPU(s) visible, gpus_per_node={gpus_per_node}: run on a GPU node or lower it")
    local = Path(model_path).expanduser()
    if local.exists():
        has_config = (local / "config.json").is_file()
        notes.append(f"model_path {local}: {'config.json found' if has_config else 'NO config.json'}")
        if not has_config:
            problems.append(f"{local} has no config.json: point model_path at the LLaDA-8B-Instruct folder")
    else:
        notes.append(f"model_path {model_path!r} is not a local folder: treated as a Hugging Face hub id "
                     "(each node downloads it unless HF_HOME is shared)")
    if _version("flash-attn") is None and _version("flash_attn") is None:
        notes.append("flash-attn not installed: packed micro-batches fall back to PyTorch SDPA "
                     "(pip install flash-attn --no-build-isolation for the authors' speed)")
    if problems and not dry_run:
        raise BGPOError("; ".join(problems))
    return notes + [f"would block a real launch: {p}" for p in problems]


def run_streaming(command: list[str], cwd: Path | None = None) -> None:
    """Run ``command``, printing its output line by line as it comes (so a notebook shows the live log)."""
    print("$", " ".join(command), flush=True)
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode:
        raise BGPOError(f"`{' '.join(command)}` exited with status {proc.returncode}; its log is above")


def quarto_help(executed: bool) -> str:
    """What to do without Quarto: whether the chapters were executed (`make book`) or not (`make site`, `make test`)."""
    done = "every chapter was executed" if executed else "the committed chapters were not re-executed"
    return (f"Quarto not found, so the website was not rendered ({done}): get it with `pip install quarto-cli` "
            "or `conda install -c conda-forge quarto` (or set QUARTO=/path/to/quarto), then run "
            f"`{'make book' if executed else 'make site'}` again")


# Kernels must draw figures inline even when the caller set MPLBACKEND=Agg (the Makefile does, for the tests):
# with Agg a notebook executes but keeps no figure outputs.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def _papermill(source: Path, out: Path, cwd: Path, parameters: dict | None, label: str, failed_copy: Path) -> None:
    """Execute ``source`` into ``out``; on a failing cell keep the executed copy at ``failed_copy`` and raise."""
    import papermill

    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND  # the kernel inherits this process's environment
    try:
        papermill.execute_notebook(str(source), str(out), parameters=parameters or {}, cwd=str(cwd),
                                   kernel_name=KERNEL, progress_bar=False)
    except papermill.PapermillExecutionError as err:
        shutil.copy(out, failed_copy)
        raise BGPOError(f"{label} failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                        f"(executed copy with the traceback: {failed_copy})") from None
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND")
        else:
            os.environ["MPLBACKEND"] = env_backend


def execute_notebook(path: Path, parameters: dict | None = None) -> float:
    """Execute ``path`` in place with papermill (cwd = its folder); returns the seconds taken.

    The run goes to a temporary file first and replaces the notebook only when it succeeds, so a
    failing chapter never overwrites the committed, executed one.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        _papermill(path, out, path.parent, parameters, path.name, path.with_suffix(".failed.ipynb"))
        executed = nbformat.read(out, as_version=4)
        # papermill records where it read and wrote: machine paths that must not be committed
        executed.metadata.get("papermill", {}).update(input_path=path.name, output_path=path.name)
        nbformat.write(executed, path)
    return time.perf_counter() - start


# A Quarto python chunk: ```{python} (options allowed, e.g. {python echo=false}) up to the closing fence.
QMD_CHUNK = re.compile(r"^```\{python[^}]*\}[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def qmd_notebook(path: Path) -> nbformat.NotebookNode | None:
    """The ``{python}`` chunks of a Quarto page as a notebook, one code cell each; None if it has none."""
    chunks = QMD_CHUNK.findall(path.read_text())
    if not chunks:
        return None
    cells = [nbformat.v4.new_code_cell(chunk.rstrip("\n")) for chunk in chunks]
    kernelspec = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec})


def execute_page(path: Path) -> float | None:
    """Execute a ``.qmd`` page's python chunks (cwd = its folder) without writing anything back.

    Returns the seconds taken, or None for a page with no python chunk. Quarto renders the page itself.
    """
    nb = qmd_notebook(path)
    if nb is None:
        return None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{path.stem}.ipynb"
        nbformat.write(nb, source)
        # outlives the temporary folder; one per user, since the temporary directory is shared between users
        failed_copy = Path(tempfile.gettempdir()) / f"{path.stem}.failed-uid{os.getuid()}.ipynb"
        _papermill(source, Path(tmp) / f"{path.stem}.out.ipynb", path.parent, None, f"{path.name} (python chunks)",
                   failed_copy)
    return time.perf_counter() - start


def quarto_binary() -> str | None:
    """The Quarto to render with: ``$QUARTO``, else ``quarto`` on PATH, else the one ``pip install quarto-cli``
    put next to this Python; None when there is none."""
    if os.environ.get("QUARTO"):
        found = shutil.which(os.environ["QUARTO"])
        if found is None:
            raise BGPOError(f"QUARTO={os.environ['QUARTO']} is not an executable: unset it or point it at bin/quarto")
        return found
    local = Path(sys.executable).parent / "quarto"
    return shutil.which("quarto") or (str(local) if local.is_file() else None)


# Quarto's own warnings ("WARN: ...", "WARNING (file) ...") and pandoc's ("[WARNING] Citeproc: ..."): an
# unresolved cross-reference, a missing citation or file. A kernel's log line ("[IPKernelApp] WARNING") is not one.
QUARTO_WARNING = re.compile(r"^(?:\x1b\[[0-9;]*m)*(?:WARN(?:ING)?\b|\[WARNING\])", re.M)


def quarto_warnings(log: str) -> list[str]:
    """The warning lines of a ``quarto render`` log (ANSI colours removed)."""
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.splitlines() if QUARTO_WARNING.match(line)]


# The book's repository is no fact of the book: whoever publishes it says where it lives, in this variable.
REPO_URL_VARIABLE = "BGPO_REPO_URL"
REPO_PROFILE = "repo"  # the Quarto profile that carries it: _quarto-repo.yml, written for one render


def repo_profile(root: Path, env: dict[str, str]) -> Path | None:
    """When ``env`` names the repository (:data:`REPO_URL_VARIABLE`), write the Quarto profile that gives every
    page its repository links (``repo-url``, ``repo-actions: [source, issue]``), add it to ``QUARTO_PROFILE``
    in ``env`` and return its path (the caller removes it); None when the variable is unset."""
    url = env.get(REPO_URL_VARIABLE, "").strip()
    if not url:
        return None
    if not re.fullmatch(r"https://\S+[^/\s]", url):
        raise BGPOError(f"{REPO_URL_VARIABLE}={url!r}: give the repository's https address, e.g. "
                        "https://github.com/OWNER/REPO")
    path = root / f"_quarto-{REPO_PROFILE}.yml"
    path.write_text("# written by bgpo.book.render from $" + REPO_URL_VARIABLE + " for one render; not committed\n"
                    + yaml.safe_dump({"book": {"repo-url": url, "repo-actions": ["source", "issue"]}}))
    env["QUARTO_PROFILE"] = ",".join(filter(None, [env.get("QUARTO_PROFILE"), REPO_PROFILE]))
    return path


def render(root: Path, quarto: str, strict: bool = False) -> float:
    """``quarto render`` the whole book in ``root`` into ``_book/``; returns the seconds taken.

    The output streams to the terminal as it comes. Raises BGPOError when Quarto fails and, with ``strict``,
    when it warns: an unresolved ``@fig-`` reference or a missing file only warns, and the page still ships.
    The ``.qmd`` pages execute in this Python (``QUARTO_PYTHON``), so they import the same ``bgpo``. With
    ``$BGPO_REPO_URL`` set, the pages link to that repository (:func:`repo_profile`).
    """
    env = dict(os.environ)
    env.setdefault("QUARTO_PYTHON", sys.executable)
    start = time.perf_counter()
    lines = []
    profile = repo_profile(root, env)
    try:
        with subprocess.Popen([quarto, "render"], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
                lines.append(line)
    finally:
        if profile is not None:
            profile.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise BGPOError(f"quarto render failed (exit {proc.returncode}); its messages are above")
    warnings = quarto_warnings("".join(lines))
    if strict and warnings:
        raise BGPOError(f"quarto render warned {len(warnings)} time(s) (--strict):\n  " + "\n  ".join(warnings))
    return seconds


# ---------------------------------------------------------------------------------------------------------
# d1's published numbers, rescored (chapter 07), and tables for Quarto.


SCORE_ROW = re.compile(r"^\|\s*(\w+)\s*\|[^|]*\|\s*([\d.]+)[^|]*\|\s*`d1_\w+`\s*([\d.]+)\s*\|", re.M)


def score_check(path: Path) -> list[tuple[str, float, float]]:
    """(setup, d1's published %, ours with d1's parser %) from ``book/data/score-check.md``'s table."""
    return [(name, float(ref), float(ours)) for name, ref, ours in SCORE_ROW.findall(path.read_text())]


def markdown_table(df: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """``df`` as a pipe table, so Quarto resolves the ``@sec-`` references and the math in its cells
    (print it from a chunk with ``output: asis``); the caption line gives it a number and a label."""
    # left-aligned; the dashes give Quarto the columns' relative widths (longest text, at least 8)
    widths = [max(8, min(60, max(len(str(v)) for v in [name, *df[name]]))) for name in df.columns]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "".join(f":{'-' * w}|" for w in widths)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    if caption:
        lines += ["", f": {caption}" + (f" {{#{label}}}" if label else "")]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# What a reader must never see on the rendered site (checked after every render, and by tests/test_site.py).

UNRESOLVED_REF = re.compile(r"\?@[\w-]+")                  # Quarto prints ?@fig-x for a reference it cannot resolve
RAW_TEX = re.compile(r"\$[^$\n]{1,80}\$")                   # $n_t$ that never reached MathJax
RAW_NAN = re.compile(r"(?<![\w.])(?:NaN|nan|<NA>|NaT)(?!\w)")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:tmp|work|root|home)/[\w.~-]")
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
Element = tuple[str, frozenset[str]]  # (tag, classes)


class _PageText(html.parser.HTMLParser):
    """A page's visible text, each piece tagged with where it sits (in math, in source code, in any code), and
    what the layout checks need: the elements that can be wider than a phone (tables, display math, ``<pre>``,
    images) with their ancestors, every image's attributes, and the list items that show nothing."""

    SKIP = {"script", "style"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[Element] = []                  # open elements, the root first
        self.pieces: list[tuple[str, set[str]]] = []    # (text, context)
        self.links: list[tuple[str, set[str]]] = []     # (href, classes) of every <a>
        self.attributes: list[str] = []                 # href/src values
        self.images: list[dict[str, str | None]] = []   # every <img>'s attributes
        self.wide: list[list[Element]] = []             # each wide element's path from the root (itself last)
        self.empty_items = 0                             # <li> elements that closed with nothing in them
        self._items: list[bool] = []                     # per open <li>: has it shown anything yet

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = frozenset((values.get("class") or "").split())
        for name in ("href", "src"):
            if values.get(name):
                self.attributes.append(values[name])
        if tag == "a" and values.get("href"):
            self.links.append((values["href"], set(classes)))
        if self._items and tag != "li":
            self._items[-1] = True  # an element inside an item (an image, a paragraph) is something shown
        path = [*self.stack, (tag, classes)]
        if tag in ("table", "pre", "img") or (tag == "span" and {"math", "display"} <= classes):
            self.wide.append(path)
        if tag == "img":
            self.images.append(values)
        if tag == "li":
            self._items.append(False)
        if tag not in VOID_TAGS:
            self.stack.append((tag, classes))

    def handle_endtag(self, tag: str) -> None:
        if tag == "li" and self._items:
            self.empty_items += not self._items.pop()
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data: str) -> None:
        if not data.strip():
            return
        context = set()
        for tag, classes in self.stack:
            if tag in self.SKIP:
                return
            if tag == "span" and "math" in classes:
                context.add("math")
            if tag in ("code", "pre"):
                context.add("code")
                if "sourceCode" in classes:
                    context.add("source")
            if tag == "div" and "sourceCode" in classes:
                context.add("source")
            if tag == "a":
                context.add("link")
        if self._items:
            self._items[-1] = True
        self.pieces.append((data, context))


def _parse(html_text: str) -> _PageText:
    parser = _PageText()
    parser.feed(html_text)
    return parser


def page_problems(html_text: str) -> list[str]:
    """What a reader must not see on one rendered page: an unresolved reference (``?@fig-x``), TeX outside
    math (``$n_t$`` in a table header), a raw missing value (``NaN``), an absolute path of the build machine, an
    empty list item (``@sec-x.`` at the start of a line makes Pandoc open an example list), a figure without
    alt text (a screen reader says nothing of it)."""
    parser = _parse(html_text)
    problems = []

    def report(kind: str, text: str, match: re.Match) -> None:
        problems.append(f"{kind}: ...{text[max(0, match.start() - 50):match.end() + 30].strip()!r}")

    for text, context in parser.pieces:
        if "math" in context:
            continue
        if "code" not in context:
            for pattern, kind in ((UNRESOLVED_REF, "unresolved reference"), (RAW_TEX, "raw TeX outside math")):
                if m := pattern.search(text):
                    report(kind, text, m)
        if "source" not in context and (m := RAW_NAN.search(text)):
            report("raw missing value", text, m)
        if m := MACHINE_PATH.search(text):
            report("machine path", text, m)
    for value in parser.attributes:
        if m := MACHINE_PATH.search(value) or (value.startswith("file:") and re.search("file:.*", value)):
            report("machine path in a link", value, m)
    if parser.empty_items:
        problems.append(f"empty list item: {parser.empty_items} <li> with nothing in it (a line that starts with "
                        "`@sec-x.` or `1.` opens a list: reword the line)")
    problems += [f"figure without alt text: {img.get('src')} (give its cell a fig-alt)"
                 for img in parser.images if not (img.get("alt") or "").strip()]
    return problems


# A CSS rule (the innermost block, so rules inside @media count too) and the declarations the layout needs.
CSS_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
CSS_SCROLLS = re.compile(r"(?<![\w-])overflow(?:-x)?\s*:\s*(?:auto|scroll)")
CSS_BLOCK = re.compile(r"(?<![\w-])display\s*:\s*(?:block|inline-block|flex|grid)")
CSS_FLUID = re.compile(r"(?<![\w-])max-width\s*:\s*100%")
COMPOUND = re.compile(r"([a-z][\w-]*|\*)?((?:[.#][\w-]+)*)")
NOT_A_BOX = {"span", "a", "code", "em", "strong", "table"}  # inline or table boxes: overflow does not clip them


def _selectors(css: str, declaration: re.Pattern) -> list[list[tuple[str | None, set[str]]]]:
    """The selectors of the rules of ``css`` that hold ``declaration``, as compounds (tag, classes and ids) from
    the outermost to the element; a selector this reader cannot follow (attributes, pseudo-classes, sibling
    combinators) is left out, so a rule counts only where it surely applies."""
    out = []
    for selectors, body in CSS_RULE.findall(css):
        if not declaration.search(body):
            continue
        for selector in selectors.split(","):
            parts = selector.replace(">", " ").split()
            compounds = [COMPOUND.fullmatch(p) for p in parts]
            if parts and all(compounds):
                out.append([(m.group(1) if m.group(1) != "*" else None, set(re.findall(r"[.#][\w-]+", m.group(2))))
                            for m in compounds])
    return out


def _selects(selector: list[tuple[str | None, set[str]]], path: list[Element]) -> bool:
    """Whether ``selector`` selects the last element of ``path`` (its ancestors before it): descendant matching."""

    def fits(compound: tuple[str | None, set[str]], element: Element) -> bool:
        tag, names = compound
        return (tag is None or tag == element[0]) and {n[1:] for n in names if n[0] == "."} <= element[1]

    *outer, last = selector
    if not fits(last, path[-1]):
        return False
    i = len(path) - 2
    for compound in reversed(outer):
        while i >= 0 and not fits(compound, path[i]):
            i -= 1
        if i < 0:
            return False
        i -= 1
    return True


def layout_problems(html_text: str, css: str) -> list[str]:
    """Content that makes a phone's page wider than its screen, read from the HTML and the page's stylesheets
    ``css`` (no browser): a table, display equation or ``<pre>`` with no scrolling box around it (itself or an
    ancestor with ``overflow-x: auto``, a block when it would be inline or a table), an image not limited to
    the column (``max-width: 100%``)."""
    parser = _parse(html_text)
    scrolls, blocks, fluid = (_selectors(css, d) for d in (CSS_SCROLLS, CSS_BLOCK, CSS_FLUID))

    def boxed(path: list[Element]) -> bool:
        for k in range(len(path), 0, -1):
            sub = path[:k]
            if any(_selects(s, sub) for s in scrolls) and (
                    sub[-1][0] not in NOT_A_BOX or any(_selects(b, sub) for b in blocks)):
                return True
        return False

    problems = []
    for path in parser.wide:
        tag, classes = path[-1]
        name = f"<{tag}{''.join(f'.{c}' for c in sorted(classes))}>"
        if tag == "img":
            if not any(_selects(s, path) for s in fluid):
                problems.append(f"image wider than a phone: {name} has no max-width: 100%")
        elif not boxed(path):
            problems.append(f"wide content without a scrolling box: {name} (a phone scrolls the whole page)")
    return problems


# The body column of a page at 1280 px (Quarto's book layout, sidebar and table of contents beside it), measured
# in Chromium: a figure shown wider is scaled down to it, and its text with it.
TEXT_COLUMN_PX = 678


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise BGPOError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def figure_problems(html_text: str, page: Path) -> list[str]:
    """Figures of the page at ``page`` (its PNGs are read beside it) that a reader sees blurred or small: drawn
    at less than 2x the pixels they are shown at (soft on every high-density screen), or shown wider than the
    text column (:data:`TEXT_COLUMN_PX`), which scales their text below the size it was drawn at."""
    problems = []
    for img in _parse(html_text).images:
        src = img.get("src") or ""
        file = page.parent / src
        if not src.endswith(".png") or "://" in src or not file.is_file():
            continue
        width, _ = _png_size(file)
        declared = re.match(r"\d+(?:\.\d+)?", img.get("width") or "")  # Quarto writes a 2x figure's 1x width
        shown = float(declared.group(0)) if declared else float(width)
        if width < 1.95 * shown:
            problems.append(f"figure below 2x resolution: {src} ({width} px shown at {shown:.0f} px, "
                            f"{width / shown:.1f}x)")
        if shown > TEXT_COLUMN_PX:
            problems.append(f"figure wider than the text column: {src} ({shown:.0f} px > {TEXT_COLUMN_PX} px, "
                            "its text shrinks)")
    return problems


NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


def _numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text.replace("−", "-")))


def landing_number_problems(index_html: str, pages: dict[str, str], table_id: str = "tbl-results") -> list[str]:
    """Numbers of the landing page's results table (the element ``id=table_id``) that the chapter a row links
    to does not print: one number, one source. ``pages`` maps a page's path (``notebooks/x.html``) to its HTML;
    a row that links to no page of ``pages`` is checked against all of them. The text of the links (the
    chapter's own number) is not a result."""
    start = index_html.find(f'id="{table_id}"')
    if start < 0:
        return [f"landing page: no results table (id {table_id!r})"]
    table = index_html[start:index_html.find("</table>", start)]
    texts = {path: {n for text, context in _parse(html).pieces for n in _numbers(text)} for path, html in pages.items()}
    problems = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]:  # the header row holds no result
        parsed = _parse(row)
        linked = [href.split("#")[0].removeprefix("./") for href, _ in parsed.links]
        where = [p for p in linked if p in texts] or list(texts)
        printed = set().union(*(texts[p] for p in where))
        shown = {n for text, context in parsed.pieces if "link" not in context for n in _numbers(text)}
        missing = sorted(shown - printed, key=lambda n: row.find(n))
        if missing:
            result = next((t for t, _ in parsed.pieces), "").strip()
            problems.append(f"landing-page number in no chapter: {', '.join(missing)} (row {result!r}; "
                            f"not printed in {', '.join(where)})")
    return problems


def sidebar_pages(html_text: str) -> list[str]:
    """The pages a rendered page's sidebar links to, as paths relative to the site root (``notebooks/x.html``)."""
    return [href.removeprefix("./") for href, classes in _parse(html_text).links if "sidebar-link" in classes]


def _stylesheets(html_text: str, page: Path) -> str:
    """The CSS a page loads from files of the site (``<link rel="stylesheet">``) and its own ``<style>`` blocks."""
    css = re.findall(r"<style[^>]*>(.*?)</style>", html_text, re.S)
    for tag in re.findall(r"<link\b[^>]*>", html_text):
        href = re.search(r'href="([^"]+\.css)"', tag)
        if href and "stylesheet" in tag and "://" not in href.group(1) and (page.parent / href.group(1)).is_file():
            css.append((page.parent / href.group(1)).read_text())
    return "\n".join(css)


def site_problems(site: Path, root: Path | None = None) -> list[str]:
    """Every problem of a rendered site, each as ``place: kind: detail``: a chapter of ``_quarto.yml`` with no
    page or missing from the sidebar, a sidebar link to nothing, then on every page :func:`page_problems`,
    :func:`layout_problems` (with the stylesheets the page loads) and :func:`figure_problems`, and the landing
    page's numbers that their chapters do not print (:func:`landing_number_problems`)."""
    root = root or repo_root()
    expected = [str(p.with_suffix(".html")) for p in chapters(root)]
    problems = [f"{page}: not rendered" for page in expected if not (site / page).is_file()]
    if (site / "index.html").is_file():
        listed = sidebar_pages((site / "index.html").read_text())
        problems += [f"sidebar: {page} missing" for page in expected if page not in listed]
        problems += [f"sidebar: links to {page}, which is not a chapter" for page in listed if page not in expected]
    for page in sorted(site.rglob("*.html")):
        text = page.read_text()
        found = page_problems(text) + layout_problems(text, _stylesheets(text, page)) + figure_problems(text, page)
        problems += [f"{page.relative_to(site)}: {p}" for p in found]
    if (site / "index.html").is_file():
        pages = {p: (site / p).read_text() for p in expected if p != "index.html" and (site / p).is_file()}
        problems += [f"index.html: {p}" for p in landing_number_problems((site / "index.html").read_text(), pages)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bgpo.book", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="execute only chapters whose file name contains NAME")
    parser.add_argument("--no-render", action="store_true", help="execute the chapters, skip quarto render")
    parser.add_argument("--render-only", action="store_true",
                        help="render the committed chapters without executing them (what `make test` checks)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on a Quarto warning and on a problem of the rendered HTML too, not only on an error")
    parser.add_argument("--require-quarto", action="store_true", help="fail instead of skipping when Quarto is missing")
    args = parser.parse_args(argv)
    root = repo_root()
    pages = [root / p for p in chapters(root) if p.suffix in (".ipynb", ".qmd")]
    if args.only:
        pages = [p for p in pages if any(name in p.name for name in args.only)]
        if not pages:
            raise BGPOError(f"--only {' '.join(args.only)} matches no chapter listed in _quarto.yml")
    missing = [str(p.relative_to(root)) for p in pages if not p.is_file()]
    if missing:
        raise BGPOError(f"_quarto.yml lists chapters that do not exist: {missing}")
    if not args.render_only:
        execute_all(root, pages)
    if args.no_render:
        return 0
    quarto = quarto_binary()
    if quarto is None:
        help_ = quarto_help(executed=not args.render_only)
        if args.require_quarto:
            raise BGPOError(help_)
        print(help_, flush=True)
        return 0
    seconds = render(root, quarto, strict=args.strict)
    problems = site_problems(root / "_book", root)
    if problems:
        message = f"the rendered site has {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        if args.strict:
            raise BGPOError(message + "\n(--strict)")
        print(f"warning: {message}", flush=True)
    print(f"website rendered in {seconds:.0f} s: open {root / '_book' / 'index.html'} in a browser "
          f"(or `python -m http.server -d _book`)")
    return 0


def execute_all(root: Path, pages: list[Path]) -> None:
    """Execute every page in reading order: notebooks in place (papermill), a .qmd page's python chunks."""
    total = time.perf_counter()
    for i, path in enumerate(pages, 1):
        name = path.relative_to(root)
        if path.suffix == ".ipynb":
            print(f"[{i}/{len(pages)}] executing {name} (in place) ...", flush=True)
            print(f"      done in {execute_notebook(path):.1f} s", flush=True)
            continue
        print(f"[{i}/{len(pages)}] executing the python chunks of {name} (Quarto renders the page) ...", flush=True)
        seconds = execute_page(path)
        print("      no python chunks" if seconds is None else f"      done in {seconds:.1f} s", flush=True)
    print(f"executed {len(pages)} chapters in {time.perf_counter() - total:.0f} s", flush=True)
    if not os.environ.get(REPO_URL_VARIABLE):
        print(f"note: {REPO_URL_VARIABLE} is not set, so the site has no repository links ('View source', "
              f"'Report an issue'); whoever publishes the book sets it to the repository's address", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BGPOError as err:
        print(f"make book: error: {err}", file=sys.stderr)
        sys.exit(2)


def doctor_report(root: Path | None = None):
    """The newest committed ``bgpo doctor`` report as a notebook display: where it comes from, then its summary
    (one line per criterion: status, measured figure, threshold). A GPU report when one is committed
    (``book/data/gpu-*/doctor.json``), else the CPU-size one."""
    from IPython.display import Markdown

    from bgpo.doctor import newest_report, summary_frame

    report = newest_report(root or repo_root())
    where = report["provenance"]
    head = (f"From `book/data/{where['path']}` ({where['readme']}); `bgpo doctor --gpu --out FILE` on a GPU node "
            f"writes the same report there.\n\n")
    return Markdown(head + markdown_table(display_table(summary_frame(report))) + rejudged_packed_speed(report))


def rejudged_packed_speed(report: dict) -> str:
    """A note where today's packed-attention bar (:func:`bgpo.doctor.packed_speed_row`) judges a committed
    report's recorded figures otherwise than the doctor that wrote it did: the report stays as recorded, and
    the reader sees both verdicts ("" when they agree or the report has no such figures)."""
    from bgpo.doctor import packed_speed_row

    check = next((c for c in report.get("checks", []) if c.get("name") == "packed attention"), None)
    fig = (check or {}).get("figures") or {}
    if "speedup" not in fig or report.get("kind") != "cuda":
        return ""
    criterion, ok, measured, threshold = packed_speed_row(fig["speedup"], fig["real_fraction"],
                                                          fig["packed_tokens_per_s"], fig["padded_tokens_per_s"])
    verdict = "pass" if ok else "fail"
    recorded = next((r for r in check["rows"] if r["criterion"] == criterion), None)
    if recorded is None or recorded["status"] == verdict:
        return ""
    return (f"\n\nThis report was written by an earlier `bgpo doctor`, whose bar for the {criterion} was "
            f"{recorded['threshold']}. Today's bar (`bgpo.doctor.packed_speed_row`) judges the same recorded figures "
            f"**{verdict}**: {measured}, threshold {threshold}.")
