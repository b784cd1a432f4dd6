"""The small-scale outcome: each arm at its plateau, paired on one pool, with intervals that hold.

A grid (:mod:`bgpo.experiment`) trains every (arm, seed) from one warm start and evaluates it greedily
on the same held-out puzzles every ``eval_every`` steps, logging the completions
(``eval_completions.jsonl.gz``). From those logs this module computes, per puzzle:

* **the reported score** of a run: the mean of its last ``LAST`` = 3 evaluations (single evaluations
  of one run move by more than a point between consecutive evaluations);
* **paired comparisons** ``a - b`` on the same puzzles -- every arm against the warm start, each
  verified arm against the random-reward control *at its own* ``n_t`` (everything equal but the link
  between a completion and its reward), the ``n_t`` arms and d1 against each other, the best arm
  against the teacher's *expected* score. Each gets a t-interval over per-seed means (the seeds'
  noise) and a two-way bootstrap over seeds and puzzles (both noises, :func:`bgpo.stats.bootstrap`),
  and a p-value (t over seeds) adjusted by Holm's method over the family of comparisons printed. A
  comparison is *resolved* when its bootstrap interval excludes 0 and its Holm-adjusted p < 0.05;
* **the plateau**: per arm, last window minus the window before (3 evaluations each). A curve is
  *flat* when the bootstrap upper bound of that gain is below ``FLAT_MARGIN`` (1 point): less than a
  point left to gain at 95% confidence;
* **the drift**: per arm, the least-squares slope of each puzzle's score over the evaluations of the last
  ``DRIFT_STEPS`` = 100 steps, in points per 100 steps, with the same intervals: how fast a curve still
  moves, whether or not the window test calls it flat (one window's gain is noisy; a slope through all the
  evaluations of 100 steps less so);
* **equal compute**: each run's cumulative model FLOPs, ``2 N`` per position the sampler or the
  old-policy pass processes and ``6 N`` per position the update trains on (N parameters; the logged
  ``rollout_positions`` and ``update_positions``; the diagnostic policy-shift pass and evaluation are
  not counted), and its core-seconds: the wall-clock seconds of its rollouts, old-policy pass and update
  (``rollout_s + old_s + update_s``), which the grid measures with one single-threaded process per core,
  so they are CPU-seconds up to what else ran on that core. Every arm is scored at the compute the
  cheapest arm spent by its last 3 evaluations, scaled down where a run spent less (per-puzzle linear
  interpolation of the evaluation curve, the warm start at compute 0; nothing extrapolated), and
  compared there;
* **the per-cell split** (sudoku): accuracy on the blanks that are naked singles of the givens (the
  imperfect teacher always gets them right) and on the blanks the teacher guesses.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl
from bgpo.stats import bootstrap, holm, t_interval
from bgpo.tasks.base import last_answer

LAST = 3  # evaluations averaged into a run's reported score
FLAT_MARGIN = 0.01  # a curve is flat when its gain over the last window is below 1 point (95% upper bound)
DRIFT_STEPS = 100  # the drift: least-squares slope of the evaluations over the last 100 steps
INITIAL = "initial_completions.jsonl.gz"  # the warm start's greedy completions on the pool
TEACHER = "teacher (expected)"  # the imperfect teacher's expected score, averaged over its random guesses


@dataclass
class Run:
    """One finished (arm, seed): per-evaluation per-puzzle scores and cumulative compute."""

    arm: str
    objective: str
    n_t: int
    reward: str
    seed: int
    steps: np.ndarray  # (E,) evaluation steps
    scores: np.ndarray  # (E, puzzles) per-puzzle primary metric
    singles: np.ndarray  # (E, puzzles) right naked-single blanks per puzzle (sudoku; else zeros)
    guesses: np.ndarray  # (E, puzzles) right guessed blanks per puzzle
    answered: np.ndarray  # (E, puzzles) 1 where the completion holds a closed <answer>...</answer>
    flops: np.ndarray  # (E,) cumulative model FLOPs at each evaluation
    cpu_s: np.ndarray  # (E,) cumulative core-seconds (module docstring) at each evaluation

    def last(self, values: np.ndarray) -> np.ndarray:
        """Mean over the last ``LAST`` evaluations of per-evaluation rows."""
        return values[-LAST:].mean(axis=0)


def completion_scores(completions: list[str], pool: list[dict],
                      task) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per puzzle: the task's reward, (sudoku) right naked-single and right guessed blanks, and whether the
    completion holds a closed ``<answer>...</answer>``, the format the grid's tasks read (a policy that loses
    it scores 0 whatever it knows)."""
    if len(completions) != len(pool):
        raise BGPOError(f"{len(completions)} completions for a pool of {len(pool)}: the log is from other settings")
    scores = np.array([task.reward(c, e) for c, e in zip(completions, pool)])
    singles, guesses = np.zeros(len(pool)), np.zeros(len(pool))
    if task.name == "sudoku":
        from bgpo.tasks.sudoku import cell_hits, naked_singles

        for j, (c, e) in enumerate(zip(completions, pool)):
            kinds = naked_singles(e["puzzle"])
            hits = cell_hits(c, e["puzzle"], e["solution"])
            singles[j] = sum(h for h, k in zip(hits, kinds) if k)
            guesses[j] = sum(h for h, k in zip(hits, kinds) if not k)
    answered = np.array([last_answer(c) is not None for c in completions], dtype=float)
    return scores, singles, guesses, answered


