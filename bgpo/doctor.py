"""``bgpo doctor``: is this machine ready for a run? Eight checks in order of cost, one JSON report.

A researcher with a GPU node for a day wants to know in minutes that a run will neither die at step 1
nor crawl. The doctor runs, each check under its own time limit (a check that fails, raises or runs out
of time is recorded and the next one runs):

    1 environment      torch / CUDA / driver, GPU name and memory, bf16, varlen_attn, flash-attn, torchao, disk
    2 packed attention packed (varlen_attn on CUDA, block-diagonal SDPA on CPU) vs padded SDPA, forward and
                       backward: max |log p| and gradient differences, tokens/s of both
    3 sampler          tokens/s per KV cache mode (none, prefix, dual) and with host noise (bgpo bench
                       sampler); the caches refilled every step reproduce the exact sampler's tokens
    4 memory vs n_t    BGPO flat, ELBO linear (bgpo bench memory; an OOM is a result), the planner beside each
    5 one update       the full LLaDA-8B shape, gradient checkpointing, the one-GPU preset's optimiser: peak
                       vs `bgpo plan`, step time, checkpoint reloaded bit for bit, weights moved by ~ lr
    6 end to end       `bgpo train --config tiny-sudoku` SIGKILLed after its first checkpoint, resumed,
                       evaluated, sampled
    7 real weights     (--model-path) LLaDA-8B-Instruct greedy on 4 GSM8K questions, scored
    8 FSDP2            (>= 2 GPUs) `bgpo launch`'s FSDP2 config on 2 processes: 2 steps, one gradient
                       reduce-scatter round per update, the sharded checkpoint read back in one process

With ``--gpu`` the sizes are the GPU column of :data:`SIZES` (the H100 measurements of
``book/data/gpu-h100/``); without it the same code runs at CPU size. A criterion that only a GPU can judge
then shows the CPU's figure as ``info`` beside the GPU threshold (a CPU's tokens/s are not a verdict), and
says "needs a GPU" only where nothing was measured. The report (``--out``) holds every figure and a summary
table: one row per criterion with its status, the measured figure and the threshold (:func:`summary_frame`).

The GPU criteria are calibrated on the H200 report (``book/data/gpu-h200/doctor.json``): packed attention is
judged against its ideal speed-up ``1 / real_fraction`` (it can only skip the padding), the optimiser step is
timed a second time because the first one compiles, and the free-disk row names what the space is for and
the setting that lowers it.

Time limits: a check runs under ``SIGALRM``, which interrupts Python between operations (a single long
kernel finishes first); the sum of the GPU budgets is :func:`budget_sum` (checks 1-6 on one GPU: 450 s).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from bgpo.errors import BGPOError

PASS, FAIL, NEEDS_GPU, SKIPPED, INFO, TIMEOUT, ERROR = (
    "pass", "fail", "needs a GPU", "skipped", "info", "timed out", "error")
# book/data/gpu-h100/sampler.json: the sampler with a CPU generator ran at 56.4 and 81.0 tokens/s on an
# H100 (4-block LLaDA-8B stack, 8 x 256 prompt + 256 generated, 64 steps); the faster is the bar to beat
H100_CPU_GENERATOR_TOKENS_S = 81.0
SAMPLER_SPEEDUP = 15.0
# Packed attention skips the padding and nothing else, so its ideal speed-up over padded attention is
# 1 / real_fraction. The H200 reached 1.29x of an ideal 1.39x (93%) at 72% real tokens, where a fixed 1.3x
# bar failed it; 85% of the ideal leaves room for the per-sequence kernel overhead that packing adds.
PACKED_SHARE_OF_IDEAL = 0.85
PLAN_TOLERANCE = 0.15  # the planner's stated calibration against the H100 measurements (bgpo.plan)
# GSM8K test questions 1, 2, 3 and 6 (openai/gsm8k, MIT) with their reference answers
GSM8K = [
    ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
     "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
     "How much in dollars does she make every day at the farmers' market?", "18"),
    ("Toulouse has twice as many sheep as Charleston. Charleston has 4 times as many sheep as Seattle. How many "
     "sheep do Toulouse, Charleston, and Seattle have together if Seattle has 20 sheep?", "260"),
    ("Toula went to the bakery and bought various types of pastries. She bought 3 dozen donuts which cost $68 per "
     "dozen, 2 dozen mini cupcakes which cost $80 per dozen, and 6 dozen mini cheesecakes for $55 per dozen. How "
     "much was the total cost?", "694"),
    ("Marie ordered one chicken meal that costs $12, 5 packs of milk that costs $3 each, 4 apples that cost $1.50 "
     "each, and some boxes of pizza. Marie paid a total of $50. How many boxes of pizza did Marie order if each box "
     "costs $8.50?", "2"),
]


@dataclass(frozen=True)
class Sizes:
    """The shapes and limits of every check on one kind of device."""

    kind: str
    device: str
    dtype: str
    budgets: dict  # check name -> seconds
    packed: dict  # preset, layers, prompts (one length per sequence), response, logp_tol, grad_tol, repeats
    sampler: dict  # bgpo.memory.bench_sampler keywords
    memory: dict  # bgpo.memory.bench_memory keywords
    update: tuple  # config overrides of llada8b-math-1gpu for the one-update check
    e2e: tuple  # config overrides of tiny-sudoku
    real: dict  # gen_length, steps of the real-weights check
    min_free_gb: float


_E2E = ("trainer.steps=2", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2", "trainer.eval_every=0",
        "trainer.eval_limit=4", "trainer.eval_batch_size=4", "trainer.eval_steps=8", "trainer.progress=false",
        "rollout.prompts_per_step=2", "rollout.group_size=4", "data.num_train=64", "data.num_test=4")
SIZES = {
    "cpu": Sizes(
        "cpu", "cpu", "float32",
        budgets={"environment": 10, "packed attention": 30, "sampler": 30, "memory vs n_t": 40, "one update": 40,
                 "end to end": 90, "real weights": 60, "FSDP2": 120},
        packed=dict(preset="tiny", layers=None, prompts=(3, 5, 6, 8, 10, 13, 18, 26), response=24, logp_tol=1e-4,
                    grad_tol=1e-4, repeats=1),
        sampler=dict(preset="tiny", n_layers=None, batch=4, prompt_len=8, gen_length=8, steps=4, block_length=8,
                     temperature=0.6, repeats=1),
        memory=dict(preset="tiny", n_layers=None, seq_len=32, prompt_len=8, batch=2, n_ts=(1, 4)),
        update=("model.path=null", "model.preset=small", "model.dtype=float32", "optim.name=adamw", "optim.lr=1e-3",
                "rollout.max_prompt_length=16", "rollout.gen_length=32", "rollout.batch_size=2",
                "objective.micro_batch_size=2", "objective.n_t=2"),
        e2e=_E2E, real=dict(gen_length=32, steps=16), min_free_gb=1.0),
    "cuda": Sizes(
        "cuda", "cuda", "bfloat16",
        budgets={"environment": 15, "packed attention": 45, "sampler": 110, "memory vs n_t": 40, "one update": 180,
                 "end to end": 60, "real weights": 150, "FSDP2": 120},
        # 8 sequences, prompts 60-480 + 512 response: 72% real tokens, as book/data/gpu-h100/packed.json
        packed=dict(preset="llada-8b", layers=4, prompts=(60, 80, 100, 140, 180, 240, 338, 480), response=512,
                    logp_tol=0.1, grad_tol=0.05, repeats=3),
        sampler=dict(preset="llada-8b", n_layers=4, batch=8, prompt_len=256, gen_length=256, steps=64,
                     block_length=32, temperature=0.6, repeats=1),
        memory=dict(preset="llada-8b", n_layers=4, seq_len=768, prompt_len=256, batch=4, n_ts=(1, 4, 16, 32)),
        update=("rollout.max_prompt_length=256", "rollout.gen_length=512", "rollout.batch_size=2",
                "objective.micro_batch_size=2", "objective.n_t=4"),
        e2e=_E2E, real=dict(gen_length=256, steps=128), min_free_gb=0.0),  # cuda: from the 1-GPU preset's run
}
ONE_GPU_CHECKS = ("environment", "packed attention", "sampler", "memory vs n_t", "one update", "end to end")


def budget_sum(kind: str = "cuda", model_path: bool = False, gpus: int = 1) -> float:
    """Seconds the checks that run on ``gpus`` GPUs may take at most (the report's time guarantee)."""
    names = list(ONE_GPU_CHECKS) + (["real weights"] if model_path else []) + (["FSDP2"] if gpus >= 2 else [])
    return float(sum(SIZES[kind].budgets[n] for n in names))


@dataclass
class Row:
    """One line of the summary: a criterion of a check and how it came out."""

    check: str
    criterion: str
    status: str
    measured: str
    threshold: str


@dataclass
class Check:
    """A check's outcome: its summary rows, its figures, and how it ended."""

    name: str
    budget_s: float
    status: str = SKIPPED
    seconds: float = 0.0
    error: str | None = None
    rows: list[Row] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def judge(self, criterion: str, ok: bool | None, measured: str, threshold: str) -> bool | None:
        """A pass/fail row. ``ok=None``: only a GPU can judge it, so the figure measured here is information,
        and the threshold says it applies on a GPU (a CPU's speed next to "needs a GPU" reads as a failure)."""
        if ok is None:
            self.rows.append(Row(self.name, criterion, INFO, measured, f"on a GPU: {threshold}"))
        else:
            self.rows.append(Row(self.name, criterion, PASS if ok else FAIL, measured, threshold))
        return ok

    def note(self, criterion: str, status: str, measured: str = "", threshold: str = "") -> None:
        """A row that is not judged here: ``info``, ``needs a GPU`` or ``skipped``."""
        self.rows.append(Row(self.name, criterion, status, measured, threshold))


@dataclass
class Context:
    """What every check may use: its sizes, a scratch directory, the optional model directory."""

    sizes: Sizes
    work: Path
    model_path: Path | None
    gpus: int


class CheckTimeout(BaseException):
    """Raised by the alarm inside a check that ran past its limit (a BaseException: no ``except Exception``
    on the way may swallow it)."""


# ---------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------
def environment(c: Check, ctx: Context) -> None:
    """Versions, the GPU, bf16, the packed-attention kernels, torchao and free disk."""
    cuda = torch.cuda.is_available()
    f = c.figures
    f.update(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version() if cuda else None, driver=_driver_version(),
             platform=platform.platform(), cpus=os.cpu_count(),
             gpus=[{"name": torch.cuda.get_device_name(i),
                    "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 1e9, 1),
                    "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
                   for i in range(torch.cuda.device_count())] if cuda else [],
             **{name: _version(name) for name in ("transformers", "accelerate", "torchao", "flash-attn")})
    gpu = ctx.sizes.kind == "cuda"
    names = ", ".join(g["name"] for g in f["gpus"]) or "none"
    if gpu:
        c.judge("CUDA GPU visible", bool(f["gpus"]), names, ">= 1")
        c.judge("bf16 supported", torch.cuda.is_bf16_supported(), str(torch.cuda.is_bf16_supported()), "True")
    else:
        c.note("CUDA GPU visible", NEEDS_GPU, f"{names} (CPU-size run)", "--gpu")
    try:
        from torch.nn.attention import varlen  # noqa: F401
        varlen_ok = True
    except ImportError:
        varlen_ok = False
    f["varlen_attn"] = varlen_ok
    c.judge("varlen_attn importable", varlen_ok, f"torch {torch.__version__}", "torch >= 2.10")
    c.judge("torchao present (bf16 optimisers)", f["torchao"] is not None, f["torchao"] or "missing", "installed")
    c.note("flash-attn (optional)", INFO, f["flash-attn"] or "not installed", "optional")
    from bgpo import sandbox  # the code reward's isolation: refused, not weakened, where it is missing

    f["code_sandbox"] = sandbox.isolation_line()
    c.judge("code sandbox (bubblewrap, seccomp)", sandbox.isolation()["sandbox"], f["code_sandbox"],
            "bubblewrap >= 0.10 with user namespaces")
    from bgpo.experiment import relative  # the report names no machine path

    free = shutil.disk_usage(ctx.work).free / 1e9
    f.update(free_disk_gb=round(free, 1), disk_path=str(relative(ctx.work)))
    if ctx.sizes.min_free_gb:
        c.judge("free disk for the checks' checkpoints", free >= ctx.sizes.min_free_gb, f"{free:.0f} GB",
                f">= {ctx.sizes.min_free_gb:g} GB")
        return
    keep, per_gb = _run_checkpoints()
    f.update(checkpoint_gb=round(per_gb, 1), keep_checkpoints=keep)
    c.judge(*disk_row(free, per_gb, keep))


def packed_attention(c: Check, ctx: Context) -> None:
    """The same masked log-probs, padded (SDPA) and packed (varlen_attn / block-diagonal SDPA): values,
    gradients, speed."""
    from bgpo.diffusion import masked_logprobs
    from bgpo.memory import build_bench_model
    from bgpo.model import packed_kernel

    s, p = ctx.sizes, ctx.sizes.packed
    model = build_bench_model(p["preset"], s.device, s.dtype, p["layers"])
    ids, attention, mask = _packed_batch(model.config.vocab_size, p["prompts"], p["response"], s.device)
    real = int(attention.sum())
    kernel = packed_kernel(model.model.transformer.wte(ids[:1, :1]), model.packed_attention)

    def run(packed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        model.zero_grad(set_to_none=True)
        _sync(s.device)
        start = time.perf_counter()
        logp = masked_logprobs(model, ids, mask, attention, packed=packed)  # (B, T)
        logp.sum().backward()
        _sync(s.device)
        seconds = time.perf_counter() - start
        return logp.detach()[mask].float(), {n: w.grad.float() for n, w in model.named_parameters()}, seconds

    padded, g_padded, _ = run(False)  # also the warm-up of each path
    packed, g_packed, _ = run(True)
    times = {False: [], True: []}
    for _ in range(p["repeats"]):
        for flag in (False, True):
            times[flag].append(run(flag)[2])
    diff = (packed - padded).abs().max().item()
    grad_diff = max((g_packed[n] - g).abs().max().item() / max(g.abs().max().item(), 1e-30)
                    for n, g in g_padded.items())
    t_padded, t_packed = statistics.median(times[False]), statistics.median(times[True])
    speedup = t_padded / t_packed
    c.figures.update(kernel=kernel, dtype=s.dtype, sequences=len(p["prompts"]), padded_tokens=ids.numel(),
                     real_tokens=real, real_fraction=real / ids.numel(), masked=int(mask.sum()),
                     max_abs_logp_diff=diff, max_rel_grad_diff=grad_diff, padded_s=t_padded, packed_s=t_packed,
                     padded_tokens_per_s=real / t_padded, packed_tokens_per_s=real / t_packed, speedup=speedup)
    if s.kind == "cuda":
        c.judge("packed kernel", kernel == "varlen", kernel, "varlen")
    c.judge(f"max |log p| packed - padded ({s.dtype})", diff <= p["logp_tol"], f"{diff:.2g}", f"<= {p['logp_tol']:g}")
    c.judge("max gradient difference / max gradient", grad_diff <= p["grad_tol"], f"{grad_diff:.2g}",
            f"<= {p['grad_tol']:g}")
    criterion, ok, measured, threshold = packed_speed_row(speedup, real / ids.numel(), real / t_packed,
                                                         real / t_padded)
    c.judge(criterion, ok if s.kind == "cuda" else None, measured, threshold)


def packed_speed_row(speedup: float, real_fraction: float, packed_tps: float,
                     padded_tps: float) -> tuple[str, bool, str, str]:
    """(criterion, ok, measured, threshold) of the packed-attention speed: the measured speed-up beside the
    ideal ``1 / real_fraction`` (the padding skipped, nothing else), passing at
    :data:`PACKED_SHARE_OF_IDEAL` of the ideal."""
    ideal = 1 / real_fraction
    share = speedup / ideal
    return (f"packed / padded speed at {real_fraction:.0%} real tokens", share >= PACKED_SHARE_OF_IDEAL,
            f"{speedup:.2f}x = {share:.0%} of the ideal {ideal:.2f}x ({packed_tps:,.0f} vs {padded_tps:,.0f} tok/s)",
            f">= {PACKED_SHARE_OF_IDEAL:.0%} of 1/{real_fraction:.2f} = {PACKED_SHARE_OF_IDEAL * ideal:.2f}x")


def disk_row(free_gb: float, checkpoint_gb: float, keep: int) -> tuple[str, bool, str, str]:
    """(criterion, ok, measured, threshold) of the free disk a one-GPU LLaDA-8B run needs: ``keep`` checkpoints
    plus the one being written, each weights + optimiser states; the threshold names the setting that lowers
    it (``trainer.keep_checkpoints``) and what its smallest value, 1, needs."""
    need = (keep + 1) * checkpoint_gb
    lower = "" if keep <= 1 else f"; trainer.keep_checkpoints=1 needs {2 * checkpoint_gb:.0f} GB"
    return (f"free disk for {keep + 1} checkpoints of llada8b-math-1gpu (weights + optimiser states)", free_gb >= need,
            f"{free_gb:.0f} GB", f">= {need:.0f} GB = ({keep} kept + 1 being written) x {checkpoint_gb:.1f} GB"
            f" (trainer.keep_checkpoints={keep}{lower})")


def sampler(c: Check, ctx: Context) -> None:
    """Sampler tokens/s per KV cache mode and with host noise (``bgpo bench sampler``), a seed that repeats
    itself, and the caches refilled at every step (``refresh=1``) giving the exact sampler's tokens.

    The cache modes share one benchmark (interleaved repeats, the device generator, as a run samples); the
    host generator is timed beside the exact sampler only, the setting of the H100 bar: its noise transfers
    cost the same in every mode (~10 s of a call on the H200, book/data/gpu-h200/doctor.json), which would
    hide a cache's gain and triple the check's time.
    ``refresh=1`` runs every step over the whole sequence while filling the cache, so any difference from
    ``none`` is a bug in the cached path, not approximation: bit-identical is the criterion on every device.
    """
    from bgpo.config import CACHE_MODES
    from bgpo.diffusion import generate
    from bgpo.memory import bench_sampler, build_bench_model, synthetic_rollouts

    s, p = ctx.sizes, ctx.sizes.sampler
    modes = bench_sampler(device=s.device, dtype=s.dtype, generators=("device",), caches=CACHE_MODES, **p)
    host = bench_sampler(device=s.device, dtype=s.dtype, generators=("cpu",), **p)[0]
    by = {r["cache"]: r for r in modes}
    device_tps, cpu_tps = by["none"]["tokens_per_s"], host["tokens_per_s"]
    c.figures.update(runs=modes + [host], device_over_cpu=device_tps / cpu_tps,
                     h100_cpu_generator_tokens_s=H100_CPU_GENERATOR_TOKENS_S,
                     caches={m: {k: r[k] for k in ("tokens_per_s", "positions_per_token", "positions_ratio", "speedup")}
                             for m, r in by.items()})
    bar = SAMPLER_SPEEDUP * H100_CPU_GENERATOR_TOKENS_S
    c.judge("device-generator tokens/s", device_tps >= bar if s.kind == "cuda" else None,
            f"{device_tps:,.0f} tok/s"
            + (f" ({device_tps / cpu_tps:.1f}x the host generator)" if s.kind == "cuda" else ""),
            f">= {bar:,.0f} ({SAMPLER_SPEEDUP:g}x H100 CPU-generator {H100_CPU_GENERATOR_TOKENS_S:g})")
    for mode, r in by.items():
        c.note(f"cache {mode}: tokens/s, positions/token, speed-up vs none", INFO,
               f"{r['tokens_per_s']:,.0f} tok/s, {r['positions_per_token']:.1f} pos/token "
               f"({r['positions_ratio']:.3f} of none's), {r['speedup']:.2f}x")
    model = build_bench_model(p["preset"], s.device, s.dtype, p["n_layers"]).eval()
    ids = synthetic_rollouts(model.config.vocab_size, 2, p["prompt_len"] + 1, p["prompt_len"], 2,
                             torch.device(s.device))[0][:, :p["prompt_len"]]  # (2, prompt_len)
    kw = dict(gen_length=p["gen_length"], steps=p["steps"], block_length=p["block_length"], temperature=1.0)
    a, b = (generate(model, ids, generator=7, **kw) for _ in range(2))
    c.judge("same seed, same tokens (device generator)", torch.equal(a, b), "equal" if torch.equal(a, b) else
            f"{(a != b).sum().item()} tokens differ", "bit-identical")
    identical = {}
    for mode in CACHE_MODES[1:]:
        cached = generate(model, ids, generator=7, cache=mode, refresh=1, **kw)
        identical[mode] = torch.equal(cached, a)
        c.judge(f"cache {mode}, refresh=1: the exact sampler's tokens (same seed)", identical[mode],
                "equal" if identical[mode] else f"{(cached != a).sum().item()} tokens differ", "bit-identical")
    c.figures["refresh1_identical"] = identical


def memory_vs_nt(c: Check, ctx: Context) -> None:
    """Activation memory vs n_t for BGPO and ELBO (``bgpo bench memory``) beside the planner's activation model."""
    from bgpo.memory import bench_memory, ratios, synthetic_rollouts
    from bgpo.model import preset_config
    from bgpo.objectives import build_batch
    from bgpo.plan import saved_bytes

    s, p = ctx.sizes, ctx.sizes.memory
    records = bench_memory(p["preset"], p["seq_len"], p["prompt_len"], p["batch"], p["n_ts"], ("bgpo", "elbo"),
                           repeats=1, device=s.device, dtype=s.dtype, n_layers=p["n_layers"], progress=False)
    cfg = preset_config(p["preset"], **({} if p["n_layers"] is None else {"n_layers": p["n_layers"]}))
    width = 2 if s.dtype == "bfloat16" else 4
    tensors = synthetic_rollouts(cfg.vocab_size, p["batch"], p["seq_len"], p["prompt_len"], 2, torch.device("cpu"))
    rows, errors = [], []
    for row in ratios(records):
        if not row["oom"]:  # the masks measure_update drew (same tensors, same seed), through the planner's model
            masks = build_batch(row["objective"], *tensors, row["n_t"], torch.Generator().manual_seed(0)).masks
            per_sample = [saved_bytes(cfg, p["batch"], p["seq_len"], int(k), width, False, width)
                          for k in masks.sum((0, 2))]
            row["planned_activation_bytes"] = max(per_sample) if row["objective"] == "bgpo" else sum(per_sample)
            errors.append(abs(row["planned_activation_bytes"] / row["activation_bytes"] - 1))
        rows.append(row)
    c.figures["records"] = rows
    ran = {(r["objective"], r["n_t"]): r for r in rows if not r["oom"]}
    bgpo = [r for k, r in ran.items() if k[0] == "bgpo"]
    top = max(bgpo, key=lambda r: r["n_t"])
    c.judge(f"BGPO activations n_t={top['n_t']} / n_t=1", top["memory_ratio"] <= 1.05, f"{top['memory_ratio']:.3f}x",
            "<= 1.05x (flat)")
    elbo = max((r for k, r in ran.items() if k[0] == "elbo"), key=lambda r: r["n_t"])
    c.judge(f"ELBO activations n_t={elbo['n_t']} / n_t=1",
            elbo["n_t"] > 1 and elbo["memory_ratio"] >= 0.75 * elbo["n_t"],
            f"{elbo['memory_ratio']:.2f}x", f">= {0.75 * elbo['n_t']:g}x (linear)")
    oom = [f"{r['objective']} n_t={r['n_t']}" for r in rows if r["oom"]]
    c.note("out of memory (recorded, not fatal)", INFO, ", ".join(oom) or "none")
    c.judge("planner vs measured activations", max(errors) <= PLAN_TOLERANCE, f"max {max(errors):.1%} off",
            f"<= {PLAN_TOLERANCE:.0%}")


def one_update(c: Check, ctx: Context) -> None:
    """One BGPO update + optimiser step of the one-GPU recipe; checkpoint round trip; the size of the step."""
    from accelerate import Accelerator

    from bgpo.config import load_config
    from bgpo.model import DTYPES, init_model
    from bgpo.optim import build_optimizer
    from bgpo.plan import model_dims, n_params, plan

    s = ctx.sizes
    cfg = load_config("llada8b-math-1gpu", list(s.update))
    cfg.trainer.output_dir = str(ctx.work / "one-update")
    dims = model_dims(cfg)
    c.figures.update(params=n_params(dims), optimizer=cfg.optim.name, lr=cfg.optim.lr, n_t=cfg.objective.n_t,
                     batch=cfg.objective.micro_batch_size,
                     seq_len=cfg.rollout.max_prompt_length + cfg.rollout.gen_length,
                     gradient_checkpointing=cfg.model.gradient_checkpointing, dtype=cfg.model.dtype)
    predicted = None
    if s.kind == "cuda":
        total_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
        pl = plan(cfg, gpus=1, gpu_memory_gb=total_gb)
        predicted = max(pl.train_peak_gb, pl.step_peak_gb)  # no rollout here
        c.figures.update(plan=asdict(pl), planned_peak_gb=predicted)
        if predicted > total_gb:
            c.note("fits this GPU", SKIPPED, f"plan: {predicted:.1f} GB", f"<= {total_gb:.0f} GB")
            return
    torch.manual_seed(0)
    model = init_model(dims, device=s.device, dtype=DTYPES[cfg.model.dtype]).train()
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    accelerator = Accelerator(mixed_precision=cfg.trainer.mixed_precision, step_scheduler_with_optimizer=False)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    try:
        _update_and_checkpoint(c, ctx, cfg, accelerator, model, optimizer, scheduler, predicted)
    finally:
        accelerator.free_memory()  # the accelerator holds the prepared objects: 8B weights + states on the GPU
        shutil.rmtree(cfg.trainer.output_dir, ignore_errors=True)  # a 32 GB checkpoint at 8B


def _update_and_checkpoint(c: Check, ctx: Context, cfg, accelerator, model, optimizer, scheduler,
                           predicted: float | None) -> None:
    """Check 5 once the model and optimiser exist: the update, the step, the checkpoint round trip."""
    from bgpo import checkpoint
    from bgpo.memory import measure_update, synthetic_rollouts
    from bgpo.optim import state_bytes_per_param

    s, dims = ctx.sizes, model.config
    P, w = c.figures["params"], 2 if cfg.model.dtype == "bfloat16" else 4
    tensors = synthetic_rollouts(dims.vocab_size, cfg.objective.micro_batch_size, c.figures["seq_len"],
                                 cfg.rollout.max_prompt_length, 2, torch.device(s.device))
    if s.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    activations, _, update_s = measure_update("bgpo", model, cfg.objective.n_t, tensors)
    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    sample = _sample_weights(model)  # a strided sample of every parameter and its gradient's sign
    first_s = _timed_step(optimizer, scheduler, s.device)  # torchao's optimisers compile here (27.6 s on the H200)
    moved = _mean_move(sample) / cfg.optim.lr
    step_s = _timed_step(optimizer, scheduler, s.device)  # the same gradients again: what every later step costs
    c.figures.update(activation_bytes=activations, update_s=update_s, optimizer_step_s=first_s,
                     optimizer_steady_step_s=step_s, moved_over_lr=moved)
    c.judge("update + optimiser step time (second step)", True, f"{update_s:.2f} s + {step_s:.2f} s", "measured")
    c.note("first optimiser step (compilation, once per run)", INFO, f"{first_s:.2f} s")
    if s.kind == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
        c.figures["peak_gb"] = peak
        c.judge("peak memory vs bgpo plan", abs(peak / predicted - 1) <= PLAN_TOLERANCE,
                f"{peak:.1f} GB (plan {predicted:.1f})", f"within {PLAN_TOLERANCE:.0%}")
    else:
        c.note("peak memory vs bgpo plan", NEEDS_GPU, "", f"within {PLAN_TOLERANCE:.0%}")
    c.judge("mean weight move / lr (where the gradient is non-zero)", 0.5 <= moved <= 2.0, f"{moved:.3f}", "0.5 - 2")
    model.zero_grad(set_to_none=True)
    need_gb = P * (w + state_bytes_per_param(cfg.optim.name, w)) * 1.1 / 1e9
    free_gb = shutil.disk_usage(ctx.work).free / 1e9
    if free_gb < need_gb:
        c.judge("checkpoint fits the disk", False, f"{free_gb:.0f} GB free", f">= {need_gb:.0f} GB")
        return
    weights = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
    states = _optimizer_tensors(optimizer)
    start = time.perf_counter()
    ckpt = checkpoint.save_checkpoint(accelerator, Path(cfg.trainer.output_dir), cfg, 1, keep=1)
    save_s = time.perf_counter() - start
    with torch.no_grad():
        for t in model.parameters():
            t.zero_()  # so a load that wrote nothing cannot pass
    start = time.perf_counter()
    checkpoint.resume(accelerator, Path(cfg.trainer.output_dir), ckpt)
    load_s = time.perf_counter() - start
    after_w, after_s = model.state_dict(), _optimizer_tensors(optimizer)
    bad = [n for n, t in weights.items() if not torch.equal(t, after_w[n].cpu())]
    bad += [n for n, t in states.items() if n not in after_s or not torch.equal(t, after_s[n])]
    size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
    c.figures.update(checkpoint_gb=size / 1e9, save_s=save_s, load_s=load_s, optimizer_tensors=len(states),
                     differing=bad[:5])
    c.judge("checkpoint reload bit-identical (weights + optimiser)", not bad and len(states) > 0,
            f"{len(weights)} + {len(states)} tensors equal" if not bad else f"{len(bad)} differ, e.g. {bad[0]}",
            "all equal")


def _timed_step(optimizer, scheduler, device: str) -> float:
    """Seconds of one optimiser + scheduler step, synchronised."""
    _sync(device)
    start = time.perf_counter()
    optimizer.step()
    scheduler.step()
    _sync(device)
    return time.perf_counter() - start


def end_to_end(c: Check, ctx: Context) -> None:
    """`bgpo train --config tiny-sudoku` killed after its first checkpoint, resumed, evaluated and sampled."""
    from bgpo.checkpoint import latest_checkpoint
    from bgpo.config import load_config
    from bgpo.evaluate import evaluate_checkpoint
    from bgpo.generate import generate_text
    from bgpo.train import train

    s = ctx.sizes
    run = ctx.work / "tiny-sudoku"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run, also in a reused --work-dir
    sets = [a for o in s.e2e for a in ("--set", o)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"CUDA_VISIBLE_DEVICES": ""} if s.kind == "cpu" else {})}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bgpo.cli", "train", "--config", "tiny-sudoku", "--output-dir",
                             str(run), *sets], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while latest_checkpoint(run) is None and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.kill()
        err = proc.communicate()[1]
    killed_at = latest_checkpoint(run)
    if killed_at is None:
        raise BGPOError(f"bgpo train ended (status {proc.returncode}) before its first checkpoint: {_last_line(err)}")
    first_s = time.perf_counter() - start
    c.judge("SIGKILL mid-run", not (run / "final").exists(), f"after {killed_at.name}", "before the last step")
    cfg = load_config("tiny-sudoku", list(s.e2e))
    start = time.perf_counter()
    train(cfg, resume=True, output_dir=run)
    resume_s = time.perf_counter() - start
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    c.judge("resumed to the end, each step logged once", steps == list(range(1, cfg.trainer.steps + 1))
            and (run / "final").is_dir(), f"steps {steps}", f"1..{cfg.trainer.steps}")
    start = time.perf_counter()
    summary = evaluate_checkpoint(run / "final", limit=4, device=s.device, output_dir=ctx.work / "tiny-eval")
    eval_s = time.perf_counter() - start
    c.judge("bgpo eval", summary["n"] == 4 and 0 <= summary["cell_accuracy"] <= 1,
            f"n={summary['n']}, cell accuracy {summary['cell_accuracy']:.2f}", "4 scored")
    texts = generate_text(run / "final", task="sudoku", limit=2, style="compact", gen_length=32, device=s.device)
    c.judge("bgpo generate", len(texts) == 2 and all(isinstance(t["completion"], str) for t in texts),
            f"{len(texts)} completions", "2")
    c.figures.update(killed_at=killed_at.name, first_run_s=first_s, resume_s=resume_s, eval_s=eval_s, eval=summary,
                     completions=[t["completion"] for t in texts])


