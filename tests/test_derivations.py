"""The paper's three claims about the BGPO objective, checked in float64 on a tiny real LLaDA.

1. Bound: off-policy, BGPO's objective is <= the ELBO-based objective, for both advantage signs.
2. Equivalence: on-policy (theta = theta_old) value and every parameter's gradient are equal.
3. Linearity: gradients accumulated one MC sample at a time equal the one-graph gradient of the bound.
"""

from __future__ import annotations

import torch

from bgpo.diffusion import elbo_terms
from bgpo.objectives import bgpo_loss, build_batch, elbo_loss, group_advantages, prepare_old, update
from conftest import rollout_tensors, tiny_model

N_T = 4


def _setup(seed: int = 0):
    model = tiny_model(torch.float64, seed=seed)
    ids, attention, response = rollout_tensors(batch=6, seed=seed)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.9, 0.4], dtype=torch.float64)
    adv = group_advantages(rewards, 3)
    assert (adv > 0).any() and (adv < 0).any()
    batch = build_batch("bgpo", ids, attention, response, adv, N_T, torch.Generator().manual_seed(seed))
    prepare_old(model, batch, "bgpo")
    return model, batch


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _perturb(model, scale: float = 0.05, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_bound_holds_off_policy_for_both_advantage_signs():
    model, batch = _setup()
    _perturb(model)
    with torch.no_grad():
        l_new = elbo_terms(model, batch.input_ids, batch.masks, batch.response_mask, batch.attention_mask)
    delta = l_new - batch.old
    assert delta.abs().max() > 1e-3  # really off-policy
    for b in range(batch.input_ids.shape[0]):
        one = slice(b, b + 1)
        j_bgpo = -sum(bgpo_loss(l_new[one, j], batch.old[one, j], batch.advantages[one], None)[0]
                      for j in range(N_T)) / N_T
        j_elbo = -elbo_loss(l_new[one], batch.old[one], batch.advantages[one], None)[0]
        assert j_bgpo <= j_elbo + 1e-12, (b, j_bgpo.item(), j_elbo.item())


def test_on_policy_value_and_gradient_are_equal():
    for clip in (None, 0.2):
        model, batch = _setup()
        model.zero_grad()
        s_bgpo = update("bgpo", model, batch, clip_eps=clip)
        g_bgpo = _grads(model)
        model.zero_grad()
        s_elbo = update("elbo", model, batch, clip_eps=clip)
        g_elbo = _grads(model)
        assert abs(s_bgpo["loss"] - s_elbo["loss"]) < 1e-12
        assert abs(s_bgpo["loss"] + batch.advantages.mean().item()) < 1e-12  # J = mean A on-policy
        assert g_bgpo.norm() > 1e-3
        assert (g_bgpo - g_elbo).abs().max() < 1e-10


def test_accumulated_per_sample_gradients_equal_one_graph_gradient():
    model, batch = _setup()
    _perturb(model)
    model.zero_grad()
    update("bgpo", model, batch, clip_eps=0.2)
    accumulated = _grads(model)
    model.zero_grad()
    l_new = elbo_terms(model, batch.input_ids, batch.masks, batch.response_mask, batch.attention_mask)
    one_graph = sum(bgpo_loss(l_new[:, j], batch.old[:, j], batch.advantages, 0.2)[0] for j in range(N_T)) / N_T
    one_graph.backward()
    assert accumulated.norm() > 1e-3
    assert (accumulated - _grads(model)).abs().max() < 1e-10
