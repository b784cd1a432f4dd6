"""The paper's four tasks behind one interface: ``get_task(name, style=...)``.

Every task has ``prompt(example) -> messages``, ``reward(completion, example) -> float``,
``rewards(completions, examples)`` (batched), ``is_correct(completion, example) -> bool``,
``load(split, source=None) -> examples`` and ``metrics(completions, examples, rewards)``: the
numbers the papers report, by name (``metric_names``; ``primary_metric`` is the headline one;
every name computed with d1's lenient evaluation parser starts with ``d1_``). Countdown and
sudoku also have seeded generators (``bgpo.tasks.countdown.generate``, ``bgpo.tasks.sudoku.generate``),
``sft_target(example)`` and a ``"compact"`` prompt style for tiny models (bare numbers or puzzle
in, ``<answer>..</answer>`` out).
"""

from __future__ import annotations

from bgpo.errors import BGPOError
from bgpo.tasks.base import Example, Task, last_answer
from bgpo.tasks.code import Code
from bgpo.tasks.countdown import Countdown
from bgpo.tasks.math import Math
from bgpo.tasks.sudoku import Sudoku

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Math, Code, Countdown, Sudoku)}


def get_task(name: str, style: str = "chat") -> Task:
    """The task called ``name`` (math, code, countdown, sudoku) with prompt ``style`` (chat, compact)."""
    if name not in TASKS:
        raise BGPOError(f"unknown task '{name}'; choose one of {', '.join(TASKS)}")
    return TASKS[name](style)


__all__ = ["TASKS", "Example", "Task", "get_task", "last_answer"]
