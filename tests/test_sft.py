"""The SFT warm start: data encoding, held-out split, loss going down, a loadable checkpoint."""

import json

import pytest
import torch

from bgpo.errors import BGPOError
from bgpo.model import LLaDAModelLM
from bgpo.sft import SFTConfig, encode_sft, make_data, train_sft
from bgpo.tasks import get_task
from bgpo.tasks.sudoku import generate
from bgpo.tokenizer import build_tokenizer

TINY = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128}


def tiny_cfg(**kw) -> SFTConfig:
    base = dict(model_preset="tiny", model_overrides=dict(TINY), steps=40, batch_size=16, lr=3e-3,
                num_train=200, num_test=8, eval_every=1000, stop_at=None, progress=False)
    return SFTConfig(**{**base, **kw})


def test_encode_sft_puts_target_then_eos_in_the_response():
    rl = tiny_cfg().rl()
    tok, task = build_tokenizer(), get_task("sudoku", style="compact")
    examples = generate(3, seed=5)
    input_ids, attention, response = encode_sft(tok, task, examples, rl)
    L = rl.rollout.gen_length
    assert response.sum(-1).tolist() == [L] * 3
    assert response[:, -L:].all() and not response[:, :-L].any()
    assert attention.bool().all()  # compact prompts all have the same length: no padding
    assert tok.decode(input_ids[0, -L:]).startswith(f"<answer>{examples[0]['solution']}</answer>")
    assert (input_ids[0, -(L - 18):] == tok.eos_token_id).all()  # 18 target tokens, then EOS padding


def test_target_longer_than_gen_length_is_an_error():
    rl = tiny_cfg(rl_overrides=["rollout.gen_length=8", "rollout.block_length=8", "rollout.steps=8"]).rl()
    with pytest.raises(BGPOError, match="gen_length"):
        encode_sft(build_tokenizer(), get_task("sudoku", style="compact"), generate(1, seed=0), rl)


def test_held_out_pool_never_appears_in_training_and_is_the_same_for_every_seed():
    from bgpo.data import heldout_pool

    cfg = tiny_cfg(num_train=3000, num_test=64)
    pool = {e["puzzle"] for e in heldout_pool(cfg.rl().data)}
    train, test = make_data(cfg, cfg.rl())
    assert len(pool) == 1024 and len(test) == 64 and {e["puzzle"] for e in test} <= pool
    for seed in (0, 1):
        train, again = make_data(tiny_cfg(num_train=3000, num_test=64, seed=seed), cfg.rl())
        assert again == test  # the test split does not depend on the seed
        assert not pool & {e["puzzle"] for e in train}  # the whole pool is excluded, by construction
        assert 2950 < len(train) < 3000  # a few generated puzzles collide with the pool and are dropped


def test_bad_config_raises():
    with pytest.raises(BGPOError, match="stop_at"):
        tiny_cfg(stop_at=1.5).check()
    with pytest.raises(BGPOError, match="synthetic"):
        tiny_cfg(rl_overrides=["data.source=some.jsonl"]).rl()


def test_sft_loss_decreases_and_checkpoint_reloads(tmp_path):
    summary = train_sft(tiny_cfg(), tmp_path)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and summary["steps"] == 40
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10  # from ~ln(vocab) towards the digit prior
    assert set(summary["test"]) == {"cell_accuracy", "d1_cell_accuracy", "solved"}
    assert 0.0 <= summary["test"]["cell_accuracy"] <= 1.0
    model = LLaDAModelLM.from_pretrained(tmp_path)
    tok = type(build_tokenizer()).from_pretrained(tmp_path)
    ids = torch.tensor([tok("<answer>1234</answer>")["input_ids"]])
    assert tok.mask_token_id == model.config.mask_token_id
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert json.loads((tmp_path / "sft.json").read_text())["settings"]["seed"] == 0


