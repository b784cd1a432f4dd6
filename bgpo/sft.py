"""Masked-diffusion SFT warm start: a tiny LLaDA learns a synthetic task before RL.

RL needs a policy that sometimes succeeds (a group whose rewards are all equal has zero advantage
and teaches nothing), so the small-scale chapter first trains a freshly initialised tiny LLaDA with
LLaDA's supervised loss (:func:`bgpo.diffusion.sft_loss`: response-only masking with ratio
``t ~ U(eps, 1)``, cross-entropy weighted by ``1/t``)

    L_SFT = - E_t E_{y_t} [ (1/t) sum_{i masked} log p_theta(y^i | y_t, x) ] / L

on generated examples in the RL config's prompt style (``tiny-sudoku``: the 16-digit puzzle in,
``<answer>16 digits</answer>`` + EOS padding out). Prompts, response length, the held-out split and
the evaluation are the trainer's own (:mod:`bgpo.train`, :mod:`bgpo.evaluate`), so the warm start
is measured exactly as RL will measure it: greedy, one token per step, on the first ``num_test``
problems of the fixed held-out pool (:func:`bgpo.data.heldout_pool`), which no training split
contains. Training runs ``steps`` steps (or stops at the first evaluation whose primary metric
reaches ``stop_at``): a policy that solves some puzzles and leaves room for RL, reproducible from the seed.

``bgpo sft --task sudoku --seed 0 --out runs/sft-sudoku`` writes a ``from_pretrained``-loadable
model + tokenizer directory, ``metrics.jsonl`` (loss per step, the task's named metrics per
evaluation) and ``sft.json`` (the settings and the final metrics); RL starts from it with
``--set model.init_from=runs/sft-sudoku``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bgpo.config import Config, load_config
from bgpo.diffusion import sft_loss
from bgpo.errors import BGPOError
from bgpo.model import LLaDAModelLM, preset_config
from bgpo.tasks import sudoku

# The tiny model the book uses (~0.9M parameters). RoPE makes copying the givens a relative-position
# lookup, so it leaves chance level within a few hundred steps on a 2-core CPU.
BOOK_MODEL = {"d_model": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 384}


@dataclass
class SFTConfig:
    """Everything that determines the warm start; ``seed`` fixes init, data order and masks."""

    rl_config: str = "tiny-sudoku"  # trainer preset/YAML: task, prompt style, gen_length, test split
    rl_overrides: list = field(default_factory=list)  # `section.field=value` strings applied to it
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    model_preset: str = "small"
    model_overrides: dict = field(default_factory=lambda: dict(BOOK_MODEL))
    num_train: int = 20000  # generated training examples (generator seed = `seed`)
    num_test: int = 256  # held-out examples: the first num_test of the fixed pool (bgpo.data)
    eval_every: int = 50
    stop_at: float | None = None  # stop at the first evaluation whose primary metric is >= this (None: all steps)
    teacher: str = "solution"  # whose completions are imitated: "solution" (correct) or "imperfect" (TEACHERS)
    schedule: str = "constant"  # learning rate: "constant", or "cosine" (to 0 at `steps`, with grad-norm clip 1)
    progress: bool = True

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.num_test < 1 or self.num_train < 1:
            raise BGPOError("sft: steps, batch_size, eval_every, num_train and num_test must be >= 1")
        if self.stop_at is not None and not 0.0 < self.stop_at <= 1.0:
            raise BGPOError(f"sft: stop_at must be in (0, 1] or None, got {self.stop_at}")
        if not 0.0 < self.lr < 1.0:
            raise BGPOError(f"sft: lr must be in (0, 1), got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise BGPOError(f"sft: schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.teacher not in ("solution", "imperfect"):
            raise BGPOError(f"sft: teacher must be 'solution' or 'imperfect', got {self.teacher!r}")

    def rl(self) -> Config:
        """The RL config this warm start is made for (its data and rollout sections are used here)."""
        cfg = load_config(self.rl_config, self.rl_overrides)
        if cfg.data.source != "synthetic":
            raise BGPOError(f"sft: {self.rl_config} has data.source={cfg.data.source!r}; the warm start needs the "
                            f"task's seeded generator (data.source=synthetic, tasks sudoku or countdown)")
        return cfg


# Imperfect teachers per task: (problem, rng) -> the completion the warm start imitates, and the teacher's
# expected primary metric on one problem (averaged over its random draws, exactly).
TEACHERS = {"sudoku": lambda example, rng: sudoku.imperfect_teacher(example["puzzle"], rng)}
TEACHER_EXPECTED = {"sudoku": lambda example: sudoku.teacher_expected(example["puzzle"])}


def make_data(cfg: SFTConfig, rl: Config) -> tuple[list[dict], list[dict]]:
    """Training examples (generator seed ``cfg.seed``) and the first ``num_test`` of the held-out pool.

    :func:`bgpo.data.load_examples` removes every prompt of the fixed held-out pool from training
    splits, so neither SFT nor RL ever trains on a puzzle any evaluation uses. With
    ``teacher="imperfect"`` each training example's ``solution`` is replaced by the task's imperfect
    teacher's (:data:`TEACHERS`, one draw per example from ``cfg.seed``); the test examples keep the truth.
    """
    from bgpo.data import load_examples

    test = load_examples(dataclasses.replace(rl.data, num_test=cfg.num_test), rl.data.test_split)
    train = load_examples(dataclasses.replace(rl.data, num_train=cfg.num_train), rl.data.train_split, cfg.seed)
    if cfg.teacher == "imperfect":
        if rl.data.task not in TEACHERS:
            raise BGPOError(f"sft: no imperfect teacher for task {rl.data.task}; use teacher='solution'")
        rng = random.Random(cfg.seed)
        train = [{**e, "solution": TEACHERS[rl.data.task](e, rng)} for e in train]
    return train, test


def teacher_metrics(cfg: SFTConfig, rl: Config, test: list[dict]) -> dict:
    """The teacher's own named metrics on the held-out examples: the level its student imitates.

    The named metrics are one draw of the teacher (seed ``cfg.seed``); ``<primary>_expected`` is its
    expectation over the draws, the level to beat for a claim of "beyond the teacher".
    """
    from bgpo.data import get_task

    if cfg.teacher == "solution":
        return {}
    task, rng = get_task(rl.data), random.Random(cfg.seed)
    completions = [task.sft_target({**e, "solution": TEACHERS[rl.data.task](e, rng)}) for e in test]
    rewards = [task.reward(c, e) for c, e in zip(completions, test)]
    expected = sum(TEACHER_EXPECTED[rl.data.task](e) for e in test) / len(test)
    return {**task.metrics(completions, test, rewards), f"{task.primary_metric}_expected": expected}


@lru_cache(maxsize=4)
def trained_prompts(warm_start: str) -> frozenset[str]:
    """The prompt keys (:func:`bgpo.data.prompt_key`) a ``bgpo sft`` warm start trained on.

    Rebuilt from its ``sft.json`` settings (the data are a pure function of them), so the RL trainer
    can drop every puzzle the warm start saw from its training prompts; an empty set for a directory
    that is not a ``bgpo sft`` output (an exported or hub model).
    """
    from bgpo.data import get_task, prompt_key

    record = Path(warm_start, "sft.json")
    if not record.is_file():
        return frozenset()
    cfg = SFTConfig(**json.loads(record.read_text())["settings"])
    rl = cfg.rl()
    task = get_task(rl.data)
    return frozenset(prompt_key(task, e) for e in make_data(cfg, rl)[0])


def encode_sft(tok, task, examples: list[dict], rl: Config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt (the trainer's encoding) + SFT target padded with EOS to ``gen_length``.

    LLaDA trains on the trailing EOS too: it is how the model learns to stop inside a fixed-length
    response. Returns ``input_ids``, ``attention_mask`` and ``response_mask`` (bool), each (B, P + L).
    """
    from bgpo.data import encode_prompts

    L = rl.rollout.gen_length
    prompt_ids, prompt_mask = encode_prompts(tok, task, examples, rl.rollout.max_prompt_length)  # (B, P)
    targets = [tok(task.sft_target(e), add_special_tokens=False)["input_ids"] for e in examples]
    longest = max(len(t) for t in targets)
    if longest > L:
        raise BGPOError(f"sft: a target has {longest} tokens > rollout.gen_length {L}; raise gen_length")
    response = torch.tensor([t + [tok.eos_token_id] * (L - len(t)) for t in targets])  # (B, L)
    input_ids = torch.cat([prompt_ids, response], 1)  # (B, P + L)
    attention_mask = torch.cat([prompt_mask, torch.ones_like(response)], 1)  # (B, P + L)
    response_mask = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, P + L)
    response_mask[:, prompt_ids.shape[1]:] = True
    return input_ids, attention_mask, response_mask


