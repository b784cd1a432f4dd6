"""Masked-diffusion SFT warm start: a tiny LLaDA learns a synthetic task before RL.

RL needs a policy that sometimes succeeds (a group whose rewards are all equal has zero advantage
and teaches nothing), so the small-scale chapter first trains a freshly initialised tiny LLaDA with
LLaDA's supervised loss (:func:`bgpo.diffusion.sft_loss`: response-only masking with ratio
``t ~ U(eps, 1)``, cross-entropy weighted by ``1/t``)

    L_SFT = - E_t E_{y_t} [ (1/t) sum_{i masked} log p_theta(y^i | y_t, x) ] / L

on generated examples of a task in its *compact* prompt style (4x4 sudoku: the 16-digit puzzle in,
``<answer>16 digits</answer>`` out). Training stops at the first evaluation whose held-out accuracy
(fully solved, greedy decoding) reaches ``stop_accuracy``: a warm start that solves some puzzles and
leaves room for RL to improve, reproducible from the seed.

``bgpo sft --task sudoku --seed 0 --out runs/sft-sudoku`` writes a ``from_pretrained``-loadable
model + tokenizer directory, ``metrics.jsonl`` (loss per step, accuracy per evaluation) and
``sft.json`` (the config and the final accuracy).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bgpo.diffusion import generate, sft_loss
from bgpo.errors import BGPOError
from bgpo.model import LLaDAModelLM, preset_config
from bgpo.tokenizer import build_tokenizer

# The tiny model the book uses: RoPE makes copying the givens a relative-position lookup, so the
# model leaves chance level within a few hundred steps on 2 CPU cores (learned positions: thousands).
SMALL_OVERRIDES = {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 384}


@dataclass
class SFTConfig:
    """Everything that determines the warm start; ``seed`` fixes init, data order and masks."""

    task: str = "sudoku"
    style: str = "compact"
    seed: int = 0
    steps: int = 2000  # upper bound; training usually stops earlier at `stop_accuracy`
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    model_preset: str = "small"
    model_overrides: dict = field(default_factory=lambda: dict(SMALL_OVERRIDES))
    gen_length: int = 24  # response tokens (compact sudoku answer = 18, rest EOS)
    num_train: int = 20000
    train_seed: int = 0  # generator seed of the training examples
    test_seed: int = 1  # generator seed of the held-out examples (puzzles seen in training are dropped)
    num_test: int = 256
    task_kwargs: dict = field(default_factory=lambda: {"blanks": 10})  # extra generator arguments
    eval_every: int = 50
    stop_accuracy: float | None = 0.2  # stop at the first evaluation >= this (None: run all steps)
    progress: bool = True

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.num_test < 1:
            raise BGPOError("sft: steps, batch_size, eval_every and num_test must be >= 1")
        if self.stop_accuracy is not None and not 0.0 < self.stop_accuracy <= 1.0:
            raise BGPOError(f"sft: stop_accuracy must be in (0, 1] or None, got {self.stop_accuracy}")
        if not 0.0 < self.lr < 1.0:
            raise BGPOError(f"sft: lr must be in (0, 1), got {self.lr}")


def load_task(name: str, style: str):
    """The task object (prompt, reward, SFT target) and its seeded generator ``generate(n, seed, **kw)``."""
    try:
        module = importlib.import_module(f"bgpo.tasks.{name}")
    except ModuleNotFoundError:
        raise BGPOError(f"sft: unknown task '{name}'; use a task with a generator (sudoku, countdown)") from None
    task_cls = next((v for v in vars(module).values() if isinstance(v, type) and getattr(v, "name", None) == name),
                    None)
    if task_cls is None or not hasattr(module, "generate") or not hasattr(task_cls, "sft_target"):
        raise BGPOError(f"sft: task '{name}' has no seeded generator / SFT target; use sudoku or countdown")
    return task_cls(style=style), module.generate


def make_data(cfg: SFTConfig) -> tuple[list[dict], list[dict]]:
    """Training and held-out examples; held-out puzzles never appear in training."""
    task, gen = load_task(cfg.task, cfg.style)
    test = gen(cfg.num_test, seed=cfg.test_seed, **cfg.task_kwargs)
    seen = {json.dumps(e, sort_keys=True) for e in test}
    train = [e for e in gen(cfg.num_train, seed=cfg.train_seed, **cfg.task_kwargs)
             if json.dumps(e, sort_keys=True) not in seen]
    return train, test


def encode_prompts(tok, task, examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-template prompts, left-padded: ``(B, P)`` ids and attention mask."""
    texts = [tok.apply_chat_template(task.prompt(e), add_generation_prompt=True, tokenize=False) for e in examples]
    enc = tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def encode_sft(tok, task, examples: list[dict], gen_length: int) -> tuple[torch.Tensor, ...]:
    """Prompt + target padded with EOS to ``gen_length`` (LLaDA trains on the trailing EOS too).

    Returns ``input_ids`` (B, P + L), ``attention_mask`` (B, P + L), ``response_mask`` (B, P + L) bool.
    """
    prompt_ids, prompt_mask = encode_prompts(tok, task, examples)  # (B, P)
    targets = [tok(task.sft_target(e), add_special_tokens=False)["input_ids"] for e in examples]
    longest = max(len(t) for t in targets)
    if longest > gen_length:
        raise BGPOError(f"sft: a target has {longest} tokens > gen_length {gen_length}; raise gen_length")
    response = torch.tensor([t + [tok.eos_token_id] * (gen_length - len(t)) for t in targets])  # (B, L)
    B, P = prompt_ids.shape
    input_ids = torch.cat([prompt_ids, response], 1)  # (B, P + L)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(response)], 1)
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    response_mask[:, P:] = True
    return input_ids, attention_mask, response_mask


