"""The estimators, measured exactly: the ELBO by enumeration, the policy gradient's noise budget.

**The exact ELBO of a short response.** One Monte Carlo term of the book's estimator of
``log p(y | x)`` for a response of ``L`` tokens is ``ell(M) = L * l(M)`` with

    l(M) = (1/|M|) sum_{i in M} log p_theta(y^i | y_{-M}, x).

:func:`bgpo.diffusion.draw_masks` draws the count ``|M|`` from :func:`~bgpo.diffusion.stratified_counts`
and then the positions uniformly without replacement. Stratification couples the ``n_t`` counts of a
response through ONE uniform draw ``k ~ U{1..L}`` (``x_j(k) = round(k + (j-1) L / n_t)`` wrapped into
``1..L``), but ``k -> x_j(k)`` is a bijection of ``1..L``, so every single term's count is still
uniform. The estimator's expectation, the ELBO, is therefore a finite sum over the ``2^L - 1``
non-empty masks,

    ELBO(y) = E[ell] = L * (1/L) sum_{c=1}^{L} mu_c,      mu_c = C(L, c)^{-1} sum_{|M| = c} l(M),

and with ``sigma_c^2`` the variance of ``l(M)`` over the masks of size ``c`` the ``n_t``-sample
estimator ``(1/n_t) sum_j ell_j`` has, by the law of total variance over ``k`` (given ``k`` the masks
are independent), the exact variance

    Var = L^2 [ E_k (1/n_t^2) sum_j sigma^2_{x_j(k)}  +  Var_k (1/n_t) sum_j mu_{x_j(k)} ].

:func:`mask_tables` runs every mask through the model once (``L <= 12``); :func:`exact_elbo`,
:func:`exact_variance` and :func:`exact_offpolicy` (BGPO's bound against the ELBO objective for two
policies) are then sums over that table, with no Monte Carlo noise.

**The policy gradient's noise.** For a checkpoint ``theta`` (on-policy: ``theta_old = theta``), a rollout
batch ``b`` (prompts of the training split, ``G`` rollouts each, group advantages) and masks ``m``, let
``g(b, m)`` be the flattened gradient that :func:`bgpo.objectives.update` accumulates. Two sources of noise:

    mask_var    = E_b E_m || g(b, m) - E_m g(b, m) ||^2      Monte Carlo masks, same rollouts
    rollout_var = E_b || E_m g(b, m) - E g ||^2              rollouts and prompts
    total_var   = mask_var + rollout_var = E || g - E g ||^2  the noise of one step's gradient
    snr         = || E g ||^2 / total_var

:func:`gradient_noise` measures them with ``K`` rollout batches times ``R`` independent mask draws each
(:func:`decompose`: a balanced one-way random-effects design, every estimate unbiased). More MC samples
shrink only ``mask_var``; ``rollout_var`` is the floor where they stop paying off.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from bgpo.diffusion import draw_masks, masked_logprobs, stratified_from
from bgpo.errors import BGPOError
from bgpo.objectives import RolloutBatch, bgpo_ratio, group_advantages, prepare_old, update

MAX_EXACT_LENGTH = 12  # 2^12 - 1 = 4095 model rows per response
GRADIENT_OBJECTIVES = ("bgpo", "elbo")

# one rollout batch: input_ids (N, T), attention_mask (N, T), response_mask (N, T) bool, advantages (N,)
Batch = tuple[Tensor, Tensor, Tensor, Tensor]


# ---------------------------------------------------------------------------------------------
# exact ELBO by enumeration
# ---------------------------------------------------------------------------------------------
@dataclass
class MaskTable:
    """Every non-empty mask of one response and its normalised term ``l(M)``, in a fixed order.

    Row ``n`` masks the response positions whose bits are set in ``n + 1``, so two tables of the same
    response (two policies) line up mask for mask.
    """

    values: Tensor  # (2^L - 1,) float64, CPU: l(M) = mean log p over the masked positions
    sizes: Tensor  # (2^L - 1,) long, CPU: |M|

    @property
    def length(self) -> int:
        """The response length ``L``."""
        return int(self.sizes.max())


def all_masks(length: int) -> Tensor:
    """The ``2^L - 1`` non-empty subsets of ``L`` positions: ``(2^L - 1, L)`` bool, row ``n`` = bits of ``n + 1``."""
    bits = torch.arange(1, 2 ** length)[:, None] >> torch.arange(length)[None, :]  # (2^L - 1, L)
    return (bits & 1).bool()


@torch.no_grad()
def mask_tables(model: torch.nn.Module, input_ids: Tensor, response_mask: Tensor,
                attention_mask: Tensor | None = None, *, chunk_size: int = 1024) -> list[MaskTable]:
    """``l(M)`` for every non-empty mask of every response: one :class:`MaskTable` per row of ``input_ids``.

    ``input_ids``, ``response_mask`` (bool), ``attention_mask`` are ``(B, T)``; each response may have its
    own length ``L <= 12``. The ``2^L - 1`` masked copies of a row go through the model in chunks of
    ``chunk_size`` rows (:func:`bgpo.diffusion.masked_logprobs`); sums are taken in float64 and the
    tables live on the CPU, whatever the model's device.
    """
    if input_ids.dim() != 2 or response_mask.shape != input_ids.shape or response_mask.dtype != torch.bool:
        raise BGPOError(f"input_ids and response_mask must be (batch, seq), response_mask bool; got "
                        f"{tuple(input_ids.shape)} and {tuple(response_mask.shape)} {response_mask.dtype}")
    tables = []
    for b in range(input_ids.shape[0]):
        positions = response_mask[b].nonzero().squeeze(-1)  # (L,)
        L = positions.numel()
        if not 1 <= L <= MAX_EXACT_LENGTH:
            raise BGPOError(f"response {b} has {L} tokens: exact enumeration needs 1 <= L <= {MAX_EXACT_LENGTH} "
                            f"(2^L - 1 model rows); estimate longer responses by Monte Carlo")
        subsets = all_masks(L).to(input_ids.device)  # (N, L)
        masks = torch.zeros((subsets.shape[0], input_ids.shape[1]), dtype=torch.bool, device=input_ids.device)
        masks[:, positions] = subsets  # (N, T)
        values = []
        for chunk in masks.split(chunk_size):
            n = chunk.shape[0]
            attention = None if attention_mask is None else attention_mask[b].repeat(n, 1)
            logp = masked_logprobs(model, input_ids[b].repeat(n, 1), chunk, attention).double()  # (n, T)
            values.append((logp.sum(-1) / chunk.sum(-1)).cpu())
        tables.append(MaskTable(torch.cat(values), subsets.sum(-1).cpu()))
    return tables


def count_means(table: MaskTable, values: Tensor | None = None) -> Tensor:
    """Mean of ``values`` (default ``l(M)``) over the masks of each size: ``(2^L - 1,) -> (L,)``, entry ``c - 1``."""
    values = table.values if values is None else values
    L = table.length
    sums = torch.zeros(L, dtype=values.dtype).index_add_(0, table.sizes - 1, values)
    n = torch.zeros(L, dtype=values.dtype).index_add_(0, table.sizes - 1, torch.ones_like(values))
    return sums / n


def count_variances(table: MaskTable) -> Tensor:
    """Variance of ``l(M)`` over the masks of each size (population: the masks are all of them): ``(L,)``."""
    deviation = table.values - count_means(table)[table.sizes - 1]
    return count_means(table, deviation ** 2)


def count_schedule(length: int, n_t: int) -> Tensor:
    """The ``n_t`` stratified counts for each value of the shared draw ``k``: ``(L, n_t)``, row ``k - 1``.

    :func:`bgpo.diffusion.stratified_from` evaluated for every ``k`` in ``1..L`` instead of a random one.
    """
    k = torch.arange(1, length + 1, dtype=torch.float64)  # (L,)
    return stratified_from(k, torch.tensor(float(length)), n_t)


def exact_elbo(tables: list[MaskTable]) -> Tensor:
    """The ELBO of each response in nats, ``E[ell] = L * mean_c mu_c``: ``(B,)`` float64, no MC noise."""
    return torch.stack([t.length * count_means(t).mean() for t in tables])


def exact_variance(tables: list[MaskTable], n_t: int, stratified: bool = True) -> Tensor:
    """Exact variance (nats^2) of the ``n_t``-sample estimator ``(1/n_t) sum_j ell_j``: ``(B,)`` float64.

    ``stratified=True`` is the book's estimator (counts coupled by one draw ``k``, the module's equation);
    ``False`` draws each count independently, ``Var = L^2 (E_c sigma_c^2 + Var_c mu_c) / n_t``.
    """
    out = []
    for t in tables:
        mu, var = count_means(t), count_variances(t)  # (L,), (L,)
        if stratified:
            x = count_schedule(t.length, n_t) - 1  # (L, n_t): for each k, the count indices
            v = (var[x].sum(1) / n_t ** 2).mean() + mu[x].mean(1).var(unbiased=False)
        else:
            v = (var.mean() + mu.var(unbiased=False)) / n_t
        out.append(t.length ** 2 * v)
    return torch.stack(out)


@dataclass
class OffPolicyValues:
    """Exact mask expectations of the per-response objective values of a policy pair, unclipped: ``(B,)`` each.

    ``target = A exp(E[delta])`` is the ELBO objective with infinitely many samples; ``elbo[n_t] =
    E[A exp(mean_j delta_j)]`` the ELBO objective at finite ``n_t`` (biased: Jensen); ``bgpo = E[A r_j]``
    BGPO's bound, the same for every ``n_t`` (a mean of per-sample terms). ``gap = target - bgpo >= 0``.
    """

    target: Tensor
    bgpo: Tensor
    elbo: dict[int, Tensor]

    @property
    def gap(self) -> Tensor:
        """How far BGPO's bound lies below ``A exp(E[delta])``: 0 on-policy, ``>= 0`` always."""
        return self.target - self.bgpo


