"""The RL loop: prompts -> G rollouts -> rewards -> group advantages -> masks -> objective -> step.

One step (:func:`step`), read top to bottom::

    prompts  = next prompts_per_step examples of the shuffled training split    # bgpo.data
    y, r     = rollout(policy, prompts) x G; task rewards                       # bgpo.rollout
    A        = (r - mean_g r) / (std_g r + 1e-6)                               # group_advantages
               (rollout.reward = shuffled: r permuted within its group first — the random-reward control)
    masks    = n_t coupled masks per rollout, from their own random stream      # drawn ONCE
    l_old    = l_j(theta_old) under no_grad                                     # prepare_old
    repeat ppo_epochs: zero_grad; update(objective); clip_grad_norm; optimizer.step
    shift    = l_0(theta_new) - l_0(theta_old) on the batch                     # policy_shift (logged)

Every random draw is a pure function of ``(seed, step, prompt, stream)`` (:func:`bgpo.rollout.stream`),
so a resumed run repeats an uninterrupted one bit for bit, and N processes that each take
``prompts_per_step / N`` prompts do the same work as one process.

Scale comes from ``accelerate``: one CPU process, DDP, or FSDP over many nodes (``bgpo launch``), same
code. The run directory holds ``config.yaml``, ``metrics.jsonl`` (one row per step), ``eval.jsonl``
(one row per evaluation), ``checkpoints/step-NNNNNNN/`` and ``final/`` (:mod:`bgpo.checkpoint`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bgpo import checkpoint, sandbox
from bgpo.config import Config, load_config
from bgpo.data import get_task, load_examples, load_tokenizer, prompt_indices
from bgpo.errors import BGPOError
from bgpo.evaluate import evaluate_examples
from bgpo.objectives import RolloutBatch, draw_objective_masks, group_advantages, policy_shift, prepare_old, update
from bgpo.optim import build_optimizer
from bgpo.rollout import MASKS, REWARDS, Rollouts, rollout, shuffled_rewards, stream

OOM_HINT = (
    "out of GPU memory. Run `bgpo plan --config <your config> --gpus <N> --gpu-memory <GB>` to see what fits, "
    "then turn one of: objective.micro_batch_size (smaller), rollout.batch_size (smaller), "
    "model.gradient_checkpointing=true, objective.n_t (only 'elbo' grows with it; 'bgpo' does not), "
    "rollout.gen_length / max_prompt_length, or more GPUs (FSDP shards params, grads and AdamW state)"
)


@dataclass
class Run:
    """Everything a step needs, built once by :func:`setup`."""

    cfg: Config
    dir: Path
    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tokenizer: Any
    task: Any
    train_set: list[dict]
    test_set: list[dict]
    start: int  # the first step to run (the resumed checkpoint's step, else 0)


def train(config: Config | str | Path, *, overrides: list[str] | None = None, resume: bool = False,
          output_dir: str | Path | None = None) -> Path:
    """Run RL from a config (object, preset name or YAML path); return the run directory.

    ``resume=True`` continues from the newest complete checkpoint there (or starts fresh when none).
    """
    cfg = load_config(config.to_dict() if isinstance(config, Config) else config, overrides)  # a validated copy
    if output_dir is not None:
        cfg.trainer.output_dir = str(output_dir)
    try:
        run = setup(cfg, resume)
        t = cfg.trainer
        for s in _progress(run):
            row = step(run, s)
            done = s + 1
            _log(run, "metrics.jsonl", row)
            if (t.eval_every and done % t.eval_every == 0) or done == t.steps:
                run.model.eval()
                result = evaluate_examples(run.model, run.tokenizer, run.task, run.test_set, cfg,
                                           accelerator=run.accelerator)
                _log(run, "eval.jsonl", {"step": done, **result["summary"]})
                if t.eval_completions:
                    _log(run, "eval_completions.jsonl.gz",
                         {"step": done, "completions": [r["completion"] for r in result["records"]]})
            if (t.checkpoint_every and done % t.checkpoint_every == 0) or done == t.steps:
                checkpoint.save_checkpoint(run.accelerator, run.dir, cfg, done, t.keep_checkpoints)
        checkpoint.save_final(run.accelerator, run.model, run.tokenizer, run.dir / "final")
    except torch.OutOfMemoryError:
        raise BGPOError(OOM_HINT) from None
    return run.dir


def setup(cfg: Config, resume: bool) -> Run:
    """Accelerator, data, policy, optimiser and scheduler; the resumed state when asked."""
    from accelerate import Accelerator

    accelerator = Accelerator(mixed_precision=cfg.trainer.mixed_precision, step_scheduler_with_optimizer=False)
    if cfg.rollout.prompts_per_step % accelerator.num_processes:
        raise BGPOError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                        f"number of processes ({accelerator.num_processes})")
    run_dir = Path(cfg.trainer.output_dir)
    ckpt = checkpoint.latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise BGPOError(f"{run_dir} already has checkpoints ({ckpt.name}); pass --resume to continue it or "
                        f"--output-dir for a new run")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    if cfg.data.task == "code":  # the sandbox it runs under, or the one-line refusal, before any rollout
        sandbox.set_policy(cfg.rollout.code_isolation)
        sandbox.require()
        if accelerator.is_main_process:
            print(sandbox.isolation_line(), flush=True)
    test_set = load_examples(cfg.data, cfg.data.test_split, cfg.trainer.seed)[: cfg.trainer.eval_limit]
    torch.manual_seed(cfg.trainer.seed)  # initial weights of a preset model
    model = checkpoint.build_model(cfg.model)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    warmup = cfg.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start = checkpoint.resume(accelerator, run_dir, ckpt) if ckpt is not None else 0
    return Run(cfg, run_dir, accelerator, model, optimizer, scheduler, load_tokenizer(cfg.model),
               get_task(cfg.data), training_prompts(cfg), test_set, start)


def training_prompts(cfg: Config) -> list[dict]:
    """The RL training split without any problem the warm start (``model.init_from``) trained on.

    The problems come from generator seed ``RL_DATA_SEED + trainer.seed`` (not the SFT's seeds) and
    :func:`bgpo.data.load_examples` already drops the held-out pool; a ``bgpo sft`` warm start
    also records its own training data (:func:`bgpo.sft.trained_prompts`), which are dropped too, so
    RL never rewards a puzzle the policy imitated, whatever the trainer's seed.
    """
    from bgpo.data import RL_DATA_SEED, prompt_key
    from bgpo.sft import trained_prompts

    examples = load_examples(cfg.data, cfg.data.train_split, RL_DATA_SEED + cfg.trainer.seed)
    seen = trained_prompts(str(cfg.model.init_from)) if cfg.model.init_from else frozenset()
    if not seen:
        return examples
    task = get_task(cfg.data)
    kept = [e for e in examples if prompt_key(task, e) not in seen]
    if not kept:
        raise BGPOError(f"every one of the {len(examples)} training problems was in the warm start's SFT data; "
                        f"raise data.num_train")
    return kept


def step(run: Run, s: int) -> dict:
    """One RL step (0-based ``s``): rollout -> advantages -> masks -> old terms -> update; the metrics row."""
    cfg, acc, obj = run.cfg, run.accelerator, run.cfg.objective
    rank, local = acc.process_index, cfg.rollout.prompts_per_step // acc.num_processes
    times, t0 = {}, time.perf_counter()
    mine = prompt_indices(len(run.train_set), s, cfg.rollout.prompts_per_step, cfg.trainer.seed)[
        rank * local:(rank + 1) * local]
    run.model.eval()
    ro = rollout(run.model, run.tokenizer, run.task, [run.train_set[i] for i in mine], cfg.rollout,
                 seed=cfg.trainer.seed, step=s, first_prompt=rank * local, device=acc.device,
                 reward_log=run.dir / f"reward_errors.rank{rank}.jsonl")
    times["rollout_s"], t1 = time.perf_counter() - t0, time.perf_counter()
    rewards = ro.rewards if cfg.rollout.reward == "verified" else shuffled_rewards(
        ro.rewards, cfg.rollout.group_size, stream(cfg.trainer.seed, s, rank * local, REWARDS, ro.rewards.device))
    batch = RolloutBatch(ro.input_ids, ro.attention_mask, ro.response_mask,
                         group_advantages(rewards, cfg.rollout.group_size), _masks(run, ro, s, rank * local))
    prepare_old(run.model, batch, obj.name, obj.micro_batch_size, packed=obj.packed)
    times["old_s"], t2 = time.perf_counter() - t1, time.perf_counter()
    run.model.train()
    stats_sum: dict[str, float] = {}
    for _ in range(obj.ppo_epochs):
        run.optimizer.zero_grad(set_to_none=True)
        stats = update(obj.name, run.model, batch, clip_eps=obj.clip_eps, dual_clip=obj.dual_clip,
                       micro_batch_size=obj.micro_batch_size, packed=obj.packed, accelerator=acc)
        # grad_clip 0 = no clipping: an infinite max norm only measures the norm
        grad_norm = acc.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip or float("inf"))
        run.optimizer.step()
        run.scheduler.step()
        for k, v in {**stats, "grad_norm": float(grad_norm)}.items():
            stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / obj.ppo_epochs
    times["update_s"] = time.perf_counter() - t2
    run.model.eval()
    shift = policy_shift(run.model, batch, obj.name, obj.micro_batch_size, packed=obj.packed)
    stats_sum.update(zip(shift, acc.reduce(torch.tensor(list(shift.values()), device=acc.device), "mean").tolist()))
    return _metrics_row(run, ro, stats_sum, s + 1, times)


def _masks(run: Run, ro: Rollouts, s: int, first_prompt: int) -> torch.Tensor:
    """The objective's MC masks, one generator per prompt group from the MASKS stream: (N, n_t, T)."""
    G, obj = run.cfg.rollout.group_size, run.cfg.objective
    return torch.cat([
        draw_objective_masks(obj.name, ro.input_ids[g:g + G], ro.attention_mask[g:g + G], ro.response_mask[g:g + G],
                             obj.n_t, stream(run.cfg.trainer.seed, s, first_prompt + g // G, MASKS, ro.input_ids.device))
        for g in range(0, ro.input_ids.shape[0], G)])


def _metrics_row(run: Run, ro: Rollouts, stats: dict, done: int, times: dict) -> dict:
    """Per-step metrics over all processes: rewards and the task's named metrics, loss, clipping, time."""
    acc, G = run.accelerator, run.cfg.rollout.group_size
    rewards = acc.gather(ro.rewards)  # (N_global,)
    flat = (ro.rewards.view(-1, G).std(1) == 0).float().mean().reshape(1)  # groups with zero advantage
    local = torch.tensor([stats.get("loss", 0.0), stats.get("clip_frac", 0.0), stats.get("ratio", 0.0)],
                         device=acc.device)
    loss, clip_frac, ratio = acc.reduce(local, "mean").tolist()
    trained = stats.get("n_forward", 0.0) * ro.input_ids.numel()  # positions each of old/update passes over
    tokens, positions, trained = acc.reduce(torch.tensor([float(ro.response_mask.sum()), float(ro.positions),
                                                          trained], device=acc.device), "sum").tolist()
    named = run.task.metrics(ro.completions, ro.examples, ro.rewards.tolist())  # this rank's rollouts
    named = dict(zip(named, acc.reduce(torch.tensor(list(named.values()), device=acc.device), "mean").tolist()))
    return {"step": done, "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(), **named,
            "zero_adv_groups": acc.reduce(flat, "mean").item(), "loss": loss, "clip_frac": clip_frac,
            "ratio": ratio, "grad_norm": stats.get("grad_norm", 0.0),
            "shift_mean": stats.get("shift_mean", 0.0), "shift_adv": stats.get("shift_adv", 0.0),
            "n_forward": stats.get("n_forward", 0.0),
            "lr": run.scheduler.get_last_lr()[0], "response_tokens": int(tokens), "sequences": int(rewards.numel()),
            "rollout_positions": int(positions), "update_positions": int(trained),
            **{k: round(v, 4) for k, v in times.items()}, "memory_mb": round(_memory_mb(acc.device), 1)}


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _progress(run: Run):
    from tqdm.auto import tqdm

    t = run.cfg.trainer
    return tqdm(range(run.start, t.steps), initial=run.start, total=t.steps, desc="bgpo train",
                disable=not (t.progress and run.accelerator.is_main_process))


def _log(run: Run, name: str, row: dict) -> None:
    """Append one JSON row to a run log (gzip members when ``name`` ends in ``.gz``: still one valid file)."""
    if run.accelerator.is_main_process:
        path = run.dir / name
        with (gzip.open(path, "at") if path.suffix == ".gz" else path.open("a")) as f:
            f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name (tiny-countdown, llada8b-math, ...) or YAML path")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, repeatable: --set objective.n_t=32 --set optim.lr=1e-6")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in the output dir (fresh start if none)")
    parser.add_argument("--output-dir", default=None, help="run directory (default: trainer.output_dir)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--fields", action="store_true",
                        help="list every config field with its default, allowed values and meaning, and exit")


def main(args: argparse.Namespace) -> int:
    if args.fields:
        from bgpo.config import describe

        print(describe())
        return 0
    cfg = load_config(args.config, args.set)
    if args.output_dir:
        cfg.trainer.output_dir = args.output_dir
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    run_dir = train(cfg, resume=args.resume)
    print(f"run directory: {run_dir}  (metrics.jsonl, eval.jsonl, final/)")
    return 0
