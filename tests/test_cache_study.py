"""The sampler-cache study: paired intervals, drift bookkeeping, and one tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bgpo.cache_study import StudySettings, compare, drift_by_age, run_study
from bgpo.errors import BGPOError


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


def test_rl_verdict_pairs_seeds_and_puzzles_and_says_within_noise():
    from bgpo.cache_study import rl_verdict

    rng = np.random.default_rng(1)
    rows = [{"cache": "warm", "seed": -1, "puzzle": p, "reward": 0.6} for p in range(200)]
    for cache, shift in (("none", 0.04), ("prefix", 0.04)):
        for seed in range(3):
            rows += [{"cache": cache, "seed": seed, "puzzle": p, "reward": 0.6 + shift + rng.normal(0, 0.05)}
                     for p in range(200)]
    verdict = rl_verdict(pd.DataFrame(rows))
    assert verdict["seeds"] == [0, 1, 2] and verdict["none"]["delta_vs_warm"] == pytest.approx(0.04, abs=0.01)
    assert verdict["difference"]["within_noise"]
    worse = pd.DataFrame(rows).assign(reward=lambda d: d["reward"] - 0.05 * (d["cache"] == "prefix"))
    assert not rl_verdict(worse)["difference"]["within_noise"]


def _summary(cis: dict[tuple[int, str], tuple[float, float]]) -> dict:
    return {"gen_length": 20, "comparisons": [{"block": block, "mode": mode, "rollout_accuracy": {"ci95": list(ci)},
                                               "greedy_accuracy": {"ci95": [-0.001, 0.001]}}
                                              for (block, mode), ci in cis.items()]}


def test_supported_cache_takes_the_fastest_equivalent_setting():
    from bgpo.cache_study import supported_cache

    ok = {"seeds": [0, 1, 2], "difference": {"within_noise": True}}
    both = _summary({(4, "dual"): (-0.005, 0.004), (4, "prefix"): (-0.003, 0.002)})
    assert supported_cache([both], ok)["default"] == "dual"
    out = supported_cache([_summary({(4, "dual"): (-0.02, 0.004), (4, "prefix"): (-0.003, 0.002)})], ok)
    assert out["default"] == "prefix" and "leaves" in out["reasons"]["dual"][0]
    # one block of 20: prefix and dual are one sampler, so prefix's failure there is dual's too
    single = _summary({(20, "prefix"): (-0.0102, -0.001), (20, "dual/r4"): (-0.004, 0.004)})
    out = supported_cache([both, single], ok)
    assert out["default"] == "dual/r4" and (out["cache"], out["refresh"]) == ("dual", 4)
    assert out["reasons"]["dual"] and out["reasons"]["prefix"] and out["positions_ratio"]["dual/r4"] > 3
    assert supported_cache([both], None)["default"] == "none"
    assert supported_cache([both], {**ok, "seeds": [0]})["reasons"]["dual"] == ["the RL test has 1 of 3 seeds"]
    bad_rl = {"seeds": [0, 1, 2], "difference": {"within_noise": False}}
    assert supported_cache([both], bad_rl)["default"] == "none"


def test_the_llada8b_presets_ship_the_cache_the_committed_evidence_supports():
    """The default follows the committed evidence (none without it) and, when cached, saves >= 3x positions at
    the math preset's shape, counted by running the sampler."""
    from bgpo.cache_study import OUT, RL_DIR, count_positions, rl_verdict, supported_cache
    from bgpo.config import PRESET_DIR, load_config
    from conftest import REPO

    studies = [json.loads(p.read_text()) for p in sorted((REPO / OUT).glob("**/summary.json"))]
    per_puzzle = REPO / RL_DIR / "per_puzzle.csv.gz"
    verdict = rl_verdict(pd.read_csv(per_puzzle)) if per_puzzle.is_file() else None
    choice = supported_cache(studies, verdict) if studies else {"cache": "none", "refresh": None}
    presets = sorted(PRESET_DIR.glob("llada8b-*.yaml"))
    shipped = {(load_config(p.stem).rollout.cache, load_config(p.stem).rollout.refresh) for p in presets}
    assert len(presets) == 8 and shipped == {(choice["cache"], choice["refresh"])}
    if choice["cache"] != "none":
        r = load_config("llada8b-math").rollout
        counted = count_positions(r.max_prompt_length, r.gen_length, r.steps, r.block_length, ("none", r.cache),
                                  refresh=r.refresh)
        assert counted["naive / this"].iloc[1] >= 3.0
