"""Weights in and out: build the policy, atomic training checkpoints, resume, the final HF directory.

A run directory holds ``config.yaml``, ``checkpoints/step-NNNNNNN/`` (accelerate state + our
``state.json`` and ``config.yaml``) and ``final/`` (a plain Hugging Face model directory). A
checkpoint is written to ``checkpoints/.tmp-step-N``, fsync-ed and renamed, so a crash at any point
leaves either no ``step-N`` or a complete one, and :func:`latest_checkpoint` only sees complete ones.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bgpo.config import Config, load_config
from bgpo.errors import BGPOError
from bgpo.model import DTYPES

PREFIX = "step-"
FSDP_SHARDS = "pytorch_model_fsdp_0"  # accelerate's sharded model folder in a checkpoint of an FSDP run


# ---------------------------------------------------------------------------------------------
# building and loading the policy
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str | None) -> torch.device:
    """``device`` or, when not given, the GPU when one is present (else the CPU)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BGPOError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BGPOError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    return dev


def add_device_arguments(parser) -> None:
    """``--device`` / ``--dtype`` of the commands that load a policy (eval, generate, export)."""
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU when one is present)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                        help="weight dtype (default: the run's model.dtype, bfloat16 for the LLaDA-8B presets)")


def build_model(model_cfg, load_weights: bool = True):
    """The policy in ``model.dtype``: ``model.path`` (HF dir / hub id) or a preset, then ``model.init_from``."""
    from bgpo.model import LLaDAConfig, LLaDAModelLM, preset_config

    dtype = DTYPES[model_cfg.dtype]
    if model_cfg.path and load_weights:
        model = LLaDAModelLM.from_pretrained(model_cfg.path, torch_dtype=dtype, **model_cfg.overrides)
    elif model_cfg.path:
        model = LLaDAModelLM(LLaDAConfig.from_pretrained(model_cfg.path, **model_cfg.overrides))
    else:
        model = LLaDAModelLM(preset_config(model_cfg.preset, **model_cfg.overrides))
    if model_cfg.init_from and load_weights:
        src = Path(model_cfg.init_from)
        if (src / "config.json").is_file():
            model = LLaDAModelLM.from_pretrained(src)
        elif (src / "model.safetensors").is_file() or (src / FSDP_SHARDS).is_dir():
            load_weights_file(model, src / "model.safetensors")
        else:
            raise BGPOError(f"model.init_from={src} holds no config.json (HF dir) and no model.safetensors "
                            f"(bgpo checkpoint); point it at the SFT output or a step-N checkpoint")
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model.to(dtype)


def load_weights_file(model: torch.nn.Module, file: Path) -> None:
    """Load a ``model.safetensors`` of a training checkpoint (DDP's ``module.`` prefix dropped).

    An FSDP run's checkpoint has no such file: accelerate wrote the sharded model beside it as a
    torch.distributed.checkpoint folder (:data:`FSDP_SHARDS`), which one process reads whole, so
    ``bgpo export``/``eval`` and ``model.init_from`` take any ``step-N`` whatever the world size was.
    """
    from safetensors.torch import load_file

    shards = file.parent / FSDP_SHARDS
    if file.is_file():
        state = {k.removeprefix("module."): v for k, v in load_file(str(file)).items()}
    elif (shards / ".metadata").is_file():
        state = _sharded_state(shards)
    else:
        raise BGPOError(f"{file} is missing (and no FSDP {FSDP_SHARDS}/ beside it): point at a step-N checkpoint "
                        f"of `bgpo train` or the run's final/ directory")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BGPOError(f"{file} does not fit the configured model: missing {missing[:3]}, unexpected "
                        f"{unexpected[:3]}; check model.preset/overrides against the checkpoint")


def _sharded_state(shards: Path) -> dict[str, torch.Tensor]:
    """The full model state of accelerate's FSDP ``SHARDED_STATE_DICT`` checkpoint (saved as ``{"model": ...}``)."""
    import torch.distributed.checkpoint as dcp

    reader = dcp.FileSystemReader(str(shards))
    saved = reader.read_metadata().state_dict_metadata  # "model.<name>" -> full size and dtype of each tensor
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in saved.items()}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, storage_reader=reader, no_dist=True)  # whole tensors from all shards; no process group
    return {k.removeprefix("model."): v for k, v in state.items()}