def exact_offpolicy(new: list[MaskTable], old: list[MaskTable], advantages: Tensor,
                    n_t_values: tuple[int, ...] = (1, 2, 4, 8, 16, 32)) -> OffPolicyValues:
    """BGPO's bound and the ELBO objective as exact expectations over the masks, ``delta(M) = l_new(M) - l_old(M)``.

    ``new`` and ``old`` are :func:`mask_tables` of the same responses under ``theta`` and ``theta_old``
    (common masks, as in training); ``advantages`` is ``(B,)``. Per response, with ``k`` the shared draw:

        bgpo     = A E[r(delta)],  r = 1 + delta (A >= 0) or exp(delta) (A < 0)   (bgpo_ratio)
        elbo_n_t = A E_k prod_j E[exp(delta / n_t) | |M| = x_j(k)]                 (masks independent given k)
        target   = A exp(E[delta])

    Clipping is left out: the bound and its gap are statements about the unclipped surrogate.
    """
    if len(new) != len(old) or advantages.shape != (len(new),):
        raise BGPOError(f"need one table per response under each policy and advantages of shape ({len(new)},); got "
                        f"{len(new)} new, {len(old)} old tables and advantages {tuple(advantages.shape)}")
    target, bound, elbo = [], [], {n: [] for n in n_t_values}
    for t_new, t_old, a in zip(new, old, advantages.double().cpu()):
        if not torch.equal(t_new.sizes, t_old.sizes):
            raise BGPOError("new and old tables differ in length: build both with mask_tables on the same responses")
        delta = t_new.values - t_old.values  # (2^L - 1,)
        table = MaskTable(delta, t_new.sizes)
        target.append(a * torch.exp(count_means(table).mean()))
        bound.append(a * count_means(table, bgpo_ratio(delta, a.expand_as(delta))).mean())
        for n in n_t_values:
            x = count_schedule(table.length, n) - 1  # (L, n)
            elbo[n].append(a * count_means(table, torch.exp(delta / n))[x].prod(1).mean())
    return OffPolicyValues(torch.stack(target), torch.stack(bound), {n: torch.stack(v) for n, v in elbo.items()})


