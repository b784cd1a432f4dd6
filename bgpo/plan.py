"""Memory planner: predicted peak GPU memory per device for a config, objective, n_t and GPU count.

Why BGPO exists, in numbers: the ELBO-based objective keeps the autograd graphs of all ``n_t`` Monte
Carlo samples until one backward, so its activation memory is ``n_t x`` one sample's; BGPO back-propagates
one sample at a time and stays at one sample's, whatever ``n_t`` (the book's Memory chapter).

Per GPU, with FSDP full sharding over ``N`` GPUs, ``P`` parameters stored in ``w`` bytes (``model.dtype``),
compute in ``c`` bytes (2 with bf16 weights or bf16 mixed precision)::

    static      = w P / N  +  s P / N                 weights, optimiser states (s: bgpo.optim.state_bytes_per_param)
    G           = w P / N                             gradients
    gathered    = 2 x (layer params) x c              two unsharded blocks in flight (N > 1)
    A(n)        = saved activations of ONE masked forward of b sequences x T tokens, n masked positions:
                  b T [n_layers a_layer + rope] + n (4 V + head)          without checkpointing
                  b T [n_layers d w + rope] + max(n (4 V + head), b T a_layer)   with it (one block recomputed)
    h(n)        = transient of the loss head beyond A: max(4 n V  [fp32 logits at the log-softmax],
                  c n V + w V d - 4 n V  [grad of the logits and of the output layer, log-softmax freed]),
                  or one recomputed block b T a_layer with checkpointing if larger
    update peak = G + A(n) + h(n)                                   bgpo, n_t >= 2: samples back-propagated one by one
                = h(n) + max(A_held, G + A_held - A(n))              elbo, n_t >= 2: autograd finishes one sample's
                  graph (allocating every gradient) while the other samples' activations wait
                = max(A(n) + h(n), G)                                one sample (n_t = 1, d1)
    step peak   = static + G + 2 x (largest parameter) x w           the optimiser step's temporaries
    rollout     = static + b_gen T (6 d + 3 h) c + b_gen B V (c + 4 x 8)  [+ 2 x n_layers x b_gen T kv c]
                  sampler: one layer's temporaries and the current block's logits in float64 (softmax, Gumbel
                  noise; B = block_length); [with rollout.cache prefix or dual] its KV cache, held for the whole
                  rollout: keys and values (2) of every layer and position, kv = n_kv_heads x head_dim
                  (bgpo.model.KVCache; a window step's own temporaries are smaller than a full step's)
    peak        = max(static + gathered + update peak, step peak, rollout)

with n = b L (every response token masked: the worst case) for one sample, b (L + 0.15 P) for d1, and
max(b L, n_t b (L + 1) / 2) over the n_t samples the ELBO objective holds (stratified counts average
(L + 1) / 2). Saved activations per token and layer (counted from the graph
of `bgpo.model.LLaDABlock`): two RMSNorms (input in fp32, rsqrt, normalised output), the q/k/v and
gate/up inputs, q, k, v and the attention output with its per-head log-sum-exp, and gate, up,
silu(gate) and their product::

    fp32:  a_layer = 4 (10 d + 4 h + heads + 2) bytes
    bf16:  a_layer = 2 (4 d) + 2 (2 d + 4) + c (2 d + 4 d + 4 h) + 4 heads   (norm internals stay fp32)

Checked two ways (tests/test_plan.py): A(n) against `bgpo.memory`'s exact saved-tensor count on CPU
(within 1%), and activations and update peaks against every configuration measured on an H100 in
``book/data/gpu-h100/`` (within 15%).

Time model (`time_plan`): one RL step costs FLOP, and the FLOP cost seconds at one effective rate R per GPU.
With ``N = prompts_per_step x group_size`` sequences of ``T = max_prompt_length + gen_length`` tokens, ``k``
MC samples (``n_t``; 1 for d1, whose one-step estimate is one forward per sequence) and ``e = ppo_epochs``::

    rollout = N x pos x 2 P         pos = bgpo.diffusion.sampler_positions(...): positions one sequence sends
                                    through the model (T per step without a cache, the cache window with one)
    old     = k x 2 P x N T         the frozen policy's terms (prepare_old), forward only
    update  = e x k x f P x N T     f = 2 + 4 = 6 (forward, backward), 2 + 2 + 4 = 8 with gradient
                                    checkpointing (the forward is recomputed); bgpo and elbo alike
    shift   = 2 P x N T             policy_shift: one forward on the first mask, logged after the update
    seconds = FLOP / (gpus x R)     data parallel: the work divides over the GPUs
    step    = rollout + old + update + shift;    rollout share = rollout / step
    GPU-h   = step x trainer.steps x gpus / 3600

``P`` counts every parameter (8.02e9 for LLaDA-8B), as the H200 measurement does ("2 x 8.0e9 x 512 x 128
FLOP per sequence"). That overstates the matrix products (the input embedding is a lookup, the output layer
runs at the masked positions only: 13% of P for the 8B) and leaves out attention's 4 T d per layer and
position (2-4% at T = 512-1,024); R is measured under the same convention, so it is an *effective* rate and
the convention cancels. R's default comes from the newest committed GPU measurement,
``book/data/gpu-*/fullscale.json``: its sampler records' FLOP (``batch x pos x 2 P``, without a cache) over
their seconds, pooled (about 505 TFLOP/s on the H200; its update runs at the same rate to 1%, so one R prices
everything). Not counted: the optimiser step (0.2-0.3 s measured on the H200 after the first, compiling one),
evaluation, data movement and FSDP communication; prompts are priced at full length (padding-free packed
micro-batches and shorter prompts cost less) and the sampler without early exit (``eos_exit`` stops sooner).
tests/test_plan.py checks the update and the sampler of ``book/data/gpu-h200/fullscale.json`` (within 15%).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bgpo.config import CACHE_MODES, OBJECTIVES, Config, load_config
from bgpo.errors import BGPOError
from bgpo.optim import state_bytes_per_param

GB = 1e9


def model_dims(cfg: Config):
    """The LLaDAConfig a run would build, without loading weights (hub ids map to the 8B preset)."""
    from bgpo.model import LLaDAConfig, preset_config

    path = cfg.model.path
    if path and (Path(path) / "config.json").is_file():
        return LLaDAConfig.from_pretrained(path, **cfg.model.overrides)
    preset = "llada-8b" if path else cfg.model.preset
    return preset_config(preset, **cfg.model.overrides)


def n_params(m) -> int:
    """Parameter count of an LLaDA config: embeddings, untied output layer, blocks, norms."""
    d, h, kv = m.d_model, m.mlp_hidden_size, m.n_kv_heads * (m.d_model // m.n_heads)
    per_layer = d * d * 2 + 2 * d * kv + 3 * d * h + 2 * d  # q, out, k, v, gate, up, down, two norms
    return 2 * m.embedding_size * d + m.n_layers * per_layer + d


def layer_activation_bytes(m, compute_bytes: int) -> float:
    """Saved bytes per token of one block's forward (see the module docstring)."""
    d, h, heads = m.d_model, m.mlp_hidden_size, m.n_heads
    if compute_bytes == 4:
        return 4 * (10 * d + 4 * h + heads + 2)
    return 2 * 4 * d + 2 * (2 * d + 4) + compute_bytes * (6 * d + 4 * h) + 4 * heads


