"""Policy objectives for diffusion LMs behind one interface: BGPO, the ELBO-based objective, d1.

All three share group-relative advantages (GRPO) and PPO clipping. They differ in how the
sequence likelihood ratio is estimated and, therefore, in what must be held in memory:

* ``elbo`` — ``rho = exp(mean_j delta_j)`` with ``delta_j = l_j(theta) - l_j(theta_old)``: the
  ``exp`` couples all ``n_t`` Monte Carlo samples, so all ``n_t`` graphs live until one backward.
* ``bgpo`` — a lower bound of ``A * rho`` that is a *mean of per-sample terms*
  (``1 + delta_j`` for ``A >= 0``, ``exp(delta_j)`` for ``A < 0``), back-propagated one MC sample
  at a time: peak activation memory is one sample's, whatever ``n_t``. On-policy it equals
  the ELBO objective in value and gradient.
* ``d1`` — diffu-GRPO's one-step estimate: per-token log-probabilities from a single forward with
  the completion fully masked and prompt tokens masked with probability 0.15.

Equations are those of the BGPO paper (Lin et al., 2026, §3) and of the book's derivation chapter;
clipping follows the public verl-based re-implementation (DARE), which carries the BGPO authors' code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from bgpo.config import OBJECTIVES
from bgpo.diffusion import draw_masks, elbo_term, masked_logprobs, uniform_noise
from bgpo.errors import BGPOError



def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """GRPO advantages ``A_g = (r_g - mean(r)) / (std(r) + eps)`` within each group of ``G`` rollouts.

    ``rewards`` is ``(N,)`` with the ``G`` rollouts of a prompt contiguous; ``std`` is the unbiased
    sample standard deviation (as in verl). A group whose rewards are all equal gets ``A = 0``.
    """
    if group_size < 2:
        raise BGPOError(f"group_size must be >= 2 (got {group_size}): advantages compare rollouts of one prompt")
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise BGPOError(f"rewards must be (N,) with N a multiple of group_size={group_size}, got {tuple(rewards.shape)}")
    r = rewards.view(-1, group_size).to(torch.float64)  # (prompts, G)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)
    return adv.view(-1).to(rewards.dtype)


def ppo_clip(ratio: Tensor, advantages: Tensor, clip_eps: float | None = 0.2,
             dual_clip: float | None = 3.0) -> tuple[Tensor, Tensor]:
    """Element-wise clipped surrogate loss (to minimise) and a bool tensor of clipped elements.

    ``loss = max(-A r, -A clip(r, 1-eps, 1+eps))``; for ``A < 0`` also ``min(loss, -A c)`` (dual clip).
    ``clip_eps=None`` disables clipping (``loss = -A r``).
    """
    surrogate = -advantages * ratio
    if clip_eps is None:
        return surrogate, torch.zeros_like(surrogate, dtype=torch.bool)
    clipped = -advantages * ratio.clamp(1 - clip_eps, 1 + clip_eps)
    loss = torch.maximum(surrogate, clipped)
    was_clipped = clipped > surrogate
    if dual_clip is not None:
        cap = -advantages * dual_clip
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        was_clipped = was_clipped | dual
    return loss, was_clipped


def _check(l_new: Tensor, l_old: Tensor, advantages: Tensor, dims: int) -> None:
    if l_new.shape != l_old.shape or l_new.dim() != dims or l_new.shape[0] != advantages.shape[0]:
        raise BGPOError(
            f"shape mismatch: l_new {tuple(l_new.shape)}, l_old {tuple(l_old.shape)}, advantages "
            f"{tuple(advantages.shape)}; expected l_* of {dims} dims with the batch first")


def bgpo_ratio(delta: Tensor, advantages: Tensor) -> Tensor:
    """BGPO's per-sample ratio: ``r_j = 1 + delta_j`` if ``A >= 0`` (tangent of exp at 0), else ``exp(delta_j)``.

    Then ``mean_j A r_j <= A exp(mean_j delta_j)`` in both cases, with equality at ``delta = 0``.
    ``1 + delta`` is computed directly (not as ``exp(log(1 + delta))``, which fails for ``delta <= -1``).
    """
    return torch.where(advantages >= 0, 1 + delta, torch.exp(delta))


def bgpo_loss(l_new: Tensor, l_old: Tensor, advantages: Tensor, clip_eps: float | None = 0.2,
              dual_clip: float | None = 3.0) -> tuple[Tensor, dict[str, Tensor]]:
    """BGPO loss of ONE MC sample ``j``: ``mean_b ppo_clip(r_j, A)`` with ``r_j`` from :func:`bgpo_ratio`.

    ``l_new``, ``l_old``, ``advantages`` are ``(B,)``. The full objective is the mean over ``j`` of
    this loss, ``J_BGPO = (1/n_t) sum_j A r_j`` (negated), so it can be back-propagated one ``j`` at a time.
    """
    _check(l_new, l_old, advantages, 1)
    ratio = bgpo_ratio(l_new - l_old.detach(), advantages)
    loss, clipped = ppo_clip(ratio, advantages, clip_eps, dual_clip)
    return loss.mean(), {"clip_frac": clipped.float().mean(), "ratio": ratio.detach().mean()}


def elbo_loss(l_new: Tensor, l_old: Tensor, advantages: Tensor, clip_eps: float | None = 0.2,
              dual_clip: float | None = 3.0) -> tuple[Tensor, dict[str, Tensor]]:
    """ELBO-based objective: ``rho = exp((1/n_t) sum_j delta_j)``, loss ``mean_b ppo_clip(rho, A)``.

    ``l_new``, ``l_old`` are ``(B, n_t)``. The gradient of every sample depends on all others
    through ``exp``: the ``n_t`` graphs must be kept until one backward.
    """
    _check(l_new, l_old, advantages, 2)
    ratio = torch.exp((l_new - l_old.detach()).mean(1))  # (B,)
    loss, clipped = ppo_clip(ratio, advantages, clip_eps, dual_clip)
    return loss.mean(), {"clip_frac": clipped.float().mean(), "ratio": ratio.detach().mean()}


def d1_loss(logp_new: Tensor, logp_old: Tensor, token_mask: Tensor, advantages: Tensor,
            clip_eps: float | None = 0.2, dual_clip: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """diffu-GRPO (d1): per-token ratios ``exp(log p_theta(y^i) - log p_old(y^i))``, clipped per token.

    ``logp_*`` and ``token_mask`` are ``(B, T)``; the loss is the mean over completion tokens of each
    sequence, then over sequences (GRPO's aggregation).
    """
    if logp_new.shape != logp_old.shape or logp_new.shape != token_mask.shape or logp_new.dim() != 2:
        raise BGPOError(f"shape mismatch: logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)}, "
                        f"token_mask {tuple(token_mask.shape)}; all must be (batch, seq)")
    ratio = torch.exp((logp_new - logp_old.detach()) * token_mask)  # (B, T), 1 outside completions
    loss, clipped = ppo_clip(ratio, advantages[:, None], clip_eps, dual_clip)
    n_tokens = token_mask.sum(-1).clamp(min=1)
    per_seq = (loss * token_mask).sum(-1) / n_tokens
    n_masked = token_mask.sum().clamp(min=1)
    return per_seq.mean(), {"clip_frac": (clipped & token_mask).sum() / n_masked,
                            "ratio": (ratio.detach() * token_mask).sum() / n_masked}


def d1_masks(input_ids: Tensor, response_mask: Tensor, attention_mask: Tensor | None = None,
             prompt_mask_prob: float = 0.15, generator: torch.Generator | None = None) -> Tensor:
    """d1's one-step masking: every completion token masked, each prompt token w.p. ``prompt_mask_prob``."""
    real = torch.ones_like(response_mask) if attention_mask is None else attention_mask.bool()
    prompt = real & ~response_mask
    noise = uniform_noise(tuple(input_ids.shape), generator, input_ids.device)  # (B, T)
    return response_mask | (prompt & (noise < prompt_mask_prob))


@dataclass
class RolloutBatch:
    """One rollout batch, ready for :func:`update`.

    ``masks`` are the coupled MC masks (drawn once, reused for old and new policy); ``old`` holds the
    old-policy terms: ``(B, n_t)`` values ``l_j(theta_old)`` for bgpo/elbo, ``(B, T)`` token log-probs for d1.
    """

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T) 1 = real token
    response_mask: Tensor  # (B, T) bool, response positions (trailing EOS included)
    advantages: Tensor  # (B,)
    masks: Tensor  # (B, n_t, T) bool for bgpo/elbo; (B, 1, T) d1 one-step mask
    old: Tensor | None = None

    def select(self, rows: slice) -> "RolloutBatch":
        """The micro-batch of rows ``rows``."""
        return RolloutBatch(self.input_ids[rows], self.attention_mask[rows], self.response_mask[rows],
                            self.advantages[rows], self.masks[rows],
                            None if self.old is None else self.old[rows])