# ---------------------------------------------------------------------------------------------
# gradient noise: mask vs rollout
# ---------------------------------------------------------------------------------------------
def flat_grad(model: torch.nn.Module) -> Tensor:
    """All parameter gradients as one vector in their dtype (zeros where a parameter got none), then clears them."""
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return torch.cat(parts)


def nested_indices(n_t: int, n_max: int) -> list[int]:
    """Which of ``n_max`` stratified samples form a valid ``n_t``-sample draw: every ``(n_max / n_t)``-th.

    ``x_{j s}(k) = round(k + j s L / n_max) = round(k + j L / n_t)`` for ``s = n_max / n_t``: the same
    ``k`` gives exactly :func:`~bgpo.diffusion.stratified_counts`' ``n_t`` counts, and the masks are
    independent given their counts, so ONE ``n_max`` draw yields one draw of every divisor ``n_t``.
    """
    if n_max % n_t:
        raise BGPOError(f"n_t={n_t} does not divide {n_max}: use n_t values that divide the largest (1, 2, 4, ..., 32)")
    return list(range(0, n_max, n_max // n_t))


def draw_gradients(model: torch.nn.Module, batch: Batch, n_t_values: tuple[int, ...],
                   objectives: tuple[str, ...] = GRADIENT_OBJECTIVES, *, generator: torch.Generator | None = None,
                   micro_batch_size: int | None = None) -> dict[tuple[str, int], Tensor]:
    """One mask draw's gradient of each (objective, ``n_t``) on one rollout batch, on-policy: ``{key: (D,)}``.

    Masks for ``n_max = max(n_t_values)`` are drawn once; the ``n_t`` estimator uses the
    :func:`nested_indices` among them. ``bgpo``: :func:`~bgpo.objectives.update` on each sample ``j``
    alone (BGPO's per-sample backward), ``g_{n_t} = (1/n_t) sum_{j in nested} h_j``. ``elbo``: ``update`` on
    the ``n_t`` nested masks in one graph. Responses with ``A = 0`` have zero gradient and are left out
    (the loss's ``1/N`` kept through ``scale``).
    """
    input_ids, attention_mask, response_mask, advantages = batch
    n_max = max(n_t_values)
    subsets = {n: nested_indices(n, n_max) for n in n_t_values}
    keep = advantages != 0  # (N,)
    dim, device = sum(p.numel() for p in model.parameters()), next(model.parameters()).device
    if not keep.any():
        return {(o, n): torch.zeros(dim, device=device) for o in objectives for n in n_t_values}
    scale = keep.sum().item() / keep.numel()
    rb = RolloutBatch(input_ids[keep], attention_mask[keep], response_mask[keep].bool(), advantages[keep],
                      draw_masks(response_mask[keep].bool(), n_max, generator))  # masks (N', n_max, T)
    prepare_old(model, rb, "bgpo", micro_batch_size)  # (N', n_max): l_j(theta_old), shared by both objectives
    model.zero_grad(set_to_none=True)

    def gradient(objective: str, idx: list[int]) -> Tensor:
        sub = RolloutBatch(rb.input_ids, rb.attention_mask, rb.response_mask, rb.advantages, rb.masks[:, idx],
                           rb.old[:, idx])
        update(objective, model, sub, micro_batch_size=micro_batch_size, scale=scale)
        return flat_grad(model).float()

    out = {}
    if "bgpo" in objectives:
        sums = {n: torch.zeros(dim, dtype=torch.float64, device=device) for n in n_t_values}
        for j in range(n_max):
            h = gradient("bgpo", [j]).double()
            for n in n_t_values:
                if j in subsets[n]:
                    sums[n] += h
        out.update({("bgpo", n): (sums[n] / n).float() for n in n_t_values})
    if "elbo" in objectives:
        out.update({("elbo", n): gradient("elbo", subsets[n]) for n in n_t_values})
    return out


def decompose(grads: Tensor, references: Tensor) -> dict[str, float]:
    """Unbiased noise decomposition of ``K x R`` gradients (``R`` mask draws on each of ``K`` rollout batches).

    ``grads`` is ``(K, R, D)``, ``references`` ``(K, D)`` (a reference independent of batch ``b``'s
    gradients, e.g. the other batches' mean). With ``gbar_b`` the mean over draws of batch ``b``::

        mask_var    = (1/K) sum_b (1/(R-1)) sum_r || g_br - gbar_b ||^2
        rollout_var = (1/(K-1)) sum_b || gbar_b - gbar ||^2  -  mask_var / R
        mean_sq     = (1/(K(K-1))) sum_{a != b} <gbar_a, gbar_b>           (|| E g ||^2)
        total_var   = mask_var + rollout_var,   snr = mean_sq / total_var
        cosine_to_reference = mean_{b,r} cos(g_br, references_b)

    ``rollout_var`` and ``mean_sq`` are unbiased, so an estimate can come out below 0 when the truth is
    near 0 and ``K`` is small.
    """
    K, R, _ = grads.shape
    if K < 2 or R < 2:
        raise BGPOError(f"need >= 2 rollout batches and >= 2 mask draws per batch to separate the noise "
                        f"(got {K} x {R})")
    g = grads.double()
    means = g.mean(1)  # (K, D)
    mask_var = ((g - means[:, None]) ** 2).sum(-1).sum(1).mean().item() / (R - 1)
    between = ((means - means.mean(0)) ** 2).sum(-1).sum().item() / (K - 1)
    rollout_var = between - mask_var / R
    total = means.sum(0)
    mean_sq = ((total @ total).item() - (means ** 2).sum().item()) / (K * (K - 1))
    refs = references.double()
    cosine = torch.nn.functional.cosine_similarity(g, refs[:, None, :].expand_as(g), dim=-1).mean().item()
    total_var = mask_var + rollout_var
    return {"mask_var": mask_var, "rollout_var": rollout_var, "total_var": total_var, "mean_sq": mean_sq,
            "snr": mean_sq / total_var, "cosine_to_reference": cosine}


def gradient_noise(model: torch.nn.Module, batches: Callable[[int], Batch], *,
                   n_t_values: tuple[int, ...] = (1, 2, 4), objectives: tuple[str, ...] = GRADIENT_OBJECTIVES,
                   n_batches: int = 2, n_draws: int = 2, micro_batch_size: int | None = None,
                   seed: int = 0) -> list[dict]:
    """Mask and rollout noise of the on-policy gradient per (objective, ``n_t``): one record each.

    ``batches(i)`` returns rollout batch ``i`` (independent prompts and rollouts; advantages included).
    Each of ``n_batches`` batches gets ``n_draws`` independent mask draws (:func:`draw_gradients`, every
    ``n_t`` from one draw of the largest); :func:`decompose` turns them into variances. The reference of
    ``cosine_to_reference`` for batch ``b`` is the mean of the largest-``n_t`` gradients (all objectives,
    all draws) of the OTHER batches — independent of ``b``'s, but still noisy itself
    (rollout_var / (K-1)), so the cosine lies below the one to the exact ``E g`` (less so with more batches).
    On-policy the ELBO objective's gradient equals BGPO's for the same masks, so the two rows of an
    ``n_t`` agree to rounding; the equal-memory comparison reads ELBO at its affordable ``n_t``.
    """
    bad = [o for o in objectives if o not in GRADIENT_OBJECTIVES]
    if bad or not objectives:
        raise BGPOError(f"objectives must be among {GRADIENT_OBJECTIVES} (got {objectives}); d1 has no MC masks")
    n_t_values = tuple(sorted(set(n_t_values)))
    n_max = n_t_values[-1]
    generator = torch.Generator().manual_seed(seed)
    draws: dict[tuple[str, int], list[list[Tensor]]] = {(o, n): [] for o in objectives for n in n_t_values}
    sequences = 0
    for i in range(n_batches):
        batch = batches(i)
        sequences = batch[0].shape[0]
        per_draw = [draw_gradients(model, batch, n_t_values, objectives, generator=generator,
                                   micro_batch_size=micro_batch_size) for _ in range(n_draws)]
        for key in draws:
            draws[key].append([d[key] for d in per_draw])
    stacked = {key: torch.stack([torch.stack(rows) for rows in v]) for key, v in draws.items()}  # (K, R, D)
    if not any(g.any() for g in stacked.values()):
        raise BGPOError("every group of rollouts got equal rewards, so every advantage and gradient is 0: measure a "
                        "checkpoint that sometimes succeeds (an SFT warm start) or raise --prompts / --group-size")
    per_batch = sum(stacked[(o, n_max)].double().sum(1) for o in objectives)  # (K, D)
    count = (n_batches - 1) * n_draws * len(objectives)
    references = (per_batch.sum(0, keepdim=True) - per_batch) / count  # (K, D): leave batch b out
    records = []
    for (objective, n_t), grads in stacked.items():
        records.append({"objective": objective, "n_t": n_t, **decompose(grads, references),
                        "batches": n_batches, "draws": n_draws, "sequences": sequences})
    return records


def task_batches(model: torch.nn.Module, cfg, seed: int = 0) -> Callable[[int], Batch]:
    """Rollout batch ``i`` of a config's task: the prompts a trainer of seed ``seed`` reads at step ``i``.

    Prompts, sampler settings and rewards are the trainer's (:mod:`bgpo.data`, :func:`bgpo.rollout.rollout`,
    ``cfg.rollout``: ``prompts_per_step`` prompts, ``group_size`` rollouts each, on the model's device);
    advantages are :func:`~bgpo.objectives.group_advantages` of the rewards.
    """
    from bgpo.data import get_task, load_examples, load_tokenizer, prompt_indices
    from bgpo.rollout import rollout

    tokenizer, task = load_tokenizer(cfg.model), get_task(cfg.data)
    examples = load_examples(cfg.data, cfg.data.train_split, seed)
    r, device = cfg.rollout, next(model.parameters()).device

    def batch(i: int) -> Batch:
        chosen = [examples[k] for k in prompt_indices(len(examples), i, r.prompts_per_step, seed)]
        ro = rollout(model, tokenizer, task, chosen, r, seed=seed, step=i, first_prompt=0, device=device)
        return ro.input_ids, ro.attention_mask, ro.response_mask, group_advantages(ro.rewards, r.group_size)

    return batch


def write_records(path: Path, records: list[dict]) -> list[dict]:
    """Merge ``records`` into the JSON list at ``path``: same (checkpoint, objective, n_t) replaced, rest kept."""
    old = json.loads(path.read_text()) if path.is_file() else []
    keys = {(r["checkpoint"], r["objective"], r["n_t"]) for r in records}
    merged = [r for r in old if (r["checkpoint"], r["objective"], r["n_t"]) not in keys] + records
    merged.sort(key=lambda r: (r["checkpoint"], r["objective"], r["n_t"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise BGPOError(f"{flag} takes comma-separated integers like 1,2,4 (got {text!r})") from None
    if min(values) < 1:
        raise BGPOError(f"{flag} values must be >= 1 (got {text!r})")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="model directory (HF dir, SFT output, or step-N checkpoint)")
    parser.add_argument("--label", default=None,
                        help="the records' `checkpoint` field, e.g. warm_start (default: the directory's name)")
    parser.add_argument("--out", type=Path, required=True,
                        help="JSON list of records, updated in place for this label "
                             "(the book's: book/data/small-scale/clean/variance.json)")
    parser.add_argument("--config", default="tiny-sudoku", help="config preset or YAML: task, prompts, sampler")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per rollout batch")
    parser.add_argument("--group-size", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--n-t", default="1,2,4,8,16,32", help="MC sample counts; each must divide the largest")
    parser.add_argument("--objectives", default="bgpo,elbo", help="comma-separated: bgpo,elbo")
    parser.add_argument("--batches", type=int, default=4, help="independent rollout batches (K >= 2)")
    parser.add_argument("--draws", type=int, default=2, help="independent mask draws per batch (R >= 2)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="sequences per forward/backward")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    from bgpo.checkpoint import load_model
    from bgpo.config import load_config

    cfg = load_config(args.config, [*args.set, f"rollout.prompts_per_step={args.prompts}",
                                    f"rollout.group_size={args.group_size}"])
    model = load_model(args.checkpoint)
    start = time.perf_counter()
    records = gradient_noise(model, task_batches(model, cfg, args.seed), n_t_values=_ints(args.n_t, "--n-t"),
                             objectives=tuple(args.objectives.split(",")), n_batches=args.batches,
                             n_draws=args.draws, micro_batch_size=args.micro_batch_size, seed=args.seed)
    label = args.label or Path(args.checkpoint).name
    for r in records:
        r["checkpoint"] = label
    write_records(args.out, records)
    print(f"{'objective':>9} {'n_t':>4} {'mask_var':>10} {'rollout_var':>11} {'total_var':>10} {'snr':>7} "
          f"{'cosine':>7}")
    for r in records:
        print(f"{r['objective']:>9} {r['n_t']:>4} {r['mask_var']:10.3g} {r['rollout_var']:11.3g} "
              f"{r['total_var']:10.3g} {r['snr']:7.3f} {r['cosine_to_reference']:7.3f}")
    print(f"{label}: {len(records)} records -> {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0
