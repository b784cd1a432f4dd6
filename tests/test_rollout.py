"""Rollouts: groups kept whole and in the examples' order, whatever the sampler calls are made of."""

from __future__ import annotations

import torch

from bgpo.config import load_config
from bgpo.data import encode_prompts, get_task, load_examples, load_tokenizer
from bgpo.rollout import rollout
from conftest import tiny_model


def _setup(**rollout_overrides):
    cfg = load_config("tiny-countdown", [f"rollout.{k}={v}" for k, v in rollout_overrides.items()])
    task = get_task(cfg.data)
    examples = load_examples(cfg.data, "train")[:6]
    return cfg, task, examples, load_tokenizer(cfg.model)


def test_sorted_sampler_calls_return_the_rollouts_in_the_examples_order():
    cfg, task, examples, tok = _setup(batch_size=4, group_size=2, sort_by_length="true")
    lengths = encode_prompts(tok, task, examples, cfg.rollout.max_prompt_length)[1].sum(-1)
    assert len(set(lengths.tolist())) > 1  # prompts of several lengths: sorting moves them
    model = tiny_model().eval()
    ro = rollout(model, tok, task, examples, cfg.rollout, seed=0, step=0, first_prompt=0, device=torch.device("cpu"))
    assert [e["target"] for e in ro.examples] == [e["target"] for e in examples for _ in range(2)]
    # each row holds its own example's prompt, right-aligned before the response
    L = cfg.rollout.gen_length
    for i, example in enumerate(examples):
        ids, mask = encode_prompts(tok, task, [example], cfg.rollout.max_prompt_length)
        for g in range(2):
            row = ro.input_ids[2 * i + g, :-L]
            assert torch.equal(row[-ids.shape[1]:], ids[0]) and ro.attention_mask[2 * i + g, :-L].sum() == mask.sum()
    assert ro.positions > 0


def test_sorting_changes_nothing_when_one_call_takes_every_prompt():
    cfg, task, examples, tok = _setup(group_size=2, sort_by_length="true")
    plain_cfg = _setup(group_size=2)[0]
    model = tiny_model().eval()
    kw = dict(seed=0, step=0, first_prompt=0, device=torch.device("cpu"))
    a, b = rollout(model, tok, task, examples, cfg.rollout, **kw), rollout(model, tok, task, examples, plain_cfg.rollout, **kw)
    assert torch.equal(a.input_ids, b.input_ids) and a.completions == b.completions
