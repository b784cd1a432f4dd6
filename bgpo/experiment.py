"""The small-scale experiment grid of the book: BGPO vs the ELBO objective vs d1, and ``n_t``.

Every run starts from the same SFT warm start (:mod:`bgpo.sft`) and uses the trainer
(:func:`bgpo.train.train`) with the ``tiny-sudoku`` preset at equal steps, prompts per step and
group size; only the objective, ``n_t`` and the updates per rollout batch differ. The arms answer:

(0) **check** — BGPO and the ELBO objective at equal ``n_t`` with one optimiser step per rollout
    batch have the same gradient (on-policy equivalence, bgpo-math.md §3): their curves coincide.
(a) **equal memory** — BGPO at ``n_t = 16`` against the ELBO objective at the largest ``n_t`` whose
    activation bytes (measured with :func:`bgpo.memory.measure_update` on the grid's own batch shape)
    fit in BGPO's.
(b) **n_t sweep** — BGPO at ``n_t`` in {1, 2, 4, 8, 16}.
(c) **off-policy** — 4 optimiser steps per rollout batch (``ppo_epochs = 4``): BGPO's bound is no
    longer tight after the first, so BGPO and ELBO differ.
(d) **d1** — diffu-GRPO's one-step estimate, the cheap biased baseline.

``bgpo experiment small-scale --out DIR`` writes ``DIR/runs/<arm>-s<seed>/`` (the trainer's
``metrics.jsonl``, ``eval.jsonl``, ``config.yaml`` and our ``summary.json``; weights are deleted),
``DIR/memory.csv``, ``DIR/initial.csv`` (warm-start accuracy per seed's test split),
``DIR/summary.csv`` (one row per run) and ``DIR/table.csv`` (mean ± std over seeds per arm).
A run with a ``summary.json`` is skipped, a run with a checkpoint is resumed, so an interrupted
grid continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl

NT_SWEEP = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Arm:
    """One configuration of the grid (run once per seed)."""

    objective: str  # bgpo | elbo | d1
    n_t: int = 1
    ppo_epochs: int = 1

    @property
    def name(self) -> str:
        if self.objective == "d1":
            return "d1" + (f"-x{self.ppo_epochs}" if self.ppo_epochs > 1 else "")
        return f"{self.objective}-nt{self.n_t}" + (f"-x{self.ppo_epochs}" if self.ppo_epochs > 1 else "")


def book_arms(elbo_nt_at_budget: int, n_ts: tuple[int, ...] = NT_SWEEP, check_nt: int = 4,
              offpolicy_epochs: int = 4) -> dict[str, list[Arm]]:
    """The comparisons (0), (a)–(d) as named lists of arms; an arm may serve several comparisons."""
    return {
        "check": [Arm("bgpo", check_nt), Arm("elbo", check_nt)],
        "equal_memory": [Arm("bgpo", max(n_ts)), Arm("elbo", elbo_nt_at_budget)],
        "nt_sweep": [Arm("bgpo", n) for n in n_ts],
        "off_policy": [Arm("bgpo", check_nt, offpolicy_epochs), Arm("elbo", check_nt, offpolicy_epochs)],
        "d1": list(dict.fromkeys([Arm("d1"), Arm("bgpo", check_nt), Arm("bgpo", max(n_ts))])),
    }


def unique_arms(comparisons: dict[str, list[Arm]]) -> list[Arm]:
    return list(dict.fromkeys(a for arms in comparisons.values() for a in arms))


@dataclass
class GridSettings:
    """What is held equal across arms (and the grid's size)."""

    base_config: str = "tiny-sudoku"
    init_from: str | None = None  # SFT warm start; None: run `bgpo sft` into <out>/sft first
    seeds: int = 3
    steps: int = 24
    prompts_per_step: int = 4
    group_size: int = 8
    lr: float = 5e-5  # 5e-4 collapsed the warm start within 12 steps (pilot); see book/data/runs/README.md
    temperature: float = 1.0
    rollout_steps: int = 8  # sampler steps for the 32-token rollouts (4 tokens per step)
    num_test: int = 256  # held-out puzzles per evaluation (greedy)
    eval_steps: int = 8  # sampler steps for evaluation (4 tokens per step, as the rollouts)
    eval_every: int = 0  # 0: evaluate at the end only (step 0 comes from `initial.csv`)
    n_ts: tuple[int, ...] = NT_SWEEP
    check_nt: int = 4
    offpolicy_epochs: int = 4
    extra_overrides: list = field(default_factory=list)  # more `section.field=value` for every run
    sft_overrides: dict = field(default_factory=dict)  # SFTConfig fields when the grid makes its own warm start

    @classmethod
    def ci(cls) -> "GridSettings":
        """A minutes-scale grid for CI: tiny model, 1 seed, 2 steps, 2 n_t values, small pools."""
        return cls(seeds=1, steps=2, prompts_per_step=2, group_size=4, num_test=16, n_ts=(1, 4),
                   check_nt=4, offpolicy_epochs=2,
                   sft_overrides={"model_preset": "tiny", "model_overrides": {}, "steps": 20, "batch_size": 16,
                                  "num_train": 400, "num_test": 16, "eval_every": 20, "stop_accuracy": None,
                                  "progress": False})

    def overrides(self, arm: Arm, seed: int) -> list[str]:
        """The trainer `--set` strings of one run."""
        return [f"model.init_from={self.init_from}", f"objective.name={arm.objective}",
                f"objective.n_t={arm.n_t}", f"objective.ppo_epochs={arm.ppo_epochs}",
                f"trainer.seed={seed}", f"trainer.steps={self.steps}",
                f"rollout.prompts_per_step={self.prompts_per_step}", f"rollout.group_size={self.group_size}",
                f"rollout.temperature={self.temperature}", f"rollout.steps={self.rollout_steps}",
                f"optim.lr={self.lr}", f"data.num_test={self.num_test}", "trainer.eval_limit=null",
                f"trainer.eval_steps={self.eval_steps}", "trainer.eval_batch_size=128",
                f"trainer.eval_every={self.eval_every}", "trainer.checkpoint_every=0",
                "trainer.progress=false", *self.extra_overrides]

    def config(self, arm: Arm, seed: int):
        from bgpo.config import load_config

        return load_config(self.base_config, self.overrides(arm, seed))


# ---------------------------------------------------------------------------------------------
# memory: which ELBO n_t fits in BGPO's bytes
# ---------------------------------------------------------------------------------------------
def measure_memory(s: GridSettings, objectives: tuple[str, ...] = ("bgpo", "elbo")) -> pd.DataFrame:
    """Activation bytes and time of one update per (objective, n_t) on the grid's batch shape.

    Uses the lead's saved-tensor meter (:func:`bgpo.memory.measure_update`): exact on CPU, and the
    same numbers a GPU would need for activations (they do not depend on the weights' values).
    """
    from bgpo.memory import measure_update, synthetic_rollouts
    from bgpo.checkpoint import build_model
    from bgpo.data import encode_prompts, get_task, load_examples, load_tokenizer

    cfg = s.config(Arm("bgpo", 1), 0)
    model = build_model(cfg.model).train()
    task, tok = get_task(cfg.data), load_tokenizer(cfg.model)
    example = load_examples(dataclasses.replace(cfg.data, num_test=1), cfg.data.test_split, 0)
    prompt_len = encode_prompts(tok, task, example, cfg.rollout.max_prompt_length)[0].shape[1]
    batch = s.prompts_per_step * s.group_size
    tensors = synthetic_rollouts(model.config.vocab_size, batch, prompt_len + cfg.rollout.gen_length, prompt_len,
                                 s.group_size, torch.device("cpu"))
    rows = []
    for objective in objectives:
        for n_t in s.n_ts:
            activation, _, seconds = measure_update(objective, model, n_t, tensors)
            rows.append({"objective": objective, "n_t": n_t, "activation_bytes": activation, "seconds": seconds,
                         "batch": batch, "seq_len": prompt_len + cfg.rollout.gen_length})
    activation, _, seconds = measure_update("d1", model, 1, tensors)
    rows.append({"objective": "d1", "n_t": 1, "activation_bytes": activation, "seconds": seconds, "batch": batch,
                 "seq_len": prompt_len + cfg.rollout.gen_length})
    model.zero_grad(set_to_none=True)
    return pd.DataFrame(rows)


def equal_memory_nt(memory: pd.DataFrame, budget_nt: int) -> int:
    """The largest ELBO ``n_t`` whose activation bytes fit in BGPO's at ``budget_nt`` (1 if none fits)."""
    bytes_of = memory.set_index(["objective", "n_t"])["activation_bytes"]
    budget = bytes_of[("bgpo", budget_nt)]
    fits = [n for (o, n), b in bytes_of.items() if o == "elbo" and b <= budget]
    return max(fits, default=1)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    """The rows of a run log; a run that has not written it yet has none."""
    return [row for _, row in iter_jsonl(path)] if path.is_file() else []


def summarize_run(run_dir: Path, arm: Arm, seed: int, tail: int = 5) -> dict:
    """One row of ``summary.csv`` from a finished run's logs."""
    metrics, evals = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "eval.jsonl")
    if not metrics or not evals:
        raise BGPOError(f"{run_dir} has no metrics.jsonl/eval.jsonl rows: the run did not finish; rerun the grid")
    rewards = [m["reward_mean"] for m in metrics]
    return {"arm": arm.name, "objective": arm.objective, "n_t": arm.n_t, "ppo_epochs": arm.ppo_epochs,
            "seed": seed, "steps": metrics[-1]["step"], "final_accuracy": evals[-1]["accuracy"],
            "final_reward": evals[-1]["reward_mean"], "best_accuracy": max(e["accuracy"] for e in evals),
            "train_reward_first": sum(rewards[:tail]) / len(rewards[:tail]),
            "train_reward_last": sum(rewards[-tail:]) / len(rewards[-tail:]),
            "compute_s": round(sum(m.get("rollout_s", 0) + m.get("old_s", 0) + m.get("update_s", 0)
                                   for m in metrics), 1)}


