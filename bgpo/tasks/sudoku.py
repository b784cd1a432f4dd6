"""4x4 sudoku: a 16-character puzzle (row by row, ``0`` = blank) to complete.

Reward (the BGPO paper's rules, after d1 and DARE): take the digits of the last ``<answer>...</answer>``, pad with
``0`` / truncate to 16, and score the fraction of the puzzle's blanks filled correctly,

    r = |{i : puzzle_i = 0 and answer_i = solution_i}| / |{i : puzzle_i = 0}|,

0 without an answer. ``is_correct`` means every blank is right (r = 1).

Metrics: ``cell_accuracy`` (the mean of r: the fraction of blanks right, DARE's number),
``d1_cell_accuracy`` (d1's reading of the answer, :func:`bgpo.tasks.d1_parse.sudoku_grid`, and its
pooled Σ correct blanks / Σ blanks: the number d1, wd1 and SPG report) and ``solved`` (r = 1).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from functools import lru_cache

from bgpo.errors import BGPOError
from bgpo.tasks import d1_parse
from bgpo.tasks.base import Example, Messages, RowError, Task, check_batch, field, last_answer, mean

# d1's sudoku prompt (the system prompt of its training and evaluation code).
D1_SUDOKU_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""

# Each cell's row, column and 2x2 box: the three groups that must hold 1..4 once.
_GROUPS = [[r * 4 + c for c in range(4)] for r in range(4)] + \
          [[r * 4 + c for r in range(4)] for c in range(4)] + \
          [[(br + r) * 4 + bc + c for r in range(2) for c in range(2)] for br in (0, 2) for bc in (0, 2)]
_PEERS = [sorted({j for g in _GROUPS if i in g for j in g} - {i}) for i in range(16)]


def cell_hits(completion: str, puzzle: str, solution: str) -> list[bool]:
    """Per blank of ``puzzle`` (in cell order): does the last answer fill it with ``solution``'s digit?"""
    answer = last_answer(completion)
    digits = "".join(ch for ch in answer if ch.isdigit())[:16].ljust(16, "0") if answer is not None else "0" * 16
    return [digits[i] == solution[i] for i, ch in enumerate(puzzle) if ch == "0"]


def score(completion: str, puzzle: str, solution: str) -> float:
    """Fraction of the blanks of ``puzzle`` that the last answer fills with ``solution``'s digit."""
    hits = cell_hits(completion, puzzle, solution)
    return sum(hits) / len(hits) if hits else 0.0


def d1_cells(completion: str, puzzle: str, solution: str) -> tuple[int, int]:
    """(blanks d1's reading fills with ``solution``'s digit, blanks of ``puzzle``)."""
    grid = d1_parse.sudoku_grid(completion)
    blanks = [i for i, ch in enumerate(puzzle) if ch == "0"]
    return (sum(grid[i] == solution[i] for i in blanks) if grid else 0), len(blanks)


def count_solutions(puzzle: str, limit: int = 2) -> int:
    """Number of completions of ``puzzle`` (stops counting at ``limit``)."""
    cells = list(puzzle)
    if any(ch != "0" and ch in (cells[j] for j in _PEERS[i]) for i, ch in enumerate(cells)):
        return 0
    count = 0

    def fill(pos: int) -> None:
        nonlocal count
        while pos < 16 and cells[pos] != "0":
            pos += 1
        if pos == 16:
            count += 1
            return
        for digit in "1234":
            if count < limit and all(cells[j] != digit for j in _PEERS[pos]):
                cells[pos] = digit
                fill(pos + 1)
        cells[pos] = "0"

    fill(0)
    return count


@lru_cache(maxsize=1)
def all_grids() -> tuple[str, ...]:
    """The 288 valid 4x4 sudoku grids, in lexicographic order."""
    grids = []
    rows = ["".join(p) for p in itertools.permutations("1234")]
    for grid in itertools.product(rows, repeat=4):
        text = "".join(grid)
        if all(len({text[i] for i in g}) == 4 for g in _GROUPS):
            grids.append(text)
    return tuple(grids)


def generate(n: int, seed: int = 0, *, blanks: int | tuple[int, int] = 10) -> list[Example]:
    """``n`` reproducible puzzles with a unique solution and ``blanks`` empty cells.

    ``blanks`` is a number (4..12; 12 is the most a 4x4 puzzle can have and stay unique) or an
    inclusive range ``(low, high)`` drawn per puzzle. Cells are blanked in random order, each
    kept blank only while the solution stays unique; a draw that cannot reach the count is retried.
    """
    low, high = (blanks, blanks) if isinstance(blanks, int) else blanks
    if not 1 <= low <= high <= 12 or n < 0:
        raise BGPOError(f"sudoku blanks must be within 1..12 (4x4 puzzles with more are never unique), got {blanks}")
    rng = random.Random(seed)
    grids = all_grids()
    examples: list[Example] = []
    while len(examples) < n:
        solution, target = rng.choice(grids), rng.randint(low, high)
        cells = list(solution)
        for i in rng.sample(range(16), 16):
            if cells.count("0") == target:
                break
            cells[i], kept = "0", cells[i]
            if count_solutions("".join(cells)) != 1:
                cells[i] = kept
        if cells.count("0") == target:
            examples.append({"puzzle": "".join(cells), "solution": solution})
    return examples


