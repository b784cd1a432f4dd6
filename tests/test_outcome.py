"""The small-scale outcome: last-3 scores, matched controls, intervals, plateau, equal compute, per-cell split."""

import gzip
import json

import numpy as np
import pytest

from bgpo.config import load_config
from bgpo.data import heldout_pool
from bgpo.errors import BGPOError
from bgpo.outcome import LAST, Run, completion_scores, grid_outcome, load_run
from bgpo.tasks import get_task

POOL = heldout_pool(load_config("small-sudoku").data)[:40]
TASK = get_task("sudoku", style="compact")


def run(arm, seed, levels, n_t=4, reward="verified", objective="bgpo", flops_per_step=1.0, noise=0.0):
    """A run whose every puzzle scores ``levels[e]`` at evaluation e (steps 10, 20, ...), plus noise."""
    rng = np.random.default_rng(seed + 100 * n_t)
    E, P = len(levels), len(POOL)
    scores = np.clip(np.array(levels)[:, None] + noise * rng.standard_normal((E, P)), 0, 1)
    steps = 10 * np.arange(1, E + 1)
    return Run(arm, objective, n_t, reward, seed, steps, scores, np.zeros((E, P)), np.zeros((E, P)), np.ones((E, P)),
               flops_per_step * steps.astype(float), 0.5 * flops_per_step * steps.astype(float))


def test_the_reported_score_is_the_last_three_evaluations_paired_with_the_matched_control():
    runs = [run("bgpo-nt4", s, [0.6, 0.7, 0.8, 0.9, 0.9, 0.9 + 0.01 * s]) for s in (0, 1)] + \
           [run("bgpo-nt4-random", s, [0.5] * 6, reward="shuffled") for s in (0, 1)] + \
           [run("bgpo-nt1", s, [0.6] * 6, n_t=1) for s in (0, 1)]
    out = grid_outcome(runs, np.full(len(POOL), 0.55), (np.zeros(len(POOL)),) * 3, POOL,
                       "cell_accuracy")
    best = out["arms"]["bgpo-nt4"]
    assert best["final"] == pytest.approx([0.9, 0.9 + 0.01 / 3])  # mean of the last 3 evaluations, per seed
    assert best["delta_vs_warm"] == pytest.approx([0.35, 0.35 + 0.01 / 3])
    assert out["best"] == "bgpo-nt4" and out["random_control"] == "bgpo-nt4-random" and out["control_nt"] == 4
    assert best["delta_vs_random"] == pytest.approx([0.4, 0.4 + 0.01 / 3])  # seed with seed, same n_t
    assert "random_control" not in out["arms"]["bgpo-nt1"]  # no control at n_t = 1 in this grid: none paired
    assert best["last_steps"] == [40, 50, 60] and LAST == 3
    names = [c["comparison"] for c in out["comparisons"]]
    assert "bgpo-nt4 - bgpo-nt4-random" in names and "bgpo-nt4 - bgpo-nt1" in names
    assert all(c["p_holm"] is None or c["p_holm"] >= c["p"] for c in out["comparisons"])


def test_plateau_tells_a_flat_curve_from_a_rising_one():
    flat = [run("bgpo-nt1", s, [0.6, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75], n_t=1, noise=0.01) for s in range(3)]
    rising = [run("bgpo-nt16", s, [0.6, 0.62, 0.64, 0.66, 0.68, 0.70, 0.72], n_t=16, noise=0.01) for s in range(3)]
    out = grid_outcome(flat + rising, np.full(len(POOL), 0.6), (np.zeros(len(POOL)),) * 3, POOL, "cell_accuracy")
    assert out["plateau"]["bgpo-nt1"]["flat"] is True
    assert out["plateau"]["bgpo-nt16"]["flat"] is False  # +6 points from one window to the next
    assert out["plateau"]["bgpo-nt16"]["mean"] == pytest.approx(0.06, abs=0.01)