def run_one(s: GridSettings, arm: Arm, seed: int, runs_dir: Path) -> dict:
    """Train one (arm, seed) unless its ``summary.json`` exists; keep the logs, drop the weights."""
    from bgpo.checkpoint import latest_checkpoint
    from bgpo.train import train

    run_dir = runs_dir / f"{arm.name}-s{seed}"
    done = run_dir / "summary.json"
    if done.is_file():
        return json.loads(done.read_text())
    if latest_checkpoint(run_dir) is None:  # nothing to resume: start clean, no half-written logs
        shutil.rmtree(run_dir, ignore_errors=True)
    start = time.time()
    train(s.config(arm, seed), resume=True, output_dir=run_dir)
    summary = {**summarize_run(run_dir, arm, seed), "wall_s": round(time.time() - start, 1)}
    for heavy in ("checkpoints", "final"):
        shutil.rmtree(run_dir / heavy, ignore_errors=True)
    done.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def initial_accuracy(s: GridSettings, seed: int) -> dict:
    """The warm start's greedy accuracy on the test split a run with ``seed`` evaluates on (step 0)."""
    from bgpo.evaluate import evaluate_examples
    from bgpo.checkpoint import build_model
    from bgpo.data import get_task, load_examples, load_tokenizer

    cfg = s.config(Arm("bgpo", 1), seed)
    model = build_model(cfg.model).eval()
    test = load_examples(cfg.data, cfg.data.test_split, seed)
    result = evaluate_examples(model, load_tokenizer(cfg.model), get_task(cfg.data), test, cfg)["summary"]
    return {"seed": seed, "step": 0, "accuracy": result["accuracy"], "reward_mean": result["reward_mean"]}


