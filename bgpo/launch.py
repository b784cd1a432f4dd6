"""Multi-GPU / multi-node launch files: an accelerate FSDP config and a SLURM batch script.

`bgpo train` itself is one code path on `accelerate`; what changes with scale is only how the
processes are started. This module writes that part down::

    bgpo launch --nodes 2 --gpus-per-node 8 --config bgpo/configs/llada8b-math.yaml
      -> runs/launch/accelerate_fsdp.yaml   FSDP full shard, LLaDABlock wrapped, bf16, (no) activation ckpt
      -> runs/launch/bgpo_train.sbatch      one task per node, `srun accelerate launch ... bgpo train`
      -> prints the command (or runs it with --run)

The FSDP settings follow the authors' recipe (their README and the verl-based re-implementation; the book's
*Full-scale runs* chapter, ``notebooks/06-full-scale.ipynb``): full sharding over all GPUs, bf16 mixed
precision, no CPU offload, activation checkpointing only if the config asks for it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from bgpo.config import load_config, resolve_path
from bgpo.errors import BGPOError


@dataclass
class LaunchPlan:
    """What `launch` wrote and the command that starts the run (per node for accelerate)."""

    accelerate_config: Path
    sbatch_script: Path | None
    command: list[str]
    launcher: str

    def __str__(self) -> str:
        lines = [f"accelerate config: {self.accelerate_config}"]
        if self.sbatch_script:
            lines.append(f"sbatch script:     {self.sbatch_script}")
        lines.append("command:\n" + wrap_command(self.command))
        return "\n".join(lines)


def wrap_command(command: list[str], width: int = 96, indent: str = "    ") -> str:
    """``command`` as a shell line broken with `` \\`` continuations, so it fits a page and still pastes
    into a shell. An option stays on one line with its value."""
    words = [shlex.quote(w) for w in command]
    units: list[str] = []
    for word in words:
        if units and units[-1].startswith("-") and " " not in units[-1] and not word.startswith("-"):
            units[-1] += " " + word
        else:
            units.append(word)
    lines, line = [], ""
    for unit in units:
        if line and len(line) + 1 + len(unit) > width - 2:
            lines.append(line + " \\")
            line = indent + unit
        else:
            line = f"{line} {unit}" if line else unit
    return "\n".join(lines + [line])


def check_batch_split(prompts_per_step: int, group_size: int, world: int) -> None:
    """Raise BGPOError unless the step's prompts split evenly over the ``world`` processes.

    Each process samples the whole group of ``group_size`` responses for its own prompts (the group is
    what the advantages are computed over), so a process gets ``prompts_per_step / world`` whole prompts.
    The message says what the batch means at this scale and the two ways out.
    """
    if prompts_per_step % world == 0:
        return
    up = -(-prompts_per_step // world) * world
    down = max(w for w in range(1, world + 1) if prompts_per_step % w == 0)
    raise BGPOError(
        f"rollout.prompts_per_step ({prompts_per_step}) must be divisible by the {world} processes: each process "
        f"samples whole groups of {group_size} responses for its own prompts. A step is {prompts_per_step} prompts x "
        f"{group_size} = {prompts_per_step * group_size} rollouts; on {world} GPUs either raise prompts_per_step to "
        f"{up} ({up * group_size} rollouts per step, {up / prompts_per_step:g}x this batch) or use {down} GPUs "
        f"({prompts_per_step // down} prompt(s) each) to keep it")


def accelerate_config(nodes: int, gpus_per_node: int, *, mixed_precision: str = "bf16",
                      activation_checkpointing: bool = False, main_process_ip: str = "127.0.0.1",
                      main_process_port: int = 29500) -> dict:
    """The accelerate config mapping: FSDP (v2, full shard) wrapping each `LLaDABlock`."""
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "FSDP",
        "mixed_precision": mixed_precision,
        "num_machines": nodes,
        "num_processes": nodes * gpus_per_node,
        "machine_rank": 0,
        "main_process_ip": main_process_ip,
        "main_process_port": main_process_port,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
        "fsdp_config": {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": "LLaDABlock",
            "fsdp_reshard_after_forward": True,  # = FULL_SHARD
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_activation_checkpointing": activation_checkpointing,
        },
    }


def _sbatch(nodes: int, gpus_per_node: int, accel_cfg: Path, train_args: list[str], job_name: str,
            time: str) -> str:
    train = shlex.join(train_args)
    return f"""#!/bin/bash
