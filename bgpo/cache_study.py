"""Does the sampler's KV cache change what RL learns from? Drift, accuracy and likelihood, paired.

The cached sampler (``rollout.cache``, :func:`bgpo.diffusion.generate`) reads keys and values that are
stale by the tokens committed since the last refresh. This study measures, from one policy (the book's
warm start) on the fixed held-out pool, with common random numbers between samplers (the same sampler
stream per batch and seed, so the same noise meets the same masked positions while the trajectories agree):

(a) **drift by cache age** (steps since the refresh): at every step of a cached rollout the exact
    model's logits are computed beside the cached ones on the same sequence; per masked position of the
    active block ``KL(p_exact || p_cached)``, total variation ``1/2 sum |p_exact - p_cached|`` and top-1
    agreement; and whether the step commits the same positions with the same tokens when it replays the
    same noise (:func:`bgpo.diffusion.denoise_step` on a copy of the generator's state);
(b) **accuracy**, paired per puzzle against the uncached sampler: rollout cell accuracy at the RL
    temperature over ``seeds`` noise streams, and greedy evaluation accuracy (one token per step);
(c) **likelihood**: the exact model's ELBO per token of each sampler's rollouts
    (``mean_j l_j`` over ``n_t`` stratified masks, the same masks for every sampler): how far off-policy a
    cached rollout is for the policy that is trained on it.

Intervals are 95% bootstrap intervals that resample puzzles and seeds together (greedy: puzzles).
Positions are counted by the sampler (:class:`bgpo.diffusion.SamplerStats`); wall time is measured side
by side, the samplers taking turns batch by batch in one process.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from bgpo.diffusion import (SamplerStats, StepView, cache_window, denoise_step, device_generator, draw_masks,
                            elbo_term, generate)
from bgpo.errors import BGPOError
from bgpo.stats import bootstrap
from bgpo.model import KVCache

OUT = Path("book/data/small-scale/sampler-cache")
RL_DIR = Path("book/data/small-scale/cache-rl")  # one grid per sampler cache: <RL_DIR>/<cache>/


@dataclass
class StudySettings:
    """What the study samples: the policy, the pool, the block settings and the samplers compared."""

    init_from: str = "book/data/small-scale/warm-start"
    base_config: str = "small-sudoku"
    num_test: int = 1024  # held-out pool puzzles
    seeds: int = 4  # sampler noise streams at the RL temperature
    temperature: float = 1.0  # the RL rollouts' (small-sudoku preset)
    batch_size: int = 128
    elbo_n_t: int = 8  # stratified masks per rollout for the exact model's ELBO
    # block length -> cached samplers compared with `none` (one block: prefix and dual coincide)
    blocks: dict = field(default_factory=lambda: {20: ["prefix"], 5: ["prefix", "dual"], 4: ["prefix", "dual"]})

    def check(self) -> "StudySettings":
        if self.seeds < 1 or self.num_test < 1 or self.batch_size < 1 or self.elbo_n_t < 1:
            raise BGPOError("study settings: seeds, num_test, batch_size and elbo_n_t must be >= 1")
        for block, modes in self.blocks.items():
            if 20 % int(block) or not all(sampler_spec(m)[0] in ("prefix", "dual") for m in modes):
                raise BGPOError(f"study block {block} with samplers {modes}: blocks must divide the 20-token "
                                f"response, samplers be prefix or dual, or e.g. dual/r4 (refresh every 4 steps)")
        return self


def sampler_spec(spec: str) -> tuple[str, int | None]:
    """``"dual"`` -> ("dual", None); ``"dual/r4"`` -> ("dual", 4): a cache and its refresh interval."""
    cache, _, refresh = spec.partition("/r")
    if refresh and not refresh.isdigit():
        raise BGPOError(f"sampler {spec!r}: write a cache name, optionally /r<k> for a refresh every k steps (dual/r4)")
    return cache, int(refresh) if refresh else None


class DriftMeter:
    """The trace of a cached rollout: exact vs cached logits at every step, kept by cache age."""

    def __init__(self, model: torch.nn.Module, prompt_len: int, block_length: int, temperature: float,
                 first_row: int):
        self.model, self.P, self.block, self.temperature = model, prompt_len, block_length, temperature
        self.first_row = first_row  # the pool index of the batch's first sequence
        self.mask_id = model.config.mask_token_id
        self.records: list[dict] = []

    def __call__(self, view: StepView) -> None:
        if view.age == 0:  # a full forward: the cache is fresh, no drift by construction
            return
        exact = self.model(view.x, attention_mask=view.attention, logits_positions=view.wanted).logits.double()
        exact[:, self.mask_id] = -torch.inf
        p, logp_exact = exact.softmax(-1), exact.log_softmax(-1)  # (K, V)
        logp_cached = view.logits.log_softmax(-1)
        kl = (p * (logp_exact - logp_cached)).nan_to_num(0.0).sum(-1)  # (K,)
        tv = 0.5 * (p - logp_cached.exp()).abs().sum(-1)
        top1 = (exact.argmax(-1) == view.logits.argmax(-1)).double()
        start = self.P + view.block * self.block
        block = view.x[:, start:start + self.block]
        state = view.generator.get_state()
        replay = torch.Generator(device=view.generator.device)
        committed = []
        for logits in (exact, view.logits):  # the same noise for both: only the logits differ
            replay.set_state(state)
            committed.append(denoise_step(logits, block, view.n_commit, mask_id=self.mask_id,
                                          temperature=self.temperature, remasking="low_confidence",
                                          generator=replay))
        same = (committed[0] == committed[1]).all(-1)  # (b,) same positions, same tokens
        seq = view.wanted.nonzero()[:, 0]  # (K,) the sequence of each position
        count = torch.bincount(seq, minlength=len(view.x)).tolist()  # (b,) masked positions per sequence
        for name, value in (("kl", kl), ("tv", tv), ("top1", top1)):
            per_seq = torch.zeros(len(view.x), dtype=torch.float64).index_add_(0, seq, value)
            self.records += [{"row": self.first_row + r, "age": view.age, "metric": name, "value": v / c}
                             for r, (v, c) in enumerate(zip(per_seq.tolist(), count)) if c]
        self.records += [{"row": self.first_row + r, "age": view.age, "metric": "same_commit", "value": float(s)}
                         for r, s in enumerate(same.tolist())]


def exactness_gate(model: torch.nn.Module, prompt_ids: torch.Tensor, attention: torch.Tensor, **sampler) -> dict:
    """The cached path against the naive sampler (the CI gate; run the model in float64 for <= 1e-10).

    At every step of the naive sampler a cache is filled from that step's sequence and the prefix,
    prefix-with-horizon and dual windows are run against it: their logits must be the step's own
    (``max_logit_diff``). Then ``generate`` with each cache and ``refresh=1`` must return the naive
    sampler's tokens under the same noise (``same_tokens``).
    """
    block, P = sampler["block_length"], prompt_ids.shape[1]
    worst, windows = 0.0, 0

    def check(view: StepView) -> None:
        nonlocal worst, windows
        start = P + block * view.block
        for cache, horizon in (("prefix", None), ("prefix", block), ("dual", None)):
            w = cache_window(cache, start, start + block, view.x.shape[1], horizon)
            kv = KVCache()
            model(view.x, attention_mask=view.attention, kv_cache=kv)
            logits = model(view.x[:, w], kv_cache=kv, window=w, logits_positions=view.wanted[:, w]).logits.double()
            logits[:, model.config.mask_token_id] = -torch.inf
            worst = max(worst, (logits - view.logits).abs().nan_to_num(0.0).max().item())
            windows += 1

    with torch.no_grad():
        naive = generate(model, prompt_ids, attention, trace=check, **sampler)
        same = {cache: bool(torch.equal(generate(model, prompt_ids, attention, cache=cache, refresh=1, **sampler),
                                        naive)) for cache in ("prefix", "dual")}
    return {"max_logit_diff": worst, "windows_checked": windows, "same_tokens": same}


def tiny_gate(seed: int = 0) -> dict:
    """:func:`exactness_gate` on a random tiny model in float64: three left-padded prompts (0, 1 and 2 pad
    tokens), 12 tokens in blocks of 4, temperature 0.7 (the book's and CI's gate)."""
    from bgpo.model import LLaDAModelLM, preset_config

    torch.manual_seed(seed)
    model = LLaDAModelLM(preset_config("tiny")).double().eval()
    ids = torch.randint(10, model.config.vocab_size - 10, (3, 6))
    attention = torch.ones_like(ids)
    for row in (1, 2):
        ids[row, :row], attention[row, :row] = model.config.pad_token_id, 0
    return exactness_gate(model, ids, attention, gen_length=12, steps=12, block_length=4, temperature=0.7,
                          generator=seed)


def _load(s: StudySettings):
    from bgpo.checkpoint import build_model
    from bgpo.config import load_config
    from bgpo.data import get_task, load_examples, load_tokenizer

    if not Path(s.init_from, "config.json").is_file():
        raise BGPOError(f"{s.init_from} holds no config.json: pass the warm start (a `bgpo sft --out` dir)")
    cfg = load_config(s.base_config, [f"model.init_from={s.init_from}", f"data.num_test={s.num_test}"])
    model = build_model(cfg.model).eval()
    task = get_task(cfg.data)
    return cfg, model, load_tokenizer(cfg.model), task, load_examples(cfg.data, cfg.data.test_split)


def _elbo(model, x: torch.Tensor, attention: torch.Tensor, prompt_len: int, n_t: int, seed: int) -> torch.Tensor:
    """The exact model's ``mean_j l_j`` (nats per token) of each sequence's response, masks from ``seed``."""
    response = torch.zeros_like(x, dtype=torch.bool)
    response[:, prompt_len:] = True
    masks = draw_masks(response, n_t, device_generator(seed, x.device))  # (b, n_t, T)
    return torch.stack([elbo_term(model, x, masks[:, j], response, attention)[1] for j in range(n_t)], 1).mean(1)


def run_study(s: StudySettings, out: str | Path = OUT, progress: bool = True) -> dict:
    """Sample the pool with every sampler, batch by batch in turns; write the per-puzzle and summary files."""
    from tqdm.auto import tqdm

    from bgpo.data import encode_prompts

    s.check()
    cfg, model, tok, task, pool = _load(s)
    r = cfg.rollout
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, drift, cost = [], [], []
    batches = [(i, pool[i:i + s.batch_size]) for i in range(0, len(pool), s.batch_size)]
    jobs = [(block, seed) for block in s.blocks for seed in [None, *range(s.seeds)]]  # None: greedy
    bar = tqdm(total=len(jobs) * len(batches), desc="sampler-cache study", disable=not progress)
    with torch.inference_mode():
        for block, seed in jobs:
            modes = ["none", *s.blocks[block]]
            for first, batch in batches:
                ids, mask = encode_prompts(tok, task, batch, r.max_prompt_length)
                P = ids.shape[1]
                for mode in modes:
                    cache, refresh = sampler_spec(mode)
                    kw = dict(gen_length=r.gen_length, steps=r.steps, block_length=block, cache=cache, refresh=refresh,
                              temperature=s.temperature if seed is not None else 0.0)
                    gen_seed = 1_000_003 * (seed or 0) + first  # common random numbers across samplers
                    stats = SamplerStats()
                    t0 = time.perf_counter()
                    x = generate(model, ids, mask, generator=gen_seed, stats=stats, **kw)
                    cost.append({"block": block, "mode": mode, "greedy": seed is None,
                                 "seconds": time.perf_counter() - t0, "positions": stats.positions,
                                 "tokens": stats.tokens, "calls": stats.calls})
                    completions = tok.batch_decode(x[:, P:], skip_special_tokens=True)
                    rewards = task.rewards(completions, batch)
                    attention = torch.cat([mask, torch.ones_like(x[:, P:])], 1)
                    elbo = _elbo(model, x, attention, P, s.elbo_n_t, 7 + first) if seed is not None else None
                    rows += [{"block": block, "mode": mode, "seed": -1 if seed is None else seed,
                              "puzzle": first + j, "reward": float(rewards[j]),
                              "elbo": None if elbo is None else float(elbo[j])} for j in range(len(batch))]
                    if mode != "none" and seed == 0:  # the drift trace replays seed 0's rollouts
                        meter = DriftMeter(model, P, block, s.temperature, first)
                        generate(model, ids, mask, generator=gen_seed, trace=meter, **kw)
                        drift += [{"block": block, "mode": mode, **rec} for rec in meter.records]
                bar.update()
    bar.close()
    per_puzzle, drift, cost = pd.DataFrame(rows), pd.DataFrame(drift), pd.DataFrame(cost)
    per_puzzle.to_csv(out / "per_puzzle.csv.gz", index=False)
    drift_table = drift_by_age(drift)
    drift_table.to_csv(out / "drift.csv", index=False)
    summary = {"settings": asdict(s), "pool_size": len(pool), "gen_length": r.gen_length, "steps": r.steps,
               "comparisons": compare(per_puzzle),
               "cost": cost_table(cost).to_dict(orient="records")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def compare(per_puzzle: pd.DataFrame) -> list[dict]:
    """Per (block, cached sampler): paired differences from ``none`` with intervals (module docstring)."""
    out = []
    for (block, mode), part in per_puzzle[per_puzzle["mode"] != "none"].groupby(["block", "mode"]):
        ref = per_puzzle[(per_puzzle["block"] == block) & (per_puzzle["mode"] == "none")]
        row = {"block": int(block), "mode": mode}
        for name, greedy, column in (("rollout_accuracy", False, "reward"), ("greedy_accuracy", True, "reward"),
                                     ("elbo", False, "elbo")):
            a, b = (frame[(frame.seed < 0) == greedy].pivot(index="seed", columns="puzzle", values=column)
                    for frame in (part, ref))
            mean, lo, hi = bootstrap((a - b).to_numpy())
            row[name] = {"none": float(b.to_numpy().mean()), "cached": float(a.to_numpy().mean()),
                         "delta": mean, "ci95": [lo, hi], "per_seed": (a - b).mean(axis=1).round(5).tolist()}
        out.append(row)
    return out


def drift_by_age(drift: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% normal interval over puzzles of each drift metric, per (block, mode, age)."""
    per_seq = drift.groupby(["block", "mode", "age", "metric", "row"])["value"].mean().reset_index()
    g = per_seq.groupby(["block", "mode", "age", "metric"])["value"]
    table = g.agg(["mean", "std", "count"]).reset_index()
    table["ci95"] = 1.96 * table["std"] / np.sqrt(table["count"])
    return table.drop(columns="std")


