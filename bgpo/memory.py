"""Measured activation memory and time of one policy update vs ``n_t`` (``bgpo bench memory``).

BGPO's claim is about *activation* memory: the ELBO-based objective keeps the graphs of all
``n_t`` MC samples until one backward (memory ~ ``n_t``), BGPO back-propagates one sample at a time
(memory ~ 1). We measure it two ways:

* everywhere, exactly: the bytes of the tensors autograd saves for backward, hooked with
  ``torch.autograd.graph.saved_tensors_hooks``; a storage counts while any saved reference to it is
  alive, parameters are excluded (they exist anyway). The peak of that live total is
  ``activation_bytes``. (RSS drifts ±10% on CPU and ``tracemalloc`` sees no tensor memory.)
* on CUDA, additionally: ``torch.cuda.max_memory_allocated`` during the update minus the memory
  allocated before it (``peak_bytes``), which includes logits, temporaries and gradients.

Times are medians over repeats, and every configuration is measured in the same process with
repeats interleaved, so the printed ratios compare like with like. The model is built on the target
device in the target dtype (an 8B shape never exists in float32 on the host). A configuration that runs
out of GPU memory is a result: it is recorded with ``oom`` set, its memory is freed and the others go on.

``bgpo bench sampler`` times the LLaDA sampler (`bgpo.diffusion.generate`) and reports tokens/s; with
``--cache none,prefix,dual`` it measures the KV cache modes side by side, each with the work it did (token
positions through the model, counted) and its positions and speed relative to the exact sampler (``none``).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bgpo.errors import BGPOError
from bgpo.objectives import OBJECTIVES, build_batch, group_advantages, prepare_old, update


class SavedTensorMeter:
    """Peak bytes of live tensors saved for backward, inside a ``with`` block.

    Each saved tensor is wrapped in a handle; the handle's storage counts once however many saved
    references point to it, and stops counting when the last handle is freed (i.e. when backward
    releases the graph). Storages of ``exclude`` (the parameters) are never counted.
    """

    def __init__(self, exclude: list[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.refs: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> object:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or tensor.device.type == "meta":
            return tensor
        if self.refs.get(key, 0) == 0:
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        self.refs[key] = self.refs.get(key, 0) + 1
        return _Saved(tensor, key, storage.nbytes(), self)

    @staticmethod
    def _unpack(saved: object) -> torch.Tensor:
        return saved.tensor if isinstance(saved, _Saved) else saved

    def _release(self, key: int, nbytes: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.current -= nbytes

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class _Saved:
    __slots__ = ("tensor", "key", "nbytes", "meter")

    def __init__(self, tensor: torch.Tensor, key: int, nbytes: int, meter: SavedTensorMeter):
        self.tensor, self.key, self.nbytes, self.meter = tensor, key, nbytes, meter

    def __del__(self) -> None:
        self.meter._release(self.key, self.nbytes)


@dataclass
class BenchRecord:
    objective: str
    n_t: int
    activation_bytes: int | None  # None when out of memory
    peak_bytes: int | None  # CUDA only: max_memory_allocated during the update minus before it
    seconds: float | None  # median wall time of one update (forward + backward of every MC sample)
    device: str
    preset: str
    seq_len: int
    prompt_len: int
    batch: int
    oom: bool = False  # the update ran out of GPU memory (a result, not a crash)


def synthetic_rollouts(vocab_size: int, batch: int, seq_len: int, prompt_len: int, group_size: int,
                       device: torch.device, seed: int = 0):
    """Random token rollouts of the right shape: ``(input_ids, attention_mask, response_mask, advantages)``.

    Memory and time do not depend on token values; ids avoid the low (special) ids of the tokenizer.
    """
    if not 0 < prompt_len < seq_len:
        raise BGPOError(f"need 0 < prompt_len ({prompt_len}) < seq_len ({seq_len})")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(16, min(vocab_size, 100_000), (batch, seq_len), generator=g)
    response = torch.zeros(batch, seq_len, dtype=torch.bool)
    response[:, prompt_len:] = True
    rewards = torch.rand(batch, generator=g)
    advantages = group_advantages(rewards, group_size if batch % group_size == 0 else batch)
    return ids.to(device), torch.ones_like(ids).to(device), response.to(device), advantages.to(device)


def measure_update(objective: str, model: torch.nn.Module, n_t: int, tensors: tuple, *, seed: int = 0,
                   micro_batch_size: int | None = None) -> tuple[int, int | None, float]:
    """One update (old terms precomputed, not measured): ``(activation_bytes, peak_bytes, seconds)``."""
    ids, attention, response, advantages = tensors
    batch = build_batch(objective, ids, attention, response, advantages.to(next(model.parameters()).dtype), n_t,
                        torch.Generator().manual_seed(seed))
    prepare_old(model, batch, objective, micro_batch_size)
    model.zero_grad(set_to_none=True)
    cuda = ids.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    meter = SavedTensorMeter(list(model.parameters()))
    start = time.perf_counter()
    with meter:
        update(objective, model, batch, micro_batch_size=micro_batch_size)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() - before if cuda else None
    return meter.peak, peak, seconds


def build_bench_model(preset: str, device: str, dtype: str, n_layers: int | None = None, seed: int = 0):
    """A preset model built directly on ``device`` in ``dtype`` (validated), in train mode."""
    from bgpo.model import init_model, preset_config

    if device == "cuda" and not torch.cuda.is_available():
        raise BGPOError("--device cuda asked for but CUDA is not available: use --device cpu")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}.get(dtype)
    if torch_dtype is None:
        raise BGPOError(f"--dtype must be float32, bfloat16 or float64, got {dtype!r}")
    torch.manual_seed(seed)
    overrides = {} if n_layers is None else {"n_layers": n_layers}
    return init_model(preset_config(preset, **overrides), device=device, dtype=torch_dtype).train()


def _free(model: torch.nn.Module) -> None:
    """Drop gradients and cached blocks after an out-of-memory error, so the next configuration starts clean."""
    model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bench_memory(preset: str = "small", seq_len: int = 256, prompt_len: int = 64, batch: int = 8,
                 n_ts: tuple[int, ...] = (1, 4, 16, 32), objectives: tuple[str, ...] = OBJECTIVES,
                 repeats: int = 3, device: str = "cpu", dtype: str = "float32", n_layers: int | None = None,
                 gradient_checkpointing: bool = False, seed: int = 0, progress: bool = True) -> list[BenchRecord]:
    """Measure every ``objective x n_t`` on one model in one process; returns one record each.

    ``n_layers`` cuts the preset to its first layers (e.g. an 8B-shaped stack of 2 blocks on one GPU).
    A configuration that runs out of memory is recorded with ``oom=True`` and not retried.
    """
    from tqdm import tqdm

    for name in objectives:
        if name not in OBJECTIVES:
            raise BGPOError(f"unknown objective {name!r}: choose from {', '.join(OBJECTIVES)}")
    if not n_ts or min(n_ts) < 1:
        raise BGPOError(f"--n-t values must be >= 1, got {list(n_ts)}")
    model = build_bench_model(preset, device, dtype, n_layers, seed)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    tensors = synthetic_rollouts(model.config.vocab_size, batch, seq_len, prompt_len, 2, torch.device(device), seed)
    grid = [(o, n) for o in objectives for n in n_ts]
    measured: dict[tuple[str, int], list[tuple[int, int | None, float]]] = {k: [] for k in grid}
    oom: set[tuple[str, int]] = set()

    def run(key: tuple[str, int]) -> tuple[int, int | None, float] | None:
        try:
            return measure_update(key[0], model, key[1], tensors, seed=seed)
        except torch.OutOfMemoryError:
            oom.add(key)
        _free(model)  # outside the except block, whose traceback holds the tensors
        return None

    run(grid[0])  # warm-up (allocator, kernels)
    for _ in tqdm(range(repeats), desc="bench memory", disable=not progress):
        for key in grid:  # interleaved: each repeat visits every configuration
            if key not in oom and (m := run(key)) is not None:
                measured[key].append(m)
    label = torch.cuda.get_device_name() if device == "cuda" else "cpu"  # the card's name labels GPU data
    records = []
    for o, n in grid:
        runs = measured[(o, n)]
        if (o, n) in oom:
            records.append(BenchRecord(o, n, None, None, None, label, preset, seq_len, prompt_len, batch, oom=True))
            continue
        peak = None if runs[0][1] is None else max(m[1] for m in runs)
        records.append(BenchRecord(o, n, max(m[0] for m in runs), peak, statistics.median(m[2] for m in runs), label,
                                   preset, seq_len, prompt_len, batch))
    return records


def ratios(records: list[BenchRecord]) -> list[dict]:
    """Each record with its memory and time relative to the same objective at the smallest ``n_t`` that
    ran, and BGPO's time relative to the ELBO objective's at equal ``n_t`` (None where out of memory)."""
    ran = [r for r in records if not r.oom]
    base = {}
    for r in sorted(ran, key=lambda r: r.n_t):
        base.setdefault(r.objective, r)
    elbo_time = {r.n_t: r.seconds for r in ran if r.objective == "elbo"}
    rows = []
    for r in records:
        b = base.get(r.objective)
        if r.oom:
            rows.append({**asdict(r), "memory_ratio": None, "time_ratio": None, "time_vs_elbo": None})
            continue
        rows.append({**asdict(r), "memory_ratio": r.activation_bytes / b.activation_bytes,
                     "time_ratio": r.seconds / b.seconds,
                     "time_vs_elbo": r.seconds / elbo_time[r.n_t] if r.n_t in elbo_time else None})
    return rows


def format_table(records: list[BenchRecord]) -> str:
    """A plain-text table of :func:`ratios`."""
    lines = [f"{'objective':<9} {'n_t':>4} {'activation MiB':>15} {'x n_t=min':>10} {'peak MiB':>9} "
             f"{'seconds':>8} {'x n_t=min':>10} {'/ elbo time':>11}"]
    for row in ratios(records):
        if row["oom"]:
            lines.append(f"{row['objective']:<9} {row['n_t']:>4} {'out of memory':>15}")
            continue
        peak = "-" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.1f}"
        vs = "-" if row["time_vs_elbo"] is None else f"{row['time_vs_elbo']:.3f}"
        lines.append(f"{row['objective']:<9} {row['n_t']:>4} {row['activation_bytes'] / 2**20:>15.2f} "
                     f"{row['memory_ratio']:>10.2f} {peak:>9} {row['seconds']:>8.3f} {row['time_ratio']:>10.2f} "
                     f"{vs:>11}")
    return "\n".join(lines)


def bench_sampler(preset: str = "small", batch: int = 8, prompt_len: int = 64, gen_length: int = 64,
                  steps: int = 64, block_length: int = 32, temperature: float = 0.6, repeats: int = 3,
                  device: str = "cpu", dtype: str = "float32", n_layers: int | None = None, seed: int = 0,
                  generators: tuple[str, ...] = ("device",), caches: tuple[str, ...] = ("none",),
                  horizon: int | None = None, refresh: int | None = None, eos_exit: bool = False) -> list[dict]:
    """Tokens per second and counted work of `bgpo.diffusion.generate`, one row per ``cache x generator``.

    Every configuration runs on the same model, prompts and seed; the repeats take turns, in alternating
    order (ABC, CBA, ...), so a slow spell of a shared machine hits every configuration alike and the
    ratios compare like with like. ``seconds`` is the median of ``repeats`` timed calls after one warm-up
    round; a call makes ``batch x gen_length`` tokens. ``positions`` (per call, all sequences), ``calls``
    and ``full_calls`` are counted by :class:`bgpo.diffusion.SamplerStats` in the last call (the same in
    every call: same seed). ``positions_ratio`` and ``speedup`` compare with the ``none`` row of the same
    generator (None when ``none`` is not among ``caches``).

    ``generators``: "device" draws the noise from a generator on ``device`` (an int seed, as a run does),
    "cpu" from a host generator copied to the device each step (the slow path on a GPU). ``horizon`` goes to
    the prefix cache, ``refresh`` to both caches (`generate` refuses them elsewhere); ``eos_exit`` to every mode.
    """
    from bgpo.diffusion import SamplerStats, check_sampler, generate

    for g in generators:
        if g not in ("device", "cpu"):
            raise BGPOError(f"--generators takes device and/or cpu, got {g!r}")
    if not caches or len(set(caches)) < len(caches):
        raise BGPOError(f"--cache takes distinct modes, comma-separated (none,prefix,dual), got {list(caches)}")
    if horizon is not None and "prefix" not in caches:
        raise BGPOError(f"--horizon {horizon} applies to the prefix cache: add prefix to --cache")
    if refresh is not None and set(caches) <= {"none"}:
        raise BGPOError(f"--refresh {refresh} refills a cache: add prefix or dual to --cache")
    if repeats < 1:
        raise BGPOError(f"--repeats must be >= 1 (timed calls per configuration), got {repeats}")
    settings = {m: (horizon if m == "prefix" else None, refresh if m != "none" else None) for m in caches}
    for mode, (h, r) in settings.items():
        check_sampler(gen_length, steps, block_length, mode, h, r)  # a one-line error before any model is built
    model = build_bench_model(preset, device, dtype, n_layers, seed).eval()
    ids = synthetic_rollouts(model.config.vocab_size, batch, prompt_len + 1, prompt_len, batch,
                             torch.device(device), seed)[0][:, :prompt_len]  # (batch, prompt_len)
    kw = dict(gen_length=gen_length, steps=steps, block_length=block_length, temperature=temperature,
              eos_exit=eos_exit)
    grid = [(m, g) for m in caches for g in generators]
    times: dict[tuple[str, str], list[float]] = {k: [] for k in grid}
    stats: dict[tuple[str, str], SamplerStats] = {}
    for i in range(repeats + 1):  # interleaved repeats in alternating order; the first round warms up
        for mode, g in grid if i % 2 == 0 else grid[::-1]:
            gen = seed if g == "device" else torch.Generator().manual_seed(seed)
            stats[mode, g] = SamplerStats()
            _sync(device)
            start = time.perf_counter()
            generate(model, ids, generator=gen, cache=mode, horizon=settings[mode][0], refresh=settings[mode][1],
                     stats=stats[mode, g], **kw)
            _sync(device)
            if i:
                times[mode, g].append(time.perf_counter() - start)
    label = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    seconds = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for mode, g in grid:
        st, base = stats[mode, g], stats.get(("none", g))
        rows.append({"generator": g, "seconds": seconds[mode, g], "tokens_per_s": batch * gen_length / seconds[mode, g],
                     "batch": batch, "prompt": prompt_len, "gen": gen_length, "steps": steps,
                     "block_length": block_length, "preset": preset, "layers": model.config.n_layers,
                     "dtype": dtype, "device": label, "cache": mode, "horizon": settings[mode][0],
                     "refresh": settings[mode][1], "eos_exit": eos_exit, "positions": st.positions,
                     "positions_per_seq": st.positions / batch, "positions_per_token": st.per_token,
                     "calls": st.calls, "full_calls": st.full,
                     "positions_ratio": None if base is None else st.positions / base.positions,
                     "speedup": None if base is None else seconds["none", g] / seconds[mode, g]})
    return rows


def format_sampler_table(rows: list[dict]) -> str:
    """:func:`bench_sampler`'s rows as one plain-text table (ratios to ``none`` of the same generator)."""
    lines = [f"{'cache':<14} {'generator':<9} {'positions':>10} {'/seq':>9} {'/token':>7} {'calls':>6} "
             f"{'full':>5} {'seconds':>8} {'tokens/s':>10} {'pos/none':>8} {'speed-up':>8}"]
    for r in rows:
        name = r["cache"] + (f" h={r['horizon']}" if r["horizon"] is not None else "") + \
            (f" r={r['refresh']}" if r["refresh"] is not None else "")
        ratio = "-" if r["positions_ratio"] is None else f"{r['positions_ratio']:.3f}"
        speedup = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"{name:<14} {r['generator']:<9} {r['positions']:>10,d} {r['positions_per_seq']:>9,.1f} "
                     f"{r['positions_per_token']:>7.2f} {r['calls']:>6d} {r['full_calls']:>5d} {r['seconds']:>8.3f} "
                     f"{r['tokens_per_s']:>10.1f} {ratio:>8} {speedup:>8}")
    return "\n".join(lines)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", help="model preset of bgpo.model.preset_config (tiny, small, llada-8b)")
    p.add_argument("--layers", type=int, default=None, help="keep only the first N blocks (e.g. 8B-shaped stack)")
    p.add_argument("--batch", type=int, default=8, help="sequences per call")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration (median reported)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model is built and run")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"],
                   help="the model's weights, built directly in this dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the records to this JSON file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = sub.add_parser("memory", help="activation memory and time of one update vs n_t, per objective",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.add_argument("--seq-len", type=int, default=256, help="prompt + response tokens per sequence")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens (never masked)")
    p.add_argument("--n-t", default="1,4,16,32", help="comma-separated MC sample counts")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated: bgpo,elbo,d1")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations in backward")
    s = sub.add_parser("sampler", help="tokens/s and counted work of the LLaDA sampler per KV cache mode "
                       "(bgpo.diffusion.generate)")
    _common(s)
    s.add_argument("--prompt-len", type=int, default=64, help="prompt tokens")
    s.add_argument("--gen-length", type=int, default=64, help="generated tokens per sequence")
    s.add_argument("--steps", type=int, default=64, help="denoising steps")
    s.add_argument("--block-length", type=int, default=32, help="semi-autoregressive block length")
    s.add_argument("--temperature", type=float, default=0.6, help="Gumbel temperature (0 = greedy)")
    s.add_argument("--generators", default="device", help="comma-separated: device (a run's), cpu (host noise)")
    s.add_argument("--cache", default="none", help="comma-separated sampler KV cache modes measured side by side: "
                   "none (exact), prefix, dual")
    s.add_argument("--horizon", type=int, default=None, help="with prefix: masked suffix positions computed per step")
    s.add_argument("--refresh", type=int, default=None, help="with prefix/dual: refill the cache every k steps")
    s.add_argument("--eos-exit", action="store_true", help="a sequence whose block ended in EOS leaves the batch")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BGPOError(f"{flag} must be comma-separated integers, e.g. 1,4,16,32 (got {text!r})") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _write(path: Path | None, rows: list[dict]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1))
        print(f"wrote {path}")


def main(args: argparse.Namespace) -> int:
    if args.bench == "sampler":
        rows = bench_sampler(args.preset, args.batch, args.prompt_len, args.gen_length, args.steps,
                             args.block_length, args.temperature, args.repeats, args.device, args.dtype,
                             args.layers, args.seed, _names(args.generators), _names(args.cache), args.horizon,
                             args.refresh, args.eos_exit)
        print(format_sampler_table(rows))
        r = rows[0]
        print(f"device: {r['device']}; {r['preset']} ({r['layers']} layers, {r['dtype']}), {r['batch']} sequences x "
              f"{r['prompt']} prompt + {r['gen']} generated, {r['steps']} steps, blocks of {r['block_length']}; "
              f"median of {args.repeats} interleaved repeats")
        _write(args.json, rows)
        return 0
    records = bench_memory(args.preset, args.seq_len, args.prompt_len, args.batch, _ints(args.n_t, "--n-t"),
                           tuple(o.strip() for o in args.objectives.split(",") if o.strip()), args.repeats,
                           args.device, args.dtype, args.layers, args.gradient_checkpointing, args.seed)
    print(format_table(records))
    print(f"device: {records[0].device}")
    _write(args.json, ratios(records))
    return 0
