"""The SFT warm start: data encoding, held-out split, loss going down, a loadable checkpoint."""

import json

import pytest
import torch

from bgpo.errors import BGPOError
from bgpo.model import LLaDAModelLM
from bgpo.sft import SFTConfig, encode_sft, load_task, make_data, train_sft
from bgpo.tokenizer import build_tokenizer

TINY = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128}


def tiny_cfg(**kw) -> SFTConfig:
    base = dict(model_preset="tiny", model_overrides=dict(TINY), steps=40, batch_size=16, lr=3e-3,
                num_train=200, num_test=8, eval_every=1000, stop_accuracy=None, progress=False)
    return SFTConfig(**{**base, **kw})


def test_encode_sft_puts_target_then_eos_in_the_response():
    tok = build_tokenizer()
    task, gen = load_task("sudoku", "compact")
    examples = gen(3, seed=5, blanks=8)
    input_ids, attention, response = encode_sft(tok, task, examples, gen_length=24)
    assert response.sum(-1).tolist() == [24, 24, 24]
    assert response[:, -24:].all() and not response[:, :-24].any()
    assert attention.bool().all()  # compact prompts of one example all have the same length
    text = tok.decode(input_ids[0, -24:])
    assert text.startswith(f"<answer>{examples[0]['solution']}</answer>")
    assert (input_ids[0, -6:] == tok.eos_token_id).all()  # 18 target tokens, then EOS padding


def test_target_longer_than_gen_length_is_an_error():
    tok = build_tokenizer()
    task, gen = load_task("sudoku", "compact")
    with pytest.raises(BGPOError, match="gen_length"):
        encode_sft(tok, task, gen(1, seed=0), gen_length=10)


def test_held_out_examples_never_appear_in_training():
    train, test = make_data(tiny_cfg(num_train=3000, num_test=64))
    puzzles = {e["puzzle"] for e in train}
    assert len(test) == 64 and not any(e["puzzle"] in puzzles for e in test)
    assert all(e["puzzle"].count("0") == 10 for e in train[:50])


def test_unknown_task_and_bad_config_raise():
    with pytest.raises(BGPOError, match="unknown task"):
        load_task("chess", "compact")
    with pytest.raises(BGPOError, match="stop_accuracy"):
        tiny_cfg(stop_accuracy=1.5).check()


def test_sft_loss_decreases_and_checkpoint_reloads(tmp_path):
    summary = train_sft(tiny_cfg(), tmp_path)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 40 and summary["steps"] == 40
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10  # from ~ln(vocab) towards the digit prior
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    model = LLaDAModelLM.from_pretrained(tmp_path)
    tok = type(build_tokenizer()).from_pretrained(tmp_path)
    ids = torch.tensor([tok("<answer>1234</answer>")["input_ids"]])
    assert tok.mask_token_id == model.config.mask_token_id
    assert model(ids).logits.shape == (1, ids.shape[1], model.config.vocab_size)
    assert json.loads((tmp_path / "sft.json").read_text())["config"]["seed"] == 0
