"""Tasks -> examples -> encoded prompts: the one place that knows where data comes from.

* :func:`load_tokenizer` — the one tokenizer loader (character tokenizer for preset models, the
  checkpoint's own for real ones or saved runs).
* :func:`load_examples` — a split from the task's seeded generator (``source: synthetic``), the
  paper's hub data (``hf``) or a file.
* :func:`heldout_pool` — for generated tasks, ONE fixed held-out pool drawn from its own seed
  (:data:`HELDOUT_SEED`), the same for every run, arm, seed and the SFT warm start. The test split
  is its first ``num_test`` examples; every training split drops any example whose prompt is in
  the whole pool. Deduplicating on the prompt (what the model sees) excludes the pool from
  training *by construction*, whatever the trainer's seed.
* :func:`encode_prompts` — chat-formatted, left-padded prompt ids.
* :func:`prompt_indices` — which examples a step reads (seeded epochs, so resume repeats it).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bgpo.errors import BGPOError
from bgpo.tasks import Task, get_task as _registry
from bgpo.tasks import countdown, sudoku

# the tasks with a seeded generator (offline, any size); the others read the paper's data
GENERATORS: dict[str, Callable[..., list[dict]]] = {"countdown": countdown.generate, "sudoku": sudoku.generate}
HELDOUT_SEED = 20_261_125  # the fixed held-out pool's own seed: no trainer or SFT seed draws from it
POOL_SIZE = 1024  # examples in the held-out pool; data.num_test takes its first num_test
# RL draws its training problems from generator seed RL_DATA_SEED + trainer.seed, a stream that no SFT seed
# (0, 1, 2, ...) draws from, so an SFT run and an RL run with the same seed do not share their problems.
RL_DATA_SEED = 1_000_003


def default_source(task: str) -> str:
    """``synthetic`` for tasks with a generator (countdown, sudoku), else the paper's hub data ``hf``."""
    return "synthetic" if task in GENERATORS else "hf"


def get_task(data_cfg) -> Task:
    """The task object of a ``data`` config section (name and prompt style)."""
    return _registry(data_cfg.task, style=data_cfg.style)


def load_tokenizer(source: Any) -> Any:
    """The tokenizer of a model config section or of a directory holding a saved tokenizer.

    A ``model`` config with neither ``tokenizer`` nor ``path`` means a preset model: the character
    tokenizer with LLaDA's special tokens. Prompts are left-padded (the sampler appends the response).
    """
    if isinstance(source, (str, Path)):
        name = str(source)
    else:
        name = source.tokenizer or source.path
    if name is None:
        from bgpo.tokenizer import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise BGPOError(f"cannot load a tokenizer from {name!r} ({type(err).__name__}); pass a directory with "
                        f"tokenizer files or set model.tokenizer") from None
    tok.padding_side = "left"
    return tok


def prompt_key(task: Task, example: dict) -> str:
    """What the model sees of an example (its chat messages), as the key that deduplicates splits."""
    return json.dumps(task.prompt(example), sort_keys=True)


@lru_cache(maxsize=8)
def _pool(task_name: str, style: str) -> tuple[tuple[dict, ...], frozenset[str]]:
    task = _registry(task_name, style=style)
    examples, keys = [], set()
    for example in GENERATORS[task_name](4 * POOL_SIZE, seed=HELDOUT_SEED):
        key = prompt_key(task, example)
        if key not in keys:
            keys.add(key)
            examples.append(example)
        if len(examples) == POOL_SIZE:
            return tuple(examples), frozenset(keys)
    raise BGPOError(f"task {task_name} has fewer than {POOL_SIZE} distinct generated problems")


def heldout_pool(data_cfg) -> list[dict]:
    """The fixed held-out pool of a generated task: :data:`POOL_SIZE` distinct problems, one seed."""
    if data_cfg.task not in GENERATORS:
        raise BGPOError(f"task {data_cfg.task} has no generator, hence no held-out pool; use its test split")
    return [dict(e) for e in _pool(data_cfg.task, data_cfg.style)[0]]


def load_examples(data_cfg, split: str, seed: int = 0) -> list[dict]:
    """Examples of ``split``.

    ``source: synthetic``: the test split is the first ``num_test`` problems of :func:`heldout_pool`
    (independent of ``seed``); any other split is ``num_train`` generated problems from ``seed`` with
    every held-out prompt removed. Otherwise the task's hub data (``hf``) or a file.
    """
    if data_cfg.source != "synthetic":
        return get_task(data_cfg).load(split, None if data_cfg.source == "hf" else data_cfg.source)
    if data_cfg.task not in GENERATORS:
        raise BGPOError(f"task {data_cfg.task} has no synthetic generator; set data.source to 'hf' or a file")
    if split == data_cfg.test_split:
        if data_cfg.num_test > POOL_SIZE:
            raise BGPOError(f"data.num_test={data_cfg.num_test} exceeds the held-out pool ({POOL_SIZE}); lower it")
        return heldout_pool(data_cfg)[: data_cfg.num_test]
    task = get_task(data_cfg)
    held_out = _pool(data_cfg.task, data_cfg.style)[1]
    return [e for e in GENERATORS[data_cfg.task](data_cfg.num_train, seed=seed)
            if prompt_key(task, e) not in held_out]


def encode_prompts(tokenizer, task: Task | None, examples: list, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-formatted prompts, left-truncated to ``max_length`` and left-padded: (B, P) ids and mask.

    ``examples`` are task examples (``task.prompt`` builds the messages) or, with ``task=None``,
    message lists.
    """
    rows = []
    for example in examples:
        messages = example if task is None else task.prompt(example)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        rows.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, P)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def prompt_indices(n_examples: int, step: int, per_step: int, seed: int) -> list[int]:
    """Global example indices for a step: epochs of seeded permutations, read in order."""
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, i = divmod(pos, n_examples)
        out.append(int(np.random.default_rng(seed + epoch).permutation(n_examples)[i]))
    return out
