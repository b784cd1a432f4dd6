"""The sampler-cache study: paired intervals, drift bookkeeping, and one tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bgpo.cache_study import StudySettings, bootstrap, compare, drift_by_age, run_study
from bgpo.errors import BGPOError


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_puzzles():
    rng = np.random.default_rng(0)
    small = rng.normal(0.01, 0.1, size=(4, 64))
    large = rng.normal(0.01, 0.1, size=(4, 1024))
    m, lo, hi = bootstrap(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap(large)
    assert (hi2 - lo2) < 0.5 * (hi - lo)  # ~ 1/sqrt(16) of the width
    assert bootstrap(np.zeros((3, 10)))[1:] == (0.0, 0.0)


def test_compare_pairs_each_cached_sampler_with_none_per_seed_and_puzzle():
    rows = []
    for mode, shift in (("none", 0.0), ("prefix", 0.25)):
        for seed in (-1, 0, 1):
            for puzzle in range(5):
                rows.append({"block": 20, "mode": mode, "seed": seed, "puzzle": puzzle,
                             "reward": 0.5 + shift * (seed >= 0) + 0.01 * puzzle,
                             "elbo": None if seed < 0 else -1.0 + shift})
    (row,) = compare(pd.DataFrame(rows))
    assert row["mode"] == "prefix" and row["rollout_accuracy"]["delta"] == pytest.approx(0.25)
    assert row["greedy_accuracy"]["delta"] == pytest.approx(0.0)  # greedy rows had no shift
    assert row["elbo"]["delta"] == pytest.approx(0.25) and row["rollout_accuracy"]["per_seed"] == [0.25, 0.25]


def test_drift_by_age_averages_per_sequence_first():
    drift = pd.DataFrame([{"block": 4, "mode": "dual", "age": 1, "metric": "kl", "row": r, "value": v}
                          for r, v in ((0, 1.0), (0, 3.0), (1, 0.0))])
    (row,) = drift_by_age(drift).to_dict(orient="records")
    assert row["mean"] == pytest.approx(1.0) and row["count"] == 2  # sequence 0 averages to 2, sequence 1 is 0


def test_bad_study_settings_raise_one_line_errors():
    with pytest.raises(BGPOError, match="blocks must divide"):
        StudySettings(blocks={3: ["prefix"]}).check()
    with pytest.raises(BGPOError, match="no config.json"):
        run_study(StudySettings(init_from="nowhere", num_test=2, seeds=1), "unused", progress=False)


def test_a_tiny_study_runs_end_to_end(tmp_path):
    """From the committed warm start: 8 puzzles, one seed, one block of 20 and blocks of 4."""
    s = StudySettings(num_test=8, seeds=1, batch_size=8, elbo_n_t=2, blocks={20: ["prefix"], 4: ["prefix", "dual"]})
    summary = run_study(s, tmp_path, progress=False)
    assert json.loads((tmp_path / "summary.json").read_text())["pool_size"] == 8
    cost = pd.DataFrame(summary["cost"]).set_index(["block", "mode"])
    assert cost.loc[(4, "dual"), "positions"] < cost.loc[(4, "prefix"), "positions"] < cost.loc[(4, "none"), "positions"]
    drift = pd.read_csv(tmp_path / "drift.csv")
    assert set(drift["metric"]) == {"kl", "tv", "top1", "same_commit"} and drift["age"].min() == 1
    assert ((drift["metric"] != "kl") | (drift["mean"] >= -1e-12)).all()  # KL is never negative
    per_puzzle = pd.read_csv(tmp_path / "per_puzzle.csv.gz")
    assert len(per_puzzle) == 8 * 2 * (2 + 3)  # (greedy + 1 seed) x (block 20: 2 samplers, block 4: 3)