def draw_objective_masks(objective: str, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                         n_t: int, generator: torch.Generator | None = None) -> Tensor:
    """The objective's masks for a batch, drawn once: ``n_t`` coupled masks ``(B, n_t, T)``; d1: ``(B, 1, T)``."""
    _objective(objective)
    if objective == "d1":
        return d1_masks(input_ids, response_mask, attention_mask, generator=generator)[:, None, :]
    return draw_masks(response_mask.bool(), n_t, generator)


def build_batch(objective: str, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor,
                advantages: Tensor, n_t: int, generator: torch.Generator | None = None) -> RolloutBatch:
    """A rollout batch with the objective's masks drawn once from ``generator``."""
    masks = draw_objective_masks(objective, input_ids, attention_mask, response_mask, n_t, generator)
    return RolloutBatch(input_ids, attention_mask, response_mask.bool(), advantages, masks)


def _objective(name: str) -> str:
    if name not in OBJECTIVES:
        raise BGPOError(f"unknown objective {name!r}: choose one of {', '.join(OBJECTIVES)}")
    return name


def _terms(model: torch.nn.Module, batch: RolloutBatch, objective: str, j: int, packed: bool = False) -> Tensor:
    """The policy's term for MC sample ``j``: ``l_j`` ``(B,)`` (bgpo/elbo) or token log-probs ``(B, T)`` (d1)."""
    if objective == "d1":
        return masked_logprobs(model, batch.input_ids, batch.masks[:, 0], batch.attention_mask, packed=packed)
    return elbo_term(model, batch.input_ids, batch.masks[:, j], batch.response_mask, batch.attention_mask,
                     packed=packed)[1]


