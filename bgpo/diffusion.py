"""Masked-diffusion maths for LLaDA-style models: masking, the ELBO estimator, SFT loss, sampler.

A response ``y`` of ``L`` tokens follows a prompt ``x``. A masked copy ``y_j`` replaces a subset
``M_j`` of the *response* positions by the mask token (the prompt is never masked) and the model
predicts every masked token at once. One Monte Carlo term of the ELBO of ``log p(y | x)`` is

    ell_j = (L / |M_j|) * sum_{i in M_j} log p_theta(y^i | y_j, x)

and BGPO's ratios use the per-token-normalised term ``l_j = ell_j / L`` (mean log-probability
over the masked positions). Mask counts are stratified over ``n_t`` samples (LLaDA's likelihood
estimator) and drawn once per rollout, then reused for the old and the new policy (common random
numbers), so the difference ``l_j(theta) - l_j(theta_old)`` has low variance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bgpo.config import CACHE_MODES
from bgpo.errors import BGPOError
from bgpo.model import KVCache


def model_config(model: torch.nn.Module) -> object:
    """The model's config, looking through DDP/FSDP-style wrappers (``.module``)."""
    return getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)


def _mask_id(model: torch.nn.Module, mask_id: int | None) -> int:
    if mask_id is not None:
        return mask_id
    mask_id = getattr(model_config(model), "mask_token_id", None)
    if mask_id is None:
        raise BGPOError("no mask token id: pass mask_id= or use a model whose config sets mask_token_id")
    return int(mask_id)