def real_weights(c: Check, ctx: Context) -> None:
    """Real LLaDA weights from ``--model-path``: greedy answers to 4 GSM8K questions, scored by the math task."""
    if ctx.model_path is None:
        c.note("LLaDA-8B-Instruct answers GSM8K", SKIPPED, "no --model-path", ">= 1 of 4 correct")
        return
    from bgpo.config import DataConfig
    from bgpo.data import encode_prompts, get_task, load_tokenizer
    from bgpo.diffusion import generate
    from bgpo.model import DTYPES, LLaDAModelLM
    from bgpo.rollout import safe_rewards

    s = ctx.sizes
    start = time.perf_counter()
    model = LLaDAModelLM.from_pretrained(ctx.model_path, dtype=DTYPES[s.dtype]).to(s.device).eval()
    tokenizer = load_tokenizer(ctx.model_path)
    load_s = time.perf_counter() - start
    P = sum(t.numel() for t in model.parameters())
    task = get_task(DataConfig(task="math", style="chat", source="hf"))
    examples = [{"problem": q, "answer": a, "dataset": "gsm8k"} for q, a in GSM8K]
    ids, mask = encode_prompts(tokenizer, task, examples, 512)
    start = time.perf_counter()
    x = generate(model, ids.to(s.device), mask.to(s.device), gen_length=s.real["gen_length"], steps=s.real["steps"],
                 block_length=32, temperature=0.0)
    gen_s = time.perf_counter() - start
    completions = tokenizer.batch_decode(x[:, ids.shape[1]:].cpu(), skip_special_tokens=True)
    rewards = safe_rewards(task, completions, examples, None)
    metrics = task.metrics(completions, examples, rewards)
    correct = round(metrics["d1_accuracy"] * len(examples))
    c.figures.update(params=P, load_s=load_s, generate_s=gen_s, metrics=metrics, completions=completions)
    c.judge("weights load", P > 0, f"{P / 1e9:.2f}B params in {load_s:.0f} s", "loaded")
    if P > 1e9:
        c.judge("greedy GSM8K answers (d1 parser)", correct >= 1, f"{correct} of 4", ">= 1 of 4")
    else:  # a tiny local model exercises the path; only the 8B is expected to answer
        c.note("greedy GSM8K answers (d1 parser)", INFO, f"{correct} of 4", "judged for a > 1B model: >= 1 of 4")


