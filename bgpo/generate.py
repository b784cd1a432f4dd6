"""Sample completions from a checkpoint with the LLaDA sampler (``bgpo generate``).

Prompts come from ``--prompt`` (repeatable; sent as one user message through the chat template) or
from a task's split (``--task countdown --limit 4``). Defaults are the paper's evaluation settings:
greedy, one token per step, blocks of 32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bgpo.checkpoint import add_device_arguments, load_policy
from bgpo.errors import BGPOError


def generate_text(checkpoint: str | Path, prompts: list[str] | None = None, *, task: str | None = None,
                  split: str = "test", limit: int = 4, style: str = "chat", gen_length: int = 64,
                  steps: int | None = None, block_length: int | None = None, temperature: float = 0.0,
                  remasking: str = "low_confidence", seed: int = 0, device: str | None = None,
                  dtype: str | None = None) -> list[dict]:
    """Completions for ``prompts`` (or a task's first ``limit`` examples): ``[{prompt, completion}]``."""
    from bgpo.config import DataConfig
    from bgpo.data import default_source, encode_prompts, get_task, load_examples
    from bgpo.diffusion import generate

    model, tokenizer, _ = load_policy(checkpoint, device, dtype)
    model.eval()
    if prompts:
        examples = [{"prompt": p} for p in prompts]
        messages = [[{"role": "user", "content": p}] for p in prompts]
    elif task:
        data = DataConfig(task=task, style=style, source=default_source(task))
        the_task = get_task(data)
        examples = load_examples(data, split, seed)[:limit]
        messages = [the_task.prompt(e) for e in examples]
    else:
        raise BGPOError("give --prompt TEXT (repeatable) or --task NAME")
    p_ids, p_mask = encode_prompts(tokenizer, None, messages, model.config.max_sequence_length - gen_length)
    device = next(model.parameters()).device
    with torch.inference_mode():
        x = generate(model, p_ids.to(device), p_mask.to(device), gen_length=gen_length, steps=steps or gen_length,
                     block_length=block_length or min(32, gen_length), temperature=temperature, remasking=remasking,
                     generator=torch.Generator(device=device).manual_seed(seed))  # mask/EOS ids: the model config
    texts = tokenizer.batch_decode(x[:, p_ids.shape[1]:].cpu(), skip_special_tokens=True)
    return [{"prompt": m[-1]["content"], "completion": t, **({"example": e} if task else {})}
            for m, t, e in zip(messages, texts, examples)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint, final/ or HF model dir")
    parser.add_argument("--prompt", action="append", default=[], help="a user message (repeatable)")
    parser.add_argument("--task", default=None, help="take prompts from this task instead")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=4, help="number of task prompts")
    parser.add_argument("--style", choices=("chat", "compact"), default="chat", help="task prompt style")
    parser.add_argument("--gen-length", type=int, default=64, help="response length (multiple of --block-length)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion steps (default: gen length)")
    parser.add_argument("--block-length", type=int, default=None, help="default: 32 (or gen length if shorter)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--remasking", choices=("low_confidence", "random"), default="low_confidence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="write JSONL here instead of printing")
    add_device_arguments(parser)


def main(args: argparse.Namespace) -> int:
    rows = generate_text(args.checkpoint, args.prompt, task=args.task, split=args.split, limit=args.limit,
                         style=args.style, gen_length=args.gen_length, steps=args.steps,
                         block_length=args.block_length, temperature=args.temperature,
                         remasking=args.remasking, seed=args.seed, device=args.device, dtype=args.dtype)
    lines = [json.dumps(r) for r in rows]
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    else:
        for r in rows:
            print(f"--- {r['prompt']!r}\n{r['completion']}")
    return 0