def step_flops(row: dict, n_params: int) -> float:
    """Model FLOPs of one RL step: 2N per sampled or old-policy position, 6N per trained position."""
    return 2 * n_params * (row["rollout_positions"] + row["update_positions"]) + 6 * n_params * row["update_positions"]


def load_run(run_dir: Path, pool: list[dict], task, n_params: int, until: int | None = None) -> Run:
    """A finished run's evaluations, rescored per puzzle and checked against its ``eval.jsonl``.

    ``until`` keeps the steps up to it (it must be an evaluated step): a run that went on to look for its
    plateau gives the same outcome at the grid's shorter horizon as before it went on.
    """
    summary = json.loads((run_dir / "summary.json").read_text())
    last = math.inf if until is None else until
    logged = {row["step"]: row for _, row in iter_jsonl(run_dir / "eval.jsonl") if row["step"] <= last}
    metrics = [row for _, row in iter_jsonl(run_dir / "metrics.jsonl") if row["step"] <= last]
    if until is not None and until not in logged:
        raise BGPOError(f"{run_dir}: no evaluation at step {until} in eval.jsonl; run it to {until} steps with "
                        "evaluations that land on it")
    if any("update_positions" not in m for m in metrics):
        raise BGPOError(f"{run_dir}: metrics.jsonl has no update_positions (a run older than the grid's "
                        "compute accounting); rerun it")
    cum_flops = np.cumsum([step_flops(m, n_params) for m in metrics])
    cum_cpu = np.cumsum([m["rollout_s"] + m["old_s"] + m["update_s"] for m in metrics])
    steps, rows = [], []
    for _, row in iter_jsonl(run_dir / "eval_completions.jsonl.gz"):
        if row["step"] > last:
            continue
        scored = completion_scores(row["completions"], pool, task)
        metric = task.primary_metric
        if abs(scored[0].mean() - logged[row["step"]][metric]) > 1e-9:
            raise BGPOError(f"{run_dir}: step {row['step']}: completions score {scored[0].mean():.6f}, eval.jsonl "
                            f"says {logged[row['step']][metric]:.6f}; the logs disagree")
        steps.append(row["step"])
        rows.append(scored)
    if not rows:
        raise BGPOError(f"{run_dir}: no eval_completions.jsonl.gz rows; rerun with trainer.eval_completions=true")
    steps_a = np.array(steps)
    return Run(summary["arm"], summary["objective"], int(summary["n_t"]), summary.get("reward", "verified"),
               int(summary["seed"]), steps_a, *(np.stack([r[k] for r in rows]) for k in range(4)),
               cum_flops[steps_a - 1], cum_cpu[steps_a - 1])


def drift(run: Run) -> np.ndarray | None:
    """Per-puzzle least-squares slope of the evaluations in the last ``DRIFT_STEPS`` steps, per ``DRIFT_STEPS``
    steps: ``DRIFT_STEPS * sum_k w_k x_k`` with ``w_k = (s_k - mean s) / sum_j (s_j - mean s)^2`` over evaluation
    steps ``s_k``. Linear in the scores, so the paired machinery applies to it as to a score. None with fewer
    than 3 evaluations in the window."""
    keep = run.steps >= run.steps[-1] - DRIFT_STEPS
    if keep.sum() < 3:
        return None
    x = run.steps[keep].astype(float) - run.steps[keep].mean()
    return DRIFT_STEPS * (x / (x ** 2).sum()) @ run.scores[keep]