@torch.no_grad()
def prepare_old(model: torch.nn.Module, batch: RolloutBatch, objective: str,
                micro_batch_size: int | None = None, packed: bool = False) -> None:
    """Fill ``batch.old`` with the old policy's terms, under ``no_grad``, on the batch's own masks."""
    _objective(objective)
    parts = []
    for rows in _micro_batches(batch.input_ids.shape[0], micro_batch_size):
        mb = batch.select(rows)
        if objective == "d1":
            parts.append(_terms(model, mb, objective, 0, packed))
        else:
            parts.append(torch.stack([_terms(model, mb, objective, j, packed) for j in range(mb.masks.shape[1])], 1))
    batch.old = torch.cat(parts, 0)


@torch.no_grad()
def policy_shift(model: torch.nn.Module, batch: RolloutBatch, objective: str,
                 micro_batch_size: int | None = None, packed: bool = False) -> dict[str, float]:
    """How far one update moved the policy on its own rollouts (on-policy, where loss = 0 and ratio = 1).

    With ``Delta_i = l_0(theta_new; y_i) - l_0(theta_old; y_i)`` on the first MC mask (d1: the mean
    change of the masked response tokens' log-probabilities), returns ``shift_mean = mean_i Delta_i``
    and ``shift_adv = mean_i A_i Delta_i``: positive when likelihood moved toward the rollouts with
    positive advantage — the direction the objective asks for. Costs one forward without gradients.
    """
    _objective(objective)
    parts = []
    for rows in _micro_batches(batch.input_ids.shape[0], micro_batch_size):
        mb = batch.select(rows)
        new = _terms(model, mb, objective, 0, packed)
        if objective == "d1":
            tokens = (mb.masks[:, 0] & mb.response_mask).to(new.dtype)  # (b, T)
            parts.append(((new - mb.old) * tokens).sum(1) / tokens.sum(1).clamp(min=1))
        else:
            parts.append(new - mb.old[:, 0])
    delta = torch.cat(parts).double()  # (B,)
    return {"shift_mean": delta.mean().item(), "shift_adv": (batch.advantages.double() * delta).mean().item()}