def device_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``: noise drawn where it is used, no host copy.

    A fixed seed repeats the same stream on the same kind of device (a CUDA generator's stream
    differs from a CPU generator's, so a run is reproducible on its own hardware, not across it).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise BGPOError(f"a generator seed must be an integer in [0, 2**63), got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def uniform_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform noise drawn on the generator's device (so seeded runs repeat), moved to ``device``."""
    if generator is None:
        return torch.rand(shape, dtype=dtype, device=device)
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def stratified_counts(response_len: Tensor, n_t: int, generator: torch.Generator | None = None) -> Tensor:
    """Mask counts for ``n_t`` coupled samples, stratified over ``1..L``.

    ``k ~ Uniform{1..L}`` once per sequence, then ``x_j = round(k + (j-1) L / n_t)`` wrapped into
    ``1..L``: the ``n_t`` masking ratios cover ``(0, 1]`` evenly, which lowers the estimator's
    variance against independent draws.
    """
    L = response_len.to(torch.float64)  # (B,)
    u = uniform_noise(tuple(L.shape), generator, L.device, torch.float64)
    return stratified_from(torch.floor(u * L) + 1, L, n_t)  # k: (B,) in 1..L


def stratified_from(k: Tensor, length: Tensor, n_t: int) -> Tensor:
    """The ``n_t`` counts ``x_j = round(k + (j-1) L / n_t)`` wrapped into ``1..L`` for given draws ``k``.

    ``k`` is ``(N,)`` and ``length`` is ``(N,)`` or a scalar; returns ``(N, n_t)``.
    """
    if n_t < 1:
        raise BGPOError(f"n_t must be >= 1 (got {n_t}): it is the number of Monte Carlo mask samples")
    k, L = k.to(torch.float64), length.to(torch.float64)
    j = torch.arange(n_t, dtype=torch.float64, device=k.device)
    x = torch.floor(k[:, None] + j[None, :] * L[..., None] / n_t + 0.5)  # (N, n_t)
    return ((x - 1) % L[..., None] + 1).long()


def draw_masks(response_mask: Tensor, n_t: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n_t`` coupled response-only masks per sequence: ``(B, T) -> (B, n_t, T)`` bool.

    Sample ``j`` masks exactly ``x_j`` (see :func:`stratified_counts`) response positions chosen
    uniformly without replacement. Draw once per rollout and reuse for every policy evaluation.
    """
    if response_mask.dim() != 2 or response_mask.dtype != torch.bool:
        raise BGPOError(f"response_mask must be a (batch, seq) bool tensor, got {tuple(response_mask.shape)} {response_mask.dtype}")
    B, T = response_mask.shape
    L = response_mask.sum(-1)  # (B,)
    if (L == 0).any():
        raise BGPOError("a sequence has no response tokens: every rollout needs gen_length >= 1 response positions")
    counts = stratified_counts(L, n_t, generator)  # (B, n_t)
    scores = uniform_noise((B, n_t, T), generator, response_mask.device)
    scores = scores.masked_fill(~response_mask[:, None, :], 2.0)  # prompt/pad positions sort last
    ranks = scores.argsort(-1).argsort(-1)  # (B, n_t, T) rank of each position among random scores
    return ranks < counts[..., None]


def masked_logprobs(
    model: torch.nn.Module, input_ids: Tensor, mask: Tensor, attention_mask: Tensor | None = None,
    mask_id: int | None = None, packed: bool = False,
) -> Tensor:
    """``log p_theta(y^i | y_masked)`` at every masked position, 0 elsewhere: ``(B, T)``.

    The model's output layer and the vocabulary softmax run only at the masked positions
    (``logits_positions=mask``): the logits are ``(|M|, V)``, never ``(B, T, V)``, so the loss head's
    memory scales with ``|M|``. ``packed=True`` drops the padding and runs the model on the
    concatenated real tokens (``cu_seqlens`` marks the sequences; a varlen attention kernel on
    CUDA), so no compute or memory is spent on padding.
    """
    if mask.shape != input_ids.shape:
        raise BGPOError(f"mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}")
    noisy = input_ids.masked_fill(mask, _mask_id(model, mask_id))
    if packed and attention_mask is not None:
        real = attention_mask.bool()  # (B, T)
        lengths = real.sum(-1)
        cu_seqlens = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (B + 1,)
        # mask[real] keeps the row-major order of input_ids[mask]
        selected = model(noisy[real][None], cu_seqlens=cu_seqlens, max_seqlen=int(lengths.max()),
                         logits_positions=mask[real][None]).logits  # (|M|, V)
    else:
        selected = model(noisy, attention_mask=attention_mask, logits_positions=mask).logits  # (|M|, V)
    if selected.dtype in (torch.float16, torch.bfloat16):
        selected = selected.float()  # the softmax in at least float32
    picked = -F.cross_entropy(selected, input_ids[mask], reduction="none")  # (|M|,)
    out = torch.zeros(input_ids.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(mask, picked)


def elbo_term(
    model: torch.nn.Module, input_ids: Tensor, mask: Tensor, response_mask: Tensor,
    attention_mask: Tensor | None = None, *, mask_id: int | None = None, packed: bool = False,
) -> tuple[Tensor, Tensor]:
    """One MC sample: ``ell_j = (L/|M_j|) sum_{i in M_j} log p(y^i | y_j, x)`` and ``l_j = ell_j / L``.

    Returns ``(ell, l)``, each ``(B,)``. ``mask`` is ``(B, T)``, a subset of ``response_mask``.
    """
    if (mask & ~response_mask).any():
        raise BGPOError("a mask covers prompt or padding positions: masks must come from draw_masks(response_mask, ...)")
    n_masked = mask.sum(-1)
    if (n_masked == 0).any():
        raise BGPOError("an MC sample masks no token: each mask needs >= 1 masked response position")
    logp = masked_logprobs(model, input_ids, mask, attention_mask, mask_id, packed)  # (B, T)
    l = logp.sum(-1) / n_masked  # (B,)
    return l * response_mask.sum(-1), l


def elbo_terms(
    model: torch.nn.Module, input_ids: Tensor, masks: Tensor, response_mask: Tensor,
    attention_mask: Tensor | None = None, *, mask_id: int | None = None,
) -> Tensor:
    """All ``n_t`` normalised terms ``l_j`` in one autograd graph: ``(B, n_t, T) masks -> (B, n_t)``."""
    if masks.dim() != 3:
        raise BGPOError(f"masks must be (batch, n_t, seq), got shape {tuple(masks.shape)}")
    return torch.stack(
        [elbo_term(model, input_ids, masks[:, j], response_mask, attention_mask, mask_id=mask_id)[1]
         for j in range(masks.shape[1])], dim=1)  # (B, n_t)


def sft_loss(
    model: torch.nn.Module, input_ids: Tensor, response_mask: Tensor, attention_mask: Tensor | None = None,
    *, mask_id: int | None = None, eps: float = 1e-3, generator: torch.Generator | None = None,
) -> Tensor:
    """LLaDA's supervised fine-tuning loss (the masked-diffusion ELBO with ``1/t`` weighting).

    Per sequence ``t ~ U(eps, 1)``; each response token is masked with probability ``t``;
    ``loss = mean_b [ sum_{i masked} -log p(y^i | y_t, x) / t ] / L_b``.
    """
    B, T = input_ids.shape
    t = eps + (1 - eps) * uniform_noise((B,), generator, input_ids.device)  # (B,)
    u = uniform_noise((B, T), generator, input_ids.device)
    mask = (u < t[:, None]) & response_mask  # (B, T)
    logp = masked_logprobs(model, input_ids, mask, attention_mask, mask_id)  # (B, T)
    per_seq = -(logp / t[:, None]).sum(-1) / response_mask.sum(-1).clamp(min=1)
    return per_seq.mean()


def _transfer_schedule(n_masked: Tensor, steps: int) -> Tensor:
    """How many tokens to commit at each of ``steps`` steps: ``(B,) -> (B, steps)``, spread evenly."""
    base = n_masked // steps
    extra = n_masked % steps
    schedule = base[:, None].repeat(1, steps)
    return schedule + (torch.arange(steps, device=n_masked.device)[None, :] < extra[:, None]).long()


def _gumbel_argmax(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """``argmax(logits + temperature * g)`` with standard Gumbel ``g = -log(-log u)``: ``(K, V) -> (K,)``.

    As LLaDA's ``add_gumbel_noise`` (``exp(logits) / (-log u)^temperature``, the same argmax) in
    float64: float32 noise would tie low-probability tokens and bias sampling at long vocabularies.
    The noise is drawn on the generator's device, ``(K, V)`` float64, and turned into Gumbel in place.
    """
    g = uniform_noise(tuple(logits.shape), generator, logits.device, torch.float64)
    g = g.clamp_(min=1e-20).log_().neg_().clamp_(min=1e-20).log_().neg_()  # -log(-log u)
    return g.mul_(temperature).add_(logits).argmax(-1)


@dataclass
class SamplerStats:
    """The work of one or more sampler calls, counted: token positions run through the model (padding
    included, since the model computes it), model calls (``full`` of them over the whole sequence) and
    response tokens produced. ``positions / tokens`` is the sampler's cost per generated token."""

    positions: int = 0
    calls: int = 0
    full: int = 0
    tokens: int = 0

    @property
    def per_token(self) -> float:
        return self.positions / max(self.tokens, 1)


@dataclass
class StepView:
    """What one denoising step sees, handed to ``generate(trace=...)`` before the step commits.

    ``logits`` (K, V) float64 are the ones the step uses (cached or full), at ``wanted``'s positions of
    ``x`` (B, T); ``age`` counts steps since the cache was last refreshed (0 = a full forward);
    ``generator`` is the noise stream the commit is about to draw from (clone its state to replay it).
    """

    block: int
    step: int
    age: int
    x: Tensor
    attention: Tensor
    wanted: Tensor
    logits: Tensor
    n_commit: Tensor  # (B,) tokens this step commits per sequence
    generator: torch.Generator | None


def cache_window(cache: str, start: int, end: int, length: int, horizon: int | None) -> slice:
    """Positions a cached step runs through the model while the current block is ``[start, end)``.

    ``dual``: the block only (prefix and masked suffix both from the cache, Fast-dLLM's DualCache).
    ``prefix``: the block and the masked suffix after it (the prefix from the cache), or only the first
    ``horizon`` suffix positions, the rest of the suffix then read from the cache too (``horizon=0`` is
    ``dual``; ``None`` is Fast-dLLM's prefix cache).
    """
    if cache == "dual":
        return slice(start, end)
    return slice(start, length if horizon is None else min(length, end + horizon))


def sampler_positions(prompt_len: int, gen_length: int, steps: int, block_length: int, cache: str = "none",
                      horizon: int | None = None, refresh: int | None = None) -> int:
    """Token positions one sequence sends through the model in :func:`generate` (no early exit).

    Each block of ``S = steps / n_blocks`` steps: its full-sequence forwards (all ``S`` of them without a
    cache; the block start and every ``refresh``-th step with one) cost ``T = prompt_len + gen_length``
    positions, each other step the length of its :func:`cache_window`. The sampler counts the same sum
    as it runs (``SamplerStats``); this closed form is what `bgpo plan` prices.
    """
    check_sampler(gen_length, steps, block_length, cache, horizon, refresh)
    T, n_blocks = prompt_len + gen_length, gen_length // block_length
    per_block = steps // n_blocks
    total = 0
    for b in range(n_blocks):
        start = prompt_len + b * block_length
        w = cache_window(cache, start, start + block_length, T, horizon)
        for i in range(per_block):
            total += T if _full_step(cache, i, refresh) else w.stop - w.start
    return total


def _full_step(cache: str, i: int, refresh: int | None) -> bool:
    """Does step ``i`` of a block run the whole sequence (and refill the cache)?"""
    return cache == "none" or i == 0 or (refresh is not None and i % refresh == 0)


def check_sampler(gen_length: int, steps: int, block_length: int, cache: str = "none",
                  horizon: int | None = None, refresh: int | None = None) -> None:
    """One-line errors for sampler settings that cannot work, naming what to change."""
    if gen_length < 1 or block_length < 1 or gen_length % block_length:
        raise BGPOError(f"gen_length ({gen_length}) must be a positive multiple of block_length ({block_length})")
    n_blocks = gen_length // block_length
    if steps < n_blocks or steps % n_blocks:
        raise BGPOError(f"steps ({steps}) must be a positive multiple of the number of blocks ({n_blocks})")
    if cache not in CACHE_MODES:
        raise BGPOError(f"sampler cache must be one of {', '.join(CACHE_MODES)}; got {cache!r}")
    if horizon is not None and (cache != "prefix" or isinstance(horizon, bool) or horizon < 0):
        raise BGPOError(f"horizon={horizon!r} is the number of suffix positions a 'prefix' cache computes: a "
                        f"non-negative integer with cache 'prefix' (cache is {cache!r}), or empty")
    if refresh is not None and (cache == "none" or isinstance(refresh, bool) or refresh < 1):
        raise BGPOError(f"refresh={refresh!r} (refill the cache every k steps) needs a positive integer and a "
                        f"cache ('prefix' or 'dual'; cache is {cache!r}), or empty")


def denoise_step(logits: Tensor, block: Tensor, n_commit: Tensor, *, mask_id: int, temperature: float,
                 remasking: str, generator: torch.Generator | None) -> Tensor:
    """One LLaDA step on the current block: ``(K, V)`` logits of its K masked positions -> the new block.

    ``x0 = argmax(logits + temperature * Gumbel)`` at every masked position (greedy at 0); the
    ``n_commit[b]`` masked positions of sequence ``b`` with the highest confidence (``low_confidence``:
    the probability of x0; ``random``: uniform scores) take their x0, the others stay masked.
    """
    masked = block == mask_id  # (B, block)
    x0 = _gumbel_argmax(logits, temperature, generator) if temperature > 0 else logits.argmax(-1)  # (K,)
    if remasking == "low_confidence":
        scores = torch.softmax(logits, -1).gather(-1, x0[:, None]).squeeze(-1)  # (K,) p(x0)
    else:
        scores = uniform_noise(tuple(x0.shape), generator, logits.device, torch.float64)
    confidence = torch.full(masked.shape, -torch.inf, dtype=torch.float64, device=block.device)
    confidence[masked] = scores.to(block.device)  # (B, block), -inf where already committed
    proposal = block.clone()
    proposal[masked] = x0.to(block.device)
    rank = confidence.argsort(-1, descending=True).argsort(-1)  # (B, block)
    return torch.where((rank < n_commit[:, None]) & masked, proposal, block)


@torch.no_grad()
def generate(
    model: torch.nn.Module, prompt_ids: Tensor, prompt_attention_mask: Tensor | None = None, *,
    gen_length: int, steps: int, block_length: int = 32, temperature: float = 0.0,
    remasking: str = "low_confidence", mask_id: int | None = None, eos_id: int | None = None,
    generator: torch.Generator | int | None = None, cache: str = "none", horizon: int | None = None,
    refresh: int | None = None, eos_exit: bool = False, stats: SamplerStats | None = None,
    trace: Callable[[StepView], None] | None = None,
) -> Tensor:
    """LLaDA's semi-autoregressive sampler: ``(B, P)`` left-padded prompts -> ``(B, P + gen_length)``.

    The response starts all-mask and is split into blocks of ``block_length``; each block gets
    ``steps / n_blocks`` denoising steps with a fixed schedule: ``k`` tokens per step spread evenly
    (:func:`denoise_step`). A step takes the logits of the current block's still-masked positions
    only (``logits_positions``: (K, V), not (B, T, V)). Masks left at the end (none, by construction)
    would become EOS.

    ``cache`` (Fast-dLLM's block-wise approximate KV cache): ``none`` runs the whole sequence at every
    step (exact). ``prefix``/``dual`` run it at each block start (and every ``refresh`` steps), keeping
    every layer's keys/values; the other steps run only :func:`cache_window` (block + suffix or
    ``horizon`` of it; block only) against the cached keys/values of the rest, which are stale by the
    tokens committed since the refresh. ``refresh=1`` is exact again (the gate test).

    ``eos_exit``: after a block, a sequence whose block ended in EOS is finished: the rest of its
    response becomes EOS and it leaves the batch (the naive sampler would have denoised those blocks
    and could have put tokens after the EOS). The remaining sequences draw different noise from then
    on (fewer rows), so this changes rollouts beyond the finished ones too, in distribution not at all.

    ``generator``: an int seed draws the noise from :func:`device_generator` on the prompts' device
    (what a GPU run wants: a CPU generator's (K, V) float64 noise crosses the bus at every step); a
    ``torch.Generator`` is used where it lives; None uses the global stream. ``stats`` accumulates the
    work done (:class:`SamplerStats`); ``trace`` sees every step before it commits (:class:`StepView`).
    """
    mask_id = _mask_id(model, mask_id)
    eos_id = eos_id if eos_id is not None else getattr(model_config(model), "eos_token_id", None)
    if eos_id is None:
        raise BGPOError("no EOS id: pass eos_id= or use a model whose config sets eos_token_id")
    check_sampler(gen_length, steps, block_length, cache, horizon, refresh)
    if remasking not in ("low_confidence", "random"):
        raise BGPOError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if (prompt_ids == mask_id).any():
        raise BGPOError(f"a prompt contains the mask token id {mask_id}: remove it from the prompt text")
    B, P = prompt_ids.shape
    device = prompt_ids.device
    if generator is not None and not isinstance(generator, torch.Generator):
        generator = device_generator(generator, device)
    if prompt_attention_mask is None:
        prompt_attention_mask = torch.ones_like(prompt_ids)
    x = torch.cat([prompt_ids, torch.full((B, gen_length), mask_id, dtype=prompt_ids.dtype, device=device)], 1)
    attention = torch.cat([prompt_attention_mask, torch.ones((B, gen_length), dtype=prompt_attention_mask.dtype,
                                                             device=device)], 1)  # (B, P + L)
    T, n_blocks = P + gen_length, gen_length // block_length
    steps_per_block = steps // n_blocks
    rows = torch.arange(B, device=device)  # the sequences still being denoised
    kv = KVCache() if cache != "none" else None
    for b in range(n_blocks):
        start, end = P + b * block_length, P + (b + 1) * block_length
        if eos_exit and b > 0:
            done = x[rows, start - 1] == eos_id  # the finished block ended the response
            x[rows[done], start:] = eos_id
            rows = rows[~done]
            if len(rows) == 0:
                break
        xa, att = (x, attention) if len(rows) == B else (x[rows], attention[rows])  # (b, T)
        schedule = _transfer_schedule((xa[:, start:end] == mask_id).sum(-1), steps_per_block)  # (b, steps)
        window = cache_window(cache, start, end, T, horizon)
        age = 0
        for i in range(steps_per_block):
            wanted = torch.zeros_like(xa, dtype=torch.bool)
            wanted[:, start:end] = xa[:, start:end] == mask_id  # (b, T): only the current block's masks
            if _full_step(cache, i, refresh):
                logits = model(xa, attention_mask=att, logits_positions=wanted, kv_cache=kv).logits  # (K, V)
                age, width = 0, T
            else:
                logits = model(xa[:, window], kv_cache=kv, window=window, logits_positions=wanted[:, window]).logits
                age, width = age + 1, window.stop - window.start
            if stats is not None:
                stats.positions += len(xa) * width
                stats.calls += 1
                stats.full += width == T
            logits = logits.to(torch.float64)
            logits[:, mask_id] = -torch.inf  # never "unmask" to the mask token (a tiny model might)
            if trace is not None:
                trace(StepView(b, i, age, xa, att, wanted, logits, schedule[:, i], generator))
            xa[:, start:end] = denoise_step(logits, xa[:, start:end], schedule[:, i], mask_id=mask_id,
                                            temperature=temperature, remasking=remasking, generator=generator)
        if xa is not x:
            x[rows] = xa
    if stats is not None:
        stats.tokens += B * gen_length
    return x.masked_fill(x == mask_id, eos_id)