def test_drift_is_the_slope_over_the_last_100_steps_per_100_steps():
    from bgpo.outcome import DRIFT_STEPS, drift

    # 14 evaluations (steps 10..140): flat until step 30, then +1 point per 10 steps; the window is steps 40..140
    levels = [0.6, 0.6, 0.6] + [0.6 + 0.01 * k for k in range(1, 12)]
    slow = [run("bgpo-nt4", s, levels, noise=0.02) for s in range(3)]
    still = [run("bgpo-nt1", s, [0.7] * 14, n_t=1, noise=0.02) for s in range(3)]
    assert DRIFT_STEPS == 100 and drift(slow[0]).mean() == pytest.approx(0.10, abs=0.01)  # 10 points per 100 steps
    assert drift(run("d1", 0, [0.6, 0.7], objective="d1")) is None  # fewer than 3 evaluations in the window
    out = grid_outcome(slow + still, np.full(len(POOL), 0.6), (np.zeros(len(POOL)),) * 3, POOL, "cell_accuracy")
    rising, flat = out["drift"]["bgpo-nt4"], out["drift"]["bgpo-nt1"]
    assert rising["mean"] == pytest.approx(0.10, abs=0.005) and rising["bootstrap_ci95"][0] > 0.08
    assert flat["bootstrap_ci95"][0] < 0 < flat["bootstrap_ci95"][1] and flat["per_steps"] == 100
    from bgpo.outcome import arms_table

    table = arms_table(out).set_index("arm")
    assert float(table.loc["bgpo-nt4", "drift per 100 steps, 95% CI"].split()[0]) == pytest.approx(10, abs=0.5)


def test_equal_compute_scores_every_arm_at_the_cheapest_arms_budget():
    cheap = [run("bgpo-nt1", s, [0.62, 0.64, 0.66, 0.68], n_t=1, flops_per_step=1.0) for s in range(2)]
    costly = [run("bgpo-nt16", s, [0.70, 0.74, 0.78, 0.80], n_t=16, flops_per_step=4.0) for s in range(2)]
    out = grid_outcome(cheap + costly, np.full(len(POOL), 0.60), (np.zeros(len(POOL)),) * 3, POOL, "cell_accuracy")
    eq = out["equal_compute"]["flops"]
    assert eq["cheapest"] == "bgpo-nt1" and eq["budgets"] == pytest.approx([20.0, 30.0, 40.0])
    # nt16 at flops 20, 30, 40 = steps 5, 7.5, 10: halfway/three quarters/all the way from 0.60 to 0.70
    assert eq["score"]["bgpo-nt16"] == pytest.approx(np.mean([0.65, 0.675, 0.70]))
    assert eq["score"]["bgpo-nt1"] == pytest.approx(np.mean([0.64, 0.66, 0.68]))
    # core-seconds vary by run: a run that spent less than the cheapest arm's mean sets the budget
    cheap[1].cpu_s = cheap[1].cpu_s * 0.9
    costly[0].cpu_s = np.array([1.0, 2.0, 3.0, 18.0])  # spent least of all runs: 18 s (the others 20 or more)
    out_s = grid_outcome(cheap + costly, np.full(len(POOL), 0.60), (np.zeros(len(POOL)),) * 3, POOL,
                         "cell_accuracy")["equal_compute"]["cpu_s"]
    assert out_s["cheapest"] == "bgpo-nt1" and out_s["budgets"][-1] == pytest.approx(18.0)
    per_step = next(c for c in out["comparisons"] if c["comparison"] == "bgpo-nt16 - bgpo-nt1")
    assert per_step["mean"] > 0.1 and eq["comparisons"][0]["mean"] == pytest.approx(0.675 - 0.66)