def run_config(path: Path) -> Config | None:
    """The training config saved with a checkpoint (``step-N/config.yaml`` or the run's ``config.yaml``)."""
    for candidate in (path / "config.yaml", path.parent / "config.yaml", path.parent.parent / "config.yaml"):
        if candidate.is_file():
            return load_config(candidate)
    return None


def load_model(path: str | Path):
    """A model from a `bgpo train` checkpoint (``step-N/``) or a Hugging Face dir (``final/``, export, 8B)."""
    from bgpo.model import LLaDAModelLM

    path = Path(path)
    if not path.is_dir():
        raise BGPOError(f"checkpoint {path} is not a directory")
    if (path / "config.json").is_file():
        return LLaDAModelLM.from_pretrained(path)
    if (path / "state.json").is_file() and (path / "config.yaml").is_file():
        model = build_model(load_config(path / "config.yaml").model, load_weights=False)
        load_weights_file(model, path / "model.safetensors")
        return model
    raise BGPOError(f"{path} is neither a Hugging Face model dir (config.json) nor a `bgpo train` checkpoint "
                    f"(state.json + config.yaml); point at a run's checkpoints/step-N or final/")


def load_policy(path: str | Path, device: str | None = None,
                dtype: str | None = None) -> tuple[Any, Any, Config | None]:
    """Model (on ``device``, in ``dtype``), tokenizer and (when saved beside it) training config.

    ``device`` defaults to the GPU when one is present; ``dtype`` to the run config's ``model.dtype``
    (bfloat16 for the LLaDA-8B presets), else float32.
    """
    from bgpo.data import load_tokenizer

    path = Path(path)
    cfg = run_config(path)
    dtype = dtype or (cfg.model.dtype if cfg is not None else "float32")
    if dtype not in DTYPES:
        raise BGPOError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    model = load_model(path).to(resolve_device(device), DTYPES[dtype])
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(path)
    elif cfg is not None:
        tokenizer = load_tokenizer(cfg.model)
    else:
        raise BGPOError(f"{path} has no tokenizer files and no config.yaml to rebuild one from")
    return model, tokenizer, cfg


# ---------------------------------------------------------------------------------------------
# training checkpoints
# ---------------------------------------------------------------------------------------------
def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest COMPLETE checkpoint: only renamed dirs with state.json count, temp dirs never do."""
    found = []
    for d in (Path(run_dir) / "checkpoints").glob(f"{PREFIX}*"):
        suffix = d.name.removeprefix(PREFIX)
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
    ``config.yaml``, fsyncs every file and renames the folder to ``step-N``.
    """
    root = run_dir / "checkpoints"
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}"
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
        _fsync_tree(root)
        old = sorted(d for d in root.glob(f"{PREFIX}*") if d.name != final.name)
        for d in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(d, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume(accelerator, run_dir: Path, ckpt: Path) -> int:
    """Load ``ckpt`` into the prepared objects; drop log rows written after it; return its step."""
    accelerator.load_state(str(ckpt))
    step = json.loads((ckpt / "state.json").read_text())["step"]
    if accelerator.is_main_process:
        for name in ("metrics.jsonl", "eval.jsonl", "eval_completions.jsonl.gz"):
            _trim_jsonl(run_dir / name, step)
    accelerator.wait_for_everyone()
    return step


def _trim_jsonl(path: Path, last_step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (they will be written again)."""
    if not path.is_file():
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [line for line in f.read().splitlines() if line.strip()]
    keep = [line for line in rows if json.loads(line).get("step", 0) <= last_step]
    with opener(path, "wt") as f:
        f.write("".join(line + "\n" for line in keep))


def save_final(accelerator, model, tokenizer, out: Path) -> None:
    """The trained policy as a plain Hugging Face directory (full weights gathered from all shards)."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(out, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
