"""Run configuration: typed dataclasses loaded from YAML, validated at the boundary.

A run is described by six sections, each a dataclass whose fields carry a help string and the
allowed values (a range or a list of choices)::

    model     which LLaDA (tiny preset, local/hub checkpoint), where RL starts from
    data      task and data source
    rollout   prompts per step, group size G, the LLaDA sampler's settings (Nie et al., 2025)
    objective bgpo | elbo | d1, n_t, PPO clipping (BGPO paper §3)
    optim     AdamW, learning-rate schedule, grad-norm clip
    trainer   steps, seed, evaluation, checkpoints, precision

``load_config("tiny-countdown")`` reads a preset from ``bgpo/configs/`` (or any YAML path) and
applies ``--set section.field=value`` overrides. Every unknown key and every out-of-range value
raises :class:`~bgpo.errors.BGPOError` naming the field, the allowed values and, for typos, the
closest valid key, so a mistyped config fails in the first second, not after an hour of rollouts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bgpo.errors import BGPOError

OBJECTIVES = ("bgpo", "elbo", "d1")  # the policy losses of bgpo.objectives: the one list all modules read
CACHE_MODES = ("none", "prefix", "dual")  # the sampler's KV caches (bgpo.diffusion.generate), likewise
CODE_ISOLATION = ("required", "trusted-only")  # the code reward's sandbox policies (bgpo.sandbox.bwrap), likewise

PRESET_DIR = Path(__file__).parent / "configs"


def _field(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
           choices: tuple | None = None, nullable: bool = False) -> Any:
    """A dataclass field with its help text and its allowed values (closed range or choices)."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "nullable": nullable}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    preset: str = _field("small", "bgpo.model.preset_config name, used when `path` is empty",
                         choices=("tiny", "small", "llada-8b"))
    overrides: dict = _field({}, "LLaDAConfig fields overriding the preset (e.g. {n_layers: 2})")
    path: str | None = _field(None, "Hugging Face model dir or hub id (e.g. GSAI-ML/LLaDA-8B-Instruct);"
                              " replaces the preset", nullable=True)
    init_from: str | None = _field(None, "start RL from these weights: an exported/HF dir (config.json)"
                                   " or a `bgpo train`/`bgpo sft` checkpoint dir", nullable=True)
    tokenizer: str | None = _field(None, "tokenizer dir/hub id; empty = the built-in character tokenizer"
                                   " (or `path`'s tokenizer when `path` is set)", nullable=True)
    gradient_checkpointing: bool = _field(False, "recompute block activations in backward (less memory, ~30% slower)")
    dtype: str = _field("float32", "weight dtype when building or loading the model: float32 (bf16 compute via"
                        " trainer.mixed_precision) | bfloat16 (half the memory; train with optim.name adamw8bit-sr"
                        " or adamw-sr) | float16 (inference)", choices=("float32", "bfloat16", "float16"))
    packed_attention: str = _field("varlen", "kernel of packed micro-batches on CUDA in half precision: varlen"
                                   " (PyTorch's varlen_attn) | flash-attn (needs the flash-attn package) | sdpa"
                                   " (block-diagonal mask); on CPU always sdpa",
                                   choices=("varlen", "flash-attn", "sdpa"))


@dataclass
class DataConfig:
    task: str = _field("countdown", "task name in bgpo.tasks", choices=("countdown", "sudoku", "math", "code"))
    source: str = _field("synthetic", "'synthetic' (the task's seeded generator, offline; countdown, sudoku)"
                         " | 'hf' (the paper's hub datasets) | a local data file (.parquet/.jsonl/.json/.csv)")
    style: str = _field("chat", "prompt style: 'chat' (d1's full instructions) | 'compact' (short prompts"
                        " for tiny models)", choices=("chat", "compact"))
    train_split: str = _field("train", "split used for rollouts")
    test_split: str = _field("test", "split used for evaluation")
    num_train: int = _field(20000, "synthetic source: training problems to generate", lo=1, hi=1 << 30)
    num_test: int = _field(256, "synthetic source: test problems to generate (another seed)", lo=1, hi=1 << 30)