def fsdp2(c: Check, ctx: Context) -> None:
    """2 processes under `bgpo launch`'s FSDP2 config: 2 steps, one reduce-scatter round per update, the
    sharded checkpoint read back whole."""
    if ctx.gpus < 2:
        c.note("FSDP2 over 2 GPUs", NEEDS_GPU if ctx.sizes.kind == "cpu" else SKIPPED,
               "CPU-size run" if ctx.sizes.kind == "cpu" else f"{ctx.gpus} GPU", ">= 2 GPUs")
        return
    from bgpo.checkpoint import FSDP_SHARDS, latest_checkpoint, load_model
    from bgpo.config import load_config
    from bgpo.launch import launch
    from bgpo.model import LLaDAModelLM

    cfg = load_config("tiny-sudoku", list(ctx.sizes.e2e) + ["trainer.steps=2", "trainer.checkpoint_every=1"])
    run = ctx.work / "fsdp-run"
    shutil.rmtree(run, ignore_errors=True)  # a fresh run, also in a reused --work-dir
    cfg.trainer.output_dir = str(run)
    cfg_file = ctx.work / "fsdp.yaml"
    cfg_file.write_text(cfg.to_yaml())
    plan = launch(cfg_file, nodes=1, gpus_per_node=2, output_dir=ctx.work / "launch")
    counts = ctx.work / "fsdp-counts"
    counts.mkdir(exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(plan.accelerate_config),
           "--num_processes", "2", "--main_process_port", str(port), "-m", "bgpo.doctor", "fsdp-worker",
           str(counts), "train", "--config", str(cfg_file)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0,1")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise BGPOError(f"accelerate launch exited {done.returncode}: {_last_line(done.stderr)}")
    ranks = [json.loads((counts / f"rank{r}.json").read_text()) for r in range(2)]
    units = max(n for r in ranks for n in r["fsdp_units"])  # fully_shard-ed modules: one reduce-scatter each
    per_update = [n for r in ranks for n in r["reduce_scatters_per_update"]]
    backwards = cfg.objective.n_t  # one backward per MC sample (micro-batch = the local batch)
    c.figures.update(ranks=ranks, fsdp_units=units, backwards_per_update=backwards)
    c.judge("gradient reduce-scatters per update", len(per_update) == 4 and max(per_update) <= units,
            f"{per_update}", f"<= {units} FSDP units (one round; {backwards * units} if every backward synced)")
    last = latest_checkpoint(run)
    shards = list((last / FSDP_SHARDS).glob("*.distcp")) if last else []
    whole, final = load_model(last).state_dict(), LLaDAModelLM.from_pretrained(run / "final").state_dict()
    same = whole.keys() == final.keys() and all(torch.equal(whole[k], final[k]) for k in final)
    c.judge("sharded checkpoint reloads in one process", len(shards) == 2 and same,
            f"{len(shards)} shards, {'equal to' if same else 'differs from'} final/", "2 shards = final/")


CHECKS: list[tuple[str, Callable[[Check, Context], None]]] = [
    ("environment", environment), ("packed attention", packed_attention), ("sampler", sampler),
    ("memory vs n_t", memory_vs_nt), ("one update", one_update), ("end to end", end_to_end),
    ("real weights", real_weights), ("FSDP2", fsdp2)]


# ---------------------------------------------------------------------------------------------
# helpers of the checks
# ---------------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _driver_version() -> str | None:
    """The NVIDIA driver (torch does not report it), from nvidia-smi when present."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=20)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _run_checkpoints() -> tuple[int, float]:
    """(keep_checkpoints, GB of one checkpoint: bf16 weights + optimiser states) of the one-GPU LLaDA-8B preset."""
    from bgpo.config import load_config
    from bgpo.optim import state_bytes_per_param
    from bgpo.plan import model_dims, n_params

    cfg = load_config("llada8b-math-1gpu")
    per = n_params(model_dims(cfg)) * (2 + state_bytes_per_param(cfg.optim.name, 2))
    return cfg.trainer.keep_checkpoints, per / 1e9


def _cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type: the device of a CPU-size report."""
    info = Path("/proc/cpuinfo")
    names = [ln.split(":", 1)[1].strip() for ln in (info.read_text().splitlines() if info.is_file() else [])
             if ln.startswith("model name")]
    return f"{names[0]} x {len(names)}" if names else platform.machine()


def _last_line(text: str) -> str:
    """The last non-empty line of a subprocess's stderr (where Python puts the error), shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _packed_batch(vocab: int, prompts: tuple[int, ...], response: int, device: str):
    """Left-padded sequences (prompt lengths ``prompts``, ``response`` tokens each) and a mask of half of
    every response: ``(ids, attention, mask)``, each ``(B, T)``."""
    g = torch.Generator().manual_seed(0)
    B, T = len(prompts), max(prompts) + response
    ids = torch.randint(16, min(vocab, 100_000), (B, T), generator=g)
    attention = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(prompts):
        attention[b, T - response - n:] = 1
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, T - response:] = torch.rand(B, response, generator=g) < 0.5
    mask[:, -1] = True  # at least one masked position per sequence
    return ids.to(device), attention.to(device), mask.to(device)


def _sample_weights(model: torch.nn.Module, per_param: int = 65536) -> list[tuple]:
    """For every parameter with a gradient: the parameter, a strided index sample, its values and the sign
    of its gradient there (a few MB even at 8B, where a copy of the weights would be 16 GB)."""
    out = []
    for w in model.parameters():
        if w.grad is None:
            continue
        flat = w.detach().view(-1)
        idx = torch.arange(0, flat.numel(), max(1, flat.numel() // per_param), device=flat.device)[:per_param]
        out.append((w, idx, flat[idx].float().clone(), w.grad.view(-1)[idx].float().sign()))
    return out


def _mean_move(sample: list[tuple]) -> float:
    """Mean move against the gradient, ``-sign(g) (w_after - w_before)``, where the gradient is non-zero.

    Adam's first step is ``lr g / (|g| + eps)``: about ``lr`` per weight (in expectation under stochastic
    rounding), so this mean over lr is ~1; a step rounded away gives 0, a broken scale far from 1.
    """
    moved, count = 0.0, 0
    for w, idx, before, sign in sample:
        after = w.detach().view(-1)[idx].float()
        live = sign != 0
        moved += float((-(after - before) * sign)[live].sum())
        count += int(live.sum())
    return moved / max(count, 1)


def _optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of the optimiser state on the host, tensor subclasses (torchao's 8-bit states) taken
    apart into their inner tensors, keyed ``param/state/inner``."""
    out = {}
    for pid, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            if hasattr(value, "__tensor_flatten__") and type(value) is not torch.Tensor:
                for inner in value.__tensor_flatten__()[0]:
                    out[f"{pid}/{key}/{inner}"] = getattr(value, inner).detach().cpu().clone()
            else:
                out[f"{pid}/{key}"] = value.detach().cpu().clone()
    return out


