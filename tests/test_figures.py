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
    assert fig.axes[0].get_ylabel() == "score (%)"  # countdown's mean reward is no accuracy
    assert [t.get_text() for t in fig.legends[0].texts] == ["base", "bgpo"] and not fig.axes[0].get_legend()
    assert figures.main_results(df, ylabel="mean reward (%)").axes[0].get_ylabel() == "mean reward (%)"
    plt.close("all")


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
    assert len(df) == 1 and label == "measured on NVIDIA H100 80GB HBM3"
    _, label = figures.load_memory_json(DATA / "memory" / "cpu-small-seq256-b8.json")
    assert label == "measured on CPU: preset small, batch 8 × 256 tokens"  # not the file's name
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


def _outcome():
    return {"metric": "cell_accuracy", "pool_size": 1024, "warm_start": 0.76,
            "arms": {"bgpo-nt1": {"objective": "bgpo", "n_t": 1, "seeds": [0, 1, 2], "final": [0.77, 0.78, 0.79],
                                  "delta_vs_warm": [0.01, 0.02, 0.03], "delta_mean": 0.02, "delta_se": 0.00577},
                     "bgpo-nt16": {"objective": "bgpo", "n_t": 16, "seeds": [0, 1, 2], "final": [0.8, 0.8, 0.8],
                                   "delta_vs_warm": [0.04, 0.04, 0.04], "delta_mean": 0.04, "delta_se": 0.0},
                     "elbo-nt1": {"objective": "elbo", "n_t": 1, "seeds": [0], "final": [0.75],
                                  "delta_vs_warm": [-0.01], "delta_mean": -0.01, "delta_se": None},
                     "d1": {"objective": "d1", "n_t": 1, "seeds": [0, 1], "final": [0.76, 0.78],
                            "delta_vs_warm": [0.0, 0.02], "delta_mean": 0.01, "delta_se": 0.01}}}


def test_learning_curves_mean_and_standard_error_band():
    df = pd.DataFrame({"arm": ["a"] * 4 + ["b"] * 2, "seed": [0, 1, 0, 1, 0, 0], "step": [0, 0, 20, 20, 0, 20],
                       "cell_accuracy": [0.5, 0.5, 0.6, 0.8, 0.5, 0.4]})
    fig = figures.learning_curves(df, "cell_accuracy", scale=100)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a (n=2)", "b (n=1)"}
    assert list(lines["a (n=2)"].get_ydata()) == pytest.approx([50.0, 70.0])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]  # mean ± SE at step 20: 70 ± 10
    assert band.max() == pytest.approx(80.0) and band.min() == pytest.approx(40.0 + 10.0)
    ordered = figures.learning_curves(df, "cell_accuracy", order=["b", "a"], smooth=2, markers=False)
    first = ordered.axes[0].get_lines()[0]
    assert first.get_label() == "b (n=1)" and list(first.get_ydata()) == pytest.approx([0.5, 0.45])  # rolling 2
    with pytest.raises(BGPOError, match="missing column"):
        figures.learning_curves(df.drop(columns="seed"), "cell_accuracy")
    with pytest.raises(BGPOError, match="smooth"):
        figures.learning_curves(df, "cell_accuracy", smooth=0)
    plt.close(fig)
    plt.close(ordered)


def test_paired_deltas_one_bar_per_arm_with_every_seed():
    fig = figures.paired_deltas(_outcome())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bgpo-nt1", "bgpo-nt16", "elbo-nt1", "d1"]
    dots = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] > 0 and c.get_facecolor().any()]
    assert sorted(len(d) for d in dots) == [1, 2, 3, 3]  # one dot per seed of each arm
    assert any(line.get_ydata()[0] == pytest.approx(2.0) for line in ax.get_lines() if len(line.get_ydata()) == 2)
    with pytest.raises(BGPOError, match="outcome"):
        figures.paired_deltas({"arms": {}})
    plt.close(fig)


def test_delta_vs_nt_line_for_bgpo_and_band_for_d1():
    fig = figures.delta_vs_nt(_outcome())
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert "BGPO" in labels and "ELBO" in labels and any(label.startswith("d1") for label in labels)
    assert [int(float(t.get_text())) for t in ax.get_xticklabels()] == [1, 16]
    plt.close(fig)