def cost_table(cost: pd.DataFrame) -> pd.DataFrame:
    """Positions per generated token and seconds per sampler, summed over batches, with ratios to ``none``."""
    t = cost.groupby(["block", "mode"])[["seconds", "positions", "tokens", "calls"]].sum().reset_index()
    t["positions_per_token"] = t["positions"] / t["tokens"]
    ref = t[t["mode"] == "none"].set_index("block")
    t["positions_ratio"] = [ref.loc[b, "positions"] / p for b, p in zip(t["block"], t["positions"])]
    t["speedup"] = [ref.loc[b, "seconds"] / sec for b, sec in zip(t["block"], t["seconds"])]
    return t.round(4)


def count_positions(prompt_len: int, gen_length: int, steps: int, block_length: int,
                    modes: tuple[str, ...] = ("none", "prefix", "dual"), seed: int = 0,
                    refresh: int | None = None) -> pd.DataFrame:
    """Token positions per sequence each sampler sends through the model, *counted* by running it (a tiny
    random model on one random prompt of ``prompt_len`` tokens), beside :func:`sampler_positions`'s closed
    form and the ratio to the naive sampler. The count does not depend on the weights: only the shapes.
    ``refresh`` applies to the cached modes."""
    from bgpo.diffusion import sampler_positions
    from bgpo.model import LLaDAModelLM, preset_config

    torch.manual_seed(seed)
    model = LLaDAModelLM(preset_config("tiny")).eval()
    prompt = torch.randint(10, model.config.vocab_size - 10, (1, prompt_len))
    rows = []
    for mode in modes:
        stats = SamplerStats()
        every = refresh if mode != "none" else None
        generate(model, prompt, gen_length=gen_length, steps=steps, block_length=block_length, cache=mode,
                 refresh=every, temperature=1.0, generator=seed, stats=stats)
        rows.append({"cache": mode, "counted": stats.positions, "closed form": sampler_positions(
            prompt_len, gen_length, steps, block_length, mode, None, every), "per token": stats.per_token,
            "model calls": stats.calls, "full-sequence calls": stats.full})
    table = pd.DataFrame(rows)
    table["naive / this"] = table["counted"].iloc[0] / table["counted"] if modes[0] == "none" else np.nan
    return table


