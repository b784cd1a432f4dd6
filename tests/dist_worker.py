"""One process of the 2-process gloo tests of ``bgpo.objectives.update`` (tests/test_distributed.py).

``python tests/dist_worker.py OUT`` under torch.distributed env vars (RANK, WORLD_SIZE, ...). Rank r takes
rows ``[2r, 2r+2)`` of :func:`problem`'s batch and saves to ``OUT/rank{r}.pt``:

* ``accelerator`` / ``plain``: the gradients of ``update`` run through the accelerator and without it,
  and how many gradient buckets DDP all-reduced meanwhile (a counting communication hook);
* ``nonfinite``: the BGPOError message of a third ``update`` in which only rank 1's advantages are NaN,
  so only its loss is not finite: every rank must raise, none may wait in a collective forever.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bgpo.errors import BGPOError
from bgpo.objectives import RolloutBatch, build_batch, group_advantages, prepare_old, update
from conftest import rollout_tensors, tiny_model  # tests/ is sys.path[0] when run as a script

N_T, MICRO = 4, 1  # per rank: 2 micro-batches x 4 MC samples = 8 backwards for one optimiser step


def problem(rows: slice = slice(None)) -> tuple[torch.nn.Module, RolloutBatch]:
    """The tiny float64 policy and a bgpo batch (old terms filled) restricted to ``rows``."""
    model = tiny_model(torch.float64)
    ids, attention, response = rollout_tensors(batch=4)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.3, 0.9], dtype=torch.float64), 2)
    batch = build_batch("bgpo", ids, attention, response, adv, N_T, torch.Generator().manual_seed(0))
    prepare_old(model, batch, "bgpo")
    return model, batch.select(rows)


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient by its name without DDP's ``module.`` prefix."""
    return {name.removeprefix("module."): p.grad.clone() for name, p in model.named_parameters()}


def main(out: Path) -> None:
    from accelerate import Accelerator
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    accelerator = Accelerator(cpu=True)
    rank = accelerator.process_index
    model, batch = problem(slice(2 * rank, 2 * rank + 2))
    model = accelerator.prepare(model)
    calls = [0]

    def counting_hook(state, bucket):
        calls[0] += 1
        return allreduce_hook(state, bucket)

    model.register_comm_hook(None, counting_hook)
    result: dict = {"nonfinite": None}
    for path, acc in (("accelerator", accelerator), ("plain", None)):
        model.zero_grad(set_to_none=True)
        calls[0] = 0
        update("bgpo", model, batch, micro_batch_size=MICRO, accelerator=acc)
        result[path] = {"allreduces": calls[0], "grads": grads(model)}
    if rank == 1:
        batch.advantages = torch.full_like(batch.advantages, float("nan"))
    try:
        update("bgpo", model, batch, micro_batch_size=MICRO, accelerator=accelerator)
    except BGPOError as err:
        result["nonfinite"] = str(err)
    torch.save(result, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