def test_teacher_and_per_cell_split_count_naked_singles_apart():
    answers = [f"<answer>{e['solution']}</answer>" for e in POOL[:-1]] + [f"<answer>{POOL[-1]['solution']}"]
    scores, singles, guesses, answered = completion_scores(answers, POOL, TASK)
    assert scores.tolist() == [1.0] * (len(POOL) - 1) + [0.0]  # the unclosed answer tag reads as no answer
    assert answered.tolist() == [1.0] * (len(POOL) - 1) + [0.0]
    assert (singles + guesses)[-1] == 0
    answers[-1] += "</answer>"
    scores, singles, guesses, answered = completion_scores(answers, POOL, TASK)
    assert (singles + guesses).tolist() == [e["puzzle"].count("0") for e in POOL]
    runs = [Run("bgpo-nt1", "bgpo", 1, "verified", 0, np.array([10]), scores[None], singles[None], guesses[None],
                answered[None], np.ones(1), np.ones(1))]
    teacher = np.full(len(POOL), 0.7)
    out = grid_outcome(runs, scores * 0.5, (singles, guesses * 0, answered * 0.5), POOL, "cell_accuracy", teacher)
    assert out["arms"]["bgpo-nt1"]["answered"] == 1.0 and out["warm_start_answered"] == 0.5
    cells = out["cells"]["accuracy"]
    assert cells["bgpo-nt1"] == {"singles": 1.0, "guesses": 1.0} and cells["warm start"]["guesses"] == 0.0
    assert cells["teacher (expected)"]["singles"] == 1.0 and 0.25 < cells["teacher (expected)"]["guesses"] < 1.0
    assert out["teacher_expected"] == pytest.approx(0.7)


def test_load_run_rescores_the_completions_and_refuses_logs_that_disagree(tmp_path):
    answers = [f"<answer>{e['solution']}</answer>" for e in POOL]
    (tmp_path / "summary.json").write_text(json.dumps({"arm": "d1", "objective": "d1", "n_t": 1, "seed": 0}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": k, "rollout_positions": 100, "update_positions": 10, "rollout_s": 1.0, "old_s": 0.5,
         "update_s": 0.5}) + "\n" for k in (1, 2)))
    with gzip.open(tmp_path / "eval_completions.jsonl.gz", "wt") as f:
        f.write(json.dumps({"step": 2, "completions": answers}) + "\n")
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 2, "cell_accuracy": 1.0}) + "\n")
    r = load_run(tmp_path, POOL, TASK, n_params=1000)
    assert r.steps.tolist() == [2] and r.flops.tolist() == [2 * (2 * 1000 * 110 + 6 * 1000 * 10)]
    assert r.cpu_s.tolist() == [4.0]
    with pytest.raises(BGPOError, match="no evaluation at step 1"):
        load_run(tmp_path, POOL, TASK, n_params=1000, until=1)
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 2, "cell_accuracy": 0.5}) + "\n")
    with pytest.raises(BGPOError, match="logs disagree"):
        load_run(tmp_path, POOL, TASK, n_params=1000)


def test_load_run_until_a_step_reads_the_run_as_it_stood_there(tmp_path):
    """A run gone on from 2 to 4 steps gives at ``until=2`` the scores, FLOPs and seconds it had at step 2."""
    right, wrong = ([f"<answer>{e['solution']}</answer>" for e in POOL], ["<answer></answer>"] * len(POOL))
    (tmp_path / "summary.json").write_text(json.dumps({"arm": "d1", "objective": "d1", "n_t": 1, "seed": 0}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": k, "rollout_positions": 100 * k, "update_positions": 10, "rollout_s": 1.0, "old_s": 0.5,
         "update_s": 0.5}) + "\n" for k in (1, 2, 3, 4)))
    with gzip.open(tmp_path / "eval_completions.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"step": k, "completions": c}) + "\n" for k, c in ((2, right), (4, wrong))))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 2, "cell_accuracy": 1.0}) + "\n"
                                         + json.dumps({"step": 4, "cell_accuracy": 0.0}) + "\n")
    whole, at2 = load_run(tmp_path, POOL, TASK, 1000), load_run(tmp_path, POOL, TASK, 1000, until=2)
    assert whole.steps.tolist() == [2, 4] and whole.scores.mean(axis=1).tolist() == [1.0, 0.0]
    assert at2.steps.tolist() == [2] and at2.scores.mean() == 1.0
    assert at2.flops.tolist() == [2 * 1000 * 320 + 6 * 1000 * 20] and at2.cpu_s.tolist() == [4.0]