@dataclass
class RolloutConfig:
    prompts_per_step: int = _field(16, "prompts per optimiser step (global, over all processes)", lo=1, hi=1 << 20)
    group_size: int = _field(8, "G rollouts per prompt; advantages are normalised within a group", lo=2, hi=1024)
    max_prompt_length: int = _field(512, "prompts are left-truncated to this many tokens", lo=1, hi=1 << 20)
    gen_length: int = _field(256, "response length L (tokens, trailing EOS included)", lo=1, hi=1 << 20)
    steps: int = _field(128, "diffusion denoising steps for training rollouts", lo=1, hi=1 << 20)
    block_length: int = _field(32, "semi-autoregressive block length", lo=1, hi=1 << 20)
    temperature: float = _field(0.6, "Gumbel temperature of training rollouts (0 = greedy)", lo=0.0, hi=10.0)
    remasking: str = _field("low_confidence", "which masked tokens to commit each step",
                            choices=("low_confidence", "random"))
    batch_size: int | None = _field(None, "sequences per sampler call per process (empty = all at once)",
                                    lo=1, hi=1 << 20, nullable=True)
    cache: str = _field("none", "sampler KV cache (bgpo.diffusion.generate): none (whole sequence every step, "
                        "exact) | prefix (block + masked suffix per step, prefix cached) | dual (block only)",
                        choices=CACHE_MODES)
    horizon: int | None = _field(None, "with cache prefix: masked suffix positions computed per step (empty = "
                                 "all of them; the rest read from the cache)", lo=0, hi=1 << 20, nullable=True)
    refresh: int | None = _field(None, "with a cache: also refill it every k steps of a block (empty = only at "
                                 "each block start)", lo=1, hi=1 << 20, nullable=True)
    eos_exit: bool = _field(False, "a sequence whose finished block ends in EOS stops: the rest becomes EOS and it "
                            "leaves the sampler's batch")
    sort_by_length: bool = _field(False, "build sampler calls from prompts sorted by length (less padding when "
                                  "batch_size splits a step's prompts into several calls)")
    reward: str = _field("verified", "'verified' (the task's reward) | 'shuffled' (a random-reward control: the "
                         "verified rewards permuted within each group, so advantages keep their values but "
                         "lose their link to the completions)", choices=("verified", "shuffled"))
    code_isolation: str = _field("required", "the code reward's sandbox: 'required' (refuse, in one line naming the "
                                 "fix, where bubblewrap's layers are missing) | 'trusted-only' (then run programs on the "
                                 "host, after a warning: only for code you trust)", choices=CODE_ISOLATION)


@dataclass
class ObjectiveConfig:
    name: str = _field("bgpo", "policy loss", choices=OBJECTIVES)
    n_t: int = _field(16, "Monte Carlo masked copies per response for the ELBO (bgpo, elbo)", lo=1, hi=4096)
    clip_eps: float = _field(0.2, "PPO ratio clip epsilon", lo=0.0, hi=1.0)
    dual_clip: float = _field(3.0, "dual-clip constant c for negative advantages", lo=1.0, hi=1e6)
    ppo_epochs: int = _field(1, "optimiser steps per rollout batch (the paper uses 1)", lo=1, hi=100)
    micro_batch_size: int | None = _field(None, "sequences per forward/backward per process"
                                          " (empty = the whole local batch)", lo=1, hi=1 << 20, nullable=True)
    packed: bool = _field(False, "policy forwards on padding-free packed sequences (cu_seqlens; flash-attn"
                                 " varlen on CUDA when installed)")


