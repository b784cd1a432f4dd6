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


# --- the cached sampler (Fast-dLLM's block-wise approximate KV cache) ---------------------------------

def _sampler_inputs(dtype=torch.float64):
    model = tiny_model(dtype).eval()
    ids, attention, _ = rollout_tensors(batch=3, prompt_len=6, gen_len=0)  # left-padded prompts
    return model, ids, attention


SAMPLER_KW = dict(gen_length=12, steps=12, block_length=4, temperature=0.7, generator=3)


def test_exactness_gate_cached_windows_and_refreshed_caches_reproduce_the_naive_sampler():
    """At every step of the naive sampler, a cache filled from that step's sequence gives, through the
    prefix, horizon and dual windows, the step's own logits (float64, <= 1e-10); with a refresh at every
    step, prefix and dual return the naive sampler's tokens under the same noise."""
    from bgpo.cache_study import exactness_gate

    model, ids, attention = _sampler_inputs()
    gate = exactness_gate(model, ids, attention, **SAMPLER_KW)
    assert gate["windows_checked"] == 12 * 3 and gate["max_logit_diff"] <= 1e-10
    assert gate["same_tokens"] == {"prefix": True, "dual": True}


def test_stale_cache_is_used_between_refreshes():
    """Without refresh the cached logits equal the exact ones at each block start only (age 0)."""
    model, ids, attention = _sampler_inputs()
    drift = {}

    def compare(view):
        exact = model(view.x, attention_mask=view.attention, logits_positions=view.wanted).logits.double()
        exact[:, model.config.mask_token_id] = -torch.inf
        drift[(view.block, view.step)] = (view.age, (exact - view.logits).abs().nan_to_num(0.0).max().item())

    generate(model, ids, attention, cache="dual", trace=compare, **SAMPLER_KW)
    assert all(d <= 1e-10 for age, d in drift.values() if age == 0)
    assert all(d > 1e-8 for age, d in drift.values() if age > 0)
    assert sorted({age for age, _ in drift.values()}) == [0, 1, 2, 3]


@pytest.mark.parametrize("cache,horizon,refresh", [("none", None, None), ("prefix", None, None), ("prefix", 4, None),
                                                   ("prefix", 0, 2), ("dual", None, None), ("dual", None, 2)])
def test_positions_are_counted_and_match_the_closed_form(cache, horizon, refresh):
    from bgpo.diffusion import SamplerStats, sampler_positions

    model, ids, attention = _sampler_inputs(torch.float32)
    stats = SamplerStats()
    generate(model, ids, attention, cache=cache, horizon=horizon, refresh=refresh, stats=stats, **SAMPLER_KW)
    assert stats.positions == 3 * sampler_positions(6, 12, 12, 4, cache, horizon, refresh)
    assert stats.calls == 12 and stats.tokens == 36
    # by hand: T = 18, 3 blocks of 4 steps; naive 12 x 18; dual 3 x 18 + 9 x 4; prefix: block + suffix
    by_hand = {("none", None, None): 216, ("dual", None, None): 54 + 36, ("prefix", None, None): 54 + 3 * (12 + 8 + 4),
               ("prefix", 4, None): 54 + 3 * (8 + 8 + 4), ("prefix", 0, 2): 6 * 18 + 6 * 4, ("dual", None, 2): 108 + 24}
    assert stats.positions == 3 * by_hand[(cache, horizon, refresh)]


def test_cached_sampler_runs_in_bfloat16():
    model, ids, attention = _sampler_inputs(torch.bfloat16)
    out = generate(model, ids, attention, cache="prefix", **SAMPLER_KW)
    assert out.shape == (3, 18) and not (out == model.config.mask_token_id).any()


def _eos_bias(model, bias: float):
    """Add ``bias`` to the EOS logit at every position (a hook on the output layer)."""
    eos = model.config.eos_token_id
    return model.model.transformer.ff_out.register_forward_hook(
        lambda mod, inp, out: out.index_add(-1, torch.tensor([eos]), torch.full((*out.shape[:-1], 1), bias,
                                                                                dtype=out.dtype)))


def test_eos_exit_stops_finished_sequences_and_counts_less_work():
    from bgpo.diffusion import SamplerStats

    model, ids, attention = _sampler_inputs(torch.float32)
    hook = _eos_bias(model, 50.0)
    naive, early = SamplerStats(), SamplerStats()
    a = generate(model, ids, attention, stats=naive, **SAMPLER_KW)
    b = generate(model, ids, attention, eos_exit=True, stats=early, **SAMPLER_KW)
    hook.remove()
    assert torch.equal(a, b) and (b[:, 6:] == model.config.eos_token_id).all()
    assert early.positions == 4 * 3 * 18 and naive.positions == 12 * 3 * 18  # only the first block ran
    assert early.tokens == naive.tokens == 36


def test_eos_exit_changes_nothing_when_no_block_ends_in_eos():
    model, ids, attention = _sampler_inputs()
    hook = _eos_bias(model, -50.0)
    naive = generate(model, ids, attention, **SAMPLER_KW)
    assert not (naive[:, 6:] == model.config.eos_token_id).any()
    assert torch.equal(generate(model, ids, attention, eos_exit=True, **SAMPLER_KW), naive)
    hook.remove()


@pytest.mark.parametrize("kw,match", [(dict(cache="fast"), "cache must be one of"),
                                      (dict(cache="dual", horizon=2), "horizon"),
                                      (dict(cache="none", refresh=2), "refresh"),
                                      (dict(cache="prefix", refresh=0), "refresh")])
def test_bad_cache_settings_raise_one_line_errors(kw, match):
    model, ids, attention = _sampler_inputs(torch.float32)
    with pytest.raises(BGPOError, match=match):
        generate(model, ids, attention, **{**SAMPLER_KW, **kw})


class _EOSForMarkedPrompts(torch.nn.Module):
    """Wraps a model: sequences whose prompt ends in ``marker`` predict EOS everywhere (full forwards only)."""

    def __init__(self, model, marker: int, prompt_len: int):
        super().__init__()
        self.inner, self.config, self.marker, self.prompt_len = model, model.config, marker, prompt_len

    def forward(self, x, attention_mask=None, logits_positions=None, **kw):
        out = self.inner(x, attention_mask=attention_mask, logits_positions=logits_positions, **kw)
        rows = logits_positions.nonzero()[:, 0]  # (K,) the sequence of each logits row
        marked = (x[rows, self.prompt_len - 1] == self.marker).to(out.logits.dtype)
        out.logits[:, self.config.eos_token_id] += 50.0 * marked
        return out


def test_eos_exit_compacts_the_batch_and_leaves_the_others_unchanged():
    """Greedy: the sequence that ends its first block in EOS leaves; the others finish exactly as without exit."""
    from bgpo.diffusion import SamplerStats

    model, ids, attention = _sampler_inputs()
    wrapped = _EOSForMarkedPrompts(model, marker=int(ids[1, -1]), prompt_len=6)
    kw = {**SAMPLER_KW, "temperature": 0.0}
    naive, early = SamplerStats(), SamplerStats()
    a = generate(wrapped, ids, attention, stats=naive, **kw)
    b = generate(wrapped, ids, attention, eos_exit=True, stats=early, **kw)
    assert (b[1, 6:] == model.config.eos_token_id).all() and torch.equal(a[[0, 2]], b[[0, 2]])
    assert early.positions == 3 * 4 * 18 + 2 * 8 * 18 and naive.positions == 3 * 12 * 18
