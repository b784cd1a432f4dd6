"""Masking, ELBO terms, SFT loss and the LLaDA sampler (bgpo/diffusion.py)."""

from __future__ import annotations

import pytest
import torch

from bgpo.diffusion import (_gumbel_argmax, device_generator, draw_masks, elbo_term, elbo_terms, generate,
                            masked_logprobs, sft_loss, stratified_counts)
from bgpo.errors import BGPOError
from conftest import rollout_tensors, tiny_model


def test_stratified_counts_cover_one_to_L_evenly():
    L = torch.tensor([16, 16, 7, 1])
    counts = stratified_counts(L, 4, torch.Generator().manual_seed(1))
    assert counts.shape == (4, 4)
    assert ((counts >= 1) & (counts <= L[:, None])).all()
    # for L divisible by n_t the counts are k, k+4, k+8, k+12 (mod 16): one per quarter of (0, L]
    q = torch.sort((counts[:2] - 1) // 4, dim=1).values
    assert torch.equal(q, torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]]))
    assert (counts[3] == 1).all()


def test_masks_are_response_only_with_stratified_counts():
    ids, attention, response = rollout_tensors(batch=5, prompt_len=7, gen_len=12)
    masks = draw_masks(response, 8, torch.Generator().manual_seed(0))
    assert masks.shape == (5, 8, ids.shape[1]) and masks.dtype == torch.bool
    assert not (masks & ~response[:, None, :]).any()  # prompt never masked
    assert (masks.sum(-1) >= 1).all()
    # the mask ratio is uniform over draws: mean count ~ (L + 1) / 2
    many = draw_masks(response.repeat(200, 1), 4, torch.Generator().manual_seed(1)).sum(-1).float()
    assert abs(many.mean().item() - 6.5) < 0.3