@dataclass
class OptimConfig:
    name: str = _field("adamw", "adamw (torch; float32 weights) | adamw-sr (torchao, bf16 weights, stochastic"
                       " rounding) | adamw8bit-sr (torchao 8-bit states + bf16 stochastic rounding: one GPU)",
                       choices=("adamw", "adamw-sr", "adamw8bit-sr"))
    lr: float = _field(5e-7, "AdamW learning rate", lo=0.0, hi=1.0)
    weight_decay: float = _field(0.01, "AdamW decoupled weight decay", lo=0.0, hi=1.0)
    beta1: float = _field(0.9, "AdamW beta1", lo=0.0, hi=0.999999)
    beta2: float = _field(0.999, "AdamW beta2", lo=0.0, hi=0.999999)
    eps: float = _field(1e-8, "AdamW epsilon", lo=0.0, hi=1.0)
    grad_clip: float = _field(1.0, "max global grad norm (0 = no clipping)", lo=0.0, hi=1e6)
    warmup_steps: int = _field(0, "linear warm-up steps, then constant", lo=0, hi=1 << 30)


@dataclass
class TrainerConfig:
    steps: int = _field(700, "optimiser steps (rollout batches x ppo_epochs counted once per batch)", lo=1, hi=1 << 30)
    seed: int = _field(0, "seed for data order, rollouts and masks (all derived from (seed, step))", lo=0, hi=2**31 - 1)
    output_dir: str = _field("runs/bgpo", "run directory: metrics.jsonl, eval.jsonl, checkpoints/")
    mixed_precision: str = _field("no", "accelerate mixed precision", choices=("no", "bf16", "fp16"))
    eval_every: int = _field(0, "evaluate on the test split every k steps (0 = only at the end)", lo=0, hi=1 << 30)
    eval_limit: int | None = _field(64, "test examples per evaluation (empty = whole split)", lo=1, hi=1 << 30,
                                    nullable=True)
    eval_steps: int | None = _field(None, "diffusion steps for evaluation (empty = gen_length: one token"
                                    " per step)", lo=1, hi=1 << 20, nullable=True)
    eval_batch_size: int = _field(32, "prompts per sampler call during evaluation", lo=1, hi=1 << 20)
    eval_completions: bool = _field(False, "also write each evaluation's completions, in test-set order, to"
                                    " eval_completions.jsonl.gz (per-example analysis and bootstraps)")
    checkpoint_every: int = _field(50, "save a checkpoint every k steps (0 = only at the end)", lo=0, hi=1 << 30)
    keep_checkpoints: int = _field(2, "how many recent checkpoints to keep", lo=1, hi=1 << 20)
    progress: bool = _field(True, "show a tqdm progress bar")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS: dict[str, type] = {f.name: f.default_factory().__class__ for f in fields(Config)}


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(valid)}"


def _coerce(where: str, f: dataclasses.Field, value: Any) -> Any:
    """Check one value against its field's type and allowed values; return it typed."""
    meta = f.metadata
    if value is None:
        if meta["nullable"]:
            return None
        raise BGPOError(f"{where} must not be empty ({meta['help']})")
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    base = kind.split("|")[0].strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise BGPOError(f"{where} must be true or false, got {value!r}")
    elif base == "int":
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise BGPOError(f"{where} must be an integer in [{meta['lo']}, {meta['hi']}], got {value!r}")
        value = int(value)
    elif base == "float":
        try:  # YAML 1.1 reads `5e-7` (no dot) as a string
            value = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise BGPOError(f"{where} must be a number in [{meta['lo']}, {meta['hi']}], got {value!r}")
    elif base == "str":
        if not isinstance(value, str):
            raise BGPOError(f"{where} must be a string, got {value!r}")
    elif base == "dict":
        if not isinstance(value, dict):
            raise BGPOError(f"{where} must be a mapping, got {value!r}")
    if meta["choices"] is not None and value not in meta["choices"]:
        raise BGPOError(f"{where} must be one of {', '.join(map(str, meta['choices']))}; got {value!r}")
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and not (lo <= value <= hi):
        raise BGPOError(f"{where} must be in [{lo}, {hi}], got {value!r}")
    return value


