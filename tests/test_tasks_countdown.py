"""Countdown: the exact-fraction parser, the 1.0 / 0.1 / 0 reward, d1's lenient rule, metrics, generator, SFT."""

from __future__ import annotations

from fractions import Fraction

import pytest

from bgpo.errors import BGPOError
from bgpo.tasks import get_task
from bgpo.tasks.countdown import d1_success, evaluate, generate

TASK = get_task("countdown")
EXAMPLE = {"numbers": [49, 55, 53], "target": 51}


def answer(text: str) -> str:
    return f"<reasoning>\nsome thinking\n</reasoning>\n<answer>\n{text}\n</answer>"


@pytest.mark.parametrize("expression, value, numbers", [
    ("49 + 55 - 53", 51, [49, 55, 53]),
    ("2*4-3", 5, [2, 4, 3]),
    ("(1/3)*3", 1, [1, 3, 3]),
    ("100 / (7 - 3)", 25, [100, 7, 3]),
    ("-3 + 10", 7, [3, 10]),
    ("8 - 2 - 1", 5, [8, 2, 1]),
    ("12 / 4 / 3", 1, [12, 4, 3]),
])
def test_evaluate(expression, value, numbers):
    result, used = evaluate(expression)
    assert result == Fraction(value) and used == numbers


@pytest.mark.parametrize("bad", ["1 +", "(1 + 2", "1 2", "4 / (2 - 2)", "2 ** 3", "__import__('os')", "1.5 + 2", ""])
def test_evaluate_rejects(bad):
    with pytest.raises(ValueError):
        evaluate(bad)


@pytest.mark.parametrize("completion, reward", [
    (answer("49 + 55 - 53"), 1.0),
    (answer("55 - 53 + 49"), 1.0),
    (answer("49 + 55 + 53"), 0.1),                 # wrong value
    (answer("49 + 55 - 53 + 0"), 0.1),             # extra number
    (answer("49 + 2"), 0.1),                       # numbers not used
    (answer("\\boxed{49 + 55 - 53}"), 0.1),        # characters outside digits + - * / ( ) spaces
    (answer("49 + 55 - 53 = 51"), 0.1),            # equals sign
    (answer("__import__('os').system('x')"), 0.1),  # never evaluated
    ("49 + 55 - 53", 0.0),                         # no answer tags
    ("<answer>1</answer> then <answer>49+55-53</answer>", 1.0),  # the last answer counts
    ("<answer>49+55-53</answer> then <answer>1</answer>", 0.1),
])
def test_reward(completion, reward):
    assert TASK.reward(completion, EXAMPLE) == reward
    assert TASK.is_correct(completion, EXAMPLE) == (reward == 1.0)


def test_generator_is_reproducible_and_reachable():
    a, b = generate(50, seed=3), generate(50, seed=3)
    assert a == b and a != generate(50, seed=4)
    for ex in a:
        assert len(ex["numbers"]) == 3 and 1 <= ex["target"] <= 100
        value, used = evaluate(ex["solution"])
        assert value == ex["target"] and sorted(used) == sorted(ex["numbers"])


@pytest.mark.parametrize("style", ["chat", "compact"])
def test_sft_targets_earn_full_reward(style):
    task = get_task("countdown", style=style)
    for ex in generate(30, seed=1):
        target = task.sft_target(ex)
        assert task.reward(target, ex) == 1.0
    ex = generate(1, seed=1)[0]
    prompt = task.prompt(ex)[0]["content"]
    if style == "compact":
        assert prompt == f"{ex['numbers'][0]} {ex['numbers'][1]} {ex['numbers'][2]} = {ex['target']}"
        assert task.sft_target(ex) == f"<answer>{ex['solution']}</answer>"
    else:
        assert "Respond in the following format:\n<reasoning>" in prompt and str(ex["numbers"]) in prompt


def test_chat_target_shows_the_steps():
    target = get_task("countdown").sft_target({"numbers": [2, 4, 3], "target": 5, "solution": "2 * 4 - 3"})
    assert target == "<reasoning>\n2 * 4 = 8\n8 - 3 = 5\n</reasoning>\n<answer>\n2 * 4 - 3\n</answer>"


def test_from_row_conventions():
    assert TASK.from_row({"input": "30,100,93", "output": "23"}) == {"numbers": [30, 100, 93], "target": 23}
    assert TASK.from_row({"nums": [1, 2, 3], "target": 6}) == {"numbers": [1, 2, 3], "target": 6}
    assert TASK.from_row({"ground_truth": [[49, 55, 53], 51]}) == EXAMPLE
    assert TASK.from_row({"ground_truth": {"numbers": [49, 55, 53], "target": 51}}) == EXAMPLE


def test_bad_arguments():
    with pytest.raises(BGPOError):
        generate(3, n_numbers=1)
    with pytest.raises(BGPOError):
        get_task("countdown", style="tiny")
    with pytest.raises(BGPOError, match="solution"):
        TASK.sft_target(EXAMPLE)


@pytest.mark.parametrize("completion, success", [
    ("<answer>\n\\boxed{49 + 55 - 53}\n</answer>", True),             # box inside the tags
    ("\\[ 55 - 53 + 49 \\]\n</answer>\n\\boxed{55 - 53 + 49}<|eot_id|>", True),  # no closed tags
    ("\\boxed{55 \\times 53 \\div 53 - 49 + 49 - 4}", False),       # 49 twice and a stray 4
    ("\\boxed{(55 \\cdot 53) \\div 53 - 4 = 51}", False),            # 4 is not given
    ("\\boxed{55 - (53 - 49) = 51}", True),                           # "= target" dropped
    ("<answer>\n49 + 55 - 53\n</answer>", False),                      # no box: the whole text is read
    ("<answer>49 + 55 - 53</answer> and \\boxed{49 + 55", True),       # unclosed box: the answer tags
    ("\\boxed{49 + 55 - 53 + 0}", False),                             # 0 is not given
    ("\\boxed{49 * 55 / 53}", False),                                 # wrong value
])
def test_d1_success(completion, success):
    assert d1_success(completion, EXAMPLE["numbers"], EXAMPLE["target"]) == success


def test_d1_tolerance_and_python_only_forms():
    assert d1_success("\\boxed{(1/3)*3}", [1, 3, 3], 1)
    assert not d1_success("\\boxed{2**3}", [2, 3], 8)  # Python's power is not countdown arithmetic
    assert not d1_success("\\boxed{6/(1-1)}", [6, 1, 1], 0)


def test_metrics():
    completions = ["<answer>\\boxed{49 + 55 - 53}</answer>", answer("49 + 55 - 53"), "no answer"]
    rewards = TASK.rewards(completions, [EXAMPLE] * 3)
    assert rewards == [0.1, 1.0, 0.0]
    metrics = TASK.metrics(completions, [EXAMPLE] * 3, rewards)
    assert list(metrics) == list(TASK.metric_names) and TASK.primary_metric == "d1_success"
    assert metrics == pytest.approx({"d1_success": 1 / 3, "mean_reward": 1.1 / 3, "strict_success": 1 / 3})
    with pytest.raises(BGPOError, match="one reward per completion"):
        TASK.metrics(completions, [EXAMPLE] * 3, rewards[:2])