def candidates(puzzle: str, i: int) -> str:
    """The digits cell ``i`` may hold given the digits already in its row, column and box."""
    return "".join(d for d in "1234" if all(puzzle[j] != d for j in _PEERS[i]))


def naked_singles(puzzle: str) -> list[bool]:
    """Per blank (in cell order): is it a naked single of the givens, the blanks the teacher always gets right?"""
    return [len(candidates(puzzle, i)) == 1 for i, ch in enumerate(puzzle) if ch == "0"]


def teacher_expected(puzzle: str) -> float:
    """The imperfect teacher's *expected* cell accuracy on ``puzzle``, exactly (no draws).

    A blank with candidates C (given the givens) is filled with a uniform draw from C, and the true
    digit is always in C, so it is right with probability 1/|C| (1 for a naked single):
    E[accuracy] = mean over blanks of 1/|C_i|. One draw (:func:`imperfect_teacher`) scatters around it.
    """
    sizes = [len(candidates(puzzle, i)) for i, ch in enumerate(puzzle) if ch == "0"]
    return sum(1 / n for n in sizes) / len(sizes) if sizes else 0.0


def imperfect_teacher(puzzle: str, rng: random.Random) -> str:
    """A plausible but unverified completion: the small-scale warm start's teacher.

    Every blank whose candidates *given the puzzle's givens* are a single digit (a naked single)
    gets that digit — always right. Every other blank gets a digit drawn uniformly from its
    candidates — consistent with the givens, never checked against the other blanks, so right only
    by luck. On the fixed held-out pool ~40% of blanks are naked singles and the teacher scores
    ~0.67 cell accuracy (``tests/test_tasks_sudoku.py``). A model that imitates it has systematic,
    learnable errors: the verified reward can teach it to make the blanks agree with each other,
    which is exactly what the teacher never did — RL going beyond its teacher.
    """
    cells = list(puzzle)
    for i, ch in enumerate(puzzle):
        if ch == "0":
            options = candidates(puzzle, i)
            cells[i] = options if len(options) == 1 else rng.choice(options or "1234")
    return "".join(cells)


def _check_grid(text: object, name: str, allow_blanks: bool) -> str:
    text = str(text).strip()
    allowed = "01234" if allow_blanks else "1234"
    if len(text) != 16 or any(ch not in allowed for ch in text):
        raise RowError(name, f"expected 16 characters from '{allowed}', got {text!r}")
    return text


class Sudoku(Task):
    name = "sudoku"
    styles = ("chat", "compact")
    metric_names = ("cell_accuracy", "d1_cell_accuracy", "solved")
    primary_metric = "cell_accuracy"
    hub_sources: dict = {}  # d1's puzzles are CSV files in its GitHub repository: pass source=<csv>

    def messages(self, example: Example) -> Messages:
        if self.style == "compact":
            return [{"role": "user", "content": example["puzzle"]}]
        content = f"{D1_SUDOKU_PROMPT}\n\nSolve the following Sudoku puzzle: {example['puzzle']}\n"
        return [{"role": "user", "content": content}]

    def reward(self, completion: str, example: Example) -> float:
        return score(completion, example["puzzle"], example["solution"])

    def metrics(self, completions: Sequence[str], examples: Sequence[Example],
                rewards: Sequence[float]) -> dict[str, float]:
        check_batch(completions, examples, rewards)
        cells = [d1_cells(c, e["puzzle"], e["solution"]) for c, e in zip(completions, examples)]
        blanks = sum(total for _, total in cells)
        return {
            "cell_accuracy": mean(rewards),
            "d1_cell_accuracy": sum(right for right, _ in cells) / blanks if blanks else 0.0,
            "solved": mean([r == 1.0 for r in rewards]),
        }

    def sft_target(self, example: Example) -> str:
        """A completion that earns reward 1 (compact: ``<answer>16 digits</answer>`` only)."""
        solution = example["solution"]
        if self.style == "compact":
            return f"<answer>{solution}</answer>"
        rows = "\n".join(f"Row {r + 1}: {example['puzzle'][4 * r:4 * r + 4]} -> {solution[4 * r:4 * r + 4]}"
                         for r in range(4))
        return f"<reasoning>\n{rows}\n</reasoning>\n<answer>\n{solution}\n</answer>"

    def from_row(self, row: Example) -> Example:
        puzzle = row.get("Puzzle", row.get("puzzle"))
        if puzzle is None:  # d1 generations / verl: the puzzle sits in the question text
            text = str(field(row, "question", "prompt"))
            found = re.findall(r"\b[0-4]{16}\b", text)
            if not found:
                raise RowError("question", "no 16-digit puzzle in the text")
            puzzle = found[-1]
        puzzle = _check_grid(puzzle, "puzzle", allow_blanks=True)
        solution = _check_grid(field(row, "Solution", "solution", "ground_truth", "answer"), "solution",
                               allow_blanks=False)
        if any(p != "0" and p != s for p, s in zip(puzzle, solution)):
            raise RowError("solution", f"disagrees with the givens of puzzle {puzzle}")
        example = {"puzzle": puzzle, "solution": solution}
        if row.get("messages"):
            example["messages"] = row["messages"]
        return example
