"""The RL loop: prompts -> G rollouts -> rewards -> group advantages -> objective -> optimiser step.

One step (bgpo-math.md §2–§5)::

    prompts  = next prompts_per_step examples of the shuffled training split
    y        = generate(policy, prompts)  x G            # LLaDA sampler, temperature 0.6
    r        = task.reward(y)                            # a crashing reward scores 0, never kills the run
    A        = (r - mean_g r) / (std_g r + 1e-6)         # group_advantages
    masks    = draw_masks(response, n_t)                 # ONCE; reused by old and new policy
    l_old    = l_j(theta_old) under no_grad              # prepare_old
    repeat ppo_epochs: zero_grad; update(objective) ; clip_grad_norm ; optimizer.step

Everything random in a step (data order, sampler noise, masks) is drawn from generators seeded by
``(seed, step, chunk)``, so a resumed run repeats an uninterrupted one bit for bit, and N processes
that each take ``prompts_per_step / N`` prompts do the same work as one process.

Scale comes from `accelerate`: one CPU process, DDP, or FSDP over many nodes (`bgpo launch`),
same code. The run directory holds ``config.yaml``, ``metrics.jsonl`` (one row per step),
``eval.jsonl`` (one row per evaluation), ``checkpoints/step-NNNNNNN/`` (atomic: written to a
temporary folder, fsync-ed, renamed) and ``final/`` (a plain Hugging Face model directory).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bgpo.config import Config, load_config
from bgpo.errors import BGPOError

CHECKPOINT_PREFIX = "step-"
OOM_HINT = (
    "out of GPU memory. Run `bgpo plan --config <your config> --gpus <N> --gpu-memory <GB>` to see what fits, "
    "then turn one of: objective.micro_batch_size (smaller), rollout.batch_size (smaller), "
    "model.gradient_checkpointing=true, objective.n_t (only 'elbo' grows with it; 'bgpo' does not), "
    "rollout.gen_length / max_prompt_length, or more GPUs (FSDP shards params, grads and AdamW state)"
)


# ---------------------------------------------------------------------------------------------
# model, tokenizer, data
# ---------------------------------------------------------------------------------------------
def build_tokenizer(model_cfg) -> Any:
    """The character tokenizer for preset models; the checkpoint's own tokenizer for real ones."""
    name = model_cfg.tokenizer or model_cfg.path
    if name is None:
        from bgpo.tokenizer import build_tokenizer as char_tokenizer

        return char_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name)
    tok.padding_side = "left"
    return tok


def _is_train_checkpoint(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "config.yaml").is_file()


def load_model(path: str | Path):
    """A model from a `bgpo train` checkpoint (``step-N/``) or a Hugging Face dir (``final/``, export, 8B)."""
    from bgpo.model import LLaDAModelLM

    path = Path(path)
    if (path / "config.json").is_file():
        return LLaDAModelLM.from_pretrained(path)
    if _is_train_checkpoint(path):
        cfg = load_config(path / "config.yaml")
        model = build_model(cfg.model, load_weights=False)
        _load_weights(model, path / "model.safetensors")
        return model
    raise BGPOError(f"{path} is neither a Hugging Face model dir (config.json) nor a `bgpo train` checkpoint "
                    f"(state.json + config.yaml); for an FSDP run use its final/ directory")