def _interp(x: np.ndarray, curve: np.ndarray, at: float) -> np.ndarray:
    """Per-puzzle linear interpolation of an evaluation curve ``curve`` (points, puzzles) at ``x = at``."""
    k = int(np.searchsorted(x, at))
    if k == 0:
        return curve[0]
    if k >= len(x):
        return curve[-1]
    w = (at - x[k - 1]) / (x[k] - x[k - 1])
    return (1 - w) * curve[k - 1] + w * curve[k]


def at_compute(run: Run, initial: np.ndarray, budgets: list[float], axis: str) -> np.ndarray:
    """Per-puzzle score of ``run`` averaged over compute ``budgets`` (the warm start sits at compute 0)."""
    x = np.concatenate([[0.0], getattr(run, axis)])
    curve = np.vstack([initial[None], run.scores])
    if budgets[-1] > x[-1] * (1 + 1e-9):
        raise BGPOError(f"{run.arm} seed {run.seed} spent {x[-1]:.3g} {axis}, less than the budget {budgets[-1]:.3g}")
    return np.mean([_interp(x, curve, b) for b in budgets], axis=0)


def _compare(first: str, second: str, a: np.ndarray, b: np.ndarray, kind: str) -> dict:
    """Paired comparison ``first - second`` of (seeds, puzzles) arrays ``a - b``: t over per-seed means,
    two-way bootstrap over seeds and puzzles."""
    diff = a - b
    t = t_interval(diff.mean(axis=1))
    mean, lo, hi = bootstrap(diff)
    return {"comparison": f"{first} - {second}", "first": first, "second": second, "kind": kind,
            "seeds": int(diff.shape[0]), "mean": mean, "se": t["se"],
            "t_ci95": t["ci"], "bootstrap_ci95": [lo, hi], "p": t["p"], "per_seed": diff.mean(axis=1).tolist()}


def _paired(runs: dict[str, dict[int, Run]], a: str, b: str) -> list[int]:
    return sorted(set(runs[a]) & set(runs[b]))