def harm_table(summary: dict, scale: float = 100.0) -> pd.DataFrame:
    """One row per (block length, cached sampler) of the study's ``summary.json``: counted positions and
    measured speed-up against ``none``, and the paired differences with their 95% intervals (accuracy in
    points of cell accuracy, ELBO in nats per token), and which of them exclude 0."""
    cost = pd.DataFrame(summary["cost"])
    rows = []
    for c in summary["comparisons"]:
        row = cost[(cost["block"] == c["block"]) & (cost["mode"] == c["mode"])].iloc[0]
        entry = {"block": c["block"], "cache": c["mode"], "positions ÷": row["positions_ratio"],
                 "speed-up": row["speedup"]}
        moved: list[str] = []
        for key, name, unit, digits in (("rollout_accuracy", "rollout acc. Δ", scale, 2),
                                        ("greedy_accuracy", "greedy acc. Δ", scale, 2), ("elbo", "ELBO Δ", 1.0, 4)):
            d = c[key]
            entry[name] = (f"{unit * d['delta']:+.{digits}f} [{unit * d['ci95'][0]:+.{digits}f}, "
                           f"{unit * d['ci95'][1]:+.{digits}f}]")
            if not d["ci95"][0] <= 0.0 <= d["ci95"][1]:
                moved.append(name.removesuffix(" Δ"))
        entry["interval excludes 0"] = ", ".join(moved) or "none"
        rows.append(entry)
    return pd.DataFrame(rows)