def _micro_batches(n: int, size: int | None) -> list[slice]:
    size = n if size is None else size
    if size < 1:
        raise BGPOError(f"micro_batch_size must be >= 1 (got {size})")
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def update(objective: str, model: torch.nn.Module, batch: RolloutBatch, *, clip_eps: float | None = 0.2,
           dual_clip: float | None = 3.0, micro_batch_size: int | None = None, scale: float = 1.0,
           packed: bool = False, accelerator=None) -> dict[str, float]:
    """Forward + backward of one objective on a rollout batch; accumulates ``.grad`` (no optimiser step).

    * ``bgpo``: for each micro-batch and each MC sample ``j``, ``loss_j * weight / n_t`` is
      back-propagated at once, freeing that sample's graph — peak memory of ONE sample.
    * ``elbo``: for each micro-batch, all ``n_t`` terms are built into one graph, then one backward.
    * ``d1``: one forward per micro-batch on the one-step mask.

    The loss is the mean over responses (and over ``j``), multiplied by ``scale``. ``packed=True`` runs
    the model on padding-free packed sequences.

    With an ``accelerator`` (several processes), every backward goes through ``accelerator.backward``
    (fp16 loss scaling) and all but the last run under ``accelerator.no_sync``: ONE gradient
    all-reduce / reduce-scatter per call, not one per MC sample (under FSDP the unsharded gradient
    accumulates locally until then). Statistics stay on the device until the end (one host sync), and
    a non-finite loss on any rank is agreed on by all ranks before anyone raises, so none is left
    waiting in a collective.
    """
    _objective(objective)
    if batch.old is None:
        raise BGPOError("batch.old is empty: call prepare_old(model, batch, objective) before update()")
    B, n_t = batch.input_ids.shape[0], batch.masks.shape[1]
    micro = _micro_batches(B, micro_batch_size)
    units = [(rows, j) for rows in micro for j in (range(n_t) if objective == "bgpo" else [None])]
    total = torch.zeros(4, dtype=torch.float64, device=batch.input_ids.device)  # loss, clip_frac, ratio, bad

    for i, (rows, j) in enumerate(units):
        mb = batch.select(rows)
        weight = mb.input_ids.shape[0] / B / (n_t if objective == "bgpo" else 1)
        last = i == len(units) - 1
        with accelerator.no_sync(model) if accelerator is not None and not last else contextlib.nullcontext():
            if objective == "bgpo":
                loss, stats = bgpo_loss(_terms(model, mb, objective, j, packed), mb.old[:, j], mb.advantages,
                                        clip_eps, dual_clip)
            elif objective == "elbo":
                l_new = torch.stack([_terms(model, mb, objective, k, packed) for k in range(n_t)], 1)  # (b, n_t)
                loss, stats = elbo_loss(l_new, mb.old, mb.advantages, clip_eps, dual_clip)
            else:
                loss, stats = d1_loss(_terms(model, mb, objective, 0, packed), mb.old,
                                      mb.masks[:, 0] & mb.response_mask, mb.advantages, clip_eps)
            if accelerator is not None:
                accelerator.backward(loss * weight * scale)
            else:
                (loss * weight * scale).backward()
        total += torch.stack([loss.detach() * weight, stats["clip_frac"] * weight, stats["ratio"] * weight,
                              (~torch.isfinite(loss.detach())).double()])
    if accelerator is not None and accelerator.num_processes > 1:
        total[3] = accelerator.reduce(total[3:], "sum")[0]  # every rank learns of any rank's bad loss
    loss, clip_frac, ratio, bad = total.tolist()
    if bad:
        raise BGPOError(f"{objective} loss is not finite on {int(bad)} backward(s): lower the learning rate or check "
                        f"the model output")
    return {"loss": loss, "clip_frac": clip_frac, "ratio": ratio, "n_forward": float(len(micro) * (1 if objective == "d1" else n_t))}