def grid_outcome(runs: list[Run], initial: np.ndarray, initial_parts: tuple[np.ndarray, np.ndarray, np.ndarray],
                 pool: list[dict], metric: str, teacher: np.ndarray | None = None) -> dict:
    """The outcome of a grid's finished runs (module docstring). ``initial`` and ``initial_parts`` are the
    warm start's per-puzzle score and (right naked singles, right guesses, answered) as
    :func:`completion_scores` gives them; ``teacher``: the teacher's expected score per puzzle."""
    by: dict[str, dict[int, Run]] = {}
    for r in runs:
        by.setdefault(r.arm, {})[r.seed] = r
    firsts = {a: next(iter(rs.values())) for a, rs in by.items()}
    meta = {a: {"objective": r.objective, "n_t": r.n_t, "reward": r.reward} for a, r in firsts.items()}
    # the reader's order: BGPO by n_t, the other objectives, then the random-reward controls
    by = {a: by[a] for a in sorted(by, key=lambda a: (meta[a]["reward"] != "verified", meta[a]["objective"] != "bgpo",
                                                      meta[a]["n_t"], a))}

    def last(arm: str, seeds: list[int], what: str = "scores") -> np.ndarray:  # (seeds, puzzles)
        return np.stack([by[arm][s].last(getattr(by[arm][s], what)) for s in seeds])

    controls = {m["n_t"]: a for a, m in meta.items() if m["reward"] == "shuffled" and m["objective"] == "bgpo"}
    verified = [a for a, m in meta.items() if m["reward"] == "verified"]
    arms = {}
    for a, rs in by.items():
        seeds = sorted(rs)
        final = last(a, seeds).mean(axis=1)
        delta = final - initial.mean()
        t = t_interval(delta)
        arms[a] = {**meta[a], "seeds": seeds, "final": final.tolist(), "delta_vs_warm": delta.tolist(),
                   "delta_mean": t["mean"], "delta_se": t["se"],
                   "steps": int(max(r.steps[-1] for r in rs.values())),
                   "last_steps": [int(s) for s in next(iter(rs.values())).steps[-LAST:]],
                   "flops": float(np.mean([r.flops[-1] for r in rs.values()])),
                   "cpu_s": float(np.mean([r.cpu_s[-1] for r in rs.values()])),
                   "answered": float(last(a, seeds, "answered").mean())}
        control = controls.get(meta[a]["n_t"]) if meta[a]["objective"] == "bgpo" else None
        if a in verified and control and _paired(by, a, control):
            both = _paired(by, a, control)
            vs = (last(a, both) - last(control, both)).mean(axis=1)
            arms[a]["random_control"] = control
            arms[a]["delta_vs_random"] = vs.tolist()
            t_vs = t_interval(vs)
            arms[a]["delta_vs_random_mean"], arms[a]["delta_vs_random_se"] = t_vs["mean"], t_vs["se"]
    bgpo = [a for a in verified if meta[a]["objective"] == "bgpo"]
    best = max(bgpo, key=lambda a: arms[a]["delta_mean"]) if bgpo else None

    # the family of per-step comparisons, Holm-adjusted together
    family = []
    for a in by:
        seeds = sorted(by[a])
        family.append(_compare(a, "warm start", last(a, seeds), np.tile(initial, (len(seeds), 1)), "vs warm start"))
    for a in verified:
        if "random_control" in arms[a]:
            both = _paired(by, a, arms[a]["random_control"])
            family.append(_compare(a, arms[a]["random_control"], last(a, both),
                                   last(arms[a]["random_control"], both), "vs matched control"))
    ordered = sorted(verified, key=lambda a: (meta[a]["objective"] != "bgpo", -meta[a]["n_t"]))
    for a, b in combinations(ordered, 2):
        both = _paired(by, a, b)
        if both:
            family.append(_compare(a, b, last(a, both), last(b, both), "arms per step"))
    if best and teacher is not None:
        seeds = sorted(by[best])
        family.append(_compare(best, TEACHER, last(best, seeds), np.tile(teacher, (len(seeds), 1)),
                               "vs teacher"))
    _resolve(family)

    # plateau: gain over the last window of evaluations
    plateau = {}
    for a, rs in by.items():
        seeds = sorted(rs)
        if min(len(r.steps) for r in rs.values()) < 2 * LAST:
            plateau[a] = None
            continue
        prev = np.stack([rs[s].scores[-2 * LAST:-LAST].mean(axis=0) for s in seeds])
        c = _compare(a, f"previous {LAST} evaluations", last(a, seeds), prev, "plateau")
        plateau[a] = {**c, "flat": c["bootstrap_ci95"][1] < FLAT_MARGIN}
    drifts = {}
    for a, rs in by.items():
        slopes = [drift(rs[s]) for s in sorted(rs)]
        drifts[a] = None if any(v is None for v in slopes) else \
            {**_compare(a, "no drift", np.stack(slopes), np.zeros((len(slopes), len(pool))), "drift"),
             "per_steps": DRIFT_STEPS}

    equal = _equal_compute(by, ordered, initial)
    cells = _cells(by, pool, initial_parts[:2], teacher)
    return {"metric": metric, "pool_size": len(pool), "warm_start": float(initial.mean()),
            "warm_start_answered": float(initial_parts[2].mean()), "best": best,
            "random_control": arms[best].get("random_control") if best else None,
            "control_nt": meta[arms[best]["random_control"]]["n_t"] if best and "random_control" in arms[best] else None,
            "random_controls": {str(n): a for n, a in controls.items()},
            "reported": f"mean of the last {LAST} evaluations of each run",
            "interval_method": "t-interval over per-seed means (95%); two-way bootstrap over seeds x puzzles (95%, "
                               "2,000 replicates); p from the t-test over seeds, Holm-adjusted within each family",
            "teacher_expected": float(teacher.mean()) if teacher is not None else None,
            "arms": arms, "comparisons": family, "plateau": plateau, "drift": drifts,
            "equal_compute": equal, "cells": cells}


def _resolve(family: list[dict]) -> None:
    """Holm-adjust a family of comparisons in place and mark which are resolved."""
    for c, adj in zip(family, holm([c["p"] for c in family])):
        c["p_holm"] = adj
        lo, hi = c["bootstrap_ci95"]
        c["resolved"] = bool(adj is not None and adj < 0.05 and (lo > 0 or hi < 0))