def saved_bytes(m, batch: int, seq_len: int, n_masked: float, compute_bytes: int = 4,
                gradient_checkpointing: bool = False, weight_bytes: int | None = None, copies: int = 1) -> float:
    """Bytes saved for backward by ``copies`` masked forwards (`bgpo.diffusion.masked_logprobs`) of
    `batch` seqs held at once (the ELBO objective holds n_t), ``n_masked`` positions over all of them.

    The output layer runs at the masked positions only (``logits_positions``), keeping its input and a
    fp32 log-softmax of ``n_masked x V``.
    """
    tokens = batch * seq_len
    layer = layer_activation_bytes(m, compute_bytes)
    head_dim = m.d_model // m.n_heads
    shared = tokens * (4 * (2 * head_dim + 1) + 9)  # RoPE cos/sin, the padding bias, ids and masks
    head = n_masked * (m.vocab_size * 4 + 4 * (3 * m.d_model + 1))  # log-softmax, final norm, output-layer input
    if gradient_checkpointing:  # block inputs kept; one block recomputed at a time in backward, after the head
        inputs = tokens * m.n_layers * m.d_model * (weight_bytes or compute_bytes)
        return copies * (inputs + shared) + max(head, tokens * layer)
    return copies * (tokens * m.n_layers * layer + shared) + head