def test_delta_vs_nt_random_control_is_its_own_point_and_ticks_are_the_n_t_run():
    outcome = _outcome()
    outcome["arms"]["bgpo-nt4-random"] = {"objective": "bgpo", "n_t": 4, "reward": "shuffled", "seeds": [0, 1],
                                          "final": [0.7, 0.72], "delta_vs_warm": [-0.06, -0.04]}
    fig = figures.delta_vs_nt(outcome)
    ax = fig.axes[0]
    labels = [t.get_text() for t in fig.legends[0].texts]  # one legend, below the axes
    assert "BGPO" in labels and any(label.startswith("random reward") for label in labels)
    bgpo = next(c for c in ax.containers if c.get_label() == "BGPO")
    assert list(bgpo.lines[0].get_xdata()) == [1, 16]  # the control is not joined to BGPO's line
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "16"] and not ax.xaxis.get_minorticklocs().size
    assert fig.get_figwidth() <= figures.COLUMN_WIDTH_IN
    plt.close(fig)


def test_nt_ticks_only_at_measured_values():
    rows = [{"objective": o, "n_t": n, "activation_bytes": 2**20 * n, "seconds": 1.0}
            for o in ("bgpo", "elbo") for n in (1, 2, 4, 8, 16, 32)]
    fig = figures.memory_vs_nt(rows)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1, 2, 4, 8, 16, 32]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16", "32"]
        ticks = ax.xaxis.get_major_ticks()  # 2 sits one line below 1, which it would touch
        assert ticks[1].get_pad() == ticks[0].get_pad() + 12 and ticks[2].get_pad() == ticks[0].get_pad()
        boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.get_xticklabels()]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert fig.get_figwidth() <= figures.COLUMN_WIDTH_IN
    plt.close(fig)

def test_gradient_noise_panels_per_checkpoint_and_the_rollout_floor():
    rows = [{"checkpoint": c, "objective": o, "n_t": n, "mask_var": 8.0 / n, "rollout_var": 2.0,
             "total_var": 2.0 + 8.0 / n} for c in ("warm_start", "end") for o in ("bgpo", "elbo") for n in (1, 4, 16)]
    fig = figures.gradient_noise(rows)
    assert len(fig.axes) == 2 and [ax.get_title(loc="left") for ax in fig.axes] == ["warm_start", "end"]
    floor = [line for line in fig.axes[0].get_lines() if line.get_label() == "rollout/prompt floor"]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == pytest.approx(2.0)
    assert fig.get_figwidth() <= figures.COLUMN_WIDTH_IN and len(fig.legends) == 1  # one legend, below the panels
    assert {"BGPO: total", "ELBO: mask part", "rollout/prompt floor"} <= {t.get_text() for t in fig.legends[0].texts}
    rows = [dict(r, rollout_var=-1.0) for r in rows]  # an unbiased estimate below 0: no floor on a log axis
    fig2 = figures.gradient_noise(pd.DataFrame(rows))
    assert not [line for line in fig2.axes[0].get_lines() if line.get_label() == "rollout/prompt floor"]
    with pytest.raises(BGPOError, match="missing column"):
        figures.gradient_noise(pd.DataFrame(rows).drop(columns="checkpoint"))
    plt.close(fig)
    plt.close(fig2)


def test_cache_drift_one_panel_per_metric_one_line_per_sampler():
    from bgpo.figures import DRIFT_METRICS, cache_drift

    rows = [{"block": b, "mode": m, "age": a, "metric": k, "mean": 0.1 * a, "ci95": 0.01}
            for b, m in ((20, "prefix"), (4, "dual")) for a in (1, 2, 3) for k in DRIFT_METRICS]
    fig = cache_drift(pd.DataFrame(rows))
    assert len(fig.axes) == 3 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]
    with pytest.raises(BGPOError):
        cache_drift(pd.DataFrame([{"block": 4}]))


def test_step_cost_stacks_the_parts_and_labels_the_total():
    from bgpo.figures import step_cost

    rows = [{"label": "none", "rollout_s": 30.0, "old_s": 2.0, "update_s": 7.0, "shift_s": 1.0},
            {"label": "dual", "rollout_s": 3.0, "old_s": 2.0, "update_s": 7.0, "shift_s": 1.0}]
    fig = step_cost(rows)
    ax = fig.axes[0]
    assert len(ax.patches) == 8  # 4 parts x 2 settings
    texts = [t.get_text() for t in ax.texts]
    assert texts == [" 40 s (75% rollouts)", " 13 s (23% rollouts)"]


# ---------------------------------------------------------------------------------------------------------
# What a reader of the website sees: every figure sharp, its text >= 11 px at the column width, its legend off
# the data, people's names for runs.

def _memory_rows():
    return [{"objective": o, "n_t": n, "activation_bytes": 2**20 * (n if o == "elbo" else 1), "seconds": 0.1 * n}
            for o in ("bgpo", "elbo", "d1") for n in (1, 2, 4, 8, 16, 32)]