@torch.no_grad()
def accuracy(model, tok, task, examples: list[dict], gen_length: int, batch_size: int = 128) -> dict[str, float]:
    """Greedy, one token per step (the paper's evaluation setting): fraction fully correct and mean reward."""
    was_training = model.training
    model.eval()
    correct, reward = 0, 0.0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        prompt_ids, prompt_mask = encode_prompts(tok, task, chunk)
        out = generate(model, prompt_ids, prompt_mask, gen_length=gen_length, steps=gen_length,
                       block_length=gen_length, temperature=0.0)
        texts = tok.batch_decode(out[:, prompt_ids.shape[1]:], skip_special_tokens=True)
        correct += sum(task.is_correct(t, e) for t, e in zip(texts, chunk))
        reward += sum(task.reward(t, e) for t, e in zip(texts, chunk))
    model.train(was_training)
    return {"accuracy": correct / len(examples), "reward": reward / len(examples)}


def train_sft(cfg: SFTConfig, out: str | Path) -> dict:
    """Run the warm start and save it to ``out``; returns the summary also written to ``sft.json``."""
    cfg.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, _ = load_task(cfg.task, cfg.style)
    train, test = make_data(cfg)
    tok = build_tokenizer()
    torch.manual_seed(cfg.seed)
    model = LLaDAModelLM(preset_config(cfg.model_preset, **cfg.model_overrides))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = (out / "metrics.jsonl").open("w")
    start, result = time.time(), {"accuracy": 0.0, "reward": 0.0}
    bar = tqdm(range(1, cfg.steps + 1), desc="sft", disable=not cfg.progress)
    for step in bar:
        batch = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
        input_ids, attention_mask, response_mask = encode_sft(tok, task, batch, cfg.gen_length)
        loss = sft_loss(model, input_ids, response_mask, attention_mask, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        record = {"step": step, "loss": loss.item(), "time": time.time() - start}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            result = accuracy(model, tok, task, test, cfg.gen_length)
            record.update(result)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{result['accuracy']:.3f}")
        log.write(json.dumps(record) + "\n")
        log.flush()
        if "accuracy" in record and cfg.stop_accuracy is not None and result["accuracy"] >= cfg.stop_accuracy:
            break
    log.close()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    summary = {"config": dataclasses.asdict(cfg), "steps": step, "wall_time_s": round(time.time() - start, 1),
               "test_accuracy": result["accuracy"], "test_reward": result["reward"],
               "parameters": sum(p.numel() for p in model.parameters())}
    (out / "sft.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SFTConfig()
    parser.add_argument("--task", default=d.task, help="task with a seeded generator (sudoku, countdown)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of init, data order and masks")
    parser.add_argument("--out", required=True, help="output directory (model, tokenizer, metrics.jsonl, sft.json)")
    parser.add_argument("--steps", type=int, default=d.steps, help="maximum optimiser steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    parser.add_argument("--gen-length", type=int, default=d.gen_length, help="response length incl. EOS padding")
    parser.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every k steps")
    parser.add_argument("--num-test", type=int, default=d.num_test, help="held-out examples for accuracy")
    parser.add_argument("--stop-accuracy", type=float, default=d.stop_accuracy,
                        help="stop at the first evaluation with at least this accuracy (0 = never stop early)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    cfg = SFTConfig(task=args.task, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    gen_length=args.gen_length, eval_every=args.eval_every, num_test=args.num_test,
                    stop_accuracy=args.stop_accuracy or None, progress=not args.no_progress)
    if cfg.task != "sudoku":
        cfg.task_kwargs = {}
    summary = train_sft(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("steps", "wall_time_s", "test_accuracy", "test_reward")}))
    return 0