def test_masks_are_reproducible_and_coupled_use_is_deterministic():
    _, _, response = rollout_tensors()
    a = draw_masks(response, 4, torch.Generator().manual_seed(3))
    b = draw_masks(response, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_elbo_term_is_mean_logprob_over_masked_positions():
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors()
    mask = draw_masks(response, 1, torch.Generator().manual_seed(0))[:, 0]
    ell, l = elbo_term(model, ids, mask, response, attention)
    logits = model(ids.masked_fill(mask, model.config.mask_token_id), attention_mask=attention).logits
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)  # (B, T)
    expected = (logp * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(l, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ell, expected * response.sum(-1), atol=1e-10, rtol=0)
    stacked = elbo_terms(model, ids, mask[:, None], response, attention)
    torch.testing.assert_close(stacked[:, 0], l)


def test_elbo_estimator_variance_falls_with_n_t():
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors(batch=2, pad=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        def estimates(n_t: int) -> torch.Tensor:
            return torch.stack([elbo_terms(model, ids, draw_masks(response, n_t, g), response, attention).mean(1)
                                for _ in range(16)])  # (16, B)
        v1, v8 = estimates(1).var(0), estimates(8).var(0)
    assert (v8 < v1 / 2).all(), (v1, v8)


def test_bad_inputs_raise_one_line_errors():
    _, _, response = rollout_tensors()
    with pytest.raises(BGPOError, match="n_t must be >= 1"):
        draw_masks(response, 0)
    with pytest.raises(BGPOError, match="no response tokens"):
        draw_masks(torch.zeros(2, 5, dtype=torch.bool), 2)
    model = tiny_model()
    prompt = torch.full((1, 4), model.config.mask_token_id)
    with pytest.raises(BGPOError, match="prompt contains the mask token"):
        generate(model, prompt, gen_length=4, steps=4, block_length=4)
    with pytest.raises(BGPOError, match="multiple of block_length"):
        generate(model, torch.full((1, 4), 20), gen_length=6, steps=6, block_length=4)


def test_sft_loss_is_finite_and_trains():
    model = tiny_model()
    ids, attention, response = rollout_tensors(batch=8, pad=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss = sft_loss(model, ids, response, attention, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)


def test_generate_fills_response_and_respects_left_padding():
    model = tiny_model()
    ids, attention, _ = rollout_tensors(batch=3, prompt_len=6, gen_len=0)
    out = generate(model, ids, attention, gen_length=8, steps=8, block_length=4)
    assert out.shape == (3, 14)
    assert torch.equal(out[:, :6], ids)
    assert not (out == model.config.mask_token_id).any()
    # the unpadded prompt alone gives the same greedy completion as its padded copy in the batch
    alone = generate(model, ids[2:3, 2:], gen_length=8, steps=8, block_length=4)
    assert torch.equal(alone[0, 4:], out[2, 6:])


def test_generate_temperature_is_seeded_and_random_remasking_works():
    model = tiny_model()
    ids, attention, _ = rollout_tensors(batch=2, prompt_len=5, gen_len=0, pad=False)
    kw = dict(gen_length=8, steps=4, block_length=4, temperature=1.0)
    a = generate(model, ids, attention, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(model, ids, attention, generator=torch.Generator().manual_seed(0), **kw)
    c = generate(model, ids, attention, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    r = generate(model, ids, attention, remasking="random", generator=torch.Generator().manual_seed(0), **kw)
    assert not (r == model.config.mask_token_id).any()


def test_generate_commits_the_most_confident_token_first():
    """With one block and one token per step, each step commits exactly one position."""
    model = tiny_model()
    ids, attention, _ = rollout_tensors(batch=1, prompt_len=4, gen_len=0, pad=False)
    full = generate(model, ids, attention, gen_length=4, steps=4, block_length=4)
    # redo the first step by hand: the committed position is the argmax of the greedy confidence
    x = torch.cat([ids, torch.full((1, 4), model.config.mask_token_id)], 1)
    with torch.no_grad():
        logits = model(x).logits.double()
    logits[..., model.config.mask_token_id] = -torch.inf
    probs = torch.softmax(logits, -1)
    conf, tok = probs.max(-1)
    first = 4 + conf[0, 4:].argmax().item()
    assert full[0, first].item() == tok[0, first].item()


def test_generate_takes_an_int_seed_drawn_on_the_prompts_device():
    model = tiny_model()
    ids, attention, _ = rollout_tensors(batch=2, prompt_len=5, gen_len=0, pad=False)
    kw = dict(gen_length=8, steps=8, block_length=4, temperature=1.0)
    a = generate(model, ids, attention, generator=7, **kw)
    assert torch.equal(a, generate(model, ids, attention, generator=7, **kw))
    assert torch.equal(a, generate(model, ids, attention, generator=device_generator(7, ids.device), **kw))
    assert not torch.equal(a, generate(model, ids, attention, generator=8, **kw))
    assert device_generator(3, "cpu").device.type == "cpu"
    with pytest.raises(BGPOError, match="seed"):
        device_generator(-1, "cpu")


def test_gumbel_argmax_samples_softmax_of_logits_over_temperature():
    """Gumbel-max: P(argmax(l + T g) = v) = softmax(l / T)_v; here over 40,000 rows drawn at once."""
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64).repeat(40_000, 1)  # (K, V)
    for temperature in (0.5, 1.0):
        picks = _gumbel_argmax(logits, temperature, device_generator(0, "cpu"))
        freq = torch.bincount(picks, minlength=4).double() / len(picks)
        assert (freq - torch.softmax(logits[0] / temperature, -1)).abs().max() < 0.01, (temperature, freq)


def test_sampler_draws_noise_only_for_the_masked_positions_of_the_current_block(monkeypatch):
    """One uniform per (masked position of the block, vocabulary entry): the (B, block, V) draw is gone."""
    model = tiny_model()
    ids, attention, _ = rollout_tensors(batch=3, prompt_len=5, gen_len=0, pad=False)
    drawn = []

    import bgpo.diffusion as bd

    real = bd.uniform_noise

    def counting(shape, generator, device, dtype=torch.float32):
        drawn.append(shape)
        return real(shape, generator, device, dtype)

    monkeypatch.setattr(bd, "uniform_noise", counting)
    generate(model, ids, attention, gen_length=8, steps=8, block_length=4, temperature=1.0, generator=0)
    V = model.config.vocab_size
    # 2 blocks x 4 steps, one token committed per row and step: 4, 3, 2, 1 masked per row in a block
    assert drawn == [(3 * k, V) for k in (4, 3, 2, 1)] * 2


def test_masked_logprobs_take_the_head_at_masked_positions_only():
    """Same values as the full-logit computation; the model is asked for |M| rows, not B x T."""
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors()
    mask = draw_masks(response, 1, torch.Generator().manual_seed(0))[:, 0]
    shapes = []
    hook = model.model.transformer.ff_out.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    got = masked_logprobs(model, ids, mask, attention)
    packed = masked_logprobs(model, ids, mask, attention, packed=True)
    hook.remove()
    full = model(ids.masked_fill(mask, model.config.mask_token_id), attention_mask=attention).logits
    want = torch.log_softmax(full, -1).gather(-1, ids[..., None]).squeeze(-1) * mask
    assert shapes == [(int(mask.sum()), model.config.vocab_size)] * 2
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(packed, want, atol=1e-10, rtol=0)
