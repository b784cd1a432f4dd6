"""4x4 sudoku: fraction-of-blanks reward, d1's reading, metrics, unique-solution generator, SFT, d1's test set."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgpo.errors import BGPOError
from bgpo.tasks import get_task
from bgpo.tasks.d1_parse import sudoku_grid
from bgpo.tasks.sudoku import all_grids, count_solutions, generate, score

TASK = get_task("sudoku")
PUZZLE, SOLUTION = "3102200002100320", "3142243142131324"  # 8 blanks
EXAMPLE = {"puzzle": PUZZLE, "solution": SOLUTION}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize("completion, reward", [
    (f"<answer>\n{SOLUTION}\n</answer>", 1.0),
    (f"<answer>{PUZZLE}</answer>", 0.0),                            # blanks left blank
    ("<answer>3142 2431 4213 1324</answer>", 1.0),                  # separators dropped
    ("<answer>31422431</answer>", 4 / 8),                           # short: padded with 0
    (f"<answer>{SOLUTION}9999</answer>", 1.0),                      # long: truncated
    (f"<answer>{SOLUTION[:5]}1{SOLUTION[6:]}</answer>", 7 / 8),     # one blank wrong
    (SOLUTION, 0.0),                                                # no answer tags
])
def test_reward(completion, reward):
    assert TASK.reward(completion, EXAMPLE) == pytest.approx(reward)
    assert TASK.is_correct(completion, EXAMPLE) == (reward == 1.0)


@pytest.mark.parametrize("completion, grid", [
    (f"<answer>\n{SOLUTION}\n</answer>", SOLUTION),
    ("<answer>\n3142 2431\n</answer>", "3142243100000000"),                  # short: padded with 0
    (f"<answer>\n{SOLUTION}<|eot_id|>", SOLUTION),                            # unclosed tag
    ("<answer>\n```\n3142\n2431\n```\nthat is all</answer>", "3142243100000000"),  # code fence
    (f"<answer>\n</answer>\nso {SOLUTION}<|eot_id|>", f"so{SOLUTION[:14]}"),  # after the tags, words kept
    (f"the grid is {SOLUTION}.", SOLUTION),                                    # any 16-digit run
    ("<answer>\n41233\\41012\\43214\n</answer>", "41233\\41012\\4321"),  # non-digits kept
    ("no digits", ""),
])
def test_d1_reading(completion, grid):
    assert sudoku_grid(completion) == grid


def test_metrics_pool_cells_for_d1():
    easy = {"puzzle": SOLUTION[:12] + "0000", "solution": SOLUTION}  # 4 blanks
    completions = [f"<answer>{SOLUTION}</answer>", f"<answer>\n{SOLUTION[:8]}<|eot_id|>"]
    examples = [easy, EXAMPLE]
    rewards = TASK.rewards(completions, examples)
    assert rewards == [1.0, 0.0]  # the unclosed tag earns no reward
    metrics = TASK.metrics(completions, examples, rewards)
    assert list(metrics) == list(TASK.metric_names) and TASK.primary_metric == "cell_accuracy"
    # d1 reads 4 of EXAMPLE's 8 blanks right and pools the cells: (4 + 4) / (4 + 8)
    assert metrics == pytest.approx({"cell_accuracy": 0.5, "d1_cell_accuracy": 8 / 12, "solved": 0.5})


def test_there_are_288_grids():
    grids = all_grids()
    assert len(grids) == 288 and SOLUTION in grids


@pytest.mark.parametrize("blanks", [4, 10, 12, (6, 9)])
def test_generator_unique_and_controlled(blanks):
    examples = generate(20, seed=7, blanks=blanks)
    assert examples == generate(20, seed=7, blanks=blanks)
    low, high = (blanks, blanks) if isinstance(blanks, int) else blanks
    for ex in examples:
        assert low <= ex["puzzle"].count("0") <= high
        assert count_solutions(ex["puzzle"]) == 1
        assert ex["solution"] in all_grids()
        assert all(p in ("0", s) for p, s in zip(ex["puzzle"], ex["solution"]))


def test_generator_rejects_impossible_blanks():
    with pytest.raises(BGPOError):
        generate(1, blanks=13)


@pytest.mark.parametrize("style", ["chat", "compact"])
def test_sft_targets(style):
    task = get_task("sudoku", style=style)
    ex = generate(1, seed=0)[0]
    assert task.reward(task.sft_target(ex), ex) == 1.0
    if style == "compact":
        assert task.prompt(ex) == [{"role": "user", "content": ex["puzzle"]}]
        assert task.sft_target(ex) == f"<answer>{ex['solution']}</answer>"
    else:
        assert task.prompt(ex)[0]["content"].endswith(f"Solve the following Sudoku puzzle: {ex['puzzle']}\n")


def test_from_row_checks_the_grid():
    assert TASK.from_row({"Puzzle": PUZZLE, "Solution": SOLUTION}) == EXAMPLE
    assert TASK.from_row({"question": f"Solve the following Sudoku puzzle: {PUZZLE}\n",
                          "ground_truth": SOLUTION}) == EXAMPLE
    with pytest.raises(BGPOError, match="field 'solution'"):
        TASK.from_row({"Puzzle": PUZZLE, "Solution": "3142"})
    with pytest.raises(BGPOError, match="disagrees"):
        TASK.from_row({"Puzzle": PUZZLE, "Solution": "4142243142131324"})


@pytest.mark.skipif(not (SHARED / "testsets").exists(), reason="needs ../shared/data")
def test_loads_d1_test_set():
    examples = get_task("sudoku").load("test", SHARED / "testsets" / "sudoku_4x4_test.csv")
    assert len(examples) > 100
    assert all(count_solutions(ex["puzzle"]) >= 1 for ex in examples[:50])
    countdown = get_task("countdown").load("test", SHARED / "testsets" / "countdown_cd3_test.jsonl")
    assert countdown[0] == {"numbers": [30, 100, 93], "target": 23}


def test_the_imperfect_teacher_fills_singles_right_and_guesses_the_rest():
    import random

    from bgpo.data import heldout_pool
    from bgpo.config import load_config
    from bgpo.tasks.sudoku import candidates, imperfect_teacher

    pool = heldout_pool(load_config("small-sudoku").data)
    rng, accuracy = random.Random(0), []
    for e in pool:
        fill = imperfect_teacher(e["puzzle"], rng)
        blanks = [i for i, ch in enumerate(e["puzzle"]) if ch == "0"]
        for i in blanks:
            options = candidates(e["puzzle"], i)
            assert fill[i] in options  # plausible: consistent with the givens
            if len(options) == 1:
                assert fill[i] == e["solution"][i]  # a naked single is always right
        accuracy.append(sum(fill[i] == e["solution"][i] for i in blanks) / len(blanks))
    assert 0.64 < sum(accuracy) / len(accuracy) < 0.71  # the room RL has: ~a third of the blanks


def test_the_teachers_expectation_is_the_mean_of_its_draws_and_splits_by_cell_kind():
    import random

    from bgpo.data import heldout_pool
    from bgpo.config import load_config
    from bgpo.tasks.sudoku import cell_hits, imperfect_teacher, naked_singles, teacher_expected

    pool = heldout_pool(load_config("small-sudoku").data)[:64]
    draws = [[score(f"<answer>{imperfect_teacher(e['puzzle'], rng)}</answer>", e["puzzle"], e["solution"])
              for e in pool] for rng in (random.Random(k) for k in range(400))]
    per_puzzle = [sum(d[j] for d in draws) / len(draws) for j in range(len(pool))]
    exact = [teacher_expected(e["puzzle"]) for e in pool]
    assert max(abs(a - b) for a, b in zip(per_puzzle, exact)) < 0.08  # 400 draws: SE <= 0.025 per puzzle
    assert abs(sum(per_puzzle) - sum(exact)) / len(pool) < 0.005
    e = pool[0]
    fill = imperfect_teacher(e["puzzle"], random.Random(0))
    hits, singles = cell_hits(f"<answer>{fill}</answer>", e["puzzle"], e["solution"]), naked_singles(e["puzzle"])
    assert len(hits) == len(singles) == e["puzzle"].count("0") and all(h for h, s in zip(hits, singles) if s)
    assert cell_hits("no answer", e["puzzle"], e["solution"]) == [False] * len(hits)