# ---------------------------------------------------------------------------------------------
# running the checks, the report
# ---------------------------------------------------------------------------------------------
def _alarm(_signum, _frame) -> None:
    raise CheckTimeout()


def run_check(name: str, fn: Callable[[Check, Context], None], ctx: Context, limit_s: float) -> Check:
    """One check under its time limit; an exception or the alarm ends it and is recorded, never raised."""
    c = Check(name, round(limit_s, 1))
    previous = signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        fn(c, ctx)
    except CheckTimeout:
        c.status, c.error = TIMEOUT, f"stopped after its {limit_s:.0f} s limit"
    except torch.OutOfMemoryError as err:
        c.status, c.error = ERROR, f"out of memory: {str(err).splitlines()[0][:200]}"
    except Exception as err:  # any failure of a check is its result; the next check runs
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        c.status, c.error = ERROR, f"{type(err).__name__}: {first}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    c.seconds = round(time.perf_counter() - start, 2)
    if c.status not in (TIMEOUT, ERROR):
        statuses = {r.status for r in c.rows}
        c.status = FAIL if FAIL in statuses else PASS if PASS in statuses else NEEDS_GPU if NEEDS_GPU in statuses \
            else SKIPPED
    else:
        c.rows.append(Row(name, "ran to the end", c.status, c.error or "", f"<= {limit_s:.0f} s"))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return c


