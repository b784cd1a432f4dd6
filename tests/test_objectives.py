"""Advantages, clipping and the three objectives (bgpo/objectives.py)."""

from __future__ import annotations

import math

import pytest
import torch

from bgpo.errors import BGPOError
from bgpo.objectives import (bgpo_loss, bgpo_ratio, build_batch, d1_loss, d1_masks, elbo_loss, group_advantages,
                             ppo_clip, prepare_old, update)
from conftest import rollout_tensors, tiny_model


def test_group_advantages_normalise_within_groups():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    a = group_advantages(r, 4)
    std = torch.tensor([1.0, 0, 0, 0]).std().item()
    torch.testing.assert_close(a[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-6))
    assert torch.equal(a[4:], torch.zeros(4))  # equal rewards: no signal
    assert abs(a[:4].sum().item()) < 1e-6
    with pytest.raises(BGPOError, match="multiple of group_size"):
        group_advantages(torch.ones(6), 4)
    with pytest.raises(BGPOError, match="group_size must be >= 2"):
        group_advantages(torch.ones(6), 1)


def test_ppo_clip_and_dual_clip_values():
    ratio = torch.tensor([0.5, 1.5, 0.5, 1.5, 10.0])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, -1.0])
    loss, clipped = ppo_clip(ratio, adv, 0.2, 3.0)
    # A>0: max(-A r, -A clip r): r=0.5 -> max(-0.5, -0.8) = -0.5 (not clipped); r=1.5 -> max(-1.5,-1.2) = -1.2
    # A<0: r=0.5 -> max(0.5, 0.8) = 0.8 (clipped); r=1.5 -> max(1.5, 1.2) = 1.5; r=10 -> min(10, 3) = 3 (dual)
    torch.testing.assert_close(loss, torch.tensor([-0.5, -1.2, 0.8, 1.5, 3.0]))
    assert clipped.tolist() == [False, True, True, False, True]
    unclipped, none = ppo_clip(ratio, adv, None)
    torch.testing.assert_close(unclipped, -adv * ratio)
    assert not none.any()


def test_bgpo_ratio_is_linear_for_positive_and_exp_for_negative_advantages():
    delta = torch.tensor([-2.0, 0.3, -2.0, 0.3])
    adv = torch.tensor([1.0, 2.0, -1.0, -0.5])
    r = bgpo_ratio(delta, adv)
    torch.testing.assert_close(r, torch.tensor([-1.0, 1.3, math.exp(-2.0), math.exp(0.3)]))


def test_bgpo_and_elbo_losses_equal_on_policy_and_bound_off_policy():
    g = torch.Generator().manual_seed(0)
    l_old = torch.randn(64, 8, generator=g, dtype=torch.float64)
    adv = torch.randn(64, generator=g, dtype=torch.float64)
    on_bgpo = sum(bgpo_loss(l_old[:, j], l_old[:, j], adv, None)[0] for j in range(8)) / 8
    on_elbo = elbo_loss(l_old, l_old, adv, None)[0]
    assert abs(on_bgpo - on_elbo) < 1e-14 and abs(on_elbo + adv.mean()) < 1e-14
    l_new = l_old + 0.5 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    for b in range(64):  # per response: BGPO loss >= ELBO loss (the objective is a lower bound)
        lb = sum(bgpo_loss(l_new[b:b + 1, j], l_old[b:b + 1, j], adv[b:b + 1], None)[0] for j in range(8)) / 8
        assert lb >= elbo_loss(l_new[b:b + 1], l_old[b:b + 1], adv[b:b + 1], None)[0] - 1e-12


def test_d1_loss_per_token_average():
    logp_old = torch.zeros(2, 4)
    logp_new = torch.log(torch.tensor([[1.0, 1.1, 1.0, 1.0], [0.5, 1.0, 1.0, 1.0]]))
    token_mask = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    loss, stats = d1_loss(logp_new, logp_old, token_mask, adv, clip_eps=0.2)
    # seq 0: tokens ratio 1.1 and 1.0 -> (-1.1 - 1.0)/2; seq 1: ratios 0.5 (clipped to 0.8 -> 0.8) and 1.0 -> (0.8 + 1)/2
    torch.testing.assert_close(loss, torch.tensor(((-2.1) / 2 + 1.8 / 2) / 2))
    assert stats["clip_frac"] == pytest.approx(0.25)


def test_d1_masks_mask_every_completion_token_and_some_prompt_tokens():
    ids, attention, response = rollout_tensors(batch=64, prompt_len=20, gen_len=5, pad=False)
    m = d1_masks(ids, response, attention, generator=torch.Generator().manual_seed(0))
    assert m[response].all()
    assert abs(m[~response].float().mean().item() - 0.15) < 0.02


def test_shape_errors_are_clear():
    with pytest.raises(BGPOError, match="shape mismatch"):
        bgpo_loss(torch.zeros(3), torch.zeros(4), torch.zeros(3))
    with pytest.raises(BGPOError, match="shape mismatch"):
        elbo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(BGPOError, match="unknown objective"):
        build_batch("grpo", *rollout_tensors(), torch.zeros(4), 2)


def test_update_requires_old_terms_and_accumulates_gradients():
    model = tiny_model()
    ids, attention, response = rollout_tensors()
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.3, 0.9]), 2)
    batch = build_batch("bgpo", ids, attention, response, adv, 3, torch.Generator().manual_seed(0))
    with pytest.raises(BGPOError, match="prepare_old"):
        update("bgpo", model, batch)
    prepare_old(model, batch, "bgpo")
    stats = update("bgpo", model, batch)
    assert stats["n_forward"] == 3 and stats["ratio"] == pytest.approx(1.0)
    grads = [p.grad.norm().item() for p in model.parameters() if p.grad is not None]
    assert len(grads) == sum(1 for _ in model.parameters()) and max(grads) > 0


@pytest.mark.parametrize("objective", ["bgpo", "elbo", "d1"])
def test_micro_batches_give_the_full_batch_gradient(objective):
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors(batch=6)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.3, 0.9, 0.2, 0.1], dtype=torch.float64), 3)
    batch = build_batch(objective, ids, attention, response, adv, 2, torch.Generator().manual_seed(0))
    prepare_old(model, batch, objective, micro_batch_size=4)
    grads = []
    for mb in (None, 4):
        model.zero_grad()
        update(objective, model, batch, micro_batch_size=mb)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("objective", ["bgpo", "d1"])
def test_packed_sequences_give_the_padded_gradient(objective):
    """Dropping the padding (cu_seqlens, the flash-attn varlen layout) changes nothing but the cost."""
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors(batch=5)
    assert (attention == 0).any()
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.3, 0.9, 0.2, 0.1], dtype=torch.float64), 3)[:5]
    batch = build_batch(objective, ids, attention, response, adv, 2, torch.Generator().manual_seed(0))
    prepare_old(model, batch, objective)
    padded_old = batch.old.clone()
    prepare_old(model, batch, objective, packed=True)
    torch.testing.assert_close(batch.old, padded_old, atol=1e-10, rtol=0)
    grads = []
    for packed in (False, True):
        model.zero_grad()
        update(objective, model, batch, packed=packed)
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=1e-8)