def _every_figure():
    """Each function of the module on small tidy inputs (those of the tests above), by name."""
    from bgpo.figures import DRIFT_METRICS

    results = pd.DataFrame({"benchmark": ["GSM8K", "MATH500", "Countdown", "Sudoku"] * 2,
                            "method": ["LLaDA-8B-Instruct"] * 4 + ["BGPO"] * 4, "source": ["DARE"] * 8,
                            "accuracy_pct": [78.0, 36.0, 20.0, 11.0, 82.0, 40.0, 70.0, 25.0]})
    zero = pd.DataFrame({"benchmark": ["gsm8k", "math500"] * 3, "gen_length": [128, 128, 256, 256, 512, 512],
                         "accuracy_pct": [68.0, 26.0, 76.0, 32.0, 78.0, 36.0], "source": ["d1 generations"] * 6})
    runs = pd.DataFrame({"run": ["lr1e-4/bgpo-nt4-s0"] * 3 + ["lr3e-5/bgpo-nt4-s0"] * 3, "step": [1, 2, 3] * 2,
                         "reward_mean": [0.1, 0.2, 0.3, 0.1, 0.15, 0.2]})
    arms = pd.DataFrame({"arm": ["a"] * 4 + ["b"] * 4, "seed": [0, 1] * 4, "step": [0, 0, 20, 20] * 2,
                         "cell_accuracy": [0.5, 0.5, 0.6, 0.8, 0.5, 0.5, 0.4, 0.45]})
    variance = pd.DataFrame({"n_t": [1, 2, 4] * 3, "variance": [4.0, 2.0, 1.0] * 3,
                             "estimator": ["exact"] * 3 + ["Monte Carlo"] * 3 + ["independent"] * 3})
    noise = [{"checkpoint": c, "objective": o, "n_t": n, "mask_var": 8.0 / n, "rollout_var": 2.0,
              "total_var": 2.0 + 8.0 / n} for c in ("warm start", "end") for o in ("bgpo", "elbo") for n in (1, 4, 16)]
    drift = pd.DataFrame([{"block": b, "mode": m, "age": a, "metric": k, "mean": 0.1 * a, "ci95": 0.01}
                          for b, m in ((20, "prefix"), (20, "dual"), (4, "prefix"), (4, "dual")) for a in (1, 2, 3)
                          for k in DRIFT_METRICS])
    steps = [{"label": "none", "rollout_s": 30.0, "old_s": 2.0, "update_s": 7.0, "shift_s": 1.0},
             {"label": "dual (config)", "rollout_s": 3.0, "old_s": 2.0, "update_s": 7.0, "shift_s": 1.0}]
    return {
        "main_results": lambda: figures.main_results(results),
        "zero_shot_by_length": lambda: figures.zero_shot_by_length(zero),
        "curves": lambda: figures.curves(runs, "reward_mean", ylabel="training reward"),
        "accuracy_vs_nt": lambda: figures.accuracy_vs_nt(pd.DataFrame(
            {"n_t": [1, 1, 4, 4], "accuracy": [0.2, 0.4, 0.5, 0.7], "seed": [0, 1, 0, 1], "objective": ["bgpo"] * 4})),
        "memory_vs_nt": lambda: figures.memory_vs_nt(_memory_rows(), label="measured on CPU: preset tiny"),
        "elbo_variance": lambda: figures.elbo_variance(variance),
        "learning_curves": lambda: figures.learning_curves(arms, "cell_accuracy", scale=100),
        "paired_deltas": lambda: figures.paired_deltas(_outcome()),
        "delta_vs_nt": lambda: figures.delta_vs_nt(_outcome()),
        "gradient_noise": lambda: figures.gradient_noise(noise),
        "bound_plot": figures.bound_plot,
        "cache_drift": lambda: figures.cache_drift(drift),
        "step_cost": lambda: figures.step_cost(steps),
    }


COLUMN_PX = 678  # the website's text column at 1280 px (bgpo.book.TEXT_COLUMN_PX)