def train_sft(cfg: SFTConfig, out: str | Path, stop_after: int | None = None) -> dict:
    """Run the warm start and save it to ``out``; returns the summary also written to ``sft.json``.

    ``stop_after`` ends the run after that many steps of the same schedule (a reproducibility check
    of the first steps of a long run; the learning-rate schedule still spans ``cfg.steps``).
    """
    from bgpo.evaluate import evaluate_examples
    from bgpo.data import get_task, load_tokenizer

    cfg.check()
    rl = cfg.rl()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, tok = get_task(rl.data), load_tokenizer(rl.model)
    train, test = make_data(cfg, rl)
    torch.manual_seed(cfg.seed)
    model = LLaDAModelLM(preset_config(cfg.model_preset, **cfg.model_overrides))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # constant lr lets late loss spikes wreck the final weights (0.62 -> 0.29 held-out cell accuracy in one
    # evaluation interval, seen at lr 1e-3); a cosine decay to 0 ends on a plateau the seed reproduces
    decay = (lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps))) if cfg.schedule == "cosine" else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, metrics = time.time(), {}
    bar = tqdm(range(1, cfg.steps + 1), desc="bgpo sft", disable=not cfg.progress)
    with (out / "metrics.jsonl").open("w") as log:
        for step in bar:
            if stop_after is not None and step > stop_after:
                step -= 1
                break
            model.train()
            batch = [train[rng.randrange(len(train))] for _ in range(cfg.batch_size)]
            input_ids, attention_mask, response_mask = encode_sft(tok, task, batch, rl)
            loss = sft_loss(model, input_ids, response_mask, attention_mask, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.schedule == "cosine":
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            scheduler.step()
            record = {"step": step, "loss": loss.item(), "time_s": round(time.time() - start, 2)}
            if step % cfg.eval_every == 0 or step == cfg.steps:
                model.eval()
                summary = evaluate_examples(model, tok, task, test, rl)["summary"]
                metrics = {k: summary[k] for k in task.metric_names}
                record.update(metrics)
                bar.set_postfix(loss=f"{loss.item():.3f}", **{task.primary_metric: f"{metrics[task.primary_metric]:.3f}"})
            log.write(json.dumps(record) + "\n")
            log.flush()
            if metrics and cfg.stop_at is not None and record.get(task.primary_metric, -1.0) >= cfg.stop_at:
                break
    model.save_pretrained(out)
    tok.save_pretrained(out)
    summary = {"settings": dataclasses.asdict(cfg), "steps": step, "wall_time_s": round(time.time() - start, 1),
               "num_test": len(test), "eval_steps_per_token": 1, "test": metrics,
               "teacher_test": teacher_metrics(cfg, rl, test),
               "parameters": sum(p.numel() for p in model.parameters())}
    (out / "sft.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SFTConfig()
    parser.add_argument("--task", default="sudoku", help="task of the RL preset tiny-<task> (sudoku, countdown)")
    parser.add_argument("--config", default=None, help="RL preset or YAML instead of tiny-<task>")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a field of the RL config (e.g. rollout.gen_length=32), repeatable")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of init, training data, order and masks")
    parser.add_argument("--out", required=True, help="output directory (model, tokenizer, metrics.jsonl, sft.json)")
    parser.add_argument("--steps", type=int, default=d.steps, help="maximum optimiser steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW (peak) learning rate")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=d.schedule,
                        help="constant lr, or cosine decay to 0 at --steps with grad-norm clipping at 1")
    parser.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every k steps")
    parser.add_argument("--num-test", type=int, default=d.num_test,
                        help="held-out pool problems per evaluation (the first N of the fixed pool)")
    parser.add_argument("--stop-at", type=float, default=d.stop_at,
                        help="stop at the first evaluation whose primary metric (sudoku: cell_accuracy) is >= this")
    parser.add_argument("--teacher", choices=("solution", "imperfect"), default=d.teacher,
                        help="imitate correct solutions or the task's imperfect teacher (sudoku: naked singles "
                             "of the givens, other blanks a random candidate)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    cfg = SFTConfig(rl_config=args.config or f"tiny-{args.task}", rl_overrides=args.set, seed=args.seed,
                    steps=args.steps, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule, eval_every=args.eval_every,
                    num_test=args.num_test, stop_at=args.stop_at, teacher=args.teacher,
                    progress=not args.no_progress)
    summary = train_sft(cfg, args.out)
    print(json.dumps({k: summary[k] for k in ("steps", "wall_time_s", "test")}))
    return 0
