"""Every figure of the book, drawn from tidy data (one observation per row) so anyone can redraw it.

One matplotlib style is set once, here. Each ``*`` function takes a ``pandas.DataFrame`` (or records)
and returns a ``matplotlib.figure.Figure``; :func:`save` writes it as PNG and SVG. The data come
from ``book/data/`` (reported numbers with a ``source`` column, see its README) and from our own
run logs (``metrics.jsonl``). ``bgpo figures --data book/data --out DIR`` redraws them all.

What a reader of the website gets, whatever the figure: twice the pixels it is shown at (a notebook
displays it at 2x, :func:`_inline_at_2x`), text of at least 8 pt = 11 px at the column width, the legend
under the axes and never on the data (:func:`legend_below`), names a person reads instead of folder names
(:func:`run_label`), and ``n_t`` ticks labelled at every measured value.

Bad input (missing file, missing column, empty table) raises :class:`bgpo.errors.BGPOError`.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import NullLocator
from matplotlib.transforms import offset_copy

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl

# The book's one style: sized for the website's text column, colour-blind-safe palette (Okabe–Ito), light grid.
# The column is ~660 px wide; a notebook shows a figure at figure.dpi, so 6.5 in x 100 dpi is drawn at its
# natural size and 10-11 pt text stays 14-15 px tall on the page (a 9 in figure shrunk to fit made it ~7 px).
# Functions that need another shape keep the 6.5 in width. Saved files get 200 dpi, 2x the screen's pixels.
COLUMN_WIDTH_IN = 6.5
MIN_FONT_PT = 8  # 11 px at figure.dpi 100: the smallest text any figure draws
STYLE = {
    "figure.figsize": (COLUMN_WIDTH_IN, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 10,
    "figure.titlesize": 11,
    "axes.prop_cycle": matplotlib.cycler(color=[
        "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]),
}
plt.rcParams.update(STYLE)


def _inline_at_2x() -> None:
    """In a notebook, show figures as PNGs drawn at twice ``figure.dpi`` and shown at their 1x size (IPython's
    ``retina`` format: the PNG's display width travels in its metadata, which Quarto writes as the ``<img>``
    width), so a figure on the website is sharp on high-density screens and its text keeps its size."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is None:
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


_inline_at_2x()

# Fixed colours for the objectives so every chapter shows bgpo/elbo/d1 the same way.
OBJECTIVE_COLORS = {"bgpo": "#0072B2", "elbo": "#D55E00", "d1": "#009E73"}
# BGPO and d1 often have the same memory: d1 is drawn thin, dashed and hollow *over* BGPO's thick line,
# so where the two coincide both stay visible.
OBJECTIVE_STYLES = {
    "bgpo": {"marker": "o", "lw": 3.0, "ms": 7, "zorder": 2},
    "elbo": {"marker": "s", "lw": 1.8, "ms": 5, "zorder": 2},
    "d1": {"marker": "^", "lw": 1.3, "ms": 6, "ls": "--", "mfc": "white", "zorder": 3},
}


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise BGPOError unless ``df`` is a non-empty DataFrame holding ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise BGPOError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BGPOError(f"{what}: missing column(s) {missing}; the table has {list(df.columns)}")
    if df.empty:
        raise BGPOError(f"{what}: the table is empty; nothing to plot")


def load_csv(path: str | Path, columns: Iterable[str] = ()) -> pd.DataFrame:
    """Read a tidy CSV of ``book/data`` and check it has ``columns``."""
    path = Path(path)
    if not path.is_file():
        raise BGPOError(f"data file {path} not found; see book/data/README.md for what each file holds")
    df = pd.read_csv(path)
    require_columns(df, columns, str(path))
    return df