def run_doctor(gpu: bool = False, model_path: str | Path | None = None, budget_s: float | None = None,
               work_dir: str | Path | None = None, progress: Callable[[str], None] | None = print) -> dict:
    """Run every check in order (sizes of ``SIZES["cuda" if gpu else "cpu"]``) and return the report."""
    if gpu and not torch.cuda.is_available():
        raise BGPOError("--gpu needs a CUDA GPU but torch sees none here: run `bgpo doctor` without --gpu for "
                        "the CPU-size checks")
    if budget_s is not None and not budget_s > 0:
        raise BGPOError(f"--budget-s must be > 0 seconds, got {budget_s}")
    if model_path is not None and not (Path(model_path) / "config.json").is_file():
        raise BGPOError(f"--model-path {model_path} holds no config.json: point it at a LLaDA model directory")
    sizes = SIZES["cuda" if gpu else "cpu"]
    gpus = torch.cuda.device_count() if gpu else 0
    own_work = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bgpo-doctor-", dir=".")) if own_work else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(sizes, work, None if model_path is None else Path(model_path), gpus)
    planned = budget_sum(sizes.kind, model_path is not None, gpus)
    budget = planned if budget_s is None else budget_s
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    checks = []
    try:
        for i, (name, fn) in enumerate(CHECKS, 1):
            left = budget - (time.perf_counter() - t0)
            if left < 1.0:
                c = Check(name, 0.0)
                c.note("ran", SKIPPED, "the --budget-s is spent", "")
            else:
                c = run_check(name, fn, ctx, min(sizes.budgets[name], left))
            checks.append(c)
            if progress:
                progress(f"[{i}/{len(CHECKS)}] {name}: {c.status} ({c.seconds:.1f} s)")
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    rows = [r for c in checks for r in c.rows]
    device = torch.cuda.get_device_name() if gpu else _cpu_name()
    return {
        "bgpo_doctor": 1, "kind": sizes.kind, "device": device, "gpus": gpus,
        "started": started.isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - t0, 1),
        "budget_s": budget, "budget_sum_s": planned,
        "gpu_budget_sums_s": {"one GPU": budget_sum("cuda"), "one GPU, --model-path": budget_sum("cuda", True),
                              ">= 2 GPUs, --model-path": budget_sum("cuda", True, 2)},
        "failed": [c.name for c in checks if c.status in (FAIL, ERROR, TIMEOUT)],
        "summary": [asdict(r) for r in rows],
        "checks": [asdict(c) for c in checks],
    }