def _load_weights(model: torch.nn.Module, file: Path) -> None:
    from safetensors.torch import load_file

    if not file.is_file():
        raise BGPOError(f"{file} is missing (FSDP checkpoints are sharded: use the run's final/ directory)")
    state = {k.removeprefix("module."): v for k, v in load_file(str(file)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BGPOError(f"{file} does not fit the configured model: missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}; check model.preset/overrides against the checkpoint")


def build_model(model_cfg, load_weights: bool = True):
    """The policy: `model.path` (HF dir / hub id) or a preset, then `model.init_from` weights if set."""
    from bgpo.model import LLaDAModelLM, preset_config

    if model_cfg.path and load_weights:
        model = LLaDAModelLM.from_pretrained(model_cfg.path, **model_cfg.overrides)
    elif model_cfg.path:
        from bgpo.model import LLaDAConfig

        model = LLaDAModelLM(LLaDAConfig.from_pretrained(model_cfg.path, **model_cfg.overrides))
    else:
        model = LLaDAModelLM(preset_config(model_cfg.preset, **model_cfg.overrides))
    if model_cfg.init_from and load_weights:
        src = Path(model_cfg.init_from)
        if (src / "config.json").is_file():
            model = LLaDAModelLM.from_pretrained(src)
        elif (src / "model.safetensors").is_file():
            _load_weights(model, src / "model.safetensors")
        else:
            raise BGPOError(f"model.init_from={src} holds no config.json (HF dir) and no model.safetensors "
                            f"(bgpo checkpoint); point it at the SFT output or a step-N checkpoint")
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def get_task(data_cfg):
    from bgpo.tasks import get_task as registry

    return registry(data_cfg.task, style=data_cfg.style)


def load_examples(data_cfg, split: str, seed: int) -> list[dict]:
    """Examples of a split: the seeded generator ('synthetic'), the paper's hub data ('hf'), or a file."""
    task = get_task(data_cfg)
    if data_cfg.source == "synthetic":
        module = importlib.import_module(f"bgpo.tasks.{data_cfg.task}")
        if not hasattr(module, "generate"):
            raise BGPOError(f"task {data_cfg.task} has no synthetic generator; set data.source to 'hf' or a file")
        is_test = split == data_cfg.test_split
        n = data_cfg.num_test if is_test else data_cfg.num_train
        return module.generate(n, seed=seed + (1_000_003 if is_test else 0))
    return task.load(split, None if data_cfg.source == "hf" else data_cfg.source)


def encode_prompts(tokenizer, task, examples: list, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-formatted prompts, left-truncated to `max_length` and left-padded: (B, P) ids and mask.

    `examples` are task examples (`task.prompt` builds the messages) or, with `task=None`, message lists.
    """
    rows = []
    for example in examples:
        messages = example if task is None else task.prompt(example)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, P)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def safe_rewards(task, completions: list[str], examples: list[dict], log: Path | None) -> list[float]:
    """Per-completion rewards; a reward that raises scores 0 and is logged (the run goes on).

    The batch goes through ``task.rewards`` first (the code task runs its programs concurrently);
    only if that raises is it scored one completion at a time, so just the failing ones get 0.
    """
    try:
        return [float(r) for r in task.rewards(completions, examples)]
    except Exception:  # some completion's reward raised: find it below
        pass
    out = []
    for completion, example in zip(completions, examples):
        try:
            out.append(float(task.reward(completion, example)))
        except Exception as err:  # untrusted model output must never kill a run
            out.append(0.0)
            if log is not None:
                with log.open("a") as f:
                    f.write(json.dumps({"error": repr(err), "completion": completion,
                                        "traceback": traceback.format_exc(limit=3)}) + "\n")
    return out


def _generator(seed: int, step: int, chunk: int) -> torch.Generator:
    """The generator of one (step, chunk): a pure function of the seed, so resume and sharding repeat it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_000_033 + chunk)


def prompt_indices(n_examples: int, step: int, per_step: int, seed: int) -> list[int]:
    """Global example indices for a step: epochs of seeded permutations, read in order."""
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(pos, n_examples)
        out.append(int(np.random.default_rng(seed + epoch).permutation(n_examples)[i]))
    return out


# ---------------------------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------------------------
@dataclass
class Rollouts:
    """G rollouts per prompt with their rewards (the G rollouts of one prompt are contiguous)."""

    input_ids: torch.Tensor  # (N, P + L)
    attention_mask: torch.Tensor  # (N, P + L)
    response_mask: torch.Tensor  # (N, P + L) bool
    completions: list[str]
    examples: list[dict]
    rewards: torch.Tensor  # (N,)
    correct: torch.Tensor  # (N,) bool
    masks: torch.Tensor  # (N, n_t, P + L) bool, drawn once per rollout


def rollout(model, tokenizer, task, examples: list[dict], cfg: Config, step: int, first_prompt: int,
            device: torch.device, reward_log: Path | None = None) -> Rollouts:
    """Sample G completions per prompt in chunks of whole groups; score; draw the coupled masks.

    Chunk c (prompts ``first_prompt + c*k ...``) uses its own seeded generator for the sampler and the
    masks, so the result does not depend on how prompts are split over processes.
    """
    from bgpo.diffusion import generate
    from bgpo.objectives import build_batch

    r, G = cfg.rollout, cfg.rollout.group_size
    per_chunk = max(1, (r.batch_size or len(examples) * G) // G)  # prompts per sampler call
    ids, att, resp, comps, rows, masks = [], [], [], [], [], []
    for start in range(0, len(examples), per_chunk):
        chunk = examples[start:start + per_chunk]
        gen = _generator(cfg.trainer.seed, step, first_prompt + start)
        p_ids, p_mask = encode_prompts(tokenizer, task, chunk, r.max_prompt_length)
        p_ids, p_mask = p_ids.repeat_interleave(G, 0).to(device), p_mask.repeat_interleave(G, 0).to(device)
        x = generate(model, p_ids, p_mask, gen_length=r.gen_length, steps=r.steps, block_length=r.block_length,
                     temperature=r.temperature, remasking=r.remasking, generator=gen)  # (b*G, P + L)
        P = p_ids.shape[1]
        a = torch.cat([p_mask, torch.ones_like(x[:, P:])], 1)  # (b*G, P + L)
        rm = torch.zeros_like(x, dtype=torch.bool)
        rm[:, P:] = True  # the whole response, trailing EOS included (bgpo-math.md §1)
        batch = build_batch(cfg.objective.name, x, a, rm, torch.zeros(x.shape[0]), cfg.objective.n_t, gen)
        comps += tokenizer.batch_decode(x[:, P:].cpu(), skip_special_tokens=True)
        rows += [e for e in chunk for _ in range(G)]
        ids.append(x), att.append(a), resp.append(rm), masks.append(batch.masks)
    width = max(t.shape[1] for t in ids)  # chunks may have different prompt widths: left-pad to one
    pad = tokenizer.pad_token_id
    ids = torch.cat([_left_pad(t, width, pad) for t in ids])
    att = torch.cat([_left_pad(t, width, 0) for t in att])
    resp = torch.cat([_left_pad(t, width, False) for t in resp])
    masks = torch.cat([_left_pad(t, width, False) for t in masks])
    rewards = torch.tensor(safe_rewards(task, comps, rows, reward_log), dtype=torch.float32)
    correct = rewards == 1.0  # Task.is_correct is reward == 1: no second scoring (the code task's sandbox)
    return Rollouts(ids, att, resp, comps, rows, rewards.to(device), correct.to(device), masks)


def _left_pad(t: torch.Tensor, width: int, value) -> torch.Tensor:
    if t.shape[-1] == width:
        return t
    pad = torch.full((*t.shape[:-1], width - t.shape[-1]), value, dtype=t.dtype, device=t.device)
    return torch.cat([pad, t], -1)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest COMPLETE checkpoint: only renamed dirs with state.json count, temp dirs never do."""
    found = []
    for d in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = d.name.removeprefix(CHECKPOINT_PREFIX)
        if suffix.isdigit() and (d / "state.json").is_file():
            found.append((int(suffix), d))
    return max(found)[1] if found else None


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(accelerator, run_dir: Path, cfg: Config, step: int, keep: int) -> Path:
    """Write weights, optimiser, scheduler, RNG states, data position and step atomically.

    All processes write into ``checkpoints/.tmp-step-N``; the main process then adds ``state.json`` and
    ``config.yaml``, fsyncs every file and renames the folder to ``step-N``: a crash at any point leaves
    either no ``step-N`` or a complete one.
    """
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"{CHECKPOINT_PREFIX}{step:07d}"
    tmp = ckpt_root / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "config.yaml").write_text(cfg.to_yaml())
        state = {"step": step, "data_position": step * cfg.rollout.prompts_per_step,
                 "world_size": accelerator.num_processes, "time": time.time()}
        (tmp / "state.json").write_text(json.dumps(state))
        _fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_tree(ckpt_root)
        old = sorted(d for d in ckpt_root.glob(f"{CHECKPOINT_PREFIX}*") if d.name != final.name)
        for d in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(d, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _trim_jsonl(path: Path, last_step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _make_accelerator(cfg: Config):
    from accelerate import Accelerator

    return Accelerator(mixed_precision=cfg.trainer.mixed_precision, step_scheduler_with_optimizer=False)


def train(config: Config | str | Path, *, overrides: list[str] | None = None, resume: bool = False,
          output_dir: str | Path | None = None) -> Path:
    """Run RL from a config (object, preset name or YAML path); return the run directory.

    The run directory holds ``metrics.jsonl``, ``eval.jsonl``, ``checkpoints/`` and ``final/`` (a
    Hugging Face model dir with the tokenizer). ``resume=True`` continues from the newest complete
    checkpoint there (or starts fresh when there is none).
    """
    # a validated copy: the caller's Config object is never changed
    cfg = load_config(config.to_dict() if isinstance(config, Config) else config, overrides)
    if output_dir is not None:
        cfg.trainer.output_dir = str(output_dir)
    run_dir = Path(cfg.trainer.output_dir)
    accelerator = _make_accelerator(cfg)
    world = accelerator.num_processes
    if cfg.rollout.prompts_per_step % world:
        raise BGPOError(f"rollout.prompts_per_step ({cfg.rollout.prompts_per_step}) must be divisible by the "
                        f"number of processes ({world})")
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None and not resume:
        raise BGPOError(f"{run_dir} already has checkpoints ({ckpt.name}); pass --resume to continue it or "
                        f"--output-dir for a new run")
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    try:
        return _run(cfg, accelerator, run_dir, ckpt if resume else None)
    except torch.OutOfMemoryError:
        raise BGPOError(OOM_HINT) from None


def _run(cfg: Config, accelerator, run_dir: Path, ckpt: Path | None) -> Path:
    from tqdm.auto import tqdm

    from bgpo.evaluate import evaluate_examples
    from bgpo.objectives import RolloutBatch, group_advantages, prepare_old, update

    torch.manual_seed(cfg.trainer.seed)  # initial weights of a preset model
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    tokenizer = build_tokenizer(cfg.model)
    task = get_task(cfg.data)
    train_set = load_examples(cfg.data, cfg.data.train_split, cfg.trainer.seed)
    test_set = load_examples(cfg.data, cfg.data.test_split, cfg.trainer.seed)
    if cfg.trainer.eval_limit:
        test_set = test_set[: cfg.trainer.eval_limit]
    model = build_model(cfg.model)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
                                  weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (o.warmup_steps + 1)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start = 0
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        start = json.loads((ckpt / "state.json").read_text())["step"]
        if accelerator.is_main_process:
            for name in ("metrics.jsonl", "eval.jsonl"):
                _trim_jsonl(run_dir / name, start)
    accelerator.wait_for_everyone()
    metrics_file, eval_file = run_dir / "metrics.jsonl", run_dir / "eval.jsonl"
    reward_log = run_dir / f"reward_errors.rank{rank}.jsonl"
    t_cfg, obj = cfg.trainer, cfg.objective
    local = cfg.rollout.prompts_per_step // world
    bar = tqdm(range(start, t_cfg.steps), initial=start, total=t_cfg.steps, desc="bgpo train",
               disable=not (t_cfg.progress and accelerator.is_main_process))
    for step in bar:
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        idx = prompt_indices(len(train_set), step, cfg.rollout.prompts_per_step, t_cfg.seed)
        mine = idx[rank * local:(rank + 1) * local]
        model.eval()
        ro = rollout(model, tokenizer, task, [train_set[i] for i in mine], cfg, step, rank * local, device,
                     reward_log)
        times["rollout_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        advantages = group_advantages(ro.rewards, cfg.rollout.group_size)  # (N,)
        batch = RolloutBatch(ro.input_ids, ro.attention_mask, ro.response_mask, advantages, ro.masks)
        prepare_old(model, batch, obj.name, obj.micro_batch_size, packed=obj.packed)
        times["old_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        model.train()
        stats_sum: dict[str, float] = {}
        for _ in range(obj.ppo_epochs):
            optimizer.zero_grad(set_to_none=True)
            stats = update(obj.name, model, batch, clip_eps=obj.clip_eps, dual_clip=obj.dual_clip,
                           micro_batch_size=obj.micro_batch_size, packed=obj.packed)
            # grad_clip 0 = no clipping: an infinite max norm only measures the norm
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or float("inf"))
            optimizer.step()
            scheduler.step()
            for k, v in {**stats, "grad_norm": float(grad_norm)}.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / obj.ppo_epochs
        times["update_s"] = time.perf_counter() - t2
        row = _step_metrics(accelerator, ro, stats_sum, step + 1, scheduler.get_last_lr()[0], times, device)
        if accelerator.is_main_process:
            with metrics_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", acc=f"{row['accuracy']:.2f}",
                            loss=f"{row['loss']:.3g}")
        done = step + 1
        if (t_cfg.eval_every and done % t_cfg.eval_every == 0) or done == t_cfg.steps:
            model.eval()
            result = evaluate_examples(model, tokenizer, task, test_set, cfg, accelerator=accelerator)
            if accelerator.is_main_process:
                with eval_file.open("a") as f:
                    f.write(json.dumps({"step": done, **result["summary"]}) + "\n")
        if (t_cfg.checkpoint_every and done % t_cfg.checkpoint_every == 0) or done == t_cfg.steps:
            save_checkpoint(accelerator, run_dir, cfg, done, t_cfg.keep_checkpoints)
    bar.close()
    _save_final(accelerator, model, tokenizer, run_dir / "final")
    return run_dir


def _step_metrics(accelerator, ro: Rollouts, stats: dict, step: int, lr: float, times: dict,
                  device: torch.device) -> dict:
    """Per-step metrics over all processes: reward mean/std, accuracy, loss, clip fraction, tokens, time."""
    rewards = accelerator.gather(ro.rewards)  # (N_global,)
    correct = accelerator.gather(ro.correct.float())
    resp_tokens = accelerator.gather(ro.response_mask.sum().reshape(1).to(device)).sum()
    local = torch.tensor([stats.get("loss", 0.0), stats.get("clip_frac", 0.0), stats.get("ratio", 0.0)],
                         device=device)
    loss, clip_frac, ratio = accelerator.reduce(local, "mean").tolist()
    return {"step": step, "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item(),
            "accuracy": correct.mean().item(), "loss": loss, "clip_frac": clip_frac, "ratio": ratio,
            "grad_norm": stats.get("grad_norm", 0.0), "lr": lr, "response_tokens": int(resp_tokens),
            "sequences": int(rewards.numel()), **{k: round(v, 4) for k, v in times.items()},
            "memory_mb": round(_memory_mb(device), 1)}


def _save_final(accelerator, model, tokenizer, out: Path) -> None:
    """The trained policy as a plain Hugging Face directory (full weights gathered from all shards)."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()


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