def read_metrics(paths: Mapping[str, str | Path] | Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate ``metrics.jsonl`` files (one JSON object per line) into one tidy frame.

    ``paths`` maps a run label to a file (or is a list of files, labelled by their parent folder);
    the label goes into a ``run`` column. Lines that are not JSON objects raise BGPOError naming
    the file and line, so a truncated log is never silently half-plotted.
    """
    items = paths.items() if isinstance(paths, Mapping) else ((Path(p).parent.name, p) for p in paths)
    frames = []
    for label, path in items:
        path = Path(path)
        if not path.is_file():
            raise BGPOError(f"metrics file {path} not found; pass the metrics.jsonl a `bgpo train` run wrote")
        rows = [row for _, row in iter_jsonl(path)]
        frame = pd.DataFrame(rows)
        frame.insert(0, "run", str(label))
        frames.append(frame)
    if not frames:
        raise BGPOError("no metrics files given")
    return pd.concat(frames, ignore_index=True)


def save(fig: Figure, path: str | Path) -> list[Path]:
    """Write ``fig`` as ``<path>.png`` and ``<path>.svg`` (any suffix of ``path`` is replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        out = path.with_suffix(suffix)
        fig.savefig(out)
        written.append(out)
    return written


def legend_below(fig: Figure, *, ncols: int | None = None) -> Legend | None:
    """One legend for the whole figure, under its axes, so no line or point hides under it (matplotlib's
    ``best`` place is still on the data when the data fill the axes).

    Gathers the labelled artists of every axes (each label once, in drawing order), removes the axes' own
    legends and any earlier figure legend, uses the most columns (at most ``ncols``, default 3) whose width
    fits the figure, and hangs the legend just below the lowest axis label: the saved image (tight bounding
    box) grows to hold it. Call it last, after the figure's layout (``tight_layout``) is done. Returns the
    legend (None when nothing is labelled)."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for old in list(fig.legends):
        old.remove()
    if not handles:
        return None
    renderer = fig.canvas.get_renderer()
    to_figure = fig.transFigure.inverted()
    bottom = min(to_figure.transform(ax.get_tightbbox(renderer))[0, 1] for ax in fig.axes)
    for n in range(min(ncols or 3, len(handles)), 0, -1):
        legend = fig.legend(handles.values(), handles.keys(), loc="upper center", ncols=n,
                            bbox_to_anchor=(0.5, bottom - 0.01), bbox_transform=fig.transFigure)
        if n == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            return legend
        legend.remove()
    return None


def _legend_under(ax: plt.Axes) -> None:
    """The legend of one axes of a figure the caller composes, under that axes' x label (kept ``ax``'s own, so
    the caller can move or remove it; :func:`legend_below` gathers every panel's into one)."""
    renderer = ax.figure.canvas.get_renderer()
    below_pt = (ax.get_window_extent(renderer).y0 - ax.get_tightbbox(renderer).y0) * 72 / ax.figure.dpi
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), ncols=1, bbox_transform=offset_copy(
        ax.transAxes, fig=ax.figure, y=-below_pt - 2, units="points"))


def run_label(name: object) -> str:
    """A run's folder name as a person reads it: ``lr1e-4/bgpo-nt4-s0`` -> ``lr 1e-4, BGPO $n_t$=4, seed 0``.

    Only a name without spaces (a folder name) is rewritten, and only its known parts (a learning rate, an
    objective, ``nt<k>``, ``s<seed>``); a label already written for people is returned as it is."""
    text = str(name)
    if re.search(r"\s", text):
        return text
    text = re.sub(r"(?<![A-Za-z])lr(?=\d)", "lr ", text)
    text = re.sub(r"(?<![A-Za-z])(bgpo|elbo)(?![A-Za-z])", lambda m: m.group(1).upper(), text)
    text = re.sub(r"-?(?<![A-Za-z])nt(\d+)(?!\w)", r" $n_t$=\1", text)
    text = re.sub(r"-s(\d+)$", r", seed \1", text)
    return text.replace("/", ", ")


def _colors(names: Iterable) -> dict:
    """One distinct colour per name: the objectives keep theirs, the others take the unused palette colours."""
    names = list(dict.fromkeys(names))
    fixed = {n: OBJECTIVE_COLORS[str(n).lower()] for n in names if str(n).lower() in OBJECTIVE_COLORS}
    free = [c for c in STYLE["axes.prop_cycle"].by_key()["color"] if c not in fixed.values()]
    others = [n for n in names if n not in fixed]
    return {**fixed, **{n: free[i % len(free)] for i, n in enumerate(others)}}


def main_results(df: pd.DataFrame, *, ylabel: str = "score (%)") -> Figure:
    """Grouped bars: score (%) per benchmark (x) and method (bars); one panel per ``source``.

    The benchmarks' metrics differ (countdown's mean reward is no accuracy): ``ylabel`` names what the bars are.
    """
    require_columns(df, ["benchmark", "method", "accuracy_pct", "source"], "main results")
    sources = list(dict.fromkeys(df["source"]))
    colors = _colors(df["method"])
    fig, axes = plt.subplots(len(sources), 1, figsize=(COLUMN_WIDTH_IN, 4.2 * len(sources)), squeeze=False)
    for ax, source in zip(axes[:, 0], sources):
        part = df[df["source"] == source]
        benchmarks = list(dict.fromkeys(part["benchmark"]))
        methods = list(dict.fromkeys(part["method"]))
        width = 0.8 / len(methods)
        x = np.arange(len(benchmarks))
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("benchmark")["accuracy_pct"]
            heights = [rows.get(b, np.nan) for b in benchmarks]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, heights, width, label=method, color=colors[method])
        ax.set_xticks(x, benchmarks)
        ax.set_ylabel(ylabel)
        ax.set_title(f"source: {source}", loc="left")
    fig.tight_layout()
    legend_below(fig)
    return fig


