"""The small-scale grid: its arms, the equal-memory rule, summary maths, resume/skip of runs."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest

import bgpo.train
from bgpo.errors import BGPOError
from bgpo.experiment import (Arm, GridSettings, book_arms, equal_memory_nt, load_curves, read_jsonl, run_one,
                             summarize_run, table, unique_arms)


def test_arms_cover_every_comparison_once():
    comparisons = book_arms(elbo_nt_at_budget=1)
    names = [a.name for a in unique_arms(comparisons)]
    assert names == ["bgpo-nt1", "bgpo-nt4", "bgpo-nt16", "d1", "bgpo-nt4-random"]
    assert comparisons["equal_memory"] == [Arm("bgpo", 16), Arm("bgpo", 1)]  # ELBO at n_t=1 == BGPO on-policy
    assert comparisons["control"] == [Arm("bgpo", 4, reward="shuffled")]
    cfg = GridSettings(init_from="w").config(comparisons["control"][0], 0)
    assert cfg.rollout.reward == "shuffled" and cfg.objective.n_t == 4


def test_equal_memory_picks_largest_elbo_nt_within_bgpo_bytes():
    rows = [{"objective": "bgpo", "n_t": n, "activation_bytes": 1000 + n} for n in (1, 2, 4, 8, 16)]
    rows += [{"objective": "elbo", "n_t": n, "activation_bytes": 1000 * n} for n in (1, 2, 4, 8, 16)]
    assert equal_memory_nt(pd.DataFrame(rows), 16) == 1  # 1016 bytes: only n_t = 1 fits
    rows[4]["activation_bytes"] = 4500  # a bigger BGPO budget at n_t = 16
    assert equal_memory_nt(pd.DataFrame(rows), 16) == 4


def test_table_is_mean_sample_std_and_standard_error_over_seeds():
    summary = pd.DataFrame({"arm": ["a", "a", "a", "b"], "objective": ["bgpo"] * 3 + ["elbo"], "n_t": [4, 4, 4, 1],
                            "ppo_epochs": 1, "seed": [0, 1, 2, 0], "final_cell_accuracy": [0.2, 0.4, 0.6, 0.5]})
    t = table(summary, ["final_cell_accuracy"]).set_index("arm")
    assert t.loc["a", "final_cell_accuracy_mean"] == pytest.approx(0.4)
    assert t.loc["a", "final_cell_accuracy_std"] == pytest.approx(0.2)  # sample std of 0.2, 0.4, 0.6
    assert t.loc["a", "final_cell_accuracy_se"] == pytest.approx(0.2 / 3 ** 0.5)
    assert t.loc["a", "seeds"] == 3 and t.loc["b", "seeds"] == 1


def _fake_train(calls):
    """Stands in for bgpo.train.train: writes the logs a run of `steps` steps writes, plus weights."""
    def train(cfg, resume, output_dir):
        calls.append((cfg.objective.name, cfg.objective.n_t, cfg.trainer.seed, resume))
        out = output_dir
        ckpt = out / "checkpoints" / f"step-{cfg.trainer.steps:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text(json.dumps({"step": cfg.trainer.steps}))
        (out / "final").mkdir(exist_ok=True)
        first = len(read_jsonl(out / "metrics.jsonl")) + 1  # a resumed run appends the steps it adds
        with (out / "metrics.jsonl").open("a") as f:
            for step in range(first, cfg.trainer.steps + 1):
                f.write(json.dumps({"step": step, "reward_mean": 0.1 * step, "rollout_s": 1.0, "old_s": 0.5,
                                    "update_s": 2.0}) + "\n")
        with (out / "eval.jsonl").open("a") as f:
            f.write(json.dumps({"step": cfg.trainer.steps, "cell_accuracy": 0.6, "d1_cell_accuracy": 0.55,
                                "solved": 0.25}) + "\n")
        return out
    return train


def test_run_one_trains_once_then_skips_and_keeps_what_a_longer_run_resumes_from(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(bgpo.train, "train", _fake_train(calls))
    s = GridSettings(init_from=str(tmp_path / "sft"), steps=3)
    stale = tmp_path / "runs" / "bgpo-nt4-s1"
    stale.mkdir(parents=True)
    (stale / "metrics.jsonl").write_text('{"step": 1, "reward_mean": 9}\n')  # killed before any checkpoint
    first = run_one(s, Arm("bgpo", 4), 1, tmp_path / "runs")
    assert calls == [("bgpo", 4, 1, True)]
    assert first["final_solved"] == 0.25 and first["final_cell_accuracy"] == 0.6 and first["steps"] == 3
    assert first["train_reward_last"] == pytest.approx(0.2)  # stale row gone: mean of 0.1, 0.2, 0.3
    assert first["compute_s"] == pytest.approx(10.5)
    assert (stale / "checkpoints").exists() and (stale / "final").exists()  # policy and last state stay
    again = run_one(s, Arm("bgpo", 4), 1, tmp_path / "runs")
    assert again == first and len(calls) == 1  # finished runs are skipped
    longer = run_one(dataclasses.replace(s, steps=5), Arm("bgpo", 4), 1, tmp_path / "runs")
    assert len(calls) == 2 and longer["steps"] == 5  # run on from the kept checkpoint, not from scratch
    assert longer["wall_s"] >= first["wall_s"]  # wall time accumulates over the two sittings
    shorter = run_one(s, Arm("bgpo", 4), 1, tmp_path / "runs")  # the grid's 3-step horizon, after it went on to 5
    assert len(calls) == 2 and shorter["steps"] == 3 and shorter["wall_s"] is None
    assert shorter["compute_s"] == pytest.approx(10.5) and shorter["train_reward_last"] == pytest.approx(0.2)


def test_run_one_refuses_to_extend_a_run_without_its_checkpoint(tmp_path, monkeypatch):
    from bgpo.errors import BGPOError

    monkeypatch.setattr(bgpo.train, "train", _fake_train([]))
    s = GridSettings(init_from="sft", steps=2)
    run_one(s, Arm("d1"), 0, tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs" / "d1-s0" / "checkpoints")
    with pytest.raises(BGPOError, match="kept no checkpoint"):
        run_one(dataclasses.replace(s, steps=4), Arm("d1"), 0, tmp_path / "runs")


def test_seed_order_runs_every_arm_of_a_seed_first_and_controls_match_their_n_t():
    arms = unique_arms(book_arms(1, (1, 4, 16), control_nts=(16, 1)))
    assert [a.name for a in arms if a.reward == "shuffled"] == ["bgpo-nt16-random", "bgpo-nt1-random"]
    with pytest.raises(BGPOError, match="order is cost or seed"):
        GridSettings(init_from="sft", order="fastest").check()


def test_summarize_unfinished_run_raises(tmp_path):
    from bgpo.errors import BGPOError

    with pytest.raises(BGPOError, match="did not finish"):
        summarize_run(tmp_path, Arm("d1"), 0, ("cell_accuracy",))


def test_load_curves_prepends_the_warm_start(tmp_path, monkeypatch):
    monkeypatch.setattr(bgpo.train, "train", _fake_train([]))
    s = GridSettings(init_from="sft", steps=2)
    rows = [run_one(s, arm, 0, tmp_path / "runs") for arm in (Arm("bgpo", 1), Arm("d1"))]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    (tmp_path / "initial.json").write_text(json.dumps({"step": 0, "cell_accuracy": 0.5, "solved": 0.2}))
    train, evals = load_curves(tmp_path)
    assert len(train) == 4 and set(train["arm"]) == {"bgpo-nt1", "d1"}
    assert evals.sort_values(["arm", "step"])["solved"].tolist() == [0.2, 0.25, 0.2, 0.25]


def test_overrides_are_valid_trainer_config():
    cfg = GridSettings(init_from="some/dir", steps=7).config(Arm("elbo", 8, 4), seed=2)
    assert (cfg.objective.name, cfg.objective.n_t, cfg.objective.ppo_epochs) == ("elbo", 8, 4)
    assert cfg.trainer.seed == 2 and cfg.trainer.steps == 7 and cfg.trainer.eval_limit is None
    assert cfg.trainer.eval_steps is None  # one token per sampler step, as the papers evaluate
    assert cfg.model.init_from == "some/dir" and cfg.data.num_test == 1024


def test_bad_grid_settings_name_the_field():
    from bgpo.errors import BGPOError

    with pytest.raises(BGPOError, match="group_size=1"):
        GridSettings(group_size=1).check()
    with pytest.raises(BGPOError, match="num_test"):
        GridSettings(num_test=2000).check()  # larger than the held-out pool


def test_chapter_04_shows_the_committed_outcome_and_types_no_result_into_its_prose():
    """Results come from code: the prose of chapters 04/05 quotes no score, and chapter 04's executed outcome
    table shows outcome.json's paired changes (so an output left over from an earlier grid fails here)."""
    import re
    from pathlib import Path

    import nbformat

    from bgpo.experiment import mean_se_points

    root = Path(__file__).resolve().parents[1]
    outcome = json.loads((root / "book" / "data" / "small-scale" / "grid" / "outcome.json").read_text())
    shown = ""
    for name in ("04-small-scale.ipynb", "05-monte-carlo.ipynb"):
        cells = nbformat.read(root / "notebooks" / name, as_version=4).cells
        prose = "\n".join(c.source for c in cells if c.cell_type == "markdown")
        assert re.findall(r"\d+\.\d+ ?(?:%|points|± )", prose) == [], f"{name}: a result typed into the prose"
        if name.startswith("04"):
            shown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in cells if c.cell_type == "code"
                              for o in c.get("outputs", []))
    for arm in outcome["arms"].values():
        assert mean_se_points(arm["delta_vs_warm"]).replace("-", "−") in shown
    # the 200-step grid's section shows its committed outcome.json, row by row
    from bgpo.outcome import arms_table

    v3 = json.loads((root / "book" / "data" / "small-scale" / "grid-v3" / "outcome.json").read_text())
    for row in arms_table(v3).itertuples(index=False):
        assert f"| {row[2]} | {row[3]} | {row[4]} |" in shown, f"chapter 04 does not show grid-v3's {row[0]}"


def test_settings_name_no_machine_path_and_unknown_arms_are_refused(tmp_path, monkeypatch):
    from bgpo.errors import BGPOError
    from bgpo.experiment import relative

    monkeypatch.chdir(tmp_path)
    assert relative(tmp_path / "book" / "warm") == "book/warm" and relative("/elsewhere/x") == "/elsewhere/x"
    with pytest.raises(BGPOError, match="unknown arm"):
        GridSettings(init_from="w", arms=("bgpo-nt3-random",)).check()