def _equal_compute(by: dict[str, dict[int, Run]], verified: list[str], initial: np.ndarray) -> dict:
    """Every verified arm (in the order they are compared) scored at the compute the cheapest one spent by its
    last evaluations, per axis. Core-seconds differ from run to run, so the budgets are scaled down, where
    needed, until the run that spent least of all reaches the last of them: no score is extrapolated."""
    out = {}
    if len(verified) < 2:  # every run has at least one evaluation (load_run refuses one without)
        return out
    for axis in ("flops", "cpu_s"):
        spent = {a: np.mean([getattr(r, axis)[-1] for r in by[a].values()]) for a in verified}
        cheapest = min(spent, key=spent.get)
        m = min(LAST, min(len(r.steps) for r in by[cheapest].values()))  # its last (up to 3) evaluations
        budgets = np.mean([getattr(r, axis)[-m:] for r in by[cheapest].values()], axis=0)
        least = min(getattr(r, axis)[-1] for a in verified for r in by[a].values())
        budgets = (budgets * min(1.0, least / budgets[-1])).tolist()
        scores = {a: {s: at_compute(r, initial, budgets, axis) for s, r in by[a].items()} for a in verified}
        family = []
        for a, b in combinations(verified, 2):
            both = sorted(set(scores[a]) & set(scores[b]))
            if both:
                family.append(_compare(a, b, np.stack([scores[a][s] for s in both]),
                                       np.stack([scores[b][s] for s in both]), f"arms at equal {axis}"))
        _resolve(family)
        out[axis] = {"cheapest": cheapest, "budgets": budgets,
                     "score": {a: float(np.mean([v.mean() for v in scores[a].values()])) for a in verified},
                     "spent": {a: float(v) for a, v in spent.items()}, "comparisons": family}
    return out


def _cells(by: dict[str, dict[int, Run]], pool: list[dict], initial_cells: tuple[np.ndarray, np.ndarray],
           teacher: np.ndarray | None) -> dict | None:
    """Accuracy on naked-single blanks and on guessed blanks: teacher, warm start, each arm (mean over seeds)."""
    from bgpo.tasks.sudoku import candidates, naked_singles

    if "puzzle" not in pool[0]:
        return None
    n_single = sum(sum(naked_singles(e["puzzle"])) for e in pool)
    n_guess = sum(e["puzzle"].count("0") for e in pool) - n_single
    guess_expected = sum(1 / len(candidates(e["puzzle"], i)) for e in pool for i, ch in enumerate(e["puzzle"])
                         if ch == "0" and len(candidates(e["puzzle"], i)) > 1)
    rows = {TEACHER: {"singles": 1.0, "guesses": guess_expected / n_guess}} if teacher is not None else {}
    rows["warm start"] = {"singles": float(initial_cells[0].sum() / n_single),
                          "guesses": float(initial_cells[1].sum() / n_guess)}
    for a, rs in by.items():
        rows[a] = {"singles": float(np.mean([r.last(r.singles).sum() / n_single for r in rs.values()])),
                   "guesses": float(np.mean([r.last(r.guesses).sum() / n_guess for r in rs.values()]))}
    return {"blanks": {"singles": int(n_single), "guesses": int(n_guess)}, "accuracy": rows}


def interval(ci: list[float] | None) -> str:
    """A 95% interval of fractions in points, ``[+3.5, +5.3]`` (``—`` where there is none, as with one seed)."""
    return "—" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]".replace("-", "−")


def points(c: dict) -> str:
    """A comparison's mean and bootstrap interval in points: ``+4.4 [+3.5, +5.3]``."""
    return f"{100 * c['mean']:+.1f} ".replace("-", "−") + interval(c["bootstrap_ci95"])


def in_words(c: dict, label: Callable[[str], str] = str, named: bool = True) -> str:
    """A comparison in words: (its two sides,) mean and bootstrap interval, resolved or not."""
    text = f"{points(c).replace(' [', ' points [')}, {'resolved' if c['resolved'] else 'not resolved'}"
    return f"{label(c['first'])} − {label(c['second'])}: {text}" if named else text


def every_comparison(outcome: dict) -> list[dict]:
    """The comparisons at equal steps, then those at equal compute (FLOPs, core-seconds)."""
    return outcome["comparisons"] + [c for e in outcome["equal_compute"].values() for c in e["comparisons"]]