def zero_shot_by_length(df: pd.DataFrame, *, ylabel: str = "score (%)") -> Figure:
    """Score (%) vs generation length (tokens), one line per benchmark (base model, zero-shot)."""
    require_columns(df, ["benchmark", "gen_length", "accuracy_pct", "source"], "zero-shot results")
    fig, ax = plt.subplots()
    colors = _colors(df["benchmark"])
    for bench, part in df.groupby("benchmark", sort=False):
        part = part.sort_values("gen_length")
        ax.plot(part["gen_length"], part["accuracy_pct"], marker="o", label=bench, color=colors[bench])
    lengths = sorted(df["gen_length"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(v) for v in lengths])
    ax.set_xlabel("generation length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"source: {'; '.join(dict.fromkeys(df['source']))}", loc="left", fontsize=9, wrap=True)
    fig.tight_layout()
    legend_below(fig)
    return fig


def _mean_spread(df: pd.DataFrame, x: str, y: str, group: str, seed: str | None) -> pd.DataFrame:
    """Mean and standard deviation of ``y`` over seeds at each (group, x)."""
    keys = [group, x]
    if seed is not None and seed in df.columns:
        per_seed = df.groupby(keys + [seed], sort=False)[y].mean().reset_index()
    else:
        per_seed = df[keys + [y]]
    stats = per_seed.groupby(keys, sort=False)[y].agg(["mean", "std", "count"]).reset_index()
    return stats.fillna({"std": 0.0})


def curves(df: pd.DataFrame, y: str = "reward", *, x: str = "step", group: str = "run",
           seed: str | None = "seed", ylabel: str | None = None, xlabel: str = "RL step",
           smooth: int = 1, ax: plt.Axes | None = None, labels: Mapping[str, str] | None = None) -> Figure:
    """``y`` vs ``x`` per ``group``: mean over seeds with a ± one-standard-deviation band.

    ``smooth`` > 1 applies a centred rolling mean of that many points to each seed's curve first. ``labels``
    maps a group to its name in the legend (default: :func:`run_label` of the group). With ``ax`` the caller
    composes the figure: the legend is that axes' own, under it (:func:`legend_below` merges the panels').
    """
    require_columns(df, [x, y, group], "curves")
    if smooth < 1:
        raise BGPOError(f"smooth must be >= 1 (got {smooth})")
    data = df.dropna(subset=[y])
    if data.empty:
        raise BGPOError(f"curves: column {y!r} has no values")
    if smooth > 1:
        by = [group] + ([seed] if seed and seed in data.columns else [])
        data = data.sort_values(x).copy()
        data[y] = data.groupby(by, sort=False)[y].transform(
            lambda s: s.rolling(smooth, center=True, min_periods=1).mean())
    stats = _mean_spread(data, x, y, group, seed)
    composed = ax is not None
    fig = ax.figure if composed else plt.subplots()[0]
    ax = ax if composed else fig.axes[0]
    colors = _colors(stats[group])
    for name, part in stats.groupby(group, sort=False):
        part = part.sort_values(x)
        color = colors[name]
        n = int(part["count"].max())
        shown = (labels or {}).get(name, run_label(name))
        ax.plot(part[x], part["mean"], color=color, label=f"{shown} (n={n})" if n > 1 else shown)
        if n > 1:
            ax.fill_between(part[x], part["mean"] - part["std"], part["mean"] + part["std"], color=color, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or y)
    _place_legend(fig, ax, composed)
    return fig


def _place_legend(fig: Figure, ax: plt.Axes, composed: bool) -> None:
    """A figure this module owns gets :func:`legend_below`; one axes of a figure the caller composes gets its
    own legend under it (the caller may remove or merge it)."""
    if composed:
        _legend_under(ax)
    else:
        fig.tight_layout()
        legend_below(fig)


def accuracy_vs_nt(df: pd.DataFrame, y: str = "accuracy", *, group: str | None = "objective",
                   seed: str | None = "seed", ylabel: str = "held-out accuracy (fraction)") -> Figure:
    """``y`` vs the number of MC samples ``n_t`` (log2 axis): mean ± std over seeds, per ``group``."""
    require_columns(df, ["n_t", y] + ([group] if group else []), "accuracy vs n_t")
    data = df.copy()
    if not group:
        group = "_all"
        data[group] = "all"
    stats = _mean_spread(data, "n_t", y, group, seed)
    fig, ax = plt.subplots()
    colors = _colors(stats[group])
    for name, part in stats.groupby(group, sort=False):
        part = part.sort_values("n_t")
        ax.errorbar(part["n_t"].to_numpy(float), part["mean"].to_numpy(float),
                    yerr=part["std"].to_numpy(float), marker="o", capsize=3,
                    color=colors[name], label=None if name == "all" else str(name))
    values = sorted(data["n_t"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(int(v)) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("MC samples per response $n_t$")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    legend_below(fig)
    return fig


UNITS = {"MiB": 2.0**-20, "GiB": 2.0**-30, "GB": 1e-9}
# Series that may lie on one another (estimators that agree): each drawn thinner and on top of the one before,
# with its own marker and dashes, so all stay visible where they coincide.
_OVERLAP_STYLES = [
    {"marker": "o", "ms": 9, "mfc": "white", "lw": 3.0, "zorder": 2},
    {"marker": "s", "ms": 5, "ls": "--", "lw": 1.8, "zorder": 3},
    {"marker": "x", "ms": 7, "mew": 1.5, "ls": ":", "lw": 1.5, "zorder": 4},
]


def _objective_label(name: object) -> str:
    """``BGPO``, ``ELBO``, ``d1``: the objectives as the text names them."""
    return "d1" if str(name).lower() == "d1" else str(name).upper()


def _nt_ticks(ax: plt.Axes, n_ts: Iterable) -> None:
    """Ticks on a linear ``n_t`` axis at the measured values only (never 2.5 or 7.5), every one labelled: a
    label too close to the previous one on its line (1 and 2 on an axis to 32) goes one line lower."""
    values = sorted({int(v) for v in n_ts})
    span, last = max(values[-1] - values[0], 1), None
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    for v, tick in zip(values, ax.xaxis.get_major_ticks()):
        if last is not None and (v - last) < span / 12:
            tick.set_pad(tick.get_pad() + 1.2 * STYLE["xtick.labelsize"])  # one line lower
        else:
            last = v


def memory_vs_nt(records: pd.DataFrame | Iterable[Mapping], *, memory: str = "activation_bytes",
                 time: str | None = "seconds", label: str | None = None, unit: str = "MiB",
                 memory_label: str = "activation memory", log_memory: bool = False) -> Figure:
    """Memory (bytes shown in ``unit``) and, when given, time per update (s) vs ``n_t``, one line per objective.

    ``records`` has one row per (objective, n_t) measurement, e.g. the output of ``bgpo bench memory``.
    ``label`` (e.g. the device) goes into the title so CPU and GPU measurements are never confused.
    The ``n_t`` axis is linear: memory that grows in proportion to ``n_t`` is then a straight line (on a
    log2 axis it would look exponential). ``log_memory`` puts memory on a log axis, so a line at a card's
    80 GB stays visible next to a curve that reaches terabytes.
    """
    if unit not in UNITS:
        raise BGPOError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    cols = ["objective", "n_t", memory] + ([time] if time else [])
    require_columns(df, cols, "memory records")
    fig, axes = plt.subplots(1, 2 if time else 1, figsize=(COLUMN_WIDTH_IN, 3.6 if time else 4.0), squeeze=False)
    panels = [(memory, f"{memory_label} ({unit})", UNITS[unit])]
    panels += [(time, "time per update (s)", 1.0)] if time else []
    for ax, (col, ylabel, scale) in zip(axes[0], panels):
        colors = _colors(df["objective"])
        for name, part in df.groupby("objective", sort=False):
            part = part.groupby("n_t")[col].mean().sort_index()
            style = OBJECTIVE_STYLES.get(str(name).lower(), {"marker": "o"})
            ax.plot(part.index, part.values * scale, label=_objective_label(name), color=colors[name], **style)
        ax.set_xlim(left=0)
        _nt_ticks(ax, df["n_t"])
        if log_memory and col == memory:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("MC samples per response $n_t$")
        ax.set_ylabel(ylabel)
    if label:
        fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    legend_below(fig)
    return fig


def elbo_variance(df: pd.DataFrame, y: str = "variance") -> Figure:
    """Variance of the ELBO estimate (nats²) vs ``n_t`` on log–log axes, with a ``1/n_t`` guide."""
    require_columns(df, ["n_t", y], "ELBO variance")
    group = "estimator" if "estimator" in df.columns else None
    fig, ax = plt.subplots()
    parts = list(df.groupby(group, sort=False)) if group else [("MC estimate", df)]
    colors = _colors(name for name, _ in parts)
    first = None
    for (name, part), style in zip(parts, _OVERLAP_STYLES * len(parts)):
        part = part.groupby("n_t")[y].mean().sort_index()
        first = part if first is None else first
        ax.plot(part.index, part.values, label=str(name), color=colors[name], **style)
    n = np.array(first.index, dtype=float)
    ax.plot(n, first.values[0] * n[0] / n, ls="--", color="grey", label=r"$\propto 1/n_t$")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(n, [str(int(v)) for v in n])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("MC samples $n_t$")
    ax.set_ylabel(r"variance of $\widehat{\mathrm{ELBO}}$ (nats$^2$)")
    fig.tight_layout()
    legend_below(fig)
    return fig


def _mean_se(values: pd.Series) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    values = values.dropna().astype(float)
    return float(values.mean()), float(values.sem()) if len(values) > 1 else 0.0


def learning_curves(df: pd.DataFrame, y: str, *, x: str = "step", group: str = "arm", seed: str = "seed",
                    scale: float = 1.0, smooth: int = 1, order: Iterable | None = None, markers: bool = True,
                    ylabel: str | None = None, xlabel: str = "RL step", ax: plt.Axes | None = None,
                    labels: Mapping[str, str] | None = None) -> Figure:
    """``y`` (times ``scale``) vs ``x`` per ``group``: mean over seeds with a ± 1 standard-error band.

    ``smooth`` > 1 first takes a centred rolling mean of that many points of each seed's curve (for
    per-step training signals); ``order`` fixes the groups' order, hence their colours, so that several
    figures of one grid colour each arm alike. ``labels`` maps a group to its legend name (default
    :func:`run_label`); with ``ax`` the legend is that axes' own, under it, as in :func:`curves`.
    """
    require_columns(df, [x, y, group, seed], "learning curves")
    if smooth < 1:
        raise BGPOError(f"smooth must be >= 1 (got {smooth})")
    data = df.dropna(subset=[y])
    if data.empty:
        raise BGPOError(f"learning curves: column {y!r} has no values")
    composed = ax is not None
    fig = ax.figure if composed else plt.subplots()[0]
    ax = ax if composed else fig.axes[0]
    names = [n for n in dict.fromkeys([*(order or []), *data[group]]) if n in set(data[group])]
    colors = _colors(names)
    for name in names:
        per_seed = data[data[group] == name].groupby([seed, x])[y].mean()
        if smooth > 1:
            per_seed = per_seed.groupby(level=0, group_keys=False).apply(
                lambda s: s.rolling(smooth, center=True, min_periods=1).mean())
        stats = per_seed.groupby(level=1).agg(["mean", "sem", "count"]).fillna({"sem": 0.0}).sort_index()
        n = int(stats["count"].max())
        mean, se = stats["mean"] * scale, stats["sem"] * scale
        ax.plot(stats.index, mean, marker="o" if markers else None, ms=4, color=colors[name],
                label=f"{(labels or {}).get(name, run_label(name))} (n={n})")
        ax.fill_between(stats.index, mean - se, mean + se, color=colors[name], alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or y)
    _place_legend(fig, ax, composed)
    return fig


def _outcome_arms(outcome: Mapping) -> dict:
    if not isinstance(outcome, Mapping) or not outcome.get("arms"):
        raise BGPOError("outcome: expected the grid's outcome.json ({metric, warm_start, arms: {...}})")
    return dict(outcome["arms"])


def paired_deltas(outcome: Mapping, *, scale: float = 100.0, threshold: float | None = 2.0,
                  labels: list[str] | None = None, ylabel: str = "change from the warm start (points)") -> Figure:
    """Per arm: each seed's paired change from the warm start (dots) and mean ± 1 SE (bar), in ``scale`` units.

    ``outcome`` is the grid's ``outcome.json``; ``threshold`` (same units) draws the bar an arm must clear;
    ``labels`` name the arms on the axis (default: their keys). Arms are coloured as :func:`learning_curves`
    colours them with ``order`` = the arms (or ``labels``) in this order.
    """
    arms = _outcome_arms(outcome)
    labels = list(labels) if labels is not None else list(arms)
    if len(labels) != len(arms):
        raise BGPOError(f"paired_deltas: {len(labels)} labels for {len(arms)} arms")
    colors = _colors(labels)  # the colours learning_curves gives the arms in this order
    fig, ax = plt.subplots()
    for i, (label, arm) in enumerate(zip(labels, arms.values())):
        deltas = pd.Series(arm["delta_vs_warm"], dtype=float) * scale
        color = colors[label]
        mean, se = _mean_se(deltas)
        ax.errorbar([i], [mean], yerr=[se], fmt="_", ms=18, mew=2, capsize=5, color=color, zorder=3)
        ax.scatter(np.full(len(deltas), i) + np.linspace(-0.12, 0.12, len(deltas)), deltas, s=18,
                   facecolors="white", edgecolors=color, zorder=4)
    ax.axhline(0.0, color="k", lw=0.8)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"bar: {threshold:+g} points")
    ax.set_xticks(range(len(arms)), labels, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(arms) - 0.4)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    legend_below(fig)
    return fig


def delta_vs_nt(outcome: Mapping, *, scale: float = 100.0,
                ylabel: str = "change from the warm start (points)") -> Figure:
    """Mean ± 1 SE paired change from the warm start vs ``n_t``, one point per arm.

    BGPO (verified reward) as a line, ELBO as points, d1 (no ``n_t``) as a dashed line with its ± 1 SE band,
    and an arm trained on shuffled rewards (``reward: shuffled``, the random-reward control) as a hollow grey
    point at its ``n_t``. Ticks only at the ``n_t`` values run.
    """
    arms = _outcome_arms(outcome)
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 4.0))
    rows = []
    for name, arm in arms.items():
        mean, se = _mean_se(pd.Series(arm["delta_vs_warm"], dtype=float) * scale)
        rows.append({"arm": name, "objective": str(arm["objective"]).lower(), "n_t": int(arm["n_t"]),
                     "control": arm.get("reward") == "shuffled", "mean": mean, "se": se})
    stats = pd.DataFrame(rows)
    for (objective, control), part in stats.groupby(["objective", "control"], sort=False):
        color = OBJECTIVE_COLORS.get(objective, "#000000")
        part = part.sort_values("n_t")
        if control:  # everything as the arm at its n_t but the link between completion and reward
            ax.errorbar(part["n_t"].to_numpy(float) * 1.08, part["mean"], yerr=part["se"], fmt="D", ms=7,
                        mfc="white", mew=1.5, capsize=3, color="#555555", zorder=3,
                        label=f"random reward ({_objective_label(objective)}, "
                              f"$n_t={', '.join(str(n) for n in part['n_t'])}$)")
            continue
        if objective == "d1":  # no Monte Carlo masks: a band across the axis
            m, s = part["mean"].iloc[0], part["se"].iloc[0]
            ax.axhspan(m - s, m + s, color=color, alpha=0.15)
            ax.axhline(m, color=color, ls="--", lw=1.3, label="d1 (no $n_t$)")
            continue
        style = {k: v for k, v in OBJECTIVE_STYLES.get(objective, {}).items() if k in ("marker", "ms")}
        ax.errorbar(part["n_t"].to_numpy(float), part["mean"], yerr=part["se"], capsize=3, color=color,
                    ls="-" if len(part) > 1 else "none", label=_objective_label(objective), zorder=4, **style)
    ax.axhline(0.0, color="k", lw=0.8)
    values = sorted(stats.loc[stats["objective"] != "d1", "n_t"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())
    if values:
        ax.set_xlim(values[0] / 1.5, values[-1] * 1.5)
    ax.set_xlabel("MC samples per response $n_t$")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    legend_below(fig, ncols=2)
    return fig


def gradient_noise(records: pd.DataFrame | Iterable[Mapping]) -> Figure:
    """Noise of the policy gradient vs ``n_t`` (log–log), one panel per checkpoint.

    Per objective: ``total_var`` (solid) and its Monte Carlo part ``mask_var`` (dotted); the grey dashed
    line is the rollout/prompt noise ``rollout_var`` pooled over the larger half of the ``n_t`` values and the
    objectives (it does not depend on the masks, and those rows estimate it with the least noise): the floor
    that more samples cannot go below. ``records`` are ``bgpo variance``'s.
    """
    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    require_columns(df, ["objective", "n_t", "mask_var", "rollout_var", "total_var", "checkpoint"],
                    "gradient noise records")
    checkpoints = list(dict.fromkeys(df["checkpoint"]))
    fig, axes = plt.subplots(1, len(checkpoints), figsize=(COLUMN_WIDTH_IN, 3.4 if len(checkpoints) > 1 else 4.0),
                             squeeze=False, sharey=True)
    for ax, checkpoint in zip(axes[0], checkpoints):
        part = df[df["checkpoint"] == checkpoint]
        for objective, rows in part.groupby("objective", sort=False):
            rows = rows.sort_values("n_t")
            color = OBJECTIVE_COLORS.get(str(objective).lower(), "#000000")
            style = {k: v for k, v in OBJECTIVE_STYLES.get(str(objective).lower(), {}).items() if k in ("marker",)}
            name = _objective_label(objective)
            ax.plot(rows["n_t"], rows["total_var"], color=color, label=f"{name}: total", **style)
            ax.plot(rows["n_t"], rows["mask_var"].clip(lower=np.finfo(float).tiny), color=color, ls=":",
                    label=f"{name}: mask part")
        upper = part[part["n_t"] >= part["n_t"].median()]  # the least noisy estimates of the floor
        floor = float(upper["rollout_var"].mean())
        if floor > 0:
            ax.axhline(floor, color="grey", ls="--", lw=1.2, label="rollout/prompt floor")
        values = sorted(part["n_t"].unique())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(values, [str(int(v)) for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("MC samples $n_t$")
        ax.set_title(str(checkpoint), loc="left")
    axes[0, 0].set_ylabel(r"gradient variance $E\|g - Eg\|^2$")
    fig.tight_layout()
    legend_below(fig)  # one legend for all panels, below them, so no panel's lines hide under it
    return fig


def bound_plot(z_range: float = 2.0, n_t: int = 16, seed: int = 0) -> Figure:
    """The two inequalities behind BGPO, drawn.

    Left: ``exp(z) >= 1 + z`` (tangent at 0; the bound for ``A >= 0``). Right: Jensen's gap
    ``mean_j exp(delta_j) - exp(mean_j delta_j) >= 0`` (the bound for ``A < 0``) for ``n_t``
    Gaussian ``delta_j`` of growing spread, zero exactly when all ``delta_j`` are equal (on-policy).
    """
    z = np.linspace(-z_range, z_range, 401)
    fig, (left, right) = plt.subplots(1, 2, figsize=(COLUMN_WIDTH_IN, 3.8))
    left.plot(z, np.exp(z), label=r"$e^{z}$ (ratio $\rho$)")
    left.plot(z, 1 + z, label=r"$1+z$ (BGPO, $A\geq 0$)")
    left.fill_between(z, 1 + z, np.exp(z), color="grey", alpha=0.2, label="gap ≥ 0")
    left.axvline(0, color="k", lw=0.5)
    left.set_xlabel(r"$z = \frac{1}{n_t}\sum_j \delta_j$ (log-ratio, nats)")
    left.set_ylabel("value (ratio)")
    rng = np.random.default_rng(seed)
    sigma = np.linspace(0.0, 1.0, 21)
    eps = rng.standard_normal((2000, n_t))  # (draws, n_t)
    gaps = []
    for s in sigma:
        delta = s * eps
        gaps.append(np.mean(np.exp(delta).mean(1) - np.exp(delta.mean(1))))
    right.plot(sigma, gaps, marker="o", ms=3, label=rf"mean Jensen gap, $n_t={n_t}$")
    right.plot(sigma, np.exp(sigma**2 / 2) - np.exp(sigma**2 / (2 * n_t)), ls="--", color="grey",
               label=r"$e^{\sigma^2/2}-e^{\sigma^2/(2n_t)}$ (Gaussian)")
    right.set_xlabel(r"spread $\sigma$ of the per-sample $\delta_j$ (nats)")
    right.set_ylabel(r"$\overline{e^{\delta}} - e^{\bar\delta}$ (ratio)")
    fig.tight_layout()
    legend_below(fig, ncols=2)
    return fig


DRIFT_METRICS = {"kl": "KL(exact ‖ cached) per position (nats)", "top1": "top-1 agreement",
                 "same_commit": "same committed tokens"}


def cache_drift(drift: pd.DataFrame) -> Figure:
    """Drift of the cached sampler by cache age (steps since the refresh), one panel per metric.

    ``drift`` is :func:`bgpo.cache_study.drift_by_age`'s table (``block, mode, age, metric, mean, ci95``);
    one line per (block length, cache mode) with its 95% band over puzzles.
    """
    require_columns(drift, ["block", "mode", "age", "metric", "mean", "ci95"], "cache_drift")
    fig, axes = plt.subplots(1, len(DRIFT_METRICS), figsize=(COLUMN_WIDTH_IN, 3.2))
    groups = list(drift.groupby(["block", "mode"], sort=True))
    colors = _colors([f"{b}-{m}" for (b, m), _ in groups])
    for ax, (metric, title) in zip(axes, DRIFT_METRICS.items()):
        for (block, mode), part in groups:
            part = part[part["metric"] == metric].sort_values("age")
            color = colors[f"{block}-{mode}"]
            style = dict(marker="o", ms=3) if mode == "prefix" else dict(marker="s", ms=5, mfc="white", ls="--",
                                                                         zorder=3)  # drawn over prefix where equal
            ax.plot(part["age"], part["mean"], color=color, label=f"block {block}, {mode}", **style)
            ax.fill_between(part["age"], part["mean"] - part["ci95"], part["mean"] + part["ci95"], color=color,
                            alpha=0.2, lw=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("cache age (steps)")
    fig.tight_layout()
    legend_below(fig, ncols=4)
    return fig


STEP_PARTS = {"rollout_s": "rollouts (sampler)", "old_s": "old-policy terms", "update_s": "update",
              "shift_s": "policy-shift forward"}


def step_cost(rows: pd.DataFrame | Iterable[Mapping], *, title: str | None = None) -> Figure:
    """Seconds of one RL step split into its parts, one horizontal bar per sampler setting.

    ``rows`` are :class:`bgpo.plan.TimeRow` records (``label`` or ``cache`` plus the ``*_s`` parts);
    each bar is annotated with the step's total and the rollouts' share of it.
    """
    df = pd.DataFrame(rows)
    if "label" not in df.columns and "cache" in df.columns:
        df["label"] = df["cache"]
    require_columns(df, ["label", *STEP_PARTS], "step_cost")
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 0.6 * len(df) + 1.6))
    left = np.zeros(len(df))
    for (column, name), color in zip(STEP_PARTS.items(), STYLE["axes.prop_cycle"].by_key()["color"]):
        ax.barh(df["label"], df[column], left=left, color=color, label=name)
        left += df[column].to_numpy(float)
    for y, (total, share) in enumerate(zip(left, df["rollout_s"] / left)):
        ax.text(total, y, f" {total:,.0f} s ({share:.0%} rollouts)", va="center", fontsize=9)
    ax.set_xlim(0, left.max() * 1.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per RL step")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    legend_below(fig, ncols=2)
    return fig


def load_memory_json(path: str | Path) -> tuple[pd.DataFrame, str]:
    """Records written by ``bgpo bench memory --json`` and a title saying where and at what size they were
    measured (``measured on NVIDIA H100 80GB HBM3: preset llada-8b, batch 4 × 768 tokens``), never the
    file's name.

    The file is a list of records, or ``{"device": "...", "records": [...]}``; the device is the one given
    there, else the records' ``gpu``/``device`` field; the size comes from the records' ``preset``,
    ``batch`` and ``seq_len`` when they hold them.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BGPOError(f"cannot read memory records {path}: {err}") from None
    rows = raw.get("records") if isinstance(raw, dict) else raw
    if not isinstance(rows, list) or not rows:
        raise BGPOError(f"{path}: expected a non-empty list of bench records (bgpo bench memory --json)")
    df = pd.DataFrame(rows)
    device = raw.get("device") if isinstance(raw, dict) else None
    for column in ("gpu", "device"):
        if device is None and column in df.columns:
            device = ", ".join(str(v) for v in dict.fromkeys(df[column]))
    device = {"cpu": "CPU"}.get(str(device), device)
    shape = {c: df[c].iloc[0] for c in ("preset", "batch", "seq_len") if c in df.columns and df[c].nunique() == 1}
    size = ", ".join(filter(None, [f"preset {shape['preset']}" if "preset" in shape else "",
                                   f"batch {shape['batch']} × {shape['seq_len']} tokens"
                                   if {"batch", "seq_len"} <= set(shape) else ""]))
    return df, f"measured on {device or 'an unknown device'}" + (f": {size}" if size else "")


def draw_all(data_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Redraw every figure whose data file exists in ``data_dir``; return the files written."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not data_dir.is_dir():
        raise BGPOError(f"data folder {data_dir} not found; pass --data pointing at book/data")
    written: list[Path] = []

    def emit(fig: Figure, name: str) -> None:
        written.extend(save(fig, out_dir / name))
        plt.close(fig)

    emit(bound_plot(), "bound")
    if (data_dir / "main_results.csv").is_file():
        emit(main_results(load_csv(data_dir / "main_results.csv")), "main_results")
    if (data_dir / "llada_zero_shot.csv").is_file():
        emit(zero_shot_by_length(load_csv(data_dir / "llada_zero_shot.csv")), "llada_zero_shot")
    for path in sorted((data_dir / "memory").glob("*.json")):
        records, label = load_memory_json(path)
        emit(memory_vs_nt(records, label=label), f"memory_{path.stem}")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="book/data", help="folder of tidy data files (default: book/data)")
    parser.add_argument("--out", default="book/figures", help="folder to write PNG+SVG figures into (default: book/figures)")


def main(args: argparse.Namespace) -> int:
    written = draw_all(args.data, args.out)
    for path in written:
        print(path)
    return 0