def rl_runs(rl_dir: str | Path = RL_DIR) -> pd.DataFrame:
    """Every finished run of the RL test, one row each: its sampler cache, arm, seed, final accuracy, change
    from the warm start, and its mean seconds and counted sampler positions per step (``metrics.jsonl``)."""
    from bgpo.experiment import read_jsonl

    rows = []
    for summary in sorted(Path(rl_dir).glob("*/runs/*/summary.json")):
        grid, run = summary.parents[2], summary.parent
        warm = json.loads((grid / "initial.json").read_text())["cell_accuracy"]
        s, metrics = json.loads(summary.read_text()), pd.DataFrame(read_jsonl(run / "metrics.jsonl"))
        rows.append({"cache": grid.name, "arm": s["arm"], "seed": s["seed"], "reward": s["reward"],
                     "final": s["final_cell_accuracy"], "delta_vs_warm": s["final_cell_accuracy"] - warm,
                     "rollout_s": metrics["rollout_s"].mean(), "step_s": metrics[["rollout_s", "old_s", "update_s"]]
                     .sum(axis=1).mean(), "positions": metrics["rollout_positions"].mean(), "wall_s": s["wall_s"]})
    if not rows:
        raise BGPOError(f"{rl_dir} holds no finished run (*/runs/*/summary.json): run the RL test first")
    return pd.DataFrame(rows)