def test_same_seed_same_warm_start(tmp_path):
    runs = [train_sft(tiny_cfg(steps=5, num_test=4, eval_every=5), tmp_path / str(i)) for i in range(2)]
    logs = [(tmp_path / str(i) / "metrics.jsonl").read_text().splitlines() for i in range(2)]
    assert [json.loads(r)["loss"] for r in logs[0]] == [json.loads(r)["loss"] for r in logs[1]]
    assert runs[0]["test"] == runs[1]["test"]
    other = train_sft(tiny_cfg(steps=5, num_test=4, eval_every=5, seed=1), tmp_path / "seed1")
    assert other["steps"] == 5 and json.loads((tmp_path / "seed1" / "metrics.jsonl").read_text().splitlines()[0])[
        "loss"] != json.loads(logs[0][0])["loss"]


def test_the_imperfect_teacher_is_imitated_and_the_truth_kept_for_testing():
    cfg = tiny_cfg(teacher="imperfect", num_train=50, num_test=4)
    rl = cfg.rl()
    train, test = make_data(cfg, rl)
    truth = {e["puzzle"]: e["solution"] for e in generate(200, seed=0)}
    assert any(e["solution"] != truth[e["puzzle"]] for e in train)  # the teacher errs...
    assert all(e["solution"][i] == truth[e["puzzle"]][i] for e in train  # ...never on a given
               for i, ch in enumerate(e["puzzle"]) if ch != "0")
    held_out = make_data(tiny_cfg(num_test=4), rl)[1]
    assert test == held_out  # evaluation keeps the true solutions
    with pytest.raises(BGPOError, match="teacher"):
        tiny_cfg(teacher="oracle").check()


def test_the_committed_warm_start_repeats_its_first_steps(tmp_path):
    """The committed warm start's command, rerun for its first 25 steps, gives the same losses."""
    from bgpo.experiment import WARM_START

    record = json.loads((WARM_START / "sft.json").read_text())
    cfg = SFTConfig(**{**record["settings"], "progress": False})
    train_sft(cfg, tmp_path, stop_after=25)
    rerun = [json.loads(r)["loss"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    committed = [json.loads(r)["loss"] for r in (WARM_START / "metrics.jsonl").read_text().splitlines()[:25]]
    assert len(rerun) == 25 and rerun == pytest.approx(committed, rel=1e-4)


def test_trained_prompts_are_what_the_warm_start_saw(tmp_path):
    from bgpo.data import prompt_key
    from bgpo.sft import trained_prompts

    cfg = tiny_cfg(steps=1, num_train=60, num_test=4, eval_every=1)
    train_sft(cfg, tmp_path)
    task = get_task("sudoku", style="compact")
    assert trained_prompts(str(tmp_path)) == {prompt_key(task, e) for e in make_data(cfg, cfg.rl())[0]}
    assert trained_prompts(str(tmp_path / "nowhere")) == frozenset()


def test_rl_never_trains_on_a_puzzle_the_warm_start_saw(tmp_path, monkeypatch):
    """Even when the RL seed stream repeats the SFT's (forced here), every SFT puzzle leaves the RL split."""
    import bgpo.data
    from bgpo.config import load_config
    from bgpo.data import prompt_key
    from bgpo.sft import trained_prompts
    from bgpo.train import training_prompts

    cfg = tiny_cfg(steps=1, num_train=60, num_test=4, eval_every=1)
    train_sft(cfg, tmp_path)
    monkeypatch.setattr(bgpo.data, "RL_DATA_SEED", 0)  # RL seed 0 now draws the SFT's own puzzles first
    rl = load_config("tiny-sudoku", [f"model.init_from={tmp_path}", "data.num_train=100", "trainer.seed=0"])
    task = get_task("sudoku", style="compact")
    kept = {prompt_key(task, e) for e in training_prompts(rl)}
    seen = trained_prompts(str(tmp_path))
    assert kept and not kept & seen and len(kept) <= 100 - len(seen)
