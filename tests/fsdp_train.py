"""``bgpo`` CLI entry point for the CPU FSDP2 test: accelerate's FSDP plugin honoured on CPU, a dense reward.

Run it as ``accelerate launch --config_file <bgpo launch's accelerate_fsdp.yaml> tests/fsdp_train.py train ...``
with ``ACCELERATE_USE_CPU=true``. Two things differ from a GPU cluster, both outside the package:

* accelerate only turns its FSDP plugin on for GPU-like devices; on CPU processes it silently falls back
  to DDP (``DistributedType.MULTI_CPU``) although the launch config asked for FSDP. :func:`fsdp_on_cpu`
  flips that one switch, so ``fully_shard`` (which works on CPU with gloo) shards the model.
* a tiny random policy never earns a countdown reward, so every advantage would be 0 and the update
  would never move a weight. :class:`DenseReward` scores the fraction of digits in a completion instead.
"""

from __future__ import annotations

import sys


class DenseReward:
    """A task whose reward is the fraction of digit characters in the completion (never constant)."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def reward(self, completion: str, example: dict) -> float:
        return sum(c.isdigit() for c in completion) / max(len(completion), 1)

    def rewards(self, completions: list[str], examples: list[dict]) -> list[float]:
        return [self.reward(c, e) for c, e in zip(completions, examples)]


def dense_rewards() -> None:
    """Make ``bgpo.train`` score rollouts with :class:`DenseReward`."""
    import bgpo.train
    from bgpo.data import get_task

    bgpo.train.get_task = lambda data_cfg: DenseReward(get_task(data_cfg))


def fsdp_on_cpu() -> None:
    """Let accelerate keep the FSDP plugin of the launch config on CPU processes (gloo)."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as accelerate does on GPUs

    AcceleratorState.__init__ = patched


if __name__ == "__main__":
    from bgpo.cli import main

    fsdp_on_cpu()
    dense_rewards()
    sys.exit(main())