def rl_per_puzzle(rl_dir: str | Path = RL_DIR, arm: str = "bgpo-nt16", progress: bool = True) -> pd.DataFrame:
    """Greedy per-puzzle cell accuracy of the warm start and of each finished run's final weights (``final/``,
    not committed) on the pool, added to ``<rl_dir>/per_puzzle.csv.gz`` (runs already there are skipped): what
    the paired intervals resample."""
    from tqdm.auto import tqdm

    from bgpo.checkpoint import build_model
    from bgpo.config import load_config
    from bgpo.data import get_task, load_examples, load_tokenizer
    from bgpo.evaluate import evaluate_examples

    runs = sorted(Path(rl_dir).glob(f"*/runs/{arm}-s*/final/config.json"))
    if not runs:
        raise BGPOError(f"no {arm} run with final/ weights under {rl_dir}: run the RL test on this machine first")
    cfg = load_config(runs[0].parents[1] / "config.yaml")
    task, tok = get_task(cfg.data), load_tokenizer(cfg.model)
    pool = load_examples(cfg.data, cfg.data.test_split)
    out = Path(rl_dir) / "per_puzzle.csv.gz"
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame(columns=["run", "cache", "seed", "puzzle", "reward"])
    frames = [done]
    for weights in tqdm([Path(cfg.model.init_from), *[r.parent for r in runs]], desc="per-puzzle evaluation",
                        disable=not progress):
        run = weights.parent
        label = ("warm start", "warm", -1) if weights == Path(cfg.model.init_from) else \
            (run.name, run.parents[1].name, int(run.name.rsplit("-s", 1)[1]))
        if ((done["run"] == label[0]) & (done["cache"] == label[1])).any():
            continue  # evaluated before: the weights of a finished run do not change
        model = build_model(dataclasses.replace(cfg.model, init_from=str(weights))).eval()
        with torch.inference_mode():
            records = evaluate_examples(model, tok, task, pool, cfg)["records"]
        frames.append(pd.DataFrame([{"run": label[0], "cache": label[1], "seed": label[2], "puzzle": r["index"],
                                     "reward": r["reward"]} for r in records]))
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(out, index=False)
    return frame