def head_transient_bytes(m, n_masked: int, compute_bytes: int, weight_bytes: int) -> float:
    """The loss head's memory beyond the saved tensors, at its worst (module docstring: h(n) without the block)."""
    V, d = m.vocab_size, m.d_model
    return max(4 * n_masked * V, compute_bytes * n_masked * V + weight_bytes * V * d - 4 * n_masked * V)


@dataclass
class MemoryPlan:
    """Predicted peak memory per GPU (GB, 1e9 bytes) of one training step; `fits` against `gpu_memory_gb`."""

    objective: str
    n_t: int
    gpus: int
    gpu_memory_gb: float
    params: int
    micro_batch: int
    seq_len: int
    params_gb: float
    grads_gb: float
    optimizer_gb: float
    gathered_gb: float
    activations_per_sample_gb: float
    activations_gb: float
    logits_gb: float
    update_peak_gb: float
    step_peak_gb: float
    train_peak_gb: float
    rollout_peak_gb: float
    total_gb: float
    fits: bool

    def table(self) -> str:
        rows = [("weights (sharded)", self.params_gb), ("gradients (sharded)", self.grads_gb),
                ("optimiser states (sharded)", self.optimizer_gb), ("gathered blocks", self.gathered_gb),
                ("activations, one MC sample", self.activations_per_sample_gb),
                (f"activations held ({self.objective}, n_t={self.n_t})", self.activations_gb),
                ("loss-head transient", self.logits_gb), ("update above weights + states", self.update_peak_gb),
                ("training peak", self.train_peak_gb), ("optimiser step peak", self.step_peak_gb),
                ("rollout peak (sampler)", self.rollout_peak_gb), ("PEAK per GPU", self.total_gb)]
        head = (f"{self.params / 1e9:.2f}B params, {self.gpus} GPU(s) x {self.gpu_memory_gb:g} GB, micro-batch "
                f"{self.micro_batch} x {self.seq_len} tokens")
        lines = [head] + [f"  {name:<38s} {gb:9.2f} GB" for name, gb in rows]
        lines.append(f"  -> {'fits' if self.fits else 'does NOT fit'}")
        return "\n".join(lines)