def format_summary(report: dict) -> str:
    """The summary as a plain-text table (what ``bgpo doctor`` prints)."""
    cols = ("check", "criterion", "status", "measured", "threshold")
    rows = [[str(r[k]) for k in cols] for r in report["summary"]]
    widths = [min(60, max(len(c), *(len(r[i]) for r in rows))) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows)])


def summary_frame(report: dict):
    """The report's summary as a pandas DataFrame (check, criterion, status, measured, threshold)."""
    import pandas as pd

    return pd.DataFrame(report["summary"], columns=["check", "criterion", "status", "measured", "threshold"])


def newest_report(root: str | Path) -> dict:
    """The newest committed report under ``root`` (the repository or its ``book/data``): a GPU one
    (``gpu-*/doctor.json``, newest by its start time) when any exists, else ``cpu-doctor/doctor.json``;
    with ``provenance``: the file, its README's first line, device, kind and date."""
    root = Path(root)
    data = root / "book" / "data" if (root / "book" / "data").is_dir() else root
    reports = [(json.loads(p.read_text()), p) for p in data.glob("gpu-*/doctor.json")]
    if not reports and (data / "cpu-doctor" / "doctor.json").is_file():
        reports = [(json.loads((data / "cpu-doctor" / "doctor.json").read_text()), data / "cpu-doctor" / "doctor.json")]
    if not reports:
        raise BGPOError(f"no doctor report under {data}: run `bgpo doctor --out {data}/cpu-doctor/doctor.json`")
    report, path = max(reports, key=lambda rp: rp[0]["started"])
    readme = path.parent / "README.md"
    first = next((ln.lstrip("# ").strip() for ln in readme.read_text().splitlines() if ln.strip()), "") \
        if readme.is_file() else ""
    report["provenance"] = {"path": str(path.relative_to(data)), "readme": first, "device": report["device"],
                            "kind": report["kind"], "date": report["started"][:10]}
    return report