def rl_verdict(per_puzzle: pd.DataFrame, cached: str = "prefix", reference: str = "none") -> dict:
    """Is the cached arm's paired change from the warm start within the uncached arm's noise?

    Per seed and puzzle, ``d = reward(run) - reward(warm start)``; for each sampler the mean change with its
    two-way (seeds x puzzles) 95% interval, and the paired difference cached - uncached (same seed, same
    puzzle) with its interval. "Within noise": the difference's interval holds 0.
    """
    warm = per_puzzle[per_puzzle["cache"] == "warm"].set_index("puzzle")["reward"]
    deltas = {}
    for cache in (cached, reference):
        part = per_puzzle[per_puzzle["cache"] == cache].pivot(index="seed", columns="puzzle", values="reward")
        deltas[cache] = part - warm[part.columns].to_numpy()
    seeds = sorted(set(deltas[cached].index) & set(deltas[reference].index))
    if not seeds:
        raise BGPOError(f"no seed finished under both samplers ({cached}, {reference}): nothing to pair")
    out = {"seeds": seeds}
    for cache, d in deltas.items():
        mean, lo, hi = bootstrap(d.loc[seeds].to_numpy())
        out[cache] = {"delta_vs_warm": mean, "ci95": [lo, hi], "per_seed": d.loc[seeds].mean(axis=1).tolist()}
    mean, lo, hi = bootstrap((deltas[cached].loc[seeds] - deltas[reference].loc[seeds]).to_numpy())
    out["difference"] = {"mean": mean, "ci95": [lo, hi], "within_noise": bool(lo <= 0.0 <= hi)}
    return out


ACCURACY_MARGIN = 0.01  # +-1 point of cell accuracy: a quarter of the grid's best RL gain (+4.4 points)
MATH_SHAPE = (512, 512, 256, 32)  # the llada8b-math preset: prompt, response, steps, block


def _gen_length(summary: dict) -> int:
    """The response length the study sampled (its base config's, for summaries written before it was stored)."""
    if "gen_length" in summary:
        return int(summary["gen_length"])
    from bgpo.config import load_config

    return load_config(summary["settings"]["base_config"]).rollout.gen_length


