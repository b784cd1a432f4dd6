"""The small-scale experiment of the book: does RL beat the warm start, and how does ``n_t`` matter?

Every run starts from the same committed SFT warm start (:mod:`bgpo.sft`, ``book/data/small-scale/
warm-start``) and runs the trainer (:func:`bgpo.train.train`) with the ``tiny-sudoku`` preset at equal
steps, prompts per step, group size and learning rate; only the objective and ``n_t`` differ:

* **n_t sweep** — BGPO at ``n_t`` in {1, 4, 16};
* **equal memory** — BGPO at ``n_t = 16`` against the ELBO objective at the largest ``n_t`` whose
  activation bytes (measured with :func:`bgpo.memory.measure_update` on the grid's batch) fit in BGPO's.
  On-policy (one optimiser step per rollout batch) the ELBO objective and BGPO have the same value and
  gradient at equal ``n_t`` and masks (the derivation chapter checks it to float precision), so that
  ELBO arm is run as the BGPO arm of the same ``n_t``: the runs would be the same up to rounding;
* **d1** — diffu-GRPO's one-step estimate, the cheap biased baseline.

Evaluation is the papers': greedy, one token per sampler step, on the whole fixed held-out pool
(:func:`bgpo.data.heldout_pool`, excluded from every training split by construction), the same
puzzles for every arm and seed, every ``eval_every`` steps. The primary metric is the task's
(sudoku: ``cell_accuracy``, the fraction of blanks right — the published sudoku metric); changes
from the warm start are paired (same puzzles) and reported as mean ± standard error over seeds.

``bgpo experiment small-scale --out DIR`` writes ``DIR/runs/<arm>-s<seed>/`` (the trainer's
``metrics.jsonl``, ``eval.jsonl``, ``config.yaml``, ``final/`` (the trained policy, for the gradient
analysis; not committed) and our ``summary.json``),
``DIR/memory.csv``, ``DIR/initial.json`` (the warm start on the pool), ``DIR/summary.csv`` (one row
per run), ``DIR/table.csv`` (per arm: mean, std, standard error over seeds) and ``DIR/outcome.json``.
A run with a ``summary.json`` is skipped, a run with a checkpoint is resumed, so an interrupted grid
continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl

NT_SWEEP = (1, 4, 16)
SMALL_SCALE = Path(__file__).resolve().parents[1] / "book" / "data" / "small-scale"
WARM_START = SMALL_SCALE / "warm-start"  # imitates the imperfect teacher (bgpo.tasks.sudoku.imperfect_teacher)
CLEAN_WARM_START = SMALL_SCALE / "clean" / "warm-start"  # the earlier warm start, trained on correct solutions
CONTROL_NT = 4  # the n_t of the random-reward control of the 40-step grid (v2)


@dataclass(frozen=True)
class Arm:
    """One configuration of the grid (run once per seed)."""

    objective: str  # bgpo | elbo | d1
    n_t: int = 1
    ppo_epochs: int = 1
    reward: str = "verified"  # verified | shuffled (the random-reward control, rollout.reward)

    @property
    def name(self) -> str:
        base = "d1" if self.objective == "d1" else f"{self.objective}-nt{self.n_t}"
        return base + (f"-x{self.ppo_epochs}" if self.ppo_epochs > 1 else "") + \
            ("-random" if self.reward == "shuffled" else "")


def book_arms(elbo_nt_at_budget: int, n_ts: tuple[int, ...] = NT_SWEEP,
              control_nts: tuple[int, ...] = (CONTROL_NT,)) -> dict[str, list[Arm]]:
    """The comparisons as named lists of arms; an arm may serve several comparisons.

    ``equal_memory`` pairs BGPO at the largest ``n_t`` with the ELBO objective at the ``n_t`` that fits
    its bytes — run as ``Arm("bgpo", elbo_nt_at_budget)``, identical on-policy (see the module docstring).
    ``control`` is BGPO at each of ``control_nts`` trained on shuffled rewards: everything equal but the
    link between a completion and its reward, so it measures what update noise alone does -- matched to
    the arm it is compared with (the first is the best arm's ``n_t``).
    """
    return {
        "nt_sweep": [Arm("bgpo", n) for n in n_ts],
        "equal_memory": [Arm("bgpo", max(n_ts)), Arm("bgpo", elbo_nt_at_budget)],
        "d1": [Arm("d1")],
        "control": [Arm("bgpo", n, reward="shuffled") for n in control_nts],
    }


def unique_arms(comparisons: dict[str, list[Arm]]) -> list[Arm]:
    return list(dict.fromkeys(a for arms in comparisons.values() for a in arms))


def relative(path: str | Path | None) -> str | None:
    """``path`` relative to the working directory when it lies inside it (run logs name no machine path)."""
    if path is None:
        return None
    full = Path(path).resolve()
    return str(full.relative_to(Path.cwd())) if full.is_relative_to(Path.cwd()) else str(path)


@dataclass
class GridSettings:
    """What is held equal across arms (and the grid's size); :meth:`check` validates it."""

    base_config: str = "small-sudoku"
    init_from: str | None = str(WARM_START)  # SFT warm start; None: run `bgpo sft` into <out>/sft first
    seeds: int = 3
    steps: int = 40
    prompts_per_step: int = 16
    group_size: int = 8
    lr: float = 1e-4  # the pilot against the random control (book/data/small-scale/pilot)
    temperature: float = 1.0
    rollout_steps: int = 20  # sampler steps of the 20-token rollouts: one token per step, as evaluation
    num_test: int = 1024  # held-out pool problems per evaluation (greedy, one token per step)
    eval_every: int = 10
    n_ts: tuple[int, ...] = NT_SWEEP
    control_nts: tuple[int, ...] = (CONTROL_NT,)  # n_t of each random-reward control (first: the best arm's)
    order: str = "cost"  # cost: cheap arms first, seed by seed, the largest n_t last | seed: seed by seed
    arms: tuple[str, ...] = ()  # run only these arm names (empty: every arm of book_arms)
    extra_overrides: list = field(default_factory=list)  # more `section.field=value` for every run
    sft_overrides: dict = field(default_factory=dict)  # SFTConfig fields when the grid makes its own warm start

    @classmethod
    def ci(cls) -> "GridSettings":
        """A minutes-scale grid for CI and the chapters' quick runs: 1 seed, 2 steps, 2 n_t, 16 puzzles."""
        return cls(seeds=1, steps=2, prompts_per_step=2, group_size=4, num_test=16, eval_every=0, n_ts=(1, 4),
                   sft_overrides={"model_preset": "tiny", "model_overrides": {}, "steps": 20, "batch_size": 16,
                                  "num_train": 400, "num_test": 16, "eval_every": 20, "progress": False})

    def check(self) -> "GridSettings":
        ints = {"seeds": self.seeds, "steps": self.steps, "prompts_per_step": self.prompts_per_step,
                "num_test": self.num_test, "rollout_steps": self.rollout_steps}
        bad = [f"{k}={v}" for k, v in ints.items() if v < 1] + ([f"group_size={self.group_size}"]
                                                                  if self.group_size < 2 else [])
        if bad or self.eval_every < 0 or not 0 < self.lr < 1 or not self.n_ts or min(self.n_ts) < 1:
            raise BGPOError(f"grid settings out of range ({', '.join(bad) or 'eval_every/lr/n_ts'}): counts >= 1, "
                            f"group_size >= 2, eval_every >= 0, 0 < lr < 1, n_ts non-empty and >= 1")
        if self.order not in ("cost", "seed") or not self.control_nts or min(self.control_nts) < 1:
            raise BGPOError(f"grid order={self.order!r} / control_nts={self.control_nts}: order is cost or seed, "
                            "control n_t values >= 1")
        known = [a.name for a in unique_arms(book_arms(1, self.n_ts, self.control_nts))] + \
            [Arm("bgpo", n).name for n in range(1, max(self.n_ts) + 1)]
        unknown = [a for a in self.arms if a not in known]
        if unknown:
            raise BGPOError(f"unknown arm(s) {', '.join(unknown)}; the grid's arms are {', '.join(dict.fromkeys(known[:6]))}")
        from bgpo.data import POOL_SIZE

        if self.num_test > POOL_SIZE:
            raise BGPOError(f"grid num_test={self.num_test} exceeds the held-out pool ({POOL_SIZE}); lower it")
        self.config(Arm("bgpo", max(self.n_ts)), 0)  # the trainer validates the rest
        return self

    def overrides(self, arm: Arm, seed: int) -> list[str]:
        """The trainer `--set` strings of one run."""
        return [f"model.init_from={relative(self.init_from)}", f"objective.name={arm.objective}",
                f"rollout.reward={arm.reward}",
                f"objective.n_t={arm.n_t}", f"objective.ppo_epochs={arm.ppo_epochs}",
                f"trainer.seed={seed}", f"trainer.steps={self.steps}",
                f"rollout.prompts_per_step={self.prompts_per_step}", f"rollout.group_size={self.group_size}",
                f"rollout.temperature={self.temperature}", f"rollout.steps={self.rollout_steps}",
                f"optim.lr={self.lr}", f"data.num_test={self.num_test}", "trainer.eval_limit=null",
                "trainer.eval_steps=null", "trainer.eval_batch_size=128",
                f"trainer.eval_every={self.eval_every}", "trainer.eval_completions=true",
                "trainer.checkpoint_every=20",
                "trainer.keep_checkpoints=1", "trainer.progress=false", *self.extra_overrides]

    def config(self, arm: Arm, seed: int):
        from bgpo.config import load_config

        return load_config(self.base_config, self.overrides(arm, seed))

    def task(self):
        from bgpo.data import get_task

        return get_task(self.config(Arm("bgpo", 1), 0).data)


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


def summarize_run(run_dir: Path, arm: Arm, seed: int, metrics: tuple[str, ...], until: int | None = None,
                  tail: int = 5) -> dict:
    """One row of ``summary.csv`` from a finished run's logs: ``final_<metric>`` per named metric.

    ``until`` reads the logs up to that step only: a run that went on further (to look for its plateau) still
    gives the row it had there, so a grid's shorter horizon stays reproducible from the same logs.
    """
    steps, evals = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(run_dir / "eval.jsonl")
    if until is not None:
        steps, evals = [m for m in steps if m["step"] <= until], [e for e in evals if e["step"] <= until]
    if not steps or not evals or (until is not None and steps[-1]["step"] < until):
        raise BGPOError(f"{run_dir} has no metrics.jsonl/eval.jsonl rows up to step {until or 'its last'}: the run "
                        "did not finish; rerun the grid")
    rewards = [m["reward_mean"] for m in steps]
    return {"arm": arm.name, "objective": arm.objective, "n_t": arm.n_t, "ppo_epochs": arm.ppo_epochs,
            "reward": arm.reward, "seed": seed, "steps": steps[-1]["step"], **{f"final_{m}": evals[-1][m] for m in metrics},
            "train_reward_first": sum(rewards[:tail]) / len(rewards[:tail]),
            "train_reward_last": sum(rewards[-tail:]) / len(rewards[-tail:]),
            "zero_adv_groups": sum(m.get("zero_adv_groups", 0.0) for m in steps) / len(steps),
            "compute_s": round(sum(m.get("rollout_s", 0) + m.get("old_s", 0) + m.get("update_s", 0)
                                   for m in steps), 1)}


def finished(run_dir: Path, steps: int) -> bool:
    """Whether the run in ``run_dir`` got to ``steps`` (its ``summary.json`` says so; it may have gone further)."""
    done = run_dir / "summary.json"
    return done.is_file() and json.loads(done.read_text())["steps"] >= steps


def run_one(s: GridSettings, arm: Arm, seed: int, runs_dir: Path) -> dict:
    """Train one (arm, seed) to ``s.steps`` unless its ``summary.json`` says it got there; its row at ``s.steps``.

    Keeps the logs, ``final/`` and the last checkpoint (none of it weights that git holds): a run that
    finished fewer steps than asked -- a grid run on further to reach its plateau -- resumes from that
    checkpoint (the learning rate is constant after warm-up, so the longer run is the same run). A run that
    went further than asked gives its row at ``s.steps`` from its logs, without a wall time (only its whole is
    timed; its ``compute_s`` is summed per step).
    """
    from bgpo.checkpoint import latest_checkpoint
    from bgpo.train import train

    run_dir = runs_dir / f"{arm.name}-s{seed}"
    done = run_dir / "summary.json"
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary["steps"] == s.steps:
            return summary
        if summary["steps"] > s.steps:
            return {**summarize_run(run_dir, arm, seed, s.task().metric_names, until=s.steps), "wall_s": None}
        if latest_checkpoint(run_dir) is None:
            raise BGPOError(f"{run_dir} finished {summary['steps']} steps and kept no checkpoint to run on from; "
                            f"delete the folder to rerun it from the start")
    if latest_checkpoint(run_dir) is None:  # nothing to resume: start clean, no half-written logs
        shutil.rmtree(run_dir, ignore_errors=True)
    start = time.time()
    train(s.config(arm, seed), resume=True, output_dir=run_dir)
    wall = round(time.time() - start + (json.loads(done.read_text())["wall_s"] if done.is_file() else 0.0), 1)
    summary = {**summarize_run(run_dir, arm, seed, s.task().metric_names), "wall_s": wall}
    done.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def initial_metrics(s: GridSettings, out: Path) -> dict:
    """The warm start on the evaluation pool (step 0 of every curve; greedy, so the same for every seed).

    Also writes its completions (:data:`bgpo.outcome.INITIAL`), what per-puzzle comparisons pair with.
    """
    from bgpo.checkpoint import build_model
    from bgpo.data import get_task, load_examples, load_tokenizer
    from bgpo.evaluate import evaluate_examples
    from bgpo.outcome import INITIAL

    cfg = s.config(Arm("bgpo", 1), 0)
    model = build_model(cfg.model).eval()
    test = load_examples(cfg.data, cfg.data.test_split)
    with torch.inference_mode():
        result = evaluate_examples(model, load_tokenizer(cfg.model), get_task(cfg.data), test, cfg)
    with gzip.open(out / INITIAL, "wt") as f:
        f.write(json.dumps({"step": 0, "completions": [r["completion"] for r in result["records"]]}) + "\n")
    return {"step": 0, **result["summary"]}


def write_outcome(s: GridSettings, out: Path) -> dict:
    """``outcome.json`` and ``curves.csv`` of a grid's finished runs (:mod:`bgpo.outcome`)."""
    from bgpo.checkpoint import build_model
    from bgpo.data import load_examples
    from bgpo.outcome import INITIAL, completion_scores, curves, grid_outcome, load_run
    from bgpo.sft import TEACHER_EXPECTED

    cfg, task = s.config(Arm("bgpo", 1), 0), s.task()
    pool = load_examples(cfg.data, cfg.data.test_split)
    if not (out / INITIAL).is_file():
        initial_metrics(s, out)
    (_, first), = iter_jsonl(out / INITIAL)
    initial, *parts = completion_scores(first["completions"], pool, task)
    n_params = sum(p.numel() for p in build_model(cfg.model, load_weights=False).parameters())
    runs = [load_run(d, pool, task, n_params, until=s.steps) for d in sorted((out / "runs").glob("*"))
            if finished(d, s.steps)]
    sft = Path(s.init_from or "", "sft.json")
    imitated = sft.is_file() and json.loads(sft.read_text())["settings"].get("teacher") == "imperfect"
    teacher = np.array([TEACHER_EXPECTED[cfg.data.task](e) for e in pool]) if imitated else None
    result = {"n_params": n_params, **grid_outcome(runs, initial, tuple(parts), pool, task.primary_metric,
                                                   teacher)}
    (out / "outcome.json").write_text(json.dumps(result, indent=2) + "\n")
    curves(runs, initial).to_csv(out / "curves.csv", index=False)
    return result


def _run_job(job: tuple) -> dict:
    return run_one(*job)


def run_grid(s: GridSettings, out: str | Path, progress: bool = True, workers: int = 1,
             finished_only: bool = False) -> pd.DataFrame:
    """Warm start (if needed) → memory table → warm-start metrics → every (arm, seed) → summaries, outcome.

    Cheap arms run first, seed by seed, and the largest ``n_t`` last (its update costs ~n_t times
    BGPO-n_t=1's), so a grid stopped early has every seed of the cheap arms; ``finished_only=True``
    trains nothing and summarises the runs that finished (a grid stopped early, said as such).
    ``workers > 1`` runs that many jobs at once in separate processes (one thread each).
    """
    s.check()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if s.init_from is None or not Path(s.init_from, "config.json").is_file():
        from bgpo.sft import SFTConfig, train_sft

        sft_dir = out / "sft"
        if not (sft_dir / "sft.json").is_file():
            train_sft(SFTConfig(rl_config=s.base_config, **s.sft_overrides), sft_dir)
        s = dataclasses.replace(s, init_from=str(sft_dir))
    record = dataclasses.replace(s, init_from=relative(s.init_from))  # no machine path in committed files
    (out / "settings.json").write_text(json.dumps(dataclasses.asdict(record), indent=2) + "\n")
    memory_file = out / "memory.csv"
    if not memory_file.is_file():
        measure_memory(s).to_csv(memory_file, index=False)
    memory = pd.read_csv(memory_file)
    comparisons = book_arms(equal_memory_nt(memory, max(s.n_ts)), s.n_ts, s.control_nts)
    (out / "comparisons.json").write_text(json.dumps({k: [a.name for a in v] for k, v in comparisons.items()},
                                                     indent=2) + "\n")
    initial_file = out / "initial.json"
    if not initial_file.is_file():
        initial_file.write_text(json.dumps(initial_metrics(s, out), indent=2) + "\n")
    big = max(s.n_ts)
    arms = [a for a in unique_arms(comparisons) if not s.arms or a.name in s.arms]
    cost = (lambda job: (job[1].n_t == big > 1, job[2], job[1].n_t)) if s.order == "cost" else \
        (lambda job: (job[2], job[1].n_t, job[1].reward != "verified"))
    jobs = sorted(((s, arm, seed, out / "runs") for seed in range(s.seeds) for arm in arms), key=cost)
    if finished_only:
        jobs = [job for job in jobs if finished(job[3] / f"{job[1].name}-s{job[2]}", s.steps)]
        if not jobs:
            raise BGPOError(f"{out / 'runs'} has no finished run to summarise; run the grid first")
    bar = tqdm(total=len(jobs), desc="small-scale grid", disable=not progress)
    rows = []
    if workers <= 1:
        for job in jobs:
            rows.append(run_one(*job))
            bar.update()
    else:  # one thread per worker process: the models are too small to gain from intra-op threads
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for row in pool.imap_unordered(_run_job, jobs):
                rows.append(row)
                bar.update()
    bar.close()
    order = {(arm.name, seed): i for i, (_, arm, seed, _) in enumerate(jobs)}
    summary = pd.DataFrame(sorted(rows, key=lambda r: order[(r["arm"], r["seed"])]))
    by = memory.set_index(["objective", "n_t"])["activation_bytes"]
    summary["activation_bytes"] = [by.get((o, n if o != "d1" else 1)) for o, n in zip(summary.objective, summary.n_t)]
    summary.to_csv(out / "summary.csv", index=False)
    initial = json.loads(initial_file.read_text())
    summary = with_warm_start(summary, initial, s.task().metric_names)
    table(summary, [c for c in summary.columns if c.startswith(("final_", "delta_"))]).to_csv(out / "table.csv",
                                                                                               index=False)
    write_outcome(s, out)
    return summary


# One folder per user: a grid another user left in the shared temporary directory is theirs, not ours to
# reuse or clear (a root-owned one made chapter 05 fail with PermissionError for every other user).
CI_GRID = Path(tempfile.gettempdir()) / f"bgpo-ci-grid-uid{os.getuid()}"


def ci_grid(out: str | Path = CI_GRID, progress: bool = False) -> Path:
    """The one CI-scale grid (:meth:`GridSettings.ci`) that chapters 04 and 05 share; returns its folder.

    The first chapter to call it runs the grid into ``out`` (a fixed per-user folder under the system's
    temporary directory); the next one finds every run finished and only re-reads the summaries (:func:`run_grid`
    skips finished runs). A folder left by other settings or another warm start is cleared first, so a
    stale grid is never reused.
    """
    s = GridSettings.ci()
    out = Path(out)
    sft = Path(s.init_from, "sft.json") if s.init_from else None
    key = json.dumps(dataclasses.asdict(s), sort_keys=True) + (sft.read_text() if sft and sft.is_file() else "")
    stamp = out / "ci-grid.key"
    if out.exists() and (not stamp.is_file() or stamp.read_text() != key):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)
    run_grid(s, out, progress=progress)
    return out


# ---------------------------------------------------------------------------------------------
# reading a finished grid (for the notebooks)
# ---------------------------------------------------------------------------------------------
def table(summary: pd.DataFrame, columns) -> pd.DataFrame:
    """Per arm (order of first appearance): mean, sample standard deviation and standard error over seeds."""
    keys = ["arm", "objective", "n_t", "ppo_epochs", "reward"]
    summary = with_reward(summary)
    grouped = summary.groupby(keys, sort=False)[list(columns)]
    agg = grouped.agg(["mean", "std", "sem"])
    agg.columns = [f"{c}_{stat.replace('sem', 'se')}" for c, stat in agg.columns]
    agg = agg.reset_index()
    agg.insert(len(keys), "seeds", summary.groupby(keys, sort=False)["seed"].nunique().to_numpy())
    return agg


def with_reward(summary: pd.DataFrame) -> pd.DataFrame:
    """Grids written before the random-reward control had only verified rewards: say so explicitly."""
    return summary if "reward" in summary else summary.assign(reward="verified")


def with_warm_start(summary: pd.DataFrame, initial: dict, metrics) -> pd.DataFrame:
    """Add ``delta_<metric>`` = final value − the warm start's on the same pool (a paired change)."""
    return summary.assign(**{f"delta_{m}": summary[f"final_{m}"] - initial[m] for m in metrics})


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    se = float(pd.Series(values).sem()) if len(values) > 1 else float("nan")
    return sum(values) / len(values), None if math.isnan(se) else se


def load_curves(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy per-step training metrics and per-evaluation metrics of every run of a grid.

    Returns ``(train, evals)``; both carry ``arm, objective, n_t, ppo_epochs, seed``. ``evals`` gets
    a step-0 row per run from ``initial.json`` (the shared warm start), so curves start together.
    """
    out = Path(out)
    summary = pd.read_csv(out / "summary.csv")
    initial = json.loads((out / "initial.json").read_text())
    train_rows, eval_rows = [], []
    for r in summary.itertuples():
        run_dir = out / "runs" / f"{r.arm}-s{r.seed}"
        meta = {"arm": r.arm, "objective": r.objective, "n_t": r.n_t, "ppo_epochs": r.ppo_epochs,
                "reward": getattr(r, "reward", "verified"), "seed": r.seed}
        train_rows += [{**meta, **m} for m in read_jsonl(run_dir / "metrics.jsonl")]
        eval_rows += [{**meta, **initial}] + [{**meta, **e} for e in read_jsonl(run_dir / "eval.jsonl")]
    return pd.DataFrame(train_rows), pd.DataFrame(eval_rows)


def grid_progress(out: str | Path) -> pd.DataFrame:
    """Per planned arm of a grid (``comparisons.json``): its objective, ``n_t`` and reward, the seeds whose
    run finished (``summary.json`` at the grid's step count) and the seeds planned -- so a chapter can say
    what a grid stopped or still running has shown so far."""
    out = Path(out)
    settings = json.loads((out / "settings.json").read_text())
    known = {a.name: a for a in unique_arms(book_arms(1, tuple(settings["n_ts"]), tuple(settings["control_nts"])))}
    planned = dict.fromkeys(n for names in json.loads((out / "comparisons.json").read_text()).values() for n in names)
    rows = []
    for name in planned:
        done = [seed for seed in range(settings["seeds"])
                if finished(out / "runs" / f"{name}-s{seed}", settings["steps"])]
        arm = known[name]
        rows.append({"arm": name, "objective": arm.objective, "n_t": arm.n_t, "reward": arm.reward,
                     "finished": done, "planned": settings["seeds"], "steps": settings["steps"]})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = GridSettings()
    parser.add_argument("name", choices=["small-scale"], help="which experiment (the book's small-scale grid)")
    parser.add_argument("--out", required=True, help="grid directory, e.g. book/data/small-scale/grid")
    parser.add_argument("--init-from", default=None,
                        help="SFT warm start dir (default: the committed book/data/small-scale/warm-start)")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per arm (default {d.seeds})")
    parser.add_argument("--steps", type=int, default=None, help=f"RL steps per run (default {d.steps})")
    parser.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {d.lr})")
    parser.add_argument("--n-t", default=None, help=f"BGPO n_t values, comma-separated (default {','.join(map(str, d.n_ts))})")
    parser.add_argument("--arms", default=None,
                        help="run only these arms, comma-separated names (e.g. bgpo-nt4,bgpo-nt4-random)")
    parser.add_argument("--eval-every", type=int, default=None, help=f"evaluate every k steps (default {d.eval_every})")
    parser.add_argument("--num-test", type=int, default=None,
                        help=f"held-out pool puzzles per evaluation (default {d.num_test})")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config override for every run (e.g. rollout.cache=prefix); recorded in settings.json")
    parser.add_argument("--control-nt", default=None,
                        help=f"n_t of each random-reward control, comma-separated, the best arm's first "
                             f"(default {','.join(map(str, d.control_nts))})")
    parser.add_argument("--order", choices=["cost", "seed"], default=None,
                        help="cost: cheap arms first, largest n_t last; seed: every arm of a seed before the next")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (processes, 1 thread each)")
    parser.add_argument("--ci", action="store_true", help="minutes-scale grid (1 seed, 2 steps, 16 puzzles)")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: summarise the runs that finished (a grid stopped early)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    s = GridSettings.ci() if args.ci else GridSettings()
    try:
        n_ts = tuple(int(n) for n in args.n_t.split(",")) if args.n_t else None
        control_nts = tuple(int(n) for n in args.control_nt.split(",")) if args.control_nt else None
    except ValueError:
        raise BGPOError(f"--n-t/--control-nt expect comma-separated integers like 1,4,16; got "
                        f"{args.n_t!r}/{args.control_nt!r}") from None
    arms = tuple(a.strip() for a in args.arms.split(",")) if args.arms else None
    changes = {k: v for k, v in {"init_from": args.init_from, "seeds": args.seeds, "steps": args.steps,
                                 "lr": args.lr, "n_ts": n_ts, "arms": arms, "eval_every": args.eval_every,
                                 "num_test": args.num_test, "extra_overrides": args.set or None,
                                 "control_nts": control_nts, "order": args.order}.items()
               if v is not None}
    if args.init_from and not Path(args.init_from, "config.json").is_file():
        raise BGPOError(f"--init-from {args.init_from} holds no config.json; pass a `bgpo sft --out` directory")
    s = dataclasses.replace(s, **changes).check()
    start = time.time()
    summary = run_grid(s, args.out, progress=not args.no_progress, workers=args.workers,
                       finished_only=args.finished_only)
    metric = s.task().primary_metric
    print(table(summary, [f"final_{metric}", f"delta_{metric}"]).to_string(index=False))
    print(f"grid wall time: {time.time() - start:.0f} s -> {args.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# the outcome in words and tables (chapters 04/05 and the landing page)
# ---------------------------------------------------------------------------------------------
def arm_label(name: str, arm: dict) -> str:
    """A reader's name for an arm: ``BGPO n_t=4``, ``d1``, ``random reward (BGPO n_t=4)``."""
    base = "d1" if arm["objective"] == "d1" else f"{arm['objective'].upper()} $n_t={arm['n_t']}$"
    return f"random reward ({base})" if arm.get("reward") == "shuffled" else base


def mean_se_points(values: list[float]) -> str:
    """``+1.2 ± 0.3`` in points (×100) from per-seed fractions (± only with two seeds or more)."""
    mean, se = _mean_se(values)
    return f"{100 * mean:+.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")


def t95_points(values: list[float]) -> str:
    """The 95% t-interval over seeds of per-seed fractions, in points: ``[+3.9, +4.9]`` (— with one seed).

    It covers the seeds' noise only; the two-way bootstrap of :mod:`bgpo.outcome` adds the puzzles'.
    """
    from bgpo.outcome import interval
    from bgpo.stats import t_interval

    return interval(t_interval(values)["ci"])


def clears(values: list[float], bar: float = 0.02) -> bool:
    """The book's bar for a gain: above ``bar`` on every seed and a mean more than 2 standard errors above 0."""
    mean, se = _mean_se(values)
    return len(values) > 1 and min(values) > bar and se is not None and mean > 2 * se


def paired(outcome: dict, a: str, b: str) -> list[float]:
    """Per-seed difference of final scores, arm ``a`` − arm ``b``, on the seeds both ran (same puzzles)."""
    fa = dict(zip(outcome["arms"][a]["seeds"], outcome["arms"][a]["final"]))
    fb = dict(zip(outcome["arms"][b]["seeds"], outcome["arms"][b]["final"]))
    return [fa[s] - fb[s] for s in sorted(set(fa) & set(fb))]


def outcome_table(outcome: dict) -> pd.DataFrame:
    """Per arm: final score (mean ± SE, %), paired change from the warm start and from the random-reward
    control (mean ± SE and per seed, points)."""
    rows = []
    control = outcome.get("random_control")
    for name, arm in outcome["arms"].items():
        mean, se = _mean_se(arm["final"])
        row = {"arm": arm_label(name, arm), "seeds": len(arm["seeds"]),
               "final (%)": f"{100 * mean:.1f}" + (f" ± {100 * se:.1f}" if se is not None else ""),
               "change vs warm start": mean_se_points(arm["delta_vs_warm"]),
               "per seed (vs warm start)": ", ".join(f"{100 * d:+.1f}" for d in arm["delta_vs_warm"])}
        if control:
            vs = arm.get("delta_vs_random")
            row["change vs random reward"] = mean_se_points(vs) if vs else "—"
            row["per seed (vs control)"] = ", ".join(f"{100 * d:+.1f}" for d in vs) if vs else "—"
        rows.append(row)
    return pd.DataFrame(rows).replace(r"(?<![\w$])-(?=\d)", "−", regex=True)
