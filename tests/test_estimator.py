"""Exact ELBO by enumeration and the gradient-noise decomposition (bgpo/estimator.py)."""

from __future__ import annotations

import argparse
import copy
import itertools
import json

import pytest
import torch

from bgpo.diffusion import draw_masks, elbo_term, elbo_terms, stratified_counts
from bgpo.errors import BGPOError
from bgpo.estimator import (add_arguments, all_masks, count_schedule, decompose, draw_gradients, exact_elbo,
                            exact_offpolicy, exact_variance, gradient_noise, main, mask_tables, nested_indices)
from bgpo.objectives import RolloutBatch, bgpo_ratio, group_advantages, prepare_old, update
from conftest import rollout_tensors, tiny_model


def short_responses(lengths: tuple[int, ...], prompt_len: int = 4, seed: int = 0):
    """Rows of prompt + response with the given response lengths (right-aligned, no padding)."""
    ids, attention, _ = rollout_tensors(batch=len(lengths), prompt_len=prompt_len, gen_len=max(lengths),
                                        seed=seed, pad=False)
    response = torch.zeros_like(ids, dtype=torch.bool)
    for b, L in enumerate(lengths):
        response[b, ids.shape[1] - L:] = True
    return ids, attention, response


def mc_estimates(model, ids, attention, response, n_t: int, repeats: int, seed: int = 0) -> torch.Tensor:
    """``repeats`` independent draws of ``(1/n_t) sum_j ell_j`` per row: ``(repeats, B)``."""
    B = ids.shape[0]
    rep = lambda t: t.repeat(repeats, 1)  # row r * B + b is draw r of response b
    masks = draw_masks(rep(response), n_t, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        l = elbo_terms(model, rep(ids), masks, rep(response), rep(attention)).double()  # (repeats * B, n_t)
    return (l.mean(1) * rep(response).sum(-1)).view(repeats, B)


def test_all_masks_are_the_nonempty_subsets():
    m = all_masks(3)
    assert m.shape == (7, 3) and len({tuple(r) for r in m.tolist()}) == 7 and m.any(1).all()
    assert m[0].tolist() == [True, False, False] and m[-1].all()


def test_count_schedule_is_the_formula_of_stratified_counts():
    L = 7
    for n_t in (1, 3, 4, 8, 16):
        drawn = stratified_counts(torch.full((3000,), L), n_t, torch.Generator().manual_seed(n_t))
        schedule = count_schedule(L, n_t)
        assert {tuple(r) for r in drawn.tolist()} == {tuple(r) for r in schedule.tolist()}
        assert schedule[:, 0].tolist() == list(range(1, L + 1))  # row k - 1 starts at k


def test_enumeration_equals_a_brute_force_double_loop():
    model = tiny_model(torch.float64)
    ids, attention, response = short_responses((3,))
    positions = response[0].nonzero().squeeze(-1).tolist()
    per_count = []
    for k in range(1, 4):  # |M| ~ U{1..3}, then the positions uniformly: every subset of size k
        ells = []
        for subset in itertools.combinations(positions, k):
            mask = torch.zeros_like(response)
            mask[0, list(subset)] = True
            with torch.no_grad():
                ells.append(elbo_term(model, ids, mask, response, attention)[0].item())
        per_count.append(ells)
    mean = sum(sum(e) / len(e) for e in per_count) / 3
    second = sum(sum(x * x for x in e) / len(e) for e in per_count) / 3
    tables = mask_tables(model, ids, response, attention)
    assert exact_elbo(tables).item() == pytest.approx(mean, abs=1e-12)
    assert exact_variance(tables, 1).item() == pytest.approx(second - mean ** 2, abs=1e-12)
    assert exact_variance(tables, 1, stratified=False).item() == pytest.approx(second - mean ** 2, abs=1e-12)


def test_mc_estimator_mean_and_variance_agree_with_enumeration():
    model = tiny_model()
    ids, attention, response = short_responses((8, 5))
    tables = mask_tables(model, ids, response, attention)
    for n_t in (1, 3):
        est = mc_estimates(model, ids, attention, response, n_t, repeats=1500, seed=n_t)  # (1500, 2)
        se = est.std(0) / est.shape[0] ** 0.5
        assert ((est.mean(0) - exact_elbo(tables)).abs() < 3 * se).all()
        # sample variance of 1500 draws: relative standard error ~ sqrt(2 / 1500) ~ 4% for Gaussian terms
        torch.testing.assert_close(est.var(0), exact_variance(tables, n_t), rtol=0.15, atol=0)


def test_exact_variance_falls_with_n_t_and_stratification_helps():
    ids, attention, response = short_responses((8,))
    tables = mask_tables(tiny_model(seed=1), ids, response, attention)
    var = [exact_variance(tables, n).item() for n in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(var, var[1:]))
    assert var[0] / var[-1] > 4  # at least half the 1/n_t drop over n_t = 1 -> 8
    independent = [exact_variance(tables, n, stratified=False).item() for n in (1, 2, 4, 8)]
    assert var[0] == pytest.approx(independent[0], rel=1e-12)
    assert all(s < i for s, i in zip(var[1:], independent[1:]))


def test_mask_tables_reject_long_responses():
    ids, attention, response = short_responses((13,))
    with pytest.raises(BGPOError, match="L <= 12"):
        mask_tables(tiny_model(), ids, response, attention)


def test_offpolicy_values_are_exact_and_bgpo_is_a_lower_bound():
    old_model = tiny_model()
    new_model = copy.deepcopy(old_model)
    with torch.no_grad():
        for p in new_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ids, attention, response = short_responses((6, 6))
    adv = torch.tensor([1.3, -0.7])
    old, new = mask_tables(old_model, ids, response, attention), mask_tables(new_model, ids, response, attention)
    on = exact_offpolicy(old, old, adv, (1, 4))
    for v in (on.target, on.bgpo, on.elbo[1], on.elbo[4]):
        torch.testing.assert_close(v, adv.double(), rtol=0, atol=1e-12)
    off = exact_offpolicy(new, old, adv, (1, 2, 32))
    assert (off.gap > 0).all()
    assert ((off.elbo[32] - off.target).abs() < (off.elbo[1] - off.target).abs()).all()
    # Monte Carlo with the training code's masks and ratios agrees within 3 standard errors
    repeats, rep = 2000, lambda t: t.repeat(2000, 1)
    masks = draw_masks(rep(response), 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        delta = (elbo_terms(new_model, rep(ids), masks, rep(response), rep(attention))
                 - elbo_terms(old_model, rep(ids), masks, rep(response), rep(attention))).double()  # (R * B, 2)
    a = adv.double().repeat(repeats)[:, None]
    for mc, exact in ((a * bgpo_ratio(delta, a.expand_as(delta)), off.bgpo),
                      (a * torch.exp(delta.mean(1, keepdim=True)), off.elbo[2])):
        per_draw = mc.mean(1).view(repeats, 2)
        se = per_draw.std(0) / repeats ** 0.5
        assert ((per_draw.mean(0) - exact).abs() < 3 * se).all()


def test_nested_draws_are_draws_of_the_smaller_estimator():
    assert nested_indices(4, 16) == [0, 4, 8, 12] and nested_indices(16, 16) == list(range(16))
    with pytest.raises(BGPOError, match="divide"):
        nested_indices(3, 16)
    L = torch.full((500,), 7)
    big = stratified_counts(L, 16, torch.Generator().manual_seed(0))  # (500, 16), column 0 is k
    for n in (1, 2, 4, 8):
        torch.testing.assert_close(big[:, nested_indices(n, 16)], count_schedule(7, n)[big[:, 0] - 1])


def synthetic_batches(model, prompts: int = 2, group: int = 4, gen_len: int = 8):
    """Rollout batches of random tokens with random rewards: ``batches(i)`` as gradient_noise wants them."""
    def batch(i: int):
        ids, attention, response = rollout_tensors(batch=prompts * group, prompt_len=5, gen_len=gen_len, seed=i)
        rewards = torch.rand(prompts * group, generator=torch.Generator().manual_seed(100 + i))
        return ids, attention, response, group_advantages(rewards, group)
    return batch


def test_draw_gradients_match_update_and_elbo_equals_bgpo_on_policy():
    model = tiny_model()
    ids, attention, response, adv = synthetic_batches(model)(0)
    adv[:4] = 0  # a group with equal rewards: left out, the 1/N kept
    grads = draw_gradients(model, (ids, attention, response, adv), (1, 2, 4),
                           generator=torch.Generator().manual_seed(3))
    # the same draw by hand: update() on all rows with the nested n_t = 2 masks
    masks = draw_masks(response[4:], 4, torch.Generator().manual_seed(3))
    full = torch.zeros((8, 4, ids.shape[1]), dtype=torch.bool)
    full[4:], full[:4, :, -1] = masks, True  # zero-advantage rows: any mask, they contribute nothing
    batch = RolloutBatch(ids, attention, response, adv, full[:, [0, 2]])
    prepare_old(model, batch, "bgpo")
    update("bgpo", model, batch)
    by_hand = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads[("bgpo", 2)], by_hand, rtol=1e-5, atol=1e-7)
    for n in (1, 2, 4):
        torch.testing.assert_close(grads[("elbo", n)], grads[("bgpo", n)], rtol=1e-4, atol=1e-7)


def test_decompose_recovers_known_variances():
    g = torch.Generator().manual_seed(0)
    K, R, D = 400, 3, 64
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    batch_effect = 0.5 * torch.randn(K, 1, D, generator=g, dtype=torch.float64)  # E||.||^2 = 0.25 D = 16
    mask_noise = torch.randn(K, R, D, generator=g, dtype=torch.float64)  # E||.||^2 = D = 64
    grads = mean + batch_effect + mask_noise
    out = decompose(grads, mean.expand(K, D))
    assert out["mask_var"] == pytest.approx(64, rel=0.05)
    assert out["rollout_var"] == pytest.approx(16, rel=0.15)
    assert out["mean_sq"] == pytest.approx((mean @ mean).item(), rel=0.1)
    assert out["snr"] == pytest.approx((mean @ mean).item() / 80, rel=0.15)
    with pytest.raises(BGPOError, match=">= 2 rollout batches"):
        decompose(grads[:1], mean[None])


def test_gradient_noise_records_and_mask_noise_falls_with_n_t():
    torch.manual_seed(0)
    model = tiny_model()
    records = gradient_noise(model, synthetic_batches(model), n_t_values=(1, 4, 16), n_batches=2, n_draws=4)
    assert len(records) == 6
    by = {(r["objective"], r["n_t"]): r for r in records}
    for n in (1, 4, 16):
        assert by[("elbo", n)]["mask_var"] == pytest.approx(by[("bgpo", n)]["mask_var"], rel=1e-3)
        r = by[("bgpo", n)]
        assert r["total_var"] == pytest.approx(r["mask_var"] + r["rollout_var"])
        assert -1 <= r["cosine_to_reference"] <= 1 and r["sequences"] == 8
    mask = [by[("bgpo", n)]["mask_var"] for n in (1, 4, 16)]
    assert mask[0] > 2 * mask[1] and mask[1] > 2 * mask[2] > 0  # roughly 1/n_t: at least half of each 4x drop
    with pytest.raises(BGPOError, match="objectives"):
        gradient_noise(model, synthetic_batches(model), objectives=("d1",))


def test_task_batches_are_the_trainers_rollouts():
    from bgpo.config import load_config
    from bgpo.estimator import task_batches

    cfg = load_config("tiny-sudoku", ["rollout.prompts_per_step=2", "rollout.group_size=2", "rollout.gen_length=8",
                                      "rollout.block_length=8", "rollout.steps=2"])
    batches = task_batches(tiny_model(), cfg)
    ids, attention, response, adv = batches(0)
    assert ids.shape[0] == 4 and response.sum(-1).tolist() == [8] * 4 and adv.shape == (4,)
    assert not torch.equal(ids, batches(1)[0])  # another batch: other prompts
    with pytest.raises(BGPOError, match="equal rewards"):  # a random model never solves sudoku: no gradient
        gradient_noise(tiny_model(), batches, n_t_values=(1,), objectives=("bgpo",))


def test_cli_writes_and_updates_records(tmp_path, monkeypatch):
    import bgpo.estimator

    monkeypatch.setattr(bgpo.estimator, "task_batches", lambda model, cfg, seed: synthetic_batches(model))
    tiny_model().save_pretrained(tmp_path / "model")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "variance.json"
    argv = ["--checkpoint", str(tmp_path / "model"), "--label", "warm_start", "--out", str(out),
            "--n-t", "1,2", "--batches", "2", "--draws", "2"]
    assert main(parser.parse_args(argv)) == 0
    assert main(parser.parse_args(argv[:3] + ["end_of_rl"] + argv[4:])) == 0
    assert main(parser.parse_args(argv)) == 0  # same label again: replaced, not appended
    records = json.loads(out.read_text())
    assert len(records) == 8 and {r["checkpoint"] for r in records} == {"warm_start", "end_of_rl"}
    assert set(records[0]) >= {"objective", "n_t", "mask_var", "rollout_var", "total_var", "snr",
                               "cosine_to_reference", "checkpoint"}
    with pytest.raises(BGPOError, match="comma-separated integers"):
        main(parser.parse_args(argv + ["--n-t", "1,x"]))
