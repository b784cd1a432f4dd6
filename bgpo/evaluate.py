"""Named metrics of a policy on a task's held-out examples with the paper's evaluation sampler.

Evaluation settings (the papers' and DARE's): greedy (temperature 0), low-confidence remasking,
blocks of 32, one token per step (``steps = gen_length``). Each example gets one completion, scored
by the strict training reward; the task turns completions and rewards into the metrics its
published tables use, by name (``Task.metrics``: e.g. sudoku ``cell_accuracy``, ``d1_cell_accuracy``,
``solved``; countdown ``d1_success``, ``mean_reward``, ``strict_success``; math ``boxed_equiv``,
``d1_accuracy``; code ``pass@1``).

``bgpo eval --checkpoint DIR --task T`` writes ``generations.jsonl`` (completion, reward, example
per row) and ``scores.json`` next to it. Under several processes the examples are split by rank
and gathered, so training can evaluate an FSDP-sharded model in place.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bgpo.checkpoint import add_device_arguments, load_policy
from bgpo.config import Config, load_config
from bgpo.data import default_source, encode_prompts, get_task, load_examples
from bgpo.diffusion import generate
from bgpo.errors import BGPOError
from bgpo.rollout import safe_rewards


def evaluate_examples(model, tokenizer, task, examples: list[dict], cfg: Config, *, accelerator=None,
                      gen_length: int | None = None, steps: int | None = None) -> dict:
    """Greedy completions and named metrics for ``examples``: ``{"summary": {...}, "records": [...]}``.

    Under ``world`` processes each rank takes every ``world``-th example; the shards are padded to
    the same length (the last example repeated, its copy dropped after the gather), so every rank
    makes the same number of sampler calls — FSDP's collectives inside the forward would hang otherwise.
    """
    gen_length = gen_length or cfg.rollout.gen_length
    steps = steps or cfg.trainer.eval_steps or gen_length
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    device = accelerator.device if accelerator else next(model.parameters()).device
    per_rank = -(-len(examples) // world)
    mine = [min(i, len(examples) - 1) for i in range(rank, per_rank * world, world)]  # padded shard
    records = []
    bs = cfg.trainer.eval_batch_size
    for start in range(0, len(mine), bs):
        ids = mine[start:start + bs]
        batch = [examples[i] for i in ids]
        p_ids, p_mask = encode_prompts(tokenizer, task, batch, cfg.rollout.max_prompt_length)
        x = generate(model, p_ids.to(device), p_mask.to(device), gen_length=gen_length, steps=steps,
                     block_length=cfg.rollout.block_length, temperature=0.0,
                     remasking="low_confidence")  # (b, P + L); mask/EOS ids from the model's config
        completions = tokenizer.batch_decode(x[:, p_ids.shape[1]:].cpu(), skip_special_tokens=True)
        rewards = safe_rewards(task, completions, batch, None)
        for i, completion, reward, example in zip(ids, completions, rewards, batch):
            records.append({"index": i, "completion": completion, "reward": reward, "example": example})
    if world > 1:
        from accelerate.utils import gather_object

        records = gather_object(records)
    records = list({r["index"]: r for r in sorted(records, key=lambda r: r["index"])}.values())  # drop pad copies
    metrics = task.metrics([r["completion"] for r in records], [r["example"] for r in records],
                           [r["reward"] for r in records]) if records else {}
    summary = {"n": len(records), **metrics, "gen_length": gen_length, "steps": steps,
               "block_length": cfg.rollout.block_length}
    return {"summary": summary, "records": records}


def evaluate_checkpoint(checkpoint: str | Path, task: str | None = None, *, split: str = "test",
                        source: str | None = None, limit: int | None = None, gen_length: int | None = None,
                        steps: int | None = None, batch_size: int | None = None, style: str | None = None,
                        output_dir: str | Path | None = None, overrides: list[str] | None = None,
                        device: str | None = None, dtype: str | None = None) -> dict:
    """Evaluate a checkpoint dir; write ``generations.jsonl`` and ``scores.json``; return the summary.

    Settings not given are taken from the run's config when the checkpoint has one (task, data source,
    prompt style, lengths), else the defaults of :class:`bgpo.config.Config`.
    """
    checkpoint = Path(checkpoint)
    model, tokenizer, run_cfg = load_policy(checkpoint, device, dtype)
    cfg = load_config((run_cfg or Config()).to_dict(), overrides)
    if task and task != cfg.data.task:  # another task than the run's: its own default data
        cfg.data.task = task
        cfg.data.source = default_source(task)
    cfg.data.source = source or cfg.data.source
    cfg.data.style = style or cfg.data.style
    cfg.trainer.eval_batch_size = batch_size or cfg.trainer.eval_batch_size
    cfg = load_config(cfg.to_dict())  # re-validate after the changes
    examples = load_examples(cfg.data, split, cfg.trainer.seed)[:limit]
    result = evaluate_examples(model.eval(), tokenizer, get_task(cfg.data), examples, cfg, gen_length=gen_length,
                               steps=steps)
    out = Path(output_dir) if output_dir else checkpoint / f"eval-{cfg.data.task}-{split}"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "generations.jsonl").open("w") as f:
        for record in result["records"]:
            f.write(json.dumps(record) + "\n")
    summary = {"checkpoint": str(checkpoint), "task": cfg.data.task, "split": split, **result["summary"]}
    (out / "scores.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a `bgpo train` checkpoint (run/checkpoints/step-N), a run's final/ dir, or an HF dir")
    parser.add_argument("--task", default=None, help="countdown | sudoku | math | code (default: the run's task)")
    parser.add_argument("--split", default="test", help="data split (default: test)")
    parser.add_argument("--source", default=None, help="'synthetic', 'hf' or a data file (default: the run's)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--gen-length", type=int, default=None, help="response length (default: the run's)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps (default: gen length = one token per step)")
    parser.add_argument("--batch-size", type=int, default=None, help="prompts per sampler call")
    parser.add_argument("--style", choices=("chat", "compact"), default=None, help="prompt style (default: the run's)")
    parser.add_argument("--output-dir", default=None, help="where generations.jsonl and scores.json go")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override")
    add_device_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise BGPOError(f"--limit must be >= 1, got {args.limit}")
    with torch.inference_mode():
        summary = evaluate_checkpoint(args.checkpoint, args.task, split=args.split, source=args.source,
                                      limit=args.limit, gen_length=args.gen_length, steps=args.steps,
                                      batch_size=args.batch_size, style=args.style, output_dir=args.output_dir,
                                      overrides=args.set, device=args.device, dtype=args.dtype)
    print(json.dumps(summary, indent=2))
    return 0