# ---------------------------------------------------------------------------------------------
# CLI, and the worker of the FSDP2 check
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--gpu", action="store_true", help="run the GPU sizes on CUDA (else CPU size)")
    parser.add_argument("--model-path", default=None, help="a local LLaDA-8B-Instruct directory for check 7")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="total seconds (default: the sum of the checks' own limits)")
    parser.add_argument("--work-dir", default=None,
                        help="scratch space for checkpoints (default: a temporary folder here, removed after)")


def main(args: argparse.Namespace) -> int:
    report = run_doctor(args.gpu, args.model_path, args.budget_s, args.work_dir)
    report["command"] = "bgpo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["doctor"] else "bgpo doctor"
    print(format_summary(report))
    print(f"{report['kind']} ({report['device']}): {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget; "
          f"failed: {', '.join(report['failed']) or 'none'}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 1 if report["failed"] else 0


def fsdp_worker(out: Path, argv: list[str]) -> int:
    """One rank of check 8: ``bgpo <argv>`` with the gradient reduce-scatters of every ``update`` counted."""
    import torch.distributed as dist

    import bgpo.train
    from bgpo.cli import main as cli

    calls, per_update = [0], []

    def counting(collective):
        def counted(*args, **kwargs):
            calls[0] += 1
            return collective(*args, **kwargs)
        return counted

    for name in ("reduce_scatter_single", "reduce_scatter_tensor"):  # FSDP2 calls the first (torch 2.13)
        if hasattr(dist, name):
            setattr(dist, name, counting(getattr(dist, name)))
    update, units = bgpo.train.update, []

    def counted_update(objective, model, *args, **kwargs):
        from torch.distributed.fsdp import FSDPModule

        units.append(sum(isinstance(m, FSDPModule) for m in model.modules()))  # groups that reduce-scatter
        calls[0] = 0
        try:
            return update(objective, model, *args, **kwargs)
        finally:
            per_update.append(calls[0])

    bgpo.train.update = counted_update
    code = cli(argv)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "reduce_scatters_per_update": per_update,
                                                      "fsdp_units": units}))
    return code


if __name__ == "__main__":
    if sys.argv[1:2] != ["fsdp-worker"]:
        sys.exit("usage: python -m bgpo.doctor fsdp-worker OUT_DIR BGPO_ARGS...")
    sys.exit(fsdp_worker(Path(sys.argv[2]), sys.argv[3:]))