def _cost(arm: Arm, s: GridSettings) -> int:
    """Relative compute of one RL step: rollout forwards + old-policy forwards + ~3x forwards per update."""
    samples = 1 if arm.objective == "d1" else arm.n_t
    return 16 + samples + 3 * samples * arm.ppo_epochs


def _run_job(job: tuple) -> dict:
    return run_one(*job)


def run_grid(s: GridSettings, out: str | Path, progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """Warm start (if needed) → memory table → every (arm, seed) → summary.csv and table.csv.

    ``workers > 1`` runs that many (arm, seed) jobs at once in separate processes (one thread each).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if s.init_from is None:
        from bgpo.sft import SFTConfig, train_sft

        sft_dir = out / "sft"
        if not (sft_dir / "sft.json").is_file():
            train_sft(SFTConfig(rl_config=s.base_config, **s.sft_overrides), sft_dir)
        s = dataclasses.replace(s, init_from=str(sft_dir))
    else:  # keep the warm start's logs (not its weights) beside the grid
        (out / "sft").mkdir(exist_ok=True)
        for name in ("sft.json", "metrics.jsonl"):
            if Path(s.init_from, name).is_file():
                shutil.copyfile(Path(s.init_from, name), out / "sft" / name)
    (out / "settings.json").write_text(json.dumps(dataclasses.asdict(s), indent=2) + "\n")
    memory_file = out / "memory.csv"
    if not memory_file.is_file():
        measure_memory(s).to_csv(memory_file, index=False)
    memory = pd.read_csv(memory_file)
    comparisons = book_arms(equal_memory_nt(memory, max(s.n_ts)), s.n_ts, s.check_nt, s.offpolicy_epochs)
    (out / "comparisons.json").write_text(json.dumps({k: [a.name for a in v] for k, v in comparisons.items()},
                                                     indent=2) + "\n")
    initial_file = out / "initial.csv"  # grows with --seeds: only missing seeds are evaluated
    initial = pd.read_csv(initial_file).to_dict("records") if initial_file.is_file() else []
    have = {int(r["seed"]) for r in initial}
    initial += [initial_accuracy(s, seed) for seed in range(s.seeds) if seed not in have]
    pd.DataFrame(initial).sort_values("seed").to_csv(initial_file, index=False)
    # most expensive arms first, so parallel workers finish together
    jobs = sorted(((arm, seed) for seed in range(s.seeds) for arm in unique_arms(comparisons)),
                  key=lambda job: -_cost(job[0], s))
    order = {(a.name, seed): i for i, (a, seed) in enumerate(
        (a, seed) for seed in range(s.seeds) for a in unique_arms(comparisons))}
    bar = tqdm(total=len(jobs), desc="small-scale grid", disable=not progress)
    rows = []
    if workers <= 1:
        for arm, seed in jobs:
            rows.append(run_one(s, arm, seed, out / "runs"))
            bar.update()
    else:  # one thread per worker process: the models are too small to gain from intra-op threads
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for row in pool.imap_unordered(_run_job, [(s, arm, seed, out / "runs") for arm, seed in jobs]):
                rows.append(row)
                bar.update()
    bar.close()
    summary = pd.DataFrame(sorted(rows, key=lambda r: order[(r["arm"], r["seed"])]))
    by = memory.set_index(["objective", "n_t"])["activation_bytes"]
    summary["activation_bytes"] = [by.get((o, n if o != "d1" else 1)) for o, n in zip(summary.objective, summary.n_t)]
    summary.to_csv(out / "summary.csv", index=False)
    table(summary).to_csv(out / "table.csv", index=False)
    return summary


# ---------------------------------------------------------------------------------------------
# reading a finished grid (for the notebooks)
# ---------------------------------------------------------------------------------------------
def table(summary: pd.DataFrame, columns: tuple[str, ...] = ("final_accuracy", "final_reward",
                                                              "train_reward_last")) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per arm (order of first appearance)."""
    keys = ["arm", "objective", "n_t", "ppo_epochs"]
    agg = summary.groupby(keys, sort=False)[list(columns)].agg(["mean", "std"])
    agg.columns = [f"{c}_{stat}" for c, stat in agg.columns]
    agg = agg.reset_index()
    agg.insert(len(keys), "seeds", summary.groupby(keys, sort=False)["seed"].nunique().to_numpy())
    return agg


def with_warm_start(summary: pd.DataFrame, initial: pd.DataFrame) -> pd.DataFrame:
    """Add ``accuracy_change`` = final accuracy - warm start's accuracy on the same seed's test split.

    Runs of one seed share prompts, sampler noise and test split, so this paired change removes the
    spread that comes from which puzzles a seed's test split happens to hold.
    """
    start = initial.set_index("seed")["accuracy"]
    return summary.assign(accuracy_change=summary["final_accuracy"] - summary["seed"].map(start))


def load_curves(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy per-step training metrics and per-evaluation accuracy of every run of a grid.

    Returns ``(train, evals)``; both carry ``arm, objective, n_t, ppo_epochs, seed``. ``evals`` gets
    a step-0 row per run from ``initial.csv`` (the shared warm start), so curves start together.
    """
    out = Path(out)
    summary = pd.read_csv(out / "summary.csv")
    initial = pd.read_csv(out / "initial.csv").set_index("seed")
    train_rows, eval_rows = [], []
    for r in summary.itertuples():
        run_dir = out / "runs" / f"{r.arm}-s{r.seed}"
        meta = {"arm": r.arm, "objective": r.objective, "n_t": r.n_t, "ppo_epochs": r.ppo_epochs, "seed": r.seed}
        train_rows += [{**meta, **m} for m in read_jsonl(run_dir / "metrics.jsonl")]
        start = initial.loc[r.seed]
        eval_rows.append({**meta, "step": 0, "accuracy": start["accuracy"], "reward_mean": start["reward_mean"]})
        eval_rows += [{**meta, **e} for e in read_jsonl(run_dir / "eval.jsonl")]
    return pd.DataFrame(train_rows), pd.DataFrame(eval_rows)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GridSettings()
    parser.add_argument("name", choices=["small-scale"], help="which experiment (the book's small-scale grid)")
    parser.add_argument("--out", required=True, help="grid directory, e.g. book/data/runs/small-scale")
    parser.add_argument("--init-from", default=None,
                        help="SFT warm start dir (`bgpo sft` output); default: run `bgpo sft` into OUT/sft")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per arm (default {d.seeds})")
    parser.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {d.steps})")
    parser.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {d.lr})")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (processes, 1 thread each)")
    parser.add_argument("--ci", action="store_true", help="minutes-scale grid (tiny model, 1 seed, 2 steps)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    s = GridSettings.ci() if args.ci else GridSettings()
    changes = {k: v for k, v in {"init_from": args.init_from, "seeds": args.seeds, "steps": args.steps,
                                 "lr": args.lr}.items() if v is not None}
    if changes.get("seeds", 1) < 1 or changes.get("steps", 1) < 1:
        raise BGPOError("--seeds and --steps must be >= 1")
    if args.init_from and not Path(args.init_from, "config.json").is_file():
        raise BGPOError(f"--init-from {args.init_from} holds no config.json; pass a `bgpo sft --out` directory")
    s = dataclasses.replace(s, **changes)
    start = time.time()
    summary = run_grid(s, args.out, progress=not args.no_progress, workers=args.workers)
    print(table(summary).to_string(index=False))
    print(f"grid wall time: {time.time() - start:.0f} s -> {args.out}")
    return 0