def test_tables_print_each_comparison_with_both_intervals_in_the_readers_order():
    from bgpo.outcome import arms_table, cells_table, comparisons_table

    runs = [run("bgpo-nt4-random", s, [0.5] * 6, reward="shuffled", noise=0.01) for s in range(3)] + \
           [run("bgpo-nt4", s, [0.6, 0.7, 0.8, 0.9, 0.9, 0.9], noise=0.05) for s in range(3)] + \
           [run("bgpo-nt1", s, [0.6] * 6, n_t=1, noise=0.05) for s in range(3)]
    out = grid_outcome(runs, np.full(len(POOL), 0.55), (np.zeros(len(POOL)),) * 3, POOL,
                       "cell_accuracy", np.full(len(POOL), 0.7))
    assert list(out["arms"]) == ["bgpo-nt1", "bgpo-nt4", "bgpo-nt4-random"]  # BGPO by n_t, controls last
    arms = arms_table(out, label=str.upper)
    assert arms["arm"].tolist() == ["BGPO-NT1", "BGPO-NT4", "BGPO-NT4-RANDOM"]
    nt4 = arms.set_index("arm").loc["BGPO-NT4"]
    warm = 100 * (np.mean(out["arms"]["bgpo-nt4"]["final"]) - 0.55)
    assert nt4["vs warm start, 95% CI (points)"].startswith(f"+{warm:.1f} [")
    # the window 0.9, 0.9, 0.9 after 0.6, 0.7, 0.8 rose 20 points: not flat; the control's is
    assert float(nt4["last 3 − previous 3, 95% CI"].split()[0]) == pytest.approx(20, abs=1) and nt4["flat"] == "no"
    assert arms.set_index("arm").loc["BGPO-NT4-RANDOM", "flat"] == "yes"
    control = comparisons_table(out, ("vs matched control",), label=str.upper)
    assert control["comparison"].tolist() == ["BGPO-NT4 − BGPO-NT4-RANDOM"]
    row = control.iloc[0]
    assert row["seeds"] == 3 and row["resolved"] == "yes" and float(row["Holm p"]) < 0.05
    se = 100 * out["arms"]["bgpo-nt4"]["delta_vs_random_se"]
    assert row["mean ± SE (points)"] == f"+{100 * out['arms']['bgpo-nt4']['delta_vs_random_mean']:.1f} ± {se:.1f}"
    lo, hi = (float(v.replace("−", "-")) for v in row["bootstrap 95% CI"].strip("[]").split(", "))
    assert lo < 100 * out["arms"]["bgpo-nt4"]["delta_vs_random_mean"] < hi
    from bgpo.outcome import comparison, in_words, points

    c = comparison(out, "bgpo-nt4", "bgpo-nt4-random", "vs matched control")
    assert points(c) == f"{row['mean ± SE (points)'].split(' ±')[0]} {row['bootstrap 95% CI']}"
    assert in_words(c, str.upper) == f"BGPO-NT4 − BGPO-NT4-RANDOM: {points(c).replace(' [', ' points [')}, resolved"
    assert comparison(out, "bgpo-nt4", "bgpo-nt16", "arms per step") is None
    both = comparisons_table(out, ("vs teacher", "arms at equal flops"))
    assert both["comparison"].tolist() == ["bgpo-nt4 − teacher (expected)", "bgpo-nt4 − bgpo-nt1"]
    cells = cells_table(out)
    assert cells["policy"].tolist()[:2] == ["teacher (expected)", "warm start"] and len(cells) == 5


def test_grid_progress_counts_only_runs_finished_at_the_grids_steps(tmp_path):
    from bgpo.experiment import grid_progress

    (tmp_path / "settings.json").write_text(json.dumps({"seeds": 3, "steps": 200, "n_ts": [1, 16],
                                                        "control_nts": [16]}))
    (tmp_path / "comparisons.json").write_text(json.dumps({"nt_sweep": ["bgpo-nt1", "bgpo-nt16"],
                                                           "control": ["bgpo-nt16-random"]}))
    for name, steps in (("bgpo-nt1-s0", 200), ("bgpo-nt1-s2", 200), ("bgpo-nt16-s0", 120)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "summary.json").write_text(json.dumps({"steps": steps}))
    progress = grid_progress(tmp_path).set_index("arm")
    assert progress.loc["bgpo-nt1", "finished"] == [0, 2]
    assert progress.loc["bgpo-nt16", "finished"] == []  # stopped at 120 of 200 steps
    assert progress.loc["bgpo-nt16-random", "reward"] == "shuffled" and set(progress["planned"]) == {3}