# BGPO training on {nodes} node(s) x {gpus_per_node} GPU(s); written by `bgpo launch`.
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task={8 * gpus_per_node}
#SBATCH --time={time}
#SBATCH --output=%x-%j.out
set -euo pipefail
export MAIN_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# one `accelerate launch` per node, each starting {gpus_per_node} processes; rank 0's node is the rendezvous
srun --kill-on-bad-exit=1 bash -c 'accelerate launch --config_file {shlex.quote(str(accel_cfg))} \\
    --num_machines {nodes} --num_processes {nodes * gpus_per_node} \\
    --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" --main_process_port 29500 \\
    -m bgpo.cli {train} --resume'
"""


def launch(config: str | Path, *, nodes: int = 1, gpus_per_node: int = 8, launcher: str = "accelerate",
           output_dir: str | Path = "runs/launch", overrides: list[str] | None = None,
           job_name: str = "bgpo", time: str = "48:00:00", dry_run: bool = True,
           main_process_ip: str | None = None) -> LaunchPlan:
    """Write the accelerate config (and for SLURM the sbatch script); run it unless `dry_run`.

    Returns the paths and the command: `accelerate launch --config_file ... -m bgpo.cli train ...`
    (for `launcher="accelerate"`, run once per node with `--machine_rank`), or `sbatch script`.
    Multi-node accelerate runs rendezvous at node 0: `main_process_ip` (or `$MASTER_ADDR`); a dry run
    without one shows the placeholder `NODE0_ADDRESS`, a real run refuses to start. SLURM finds it itself.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise BGPOError(f"--nodes ({nodes}) and --gpus-per-node ({gpus_per_node}) must be >= 1")
    if launcher not in ("accelerate", "slurm"):
        raise BGPOError(f"--launcher must be 'accelerate' or 'slurm', got {launcher!r}")
    cfg = load_config(config, overrides)  # fail here, not on the cluster, if the config is bad
    check_batch_split(cfg.rollout.prompts_per_step, cfg.rollout.group_size, nodes * gpus_per_node)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accel_path = out / "accelerate_fsdp.yaml"
    precision = cfg.trainer.mixed_precision if cfg.trainer.mixed_precision != "no" else "bf16"
    ip = main_process_ip or os.environ.get("MASTER_ADDR")
    if launcher == "accelerate" and nodes > 1 and not ip:
        if not dry_run:
            raise BGPOError("a multi-node accelerate launch needs the address of node 0: pass --main-process-ip "
                            "(or set MASTER_ADDR), or use --launcher slurm")
        ip = "NODE0_ADDRESS"
    accel = accelerate_config(nodes, gpus_per_node, mixed_precision=precision,
                              activation_checkpointing=cfg.model.gradient_checkpointing,
                              main_process_ip=ip or "127.0.0.1")
    accel_path.write_text(yaml.safe_dump(accel, sort_keys=False))
    train_args = ["train", "--config", str(resolve_path(config))]
    for item in overrides or []:
        train_args += ["--set", item]
    sbatch_path = None
    if launcher == "slurm":
        sbatch_path = out / "bgpo_train.sbatch"
        sbatch_path.write_text(_sbatch(nodes, gpus_per_node, accel_path, train_args, job_name, time))
        command = ["sbatch", str(sbatch_path)]
    else:
        command = ["accelerate", "launch", "--config_file", str(accel_path), "--machine_rank", "0",
                   "-m", "bgpo.cli", *train_args, "--resume"]
    plan = LaunchPlan(accel_path, sbatch_path, command, launcher)
    if not dry_run:
        subprocess.run(command, check=True)
    return plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset name (llada8b-math) or YAML path")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="config override, repeatable (e.g. --set objective.n_t=32)")
    parser.add_argument("--nodes", type=int, default=1, help="number of machines")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (= processes) per machine")
    parser.add_argument("--launcher", choices=("accelerate", "slurm"), default="accelerate",
                        help="accelerate: print/run `accelerate launch` (run it on every node with its "
                             "--machine_rank); slurm: write an sbatch script and print/run `sbatch`")
    parser.add_argument("--main-process-ip", default=None,
                        help="address of node 0 for multi-node accelerate runs (default: $MASTER_ADDR)")
    parser.add_argument("--output-dir", default="runs/launch", help="where the launch files are written")
    parser.add_argument("--job-name", default="bgpo", help="SLURM job name")
    parser.add_argument("--time", default="48:00:00", help="SLURM time limit")
    parser.add_argument("--run", action="store_true", help="run the command instead of printing it")


def main(args: argparse.Namespace) -> int:
    plan = launch(args.config, nodes=args.nodes, gpus_per_node=args.gpus_per_node, launcher=args.launcher,
                  output_dir=args.output_dir, overrides=args.set, job_name=args.job_name, time=args.time,
                  dry_run=not args.run, main_process_ip=args.main_process_ip)
    print(plan, file=sys.stdout)
    return 0