def comparison(outcome: dict, first: str, second: str, kind: str) -> dict | None:
    """The comparison ``first - second`` of ``kind`` (None where the grid made none, e.g. an arm without runs)."""
    return next((c for c in every_comparison(outcome) if (c["first"], c["second"], c["kind"]) == (first, second, kind)),
                None)


def comparisons_table(outcome: dict, kinds: tuple[str, ...], label: Callable[[str], str] = str) -> pd.DataFrame:
    """The comparisons of ``kinds`` (``kind`` of the per-step ones or of those at equal compute, e.g.
    ``"vs matched control"``, ``"arms at equal flops"``), in points: mean ± SE over seeds, the t-interval, the
    bootstrap over seeds and puzzles, Holm's p within its family, resolved or not. ``label`` names an arm
    for the reader (the warm start and the teacher keep their names)."""
    rows = []
    for c in every_comparison(outcome):
        if c["kind"] not in kinds:
            continue
        se = "" if c["se"] is None else f" ± {100 * c['se']:.1f}"
        rows.append({"comparison": f"{label(c['first'])} − {label(c['second'])}", "seeds": c["seeds"],
                     "mean ± SE (points)": f"{100 * c['mean']:+.1f}".replace("-", "−") + se,
                     "t 95% CI": interval(c["t_ci95"]), "bootstrap 95% CI": interval(c["bootstrap_ci95"]),
                     "Holm p": "—" if c.get("p_holm") is None else f"{c['p_holm']:.3f}",
                     "resolved": "yes" if c["resolved"] else "no"})
    return pd.DataFrame(rows)


def arms_table(outcome: dict, label: Callable[[str], str] = str) -> pd.DataFrame:
    """Per arm: seeds, reported score (%), change from the warm start with its two-way bootstrap interval
    (points), the plateau: the last window minus the one before, with its interval, and flat or not, and the
    drift (points per ``DRIFT_STEPS`` steps) with its interval."""
    warm = {c["first"]: c for c in outcome["comparisons"] if c["kind"] == "vs warm start"}
    rows = []
    for a, arm in outcome["arms"].items():
        plateau, slope = outcome["plateau"].get(a), outcome["drift"].get(a)
        rows.append({"arm": label(a), "seeds": len(arm["seeds"]), "score (%)": f"{100 * np.mean(arm['final']):.1f}",
                     "vs warm start, 95% CI (points)": points(warm[a]),
                     f"last {LAST} − previous {LAST}, 95% CI": "—" if plateau is None else points(plateau),
                     "flat": "—" if plateau is None else ("yes" if plateau["flat"] else "no"),
                     f"drift per {DRIFT_STEPS} steps, 95% CI": "—" if slope is None else points(slope)})
    return pd.DataFrame(rows)


def cells_table(outcome: dict, label: Callable[[str], str] = str) -> pd.DataFrame:
    """Per policy: accuracy (%) on the blanks the givens decide alone (naked singles) and on the blanks the
    imperfect teacher guesses, each policy at its reported score (mean over seeds)."""
    cells = outcome["cells"]
    n = cells["blanks"]
    return pd.DataFrame([{"policy": label(p), f"naked singles ({n['singles']:,} blanks)": f"{100 * v['singles']:.1f}",
                          f"guessed blanks ({n['guesses']:,})": f"{100 * v['guesses']:.1f}"}
                         for p, v in cells["accuracy"].items()])


def curves(runs: list[Run], initial: np.ndarray) -> pd.DataFrame:
    """Tidy evaluation curves (warm start at step 0 and compute 0): arm, seed, step, flops, cpu_s, score."""
    rows = []
    for r in runs:
        rows.append({"arm": r.arm, "n_t": r.n_t, "objective": r.objective, "reward": r.reward, "seed": r.seed,
                     "step": 0, "flops": 0.0, "cpu_s": 0.0, "score": float(initial.mean())})
        rows += [{"arm": r.arm, "n_t": r.n_t, "objective": r.objective, "reward": r.reward, "seed": r.seed,
                  "step": int(s), "flops": float(f), "cpu_s": float(c), "score": float(v.mean())}
                 for s, f, c, v in zip(r.steps, r.flops, r.cpu_s, r.scores)]
    return pd.DataFrame(rows)