def plan(config: Config | str | Path, *, objective: str | None = None, n_t: int | None = None, gpus: int = 8,
         gpu_memory_gb: float = 80.0, micro_batch_size: int | None = None,
         gradient_checkpointing: bool | None = None) -> MemoryPlan:
    """Predict the peak memory per GPU of a config's training step (see the module docstring)."""
    cfg = config if isinstance(config, Config) else load_config(config)
    objective = objective or cfg.objective.name
    if objective not in OBJECTIVES:
        raise BGPOError(f"objective must be bgpo, elbo or d1, got {objective!r}")
    n_t = n_t or cfg.objective.n_t
    if gpus < 1 or gpu_memory_gb <= 0 or n_t < 1:
        raise BGPOError(f"need gpus >= 1, gpu_memory_gb > 0 and n_t >= 1 (got {gpus}, {gpu_memory_gb}, {n_t})")
    m = model_dims(cfg)
    P = n_params(m)
    w = 4 if cfg.model.dtype == "float32" else 2
    c = 2 if w == 2 or cfg.trainer.mixed_precision in ("bf16", "fp16") else 4
    ckpt = cfg.model.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    local = max(1, cfg.rollout.prompts_per_step * cfg.rollout.group_size // gpus)  # sequences per GPU
    b = micro_batch_size or cfg.objective.micro_batch_size or max(1, local)
    L, P_len = cfg.rollout.gen_length, cfg.rollout.max_prompt_length
    T = P_len + L
    V, d = m.vocab_size, m.d_model
    params_gb, grads_gb = w * P / gpus / GB, w * P / gpus / GB
    optim_gb = state_bytes_per_param(cfg.optim.name, w) * P / gpus / GB
    layer_params = (P - 2 * m.embedding_size * d) / m.n_layers
    gathered_gb = 2 * layer_params * c / GB if gpus > 1 else 0.0
    # masked positions of one sample (worst case: all of the response) and, for elbo, of all n_t: stratified
    # counts add up to n_t (L + 1) / 2 per sequence, one sample alone can mask all L
    n_sample = b * (L + 0.15 * P_len) if objective == "d1" else b * L
    per_sample = saved_bytes(m, b, T, n_sample, c, ckpt, w) / GB
    if objective == "elbo":
        held = saved_bytes(m, b, T, max(b * L, n_t * b * (L + 1) / 2), c, ckpt, w, copies=n_t) / GB
    else:
        held = per_sample
    transient = head_transient_bytes(m, n_sample, c, w)
    if ckpt:
        transient = max(transient, b * T * layer_activation_bytes(m, c))  # one block recomputed in backward
    transient_gb = transient / GB
    if objective == "bgpo" and n_t > 1:  # from the second sample on, every gradient exists
        update = grads_gb + per_sample + transient_gb
    elif objective == "elbo" and n_t > 1:  # one graph finished (all gradients made) while the others wait
        update = transient_gb + max(held, grads_gb + held - per_sample)
    else:  # one sample: its activations give way to the gradients
        update = max(held + transient_gb, grads_gb)
    static = params_gb + optim_gb
    train_peak = static + gathered_gb + update
    largest = max(m.embedding_size * d, d * m.mlp_hidden_size) / gpus  # a sharded output layer or MLP matrix
    step_peak = static + grads_gb + 2 * largest * w / GB
    b_gen = cfg.rollout.batch_size or local
    sampler = b_gen * T * (6 * d + 3 * m.mlp_hidden_size) * c + b_gen * cfg.rollout.block_length * V * (c + 4 * 8)
    if cfg.rollout.cache != "none":  # every layer's keys and values of the whole batch, kept between steps
        sampler += 2 * m.n_layers * b_gen * T * m.n_kv_heads * (d // m.n_heads) * c
    rollout_peak = static + gathered_gb + sampler / GB
    total = max(train_peak, step_peak, rollout_peak)
    return MemoryPlan(objective, n_t, gpus, gpu_memory_gb, P, b, T, params_gb, grads_gb, optim_gb, gathered_gb,
                      per_sample, held, transient_gb, update, step_peak, train_peak, rollout_peak, total,
                      total <= gpu_memory_gb)


def max_n_t(config: Config | str | Path, objective: str, *, gpus: int = 8, gpu_memory_gb: float = 80.0,
            limit: int = 4096, **kwargs) -> int:
    """The largest n_t that fits (0 if none; `limit` when memory does not grow with n_t: bgpo, d1)."""
    if not plan(config, objective=objective, n_t=1, gpus=gpus, gpu_memory_gb=gpu_memory_gb, **kwargs).fits:
        return 0
    if objective != "elbo":
        return limit
    lo, hi = 1, limit
    while lo < hi:  # elbo memory rises with n_t: bisect
        mid = (lo + hi + 1) // 2
        if plan(config, objective=objective, n_t=mid, gpus=gpus, gpu_memory_gb=gpu_memory_gb, **kwargs).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


def compare(config: Config | str | Path, *, n_ts: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64), gpus: int = 8,
            gpu_memory_gb: float = 80.0, **kwargs) -> list[dict]:
    """Rows (objective, n_t, peak GB, fits) for bgpo, elbo and d1 over `n_ts`: the book's memory table."""
    rows = []
    for objective in OBJECTIVES:
        for n_t in (n_ts if objective != "d1" else (1,)):
            p = plan(config, objective=objective, n_t=n_t, gpus=gpus, gpu_memory_gb=gpu_memory_gb, **kwargs)
            rows.append({"objective": objective, "n_t": n_t, "peak_gb": round(p.total_gb, 2),
                         "activations_gb": round(p.activations_gb, 2), "fits": p.fits})
    return rows


DATA = Path(__file__).resolve().parents[1] / "book" / "data"  # committed measurements (a repository checkout)


@dataclass
class Throughput:
    """An effective rate per GPU under the planner's FLOP convention (module docstring), and its source."""

    tflops: float
    source: str
    optimizer_s: list[float]  # measured optimiser steps after the first (compiling) one; empty when unknown


def measured_throughput(data: Path = DATA) -> Throughput | None:
    """R from the newest committed GPU measurement with sampler records (``gpu-*/fullscale.json`` under
    ``data``, newest by the start time of the ``doctor.json`` beside it): the records' FLOP, ``batch x
    sampler_positions x 2 P``, summed over their summed seconds. None when no such file is there."""
    from bgpo.diffusion import sampler_positions
    from bgpo.model import preset_config

    found = []
    for path in data.glob("gpu-*/fullscale.json"):
        record = json.loads(path.read_text())
        doctor = path.with_name("doctor.json")
        started = json.loads(doctor.read_text())["started"] if doctor.is_file() else ""
        if record.get("sampler"):
            found.append((started, str(path), path, record))
    if not found:
        return None
    _, _, path, record = max(found, key=lambda f: f[:2])
    flop = sum(r["batch"] * sampler_positions(r["prompt"], r["gen"], r["steps"], r["block_length"],
                                              r.get("cache", "none"), r.get("horizon"), r.get("refresh"))
               * 2 * n_params(preset_config(r["preset"], n_layers=r["layers"])) for r in record["sampler"])
    seconds = sum(r["seconds"] for r in record["sampler"])
    source = (f"{len(record['sampler'])} sampler records of book/data/{path.relative_to(data).as_posix()} "
              f"({record['device']})")
    return Throughput(flop / seconds / 1e12, source, [s["optimizer_s"] for s in record.get("steps", [])[1:]])


def measured_vs_planned(path: Path, config: str = "llada8b-math-1gpu") -> list[dict]:
    """A GPU measurement of the full model (``gpu-*/fullscale.json``: its ``sweep`` of one update per objective
    and n_t, weights in memory, no optimiser) beside this planner for ``config`` on one GPU, at the measured
    micro-batch and lengths. Per row, in GB: the saved activations; the peak above the weights; the peak with
    the config's optimiser states added (the measured update peak plus the planned states, which the sweep
    did not allocate), against the planned training peak."""
    record = json.loads(path.read_text())
    sizes = record["sizes"]
    cfg = load_config(config, [f"model.overrides={{n_layers: {sizes['layers']}}}",
                               f"rollout.max_prompt_length={sizes['prompt']}",
                               f"rollout.gen_length={sizes['seq'] - sizes['prompt']}"])
    rows = []
    for r in record["sweep"]:
        p = plan(cfg, objective=r["objective"], n_t=r["n_t"], gpus=1, micro_batch_size=sizes["micro_batch"],
                 gradient_checkpointing=sizes["checkpointing"])
        rows.append({"objective": r["objective"], "n_t": r["n_t"], "activations_gb": r["activation_gb"],
                     "planned_activations_gb": p.activations_gb, "update_gb": r["update_peak_over_weights_gb"],
                     "planned_update_gb": p.update_peak_gb, "peak_with_states_gb": r["abs_peak_gb"] + p.optimizer_gb,
                     "planned_peak_gb": p.train_peak_gb, "optimizer_gb": p.optimizer_gb, "seconds": r["seconds"]})
    return rows


def step_flops(params: int, sequences: int, seq_len: int, positions: int, objective: str, n_t: int,
               checkpointing: bool, ppo_epochs: int = 1) -> dict[str, float]:
    """FLOP of one RL step's parts over all GPUs (module docstring): rollout, old, update, shift."""
    k = 1 if objective == "d1" else n_t
    tokens = sequences * seq_len
    return {"rollout": sequences * positions * 2 * params, "old": k * 2 * params * tokens,
            "update": ppo_epochs * k * (8 if checkpointing else 6) * params * tokens, "shift": 2 * params * tokens}


@dataclass
class TimeRow:
    """One sampler setting's step: seconds per part on ``gpus`` GPUs, rollout share, GPU-hours of the run."""

    cache: str
    horizon: int | None
    refresh: int | None
    config: bool  # the config's own sampler setting
    positions: int  # per sequence (bgpo.diffusion.sampler_positions)
    rollout_s: float
    old_s: float
    update_s: float
    shift_s: float
    step_s: float
    rollout_share: float
    gpu_hours: float

    @property
    def label(self) -> str:
        extra = (f" h={self.horizon}" if self.horizon is not None else "") + \
                (f" r={self.refresh}" if self.refresh is not None else "")
        return self.cache + extra


@dataclass
class TimePlan:
    """Predicted seconds of one RL step per sampler cache mode, at ``tflops`` (module docstring)."""

    objective: str
    n_t: int
    gpus: int
    run_steps: int
    sequences: int
    prompt_len: int
    gen_length: int
    params: int
    checkpointing: bool
    ppo_epochs: int
    tflops: float
    source: str
    optimizer_s: list[float]
    rows: list[TimeRow]

    def table(self) -> str:
        naive = next(r.positions for r in self.rows if r.cache == "none")
        f = 8 if self.checkpointing else 6
        head = (f"Time of one RL step: {self.objective}, n_t={self.n_t}, {self.sequences} sequences of "
                f"{self.prompt_len} + {self.gen_length} tokens on {self.gpus} GPU(s); the run: {self.run_steps:,d} "
                f"steps\n  rate: {self.tflops:.0f} TFLOP/s per GPU, effective, from {self.source}\n"
                f"  FLOP: 2 P per position, the update {f} P per token and MC sample"
                f"{' (checkpointing)' if self.checkpointing else ''}, P = {self.params / 1e9:.2f}B")
        cols = (f"  {'sampler cache':<22s} {'positions/seq':>13s} {'naive/this':>10s} {'rollout s':>10s} "
                f"{'old s':>7s} {'update s':>9s} {'shift s':>8s} {'step s':>8s} {'rollout %':>9s} {'GPU-h':>7s}")
        lines = [head, cols]
        for r in self.rows:
            name = r.label + (" (config)" if r.config else "")
            lines.append(f"  {name:<22s} {r.positions:>13,d} {naive / r.positions:>9.2f}x {r.rollout_s:>10.1f} "
                         f"{r.old_s:>7.1f} {r.update_s:>9.1f} {r.shift_s:>8.1f} {r.step_s:>8.1f} "
                         f"{r.rollout_share:>9.0%} {r.gpu_hours:>7,.0f}")
        by_mode = {r.cache: r.positions for r in self.rows if r.horizon is None and r.refresh is None}
        lines.append("  positions per sequence naive : prefix : dual = 1 : " + " : ".join(
            f"{by_mode[m] / naive:.3f}" for m in ("prefix", "dual"))
            + " (bgpo.diffusion.sampler_positions: what the sampler counts)")
        measured = (f" ({min(self.optimizer_s):.2f}-{max(self.optimizer_s):.2f} s in the source, after its first, "
                    f"compiling, one)" if self.optimizer_s else "")
        lines.append(f"  not counted: the optimiser step{measured},\n  evaluation, communication; prompts priced at "
                     f"full length, the sampler without early exit")
        return "\n".join(lines)


def time_plan(config: Config | str | Path, *, objective: str | None = None, n_t: int | None = None, gpus: int = 8,
              tflops: float | None = None, gradient_checkpointing: bool | None = None,
              data: Path = DATA) -> TimePlan:
    """Predict the seconds of one RL step and the GPU-hours of the run, per sampler cache mode (none, prefix,
    dual and the config's own setting) at ``tflops`` per GPU, or at the rate of the newest committed GPU
    measurement under ``data`` (module docstring: the equations)."""
    from bgpo.diffusion import sampler_positions

    cfg = config if isinstance(config, Config) else load_config(config)
    objective = objective or cfg.objective.name
    if objective not in OBJECTIVES:
        raise BGPOError(f"objective must be bgpo, elbo or d1, got {objective!r}")
    n_t = n_t or cfg.objective.n_t
    if gpus < 1 or n_t < 1:
        raise BGPOError(f"need gpus >= 1 and n_t >= 1 (got {gpus}, {n_t})")
    if tflops is None:
        rate = measured_throughput(data)
        if rate is None:
            raise BGPOError(f"no GPU measurement with sampler records under {data} (gpu-*/fullscale.json): pass "
                            f"--tflops (effective TFLOP/s per GPU)")
    elif not 0 < tflops < float("inf"):
        raise BGPOError(f"--tflops must be a positive number of TFLOP/s per GPU, got {tflops}")
    else:
        rate = Throughput(tflops, "--tflops", [])
    r, t = cfg.rollout, cfg.trainer
    ckpt = cfg.model.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    P, N, T = n_params(model_dims(cfg)), r.prompts_per_step * r.group_size, r.max_prompt_length + r.gen_length
    settings = [(mode, None, None) for mode in CACHE_MODES]
    if (r.cache, r.horizon, r.refresh) not in settings:
        settings.append((r.cache, r.horizon, r.refresh))
    rows = []
    for cache, horizon, refresh in settings:
        pos = sampler_positions(r.max_prompt_length, r.gen_length, r.steps, r.block_length, cache, horizon, refresh)
        flop = step_flops(P, N, T, pos, objective, n_t, ckpt, cfg.objective.ppo_epochs)
        s = {k: v / (gpus * rate.tflops * 1e12) for k, v in flop.items()}
        step = sum(s.values())
        rows.append(TimeRow(cache, horizon, refresh, (cache, horizon, refresh) == (r.cache, r.horizon, r.refresh),
                            pos, s["rollout"], s["old"], s["update"], s["shift"], step, s["rollout"] / step,
                            step * t.steps * gpus / 3600))
    return TimePlan(objective, n_t, gpus, t.steps, N, r.max_prompt_length, r.gen_length, P, ckpt,
                    cfg.objective.ppo_epochs, rate.tflops, rate.source, rate.optimizer_s, rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name (llada8b-math) or YAML path")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="objective (default: the config's)")
    parser.add_argument("--n-t", type=int, default=None, help="MC samples n_t (default: the config's)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the model is sharded over (FSDP)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GB (A100/H100: 80)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="sequences per forward/backward")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None,
                        help="plan with activation checkpointing")
    parser.add_argument("--tflops", type=float, default=None,
                        help="effective TFLOP/s per GPU for the time plan (default: measured, from the newest "
                             "book/data/gpu-*/fullscale.json)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    kwargs = dict(gpus=args.gpus, gpu_memory_gb=args.gpu_memory, micro_batch_size=args.micro_batch_size,
                  gradient_checkpointing=args.gradient_checkpointing)
    p = plan(cfg, objective=args.objective, n_t=args.n_t, **kwargs)
    # an installed package without the repository's book/data has no measured rate: the memory plan still prints
    t = None if args.tflops is None and measured_throughput() is None else time_plan(
        cfg, objective=args.objective, n_t=args.n_t, gpus=args.gpus, tflops=args.tflops,
        gradient_checkpointing=args.gradient_checkpointing)
    if args.json:
        print(json.dumps({**asdict(p), "time": asdict(t) if t else None}, indent=2))
        return 0
    print(p.table())
    for objective in ("bgpo", "elbo"):
        best = max_n_t(cfg, objective, **kwargs)
        print(f"  largest n_t that fits with {objective}: "
              f"{'none' if best == 0 else ('any (memory does not grow with n_t)' if best >= 4096 else best)}")
    print()
    print(t.table() if t else "time plan: no committed GPU measurement (book/data/gpu-*/fullscale.json) here: "
                              "pass --tflops (effective TFLOP/s per GPU)")
    return 0