def supported_cache(summaries: list[dict], verdict: dict | None, margin: float = ACCURACY_MARGIN,
                    min_seeds: int = 3, shape: tuple[int, int, int, int] = MATH_SHAPE) -> dict:
    """The sampler setting the evidence supports: the fastest at ``shape`` that passes, else ``none``.

    Candidates are the cached samplers the studies measured (``dual``, ``prefix``, ``dual/r4``: a cache and
    its refresh). One passes when every study comparison that applies to it has the 95% intervals of its
    paired rollout and greedy accuracy differences within ``+-margin`` (equivalence, not merely "no
    significant difference"); at a single-block shape ``prefix`` and ``dual`` are the same sampler, so a
    comparison there applies to both. And the RL test — run with the stalest cache (no refresh, the RL block,
    ages up to its steps per block; every candidate's cache is at most as stale) — must have found, on at
    least ``min_seeds`` seeds, the cached arm's change from the warm start within the naive sampler's
    noise. Drift and the ELBO shift are reported, not gated. Speed: :func:`sampler_positions` at ``shape``.
    """
    from bgpo.diffusion import sampler_positions

    comparisons = [(c, _gen_length(summary)) for summary in summaries for c in summary["comparisons"]]
    measured = {c["mode"] for c, _ in comparisons}
    candidates = sorted(measured | {m.replace("prefix", "dual", 1) for m in measured}
                        | {m.replace("dual", "prefix", 1) for m in measured})

    def applies(c: dict, length: int, spec: str) -> bool:
        if c["mode"] == spec:
            return True
        return c["block"] == length and sampler_spec(c["mode"])[1] == sampler_spec(spec)[1]  # single block

    reasons: dict[str, list[str]] = {}
    for spec in candidates:
        found = [(c, length) for c, length in comparisons if applies(c, length, spec)]
        reasons[spec] = [] if found else ["not measured"]
        for c, _ in found:
            for key in ("rollout_accuracy", "greedy_accuracy"):
                lo, hi = c[key]["ci95"]
                if not -margin <= lo <= hi <= margin:
                    reasons[spec].append(f"block {c['block']} ({c['mode']}): {key} interval [{lo:+.4f}, {hi:+.4f}] "
                                         f"leaves +-{margin:g}")
        if verdict is None:
            reasons[spec].append("no RL test yet")
        elif len(verdict["seeds"]) < min_seeds:
            reasons[spec].append(f"the RL test has {len(verdict['seeds'])} of {min_seeds} seeds")
        elif not verdict["difference"]["within_noise"]:
            reasons[spec].append("the RL test's paired difference excludes 0")
    ratio = {spec: sampler_positions(*shape) / sampler_positions(*shape, sampler_spec(spec)[0], None,
                                                                  sampler_spec(spec)[1]) for spec in candidates}
    passing = sorted((spec for spec in candidates if not reasons[spec]), key=lambda spec: -ratio[spec])
    default = passing[0] if passing else "none"
    cache, refresh = sampler_spec(default) if passing else ("none", None)
    return {"default": default, "cache": cache, "refresh": refresh, "margin": margin, "reasons": reasons,
            "positions_ratio": ratio}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = StudySettings()
    parser.add_argument("--out", default=str(OUT), help=f"output directory (default {OUT})")
    parser.add_argument("--init-from", default=d.init_from, help="the policy to sample (a from_pretrained dir)")
    parser.add_argument("--num-test", type=int, default=d.num_test, help="held-out pool puzzles")
    parser.add_argument("--seeds", type=int, default=d.seeds, help="noise streams at the RL temperature")
    parser.add_argument("--blocks", default=None, help="block lengths, comma-separated (default 20,5,4)")
    parser.add_argument("--rl", default=None, metavar="DIR",
                        help=f"instead of the study: evaluate the RL test's finished runs per puzzle (e.g. {RL_DIR}),"
                             " write DIR/per_puzzle.csv.gz and print the paired verdict")
    parser.add_argument("--samplers", default=None,
                        help="cached samplers to compare with none at every block, comma-separated (prefix, dual, "
                             "dual/r4 = refresh every 4 steps); default: prefix at block 20, prefix and dual below")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    if args.rl:
        verdict = rl_verdict(rl_per_puzzle(args.rl, progress=not args.no_progress))
        print(json.dumps(verdict, indent=2))
        return 0
    s = StudySettings(init_from=args.init_from, num_test=args.num_test, seeds=args.seeds)
    if args.blocks:
        try:
            blocks = [int(b) for b in args.blocks.split(",")]
        except ValueError:
            raise BGPOError(f"--blocks expects comma-separated integers like 20,5; got {args.blocks!r}") from None
        s.blocks = {b: s.blocks.get(b, ["prefix", "dual"]) if b != 20 else ["prefix"] for b in blocks}
    if args.samplers:
        s.blocks = {b: args.samplers.split(",") for b in s.blocks}
    summary = run_study(s, args.out, progress=not args.no_progress)
    print(pd.DataFrame(summary["cost"]).to_string(index=False))
    for c in summary["comparisons"]:
        print(c["block"], c["mode"], {k: (round(v["delta"], 4), [round(x, 4) for x in v["ci95"]])
                                      for k, v in c.items() if isinstance(v, dict)})
    return 0