def from_dict(raw: dict) -> Config:
    """Build and validate a :class:`Config` from nested plain values (missing keys take defaults)."""
    if not isinstance(raw, dict):
        raise BGPOError(f"a config must be a mapping of sections ({', '.join(SECTIONS)}), got {type(raw).__name__}")
    sections = {}
    for name, body in raw.items():
        if name not in SECTIONS:
            raise BGPOError(f"unknown config section '{name}'{_closest(name, list(SECTIONS))}")
        body = body or {}
        if not isinstance(body, dict):
            raise BGPOError(f"config section '{name}' must be a mapping of fields, got {body!r}")
        cls = SECTIONS[name]
        valid = {f.name: f for f in fields(cls)}
        values = {}
        for key, value in body.items():
            if key not in valid:
                raise BGPOError(f"unknown config key '{name}.{key}'{_closest(key, list(valid))}")
            values[key] = _coerce(f"{name}.{key}", valid[key], value)
        sections[name] = cls(**values)
    cfg = Config(**sections)
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    """Constraints between fields (the LLaDA sampler's block/step arithmetic)."""
    r, t = cfg.rollout, cfg.trainer
    if r.gen_length % r.block_length:
        raise BGPOError(f"rollout.gen_length ({r.gen_length}) must be a multiple of rollout.block_length"
                        f" ({r.block_length})")
    n_blocks = r.gen_length // r.block_length
    if r.steps % n_blocks:
        raise BGPOError(f"rollout.steps ({r.steps}) must be a multiple of the number of blocks"
                        f" gen_length/block_length = {n_blocks}")
    if r.horizon is not None and r.cache != "prefix":
        raise BGPOError(f"rollout.horizon ({r.horizon}) applies to rollout.cache=prefix only (cache is {r.cache!r}); "
                        f"set cache: prefix or leave horizon empty")
    if r.refresh is not None and r.cache == "none":
        raise BGPOError(f"rollout.refresh ({r.refresh}) refills a sampler cache: set rollout.cache to prefix or dual,"
                        f" or leave refresh empty")
    eval_steps = t.eval_steps or r.gen_length
    if eval_steps % n_blocks:
        raise BGPOError(f"trainer.eval_steps ({eval_steps}) must be a multiple of the number of blocks {n_blocks}")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise BGPOError(f"--set expects section.field=value, got '{item}'")
    key, text = item.split("=", 1)
    path = key.strip().split(".")
    if len(path) != 2:
        raise BGPOError(f"--set key must be section.field (e.g. rollout.n_t), got '{key}'")
    value = yaml.safe_load(text) if text.strip() else None
    return path, value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply ``section.field=value`` strings (values parsed as YAML) to a raw config mapping."""
    raw = {k: dict(v or {}) for k, v in raw.items()}
    for item in overrides or []:
        (section, key), value = _parse_override(item)
        raw.setdefault(section, {})[key] = value
    return raw


def resolve_path(name_or_path: str | Path) -> Path:
    """A preset name (``tiny-countdown``) or a YAML path → the YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    preset = PRESET_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and preset.is_file():
        return preset
    if path.is_file():
        return path
    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise BGPOError(f"no config file or preset '{name_or_path}'{_closest(path.stem, names)}"
                    f" (presets: {', '.join(names)})")


def load_config(name_or_path: str | Path | dict, overrides: list[str] | None = None) -> Config:
    """Load a preset name, a YAML path or a mapping; apply ``--set`` overrides; validate."""
    if isinstance(name_or_path, dict):
        raw = name_or_path
    else:
        path = resolve_path(name_or_path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise BGPOError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return from_dict(apply_overrides(raw, overrides))


def describe() -> str:
    """Every config field with its default, allowed values and help: the reference for `--set`."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"{name}:")
        for f in fields(cls):
            m = f.metadata
            allowed = (" {" + "|".join(map(str, m["choices"])) + "}") if m["choices"] else (
                f" [{m['lo']}, {m['hi']}]" if m["lo"] is not None else "")
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            lines.append(f"  {f.name} = {default!r}{allowed}  # {m['help']}")
    return "\n".join(lines)
