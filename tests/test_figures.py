"""Figures are drawn from small tidy frames, saved as PNG+SVG, and bad input raises BGPOError."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bgpo import figures
from bgpo.errors import BGPOError

DATA = Path(__file__).resolve().parents[1] / "book" / "data"


def _bars(fig) -> list:
    return [p for ax in fig.axes for p in ax.patches]


def test_main_results_one_bar_per_row_and_panel_per_source():
    df = pd.DataFrame({
        "benchmark": ["A", "A", "B", "B", "A"],
        "method": ["base", "bgpo", "base", "bgpo", "bgpo"],
        "accuracy_pct": [10.0, 20.0, 30.0, 40.0, 25.0],
        "source": ["s1", "s1", "s1", "s1", "s2"],
    })
    fig = figures.main_results(df)
    assert len(fig.axes) == 2  # one panel per source
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == [10.0, 20.0, 30.0, 40.0]
    assert fig.axes[0].get_ylabel() == "accuracy (%)"
    plt.close(fig)


def test_curves_mean_and_band_over_seeds():
    df = pd.DataFrame({
        "step": [0, 1, 0, 1], "reward": [0.0, 1.0, 0.2, 0.6], "seed": [0, 0, 1, 1], "run": ["bgpo"] * 4,
    })
    fig = figures.curves(df, "reward")
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), [0.1, 0.8])
    assert len(fig.axes[0].collections) == 1  # the ± std band
    assert fig.axes[0].get_xlabel() == "RL step"
    plt.close(fig)


def test_accuracy_vs_nt_errorbars():
    df = pd.DataFrame({"n_t": [1, 1, 4, 4], "accuracy": [0.2, 0.4, 0.5, 0.7], "seed": [0, 1, 0, 1],
                       "objective": ["bgpo"] * 4})
    fig = figures.accuracy_vs_nt(df)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0.3, 0.6])
    plt.close(fig)


def test_memory_vs_nt_converts_bytes_to_mib():
    rows = [{"objective": "elbo", "n_t": n, "activation_bytes": n * 2**20, "seconds": 0.1 * n} for n in (1, 2, 4)]
    fig = figures.memory_vs_nt(rows, label="cpu")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1, 2, 4])
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.1, 0.2, 0.4])
    plt.close(fig)


def test_elbo_variance_and_bound_plot():
    fig = figures.elbo_variance(pd.DataFrame({"n_t": [1, 2, 4], "variance": [4.0, 2.0, 1.0]}))
    guide = fig.axes[0].lines[1].get_ydata()
    np.testing.assert_allclose(guide, [4.0, 2.0, 1.0])  # 1/n_t through the first point
    plt.close(fig)
    fig = figures.bound_plot()
    gap = fig.axes[1].lines[0].get_ydata()
    assert gap[0] == 0.0 and np.all(np.diff(gap) > 0)  # Jensen gap: 0 at zero spread, then growing
    plt.close(fig)


def test_save_writes_png_and_svg(tmp_path):
    fig = figures.bound_plot()
    written = figures.save(fig, tmp_path / "sub" / "bound.pdf")
    plt.close(fig)
    assert [p.name for p in written] == ["bound.png", "bound.svg"]
    assert all(p.stat().st_size > 1000 for p in written)


@pytest.mark.parametrize("bad", [
    pd.DataFrame({"benchmark": ["A"], "method": ["m"]}),  # missing columns
    pd.DataFrame(columns=["benchmark", "method", "accuracy_pct", "source"]),  # empty
    [{"benchmark": "A"}],  # not a DataFrame
])
def test_bad_input_raises(bad):
    with pytest.raises(BGPOError):
        figures.main_results(bad)


def test_read_metrics_labels_runs_and_rejects_truncated_lines(tmp_path):
    good = tmp_path / "a" / "metrics.jsonl"
    good.parent.mkdir()
    good.write_text(json.dumps({"step": 0, "reward": 0.5}) + "\n" + json.dumps({"step": 1, "reward": 0.7}) + "\n")
    df = figures.read_metrics([good])
    assert list(df["run"]) == ["a", "a"] and list(df["reward"]) == [0.5, 0.7]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0}\n{"step": 1, "rew')
    with pytest.raises(BGPOError, match="bad.jsonl: line 2: not valid JSON"):
        figures.read_metrics({"x": bad})
    with pytest.raises(BGPOError, match="not found"):
        figures.load_csv(tmp_path / "missing.csv")


def test_cli_redraws_book_data(tmp_path):
    if not (DATA / "main_results.csv").is_file():
        pytest.skip("book/data not present")
    args = argparse.Namespace(data=str(DATA), out=str(tmp_path))
    assert figures.main(args) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"bound.png", "bound.svg", "main_results.png", "main_results.svg", "llada_zero_shot.png"} <= names
    with pytest.raises(BGPOError):
        figures.main(argparse.Namespace(data=str(tmp_path / "nope"), out=str(tmp_path)))


def test_memory_json_label_and_errors(tmp_path):
    path = tmp_path / "h100.json"
    path.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "records": [
        {"objective": "bgpo", "n_t": 1, "activation_bytes": 2**20, "seconds": 1.0}]}))
    df, label = figures.load_memory_json(path)
    assert len(df) == 1 and label == "h100: measured on NVIDIA H100 80GB HBM3"
    path.write_text("[]")
    with pytest.raises(BGPOError, match="non-empty"):
        figures.load_memory_json(path)


def test_every_method_gets_its_own_colour():
    df = pd.DataFrame({"benchmark": ["A"] * 6, "method": ["base", "d1", "x", "y", "z", "BGPO"],
                       "accuracy_pct": [1.0, 2, 3, 4, 5, 6], "source": ["s"] * 6})
    fig = figures.main_results(df)
    colours = {tuple(p.get_facecolor()) for p in fig.axes[0].patches}
    assert len(colours) == 6
    plt.close(fig)


def test_memory_vs_nt_linear_axis_and_bgpo_visible_under_d1():
    """Linear n_t axis (linear growth is a straight line); d1 drawn dashed over BGPO when they coincide."""
    rows = [{"objective": o, "n_t": n, "activation_bytes": 2**20 * (n if o == "elbo" else 1), "seconds": 1.0}
            for o in ("bgpo", "elbo", "d1") for n in (1, 4, 16)]
    fig = figures.memory_vs_nt(rows)
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear"
    bgpo, elbo, d1 = ax.lines[:3]
    assert d1.get_linestyle() == "--" and d1.get_zorder() > bgpo.get_zorder()
    assert bgpo.get_linewidth() > d1.get_linewidth() and bgpo.get_marker() != d1.get_marker()
    plt.close(fig)