@pytest.mark.parametrize("name", list(_every_figure()))
def test_every_figure_is_sharp_readable_and_its_legend_off_the_data(name, tmp_path):
    """Saved as a notebook shows it (2x pixels, tight box), the figure fits the column, so its text is shown at
    its drawn size: >= 8 pt = 11 px; one legend, under the axes (below every axes' labels)."""
    fig = _every_figure()[name]()
    png = tmp_path / "f.png"
    fig.savefig(png, dpi=2 * fig.dpi)
    shown_px = plt.imread(png).shape[1] / 2
    assert shown_px <= COLUMN_PX, f"{name}: {shown_px:.0f} px wide"
    texts = [t for t in fig.findobj(lambda a: isinstance(a, plt.Text)) if t.get_text().strip() and t.get_visible()]
    smallest = min(t.get_fontsize() for t in texts) * fig.dpi / 72
    assert smallest >= 11, f"{name}: text {smallest:.1f} px"
    assert not [ax for ax in fig.axes if ax.get_legend() is not None], "a legend inside an axes"
    renderer = fig.canvas.get_renderer()
    for legend in fig.legends:
        top = legend.get_window_extent(renderer).y1
        assert all(top <= ax.get_tightbbox(renderer).y0 + 1 for ax in fig.axes), f"{name}: legend over an axes"
    plt.close(fig)


def test_notebooks_show_figures_at_twice_their_pixels():
    """In IPython the module switches the inline PNG to 'retina': 2x pixels, the 1x size in the metadata."""
    import base64
    import io

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        figures._inline_at_2x()
        data, metadata = shell.display_formatter.formatters["image/png"](figures.bound_plot())
        pixels = plt.imread(io.BytesIO(base64.b64decode(data))).shape  # (height, width, channels)
        assert metadata["width"] <= COLUMN_PX
        assert pixels[1] == pytest.approx(2 * metadata["width"], abs=1)  # IPython halves and rounds down
        assert pixels[0] == pytest.approx(2 * metadata["height"], abs=1)
    finally:
        InteractiveShell.clear_instance()
        plt.close("all")


def test_composed_panels_keep_their_own_legend_under_the_axes_until_merged():
    arms = pd.DataFrame({"arm": ["a", "a", "b", "b"], "seed": [0, 0, 0, 0], "step": [0, 1, 0, 1],
                         "cell_accuracy": [0.5, 0.6, 0.5, 0.4]})
    fig, axes = plt.subplots(1, 2)
    figures.learning_curves(arms, "cell_accuracy", ax=axes[0])
    figures.curves(arms, "cell_accuracy", group="arm", seed=None, ax=axes[1])
    fig.tight_layout()
    fig.canvas.draw()  # places the x labels where the reader sees them
    renderer = fig.canvas.get_renderer()
    for ax in axes:  # the caller may still remove it (chapter 04 does), and it sits under the x label
        assert ax.get_legend() is not None
        assert ax.get_legend().get_window_extent(renderer).y1 <= ax.xaxis.label.get_window_extent(renderer).y0 + 1
    legend = figures.legend_below(fig)
    assert [t.get_text() for t in legend.texts] == ["a (n=1)", "b (n=1)", "a", "b"] and len(fig.legends) == 1
    assert all(ax.get_legend() is None for ax in axes)
    plt.close(fig)


@pytest.mark.parametrize("name, shown", [
    ("lr1e-4/bgpo-nt4-s0", "lr 1e-4, BGPO $n_t$=4, seed 0"),
    ("elbo-nt16-s2", "ELBO $n_t$=16, seed 2"),
    ("d1", "d1"),
    ("BGPO n_t=1 (random reward)", "BGPO n_t=1 (random reward)"),  # written for people: as it is
])
def test_run_label_names_runs_for_people(name, shown):
    assert figures.run_label(name) == shown


def test_curves_label_runs_for_people_or_as_mapped():
    runs = pd.DataFrame({"run": ["lr1e-4/bgpo-nt4-s0"] * 2, "step": [1, 2], "reward_mean": [0.1, 0.2]})
    fig = figures.curves(runs, "reward_mean")
    assert [t.get_text() for t in fig.legends[0].texts] == ["lr 1e-4, BGPO $n_t$=4, seed 0"]
    fig = figures.curves(runs, "reward_mean", labels={"lr1e-4/bgpo-nt4-s0": "learning rate 1e-4"})
    assert [t.get_text() for t in fig.legends[0].texts] == ["learning rate 1e-4"]
    plt.close("all")


def test_series_that_coincide_stay_visible():
    """Three estimators with the same variances: different markers, dashes and widths, thinner ones on top."""
    df = pd.DataFrame({"n_t": [1, 2, 4] * 3, "variance": [4.0, 2.0, 1.0] * 3,
                       "estimator": ["exact"] * 3 + ["Monte Carlo"] * 3 + ["independent"] * 3})
    lines = figures.elbo_variance(df).axes[0].lines[:3]
    assert len({line.get_marker() for line in lines}) == len({line.get_linestyle() for line in lines}) == 3
    assert [line.get_linewidth() for line in lines] == [3.0, 1.8, 1.5]
    assert [line.get_zorder() for line in lines] == [2, 3, 4]
    plt.close("all")
