"""Memory planner: predicted peak GPU memory per device for a config, objective, n_t and GPU count.

Why BGPO exists, in numbers: the ELBO-based objective keeps the autograd graphs of all ``n_t`` Monte
Carlo samples until one backward, so its activation memory is ``n_t x`` one sample's; BGPO back-propagates
one sample at a time and stays at one sample's, whatever ``n_t`` (bgpo-math.md §2–§3).

Per GPU, with FSDP full sharding over ``N`` GPUs and AdamW (fp32 master weights)::

    static      = (4 + 4 + 8) P / N bytes            params fp32, grads fp32, AdamW m and v
    gathered    = 2 x (layer params) x c             two unsharded blocks in flight (c = compute bytes)
    act/sample  = b T [n_layers a_layer + a_head]    saved activations of ONE masked forward, b seqs of T tokens
    logits      = b T V c  +  2 |M| V 4              transient full logits + saved log-softmax and its gradient
    peak(bgpo)  = static + gathered + act/sample + logits(|M| = b L)
    peak(elbo)  = static + gathered + n_t act/sample + logits(|M| = n_t b (L+1)/2)
    peak(d1)    = static + gathered + act/sample + logits(|M| = b L)
    rollout     = b_gen T V (c + 4 x 8)              the sampler's logits, float64 softmax/noise (bgpo.diffusion.generate)

Saved activations per token and layer (counted from the graph of `bgpo.model.LLaDABlock`): two RMSNorms
(input in fp32, rsqrt, normalised output), the q/k/v and gate/up inputs, q, k, v and the attention
output with its per-head log-sum-exp, and gate, up, silu(gate) and their product::

    fp32:  a_layer = 4 (10 d + 4 h + heads + 2) bytes
    bf16:  a_layer = 2 (4 d) + 2 (2 d + 4) + c (2 d + 4 d + 4 h) + 4 heads   (norm internals stay fp32)

with gradient checkpointing only the block inputs (``d`` values per layer) plus one block's activations.
Against `bgpo.memory`'s exact saved-tensor count on tiny fp32 configs the prediction is within 10%
(tests/test_plan.py checks it); on GPU the allocator's caching and fragmentation add a few percent more.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bgpo.config import Config, load_config
from bgpo.errors import BGPOError

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


def saved_bytes(m, batch: int, seq_len: int, n_masked: int, compute_bytes: int = 4,
                gradient_checkpointing: bool = False) -> float:
    """Bytes saved for backward by ONE masked forward (`bgpo.diffusion.masked_logprobs`) of `batch` seqs.

    ``n_masked`` is the number of masked positions over the batch (the loss head keeps a fp32
    log-softmax of ``n_masked x V``).
    """
    tokens = batch * seq_len
    layer = layer_activation_bytes(m, compute_bytes)
    if gradient_checkpointing:  # block inputs kept, one block recomputed at a time in backward
        blocks = tokens * (m.n_layers * m.d_model * 4 + layer)
    else:
        blocks = tokens * m.n_layers * layer
    head_dim = m.d_model // m.n_heads
    shared = tokens * 4 * (2 * head_dim + 1)  # RoPE cos/sin and the padding bias, shared by all blocks
    head = tokens * 4 * (3 * m.d_model + 1)  # final norm + output-layer input
    return blocks + shared + head + n_masked * m.vocab_size * 4 + tokens * 9  # + ids and masks


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
    train_peak_gb: float
    rollout_peak_gb: float
    total_gb: float
    fits: bool

    def table(self) -> str:
        rows = [("parameters (fp32, sharded)", self.params_gb), ("gradients (fp32, sharded)", self.grads_gb),
                ("AdamW state (sharded)", self.optimizer_gb), ("gathered blocks", self.gathered_gb),
                ("activations, one MC sample", self.activations_per_sample_gb),
                (f"activations held ({self.objective}, n_t={self.n_t})", self.activations_gb),
                ("logits / log-softmax", self.logits_gb), ("training peak", self.train_peak_gb),
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
    if objective not in ("bgpo", "elbo", "d1"):
        raise BGPOError(f"objective must be bgpo, elbo or d1, got {objective!r}")
    n_t = n_t or cfg.objective.n_t
    if gpus < 1 or gpu_memory_gb <= 0 or n_t < 1:
        raise BGPOError(f"need gpus >= 1, gpu_memory_gb > 0 and n_t >= 1 (got {gpus}, {gpu_memory_gb}, {n_t})")
    m = model_dims(cfg)
    P = n_params(m)
    c = 2 if cfg.trainer.mixed_precision in ("bf16", "fp16") else 4
    ckpt = cfg.model.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    local = max(1, cfg.rollout.prompts_per_step * cfg.rollout.group_size // gpus)  # sequences per GPU
    b = micro_batch_size or cfg.objective.micro_batch_size or max(1, local)
    L = cfg.rollout.gen_length
    T = cfg.rollout.max_prompt_length + L
    V = m.vocab_size
    params_gb, grads_gb, optim_gb = 4 * P / gpus / GB, 4 * P / gpus / GB, 8 * P / gpus / GB
    layer_params = (P - 2 * m.embedding_size * m.d_model) / m.n_layers
    gathered_gb = 2 * layer_params * c / GB if gpus > 1 else 0.0
    per_sample = saved_bytes(m, b, T, 0, c, ckpt) / GB  # without the log-softmax: counted in logits
    if objective == "elbo":
        held, n_masked = n_t * per_sample, n_t * b * (L + 1) / 2
    else:
        held, n_masked = per_sample, b * L
    logits_gb = (b * T * V * c + 2 * n_masked * V * 4) / GB
    train_peak = params_gb + grads_gb + optim_gb + gathered_gb + held + logits_gb
    b_gen = cfg.rollout.batch_size or local
    rollout_peak = params_gb + grads_gb + optim_gb + gathered_gb + b_gen * T * V * (c + 4 * 8) / GB
    total = max(train_peak, rollout_peak)
    return MemoryPlan(objective, n_t, gpus, gpu_memory_gb, P, b, T, params_gb, grads_gb, optim_gb, gathered_gb,
                      per_sample, held, logits_gb, train_peak, rollout_peak, total, total <= gpu_memory_gb)


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
    for objective in ("bgpo", "elbo", "d1"):
        for n_t in (n_ts if objective != "d1" else (1,)):
            p = plan(config, objective=objective, n_t=n_t, gpus=gpus, gpu_memory_gb=gpu_memory_gb, **kwargs)
            rows.append({"objective": objective, "n_t": n_t, "peak_gb": round(p.total_gb, 2),
                         "activations_gb": round(p.activations_gb, 2), "fits": p.fits})
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name (llada8b-math) or YAML path")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    parser.add_argument("--objective", choices=("bgpo", "elbo", "d1"), default=None,
                        help="objective (default: the config's)")
    parser.add_argument("--n-t", type=int, default=None, help="MC samples n_t (default: the config's)")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs the model is sharded over (FSDP)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GB (A100/H100: 80)")
    parser.add_argument("--micro-batch-size", type=int, default=None, help="sequences per forward/backward")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None,
                        help="plan with activation checkpointing")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    kwargs = dict(gpus=args.gpus, gpu_memory_gb=args.gpu_memory, micro_batch_size=args.micro_batch_size,
                  gradient_checkpointing=args.gradient_checkpointing)
    p = plan(cfg, objective=args.objective, n_t=args.n_t, **kwargs)
    if args.json:
        print(json.dumps(asdict(p), indent=2))
        return 0
    print(p.table())
    for objective in ("bgpo", "elbo"):
        best = max_n_t(cfg, objective, **kwargs)
        print(f"  largest n_t that fits with {objective}: "
              f"{'none' if best == 0 else ('any (memory does not grow with n_t)' if best >= 4096 else best)}")
    return 0
