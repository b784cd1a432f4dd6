"""Math: last \\boxed{} with brace matching, normalisation, symbolic equivalence (math-verify), d1's parser."""

from __future__ import annotations

import pytest

from bgpo.tasks import get_task
from bgpo.tasks.d1_parse import gsm8k_number, math_answer, math_equivalent
from bgpo.tasks.math import is_equivalent, last_boxed, normalize

TASK = get_task("math")


@pytest.mark.parametrize("text, boxed", [
    ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
    ("\\fbox{7}", "7"),
    ("$\\boxed 7$", "7"),
    ("\\boxed{78\n</answer>", None),  # unclosed
    ("no box", None),
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize("raw, norm", [
    ("\\$1,000", "1000"), ("18.0", "18"), ("x = 5", "5"), ("\\dfrac{3}{4}", "\\frac{3}{4}"),
    ("90^\\circ", "90"), ("50\\%", "50"), ("\\left( 1, 2 \\right)", "(1,2)"), ("12\\text{ cm}", "12"),
    (".5", "0.5"), ("\\text{east}", "east"),
])
def test_normalize(raw, norm):
    assert normalize(raw) == norm


@pytest.mark.parametrize("prediction, reference", [
    ("0.5", "\\frac{1}{2}"), ("\\frac{3}{24}", "\\frac{1}{8}"), ("16\\sqrt 3", "16 \\sqrt{3}"),
    ("\\sqrt{3}/3", "\\frac{\\sqrt{3}}{3}"), ("7i - 2", "-2 + 7i"), ("x^2+1", "1+x^2"),
    ("[-2, 7]", "x \\in [-2,7]"), ("6,277", "6277"),
])
def test_equivalent(prediction, reference):
    assert is_equivalent(prediction, reference)


@pytest.mark.parametrize("prediction, reference", [
    ("0.51", "\\frac{1}{2}"), ("2", "16\\sqrt{3}"), ("(1, 2)", "[1, 2]"), ("", "3"), ("x+1", "x-1"),
])
def test_not_equivalent(prediction, reference):
    assert not is_equivalent(prediction, reference)


def test_reward_reads_the_last_box():
    example = {"problem": "1+1?", "answer": "2"}
    assert TASK.reward("<reasoning>\\boxed{3}</reasoning><answer>\\boxed{2}</answer>", example) == 1.0
    assert TASK.reward("<answer>\\boxed{2}</answer> wait, \\boxed{3}", example) == 0.0
    assert TASK.reward("the answer is 2", example) == 0.0
    assert TASK.is_correct("\\boxed{2.0}", example)


def test_from_row_conventions():
    gsm = TASK.from_row({"question": "q", "answer": "work\n#### 1,250"})
    assert gsm == {"problem": "q", "answer": "1,250", "dataset": "gsm8k"} and TASK.reward("\\boxed{1250}", gsm) == 1.0
    assert TASK.from_row({"problem": "p", "solution": "so $\\boxed{\\frac{1}{2}}$."})["answer"] == "\\frac{1}{2}"
    d1_gsm8k = TASK.from_row({"question": "q", "ground_truth": 18.0})  # d1's files: a float reference
    assert d1_gsm8k == {"problem": "q", "answer": "18", "dataset": "gsm8k"}
    assert TASK.from_row(gsm) == gsm  # our examples written out and read back keep the tag
    assert "dataset" not in TASK.from_row({"question": "q", "ground_truth": "16 \\sqrt{3}"})  # MATH500
    verl = TASK.from_row({"ground_truth": "7", "messages": [{"role": "user", "content": "hi"}]})
    assert TASK.prompt(verl) == [{"role": "user", "content": "hi"}]
    assert "\\boxed{}" in TASK.prompt({"problem": "p", "answer": "1"})[0]["content"]


@pytest.mark.parametrize("text, number", [
    ("\\boxed{162000} so the answer is \\boxed{16200}", 162000.0),  # the first usable box
    ("\\boxed{} \\boxed{...} \\boxed{20 white hats}", 20.0),         # empty boxes skipped, first number
    ("\\boxed{\\frac{2}{3}}", 2.0),                                   # read up to the first }
    ("\\boxed{6,277}", 6.0),                                           # the comma cuts the number
    ("<answer>\n\\boxed{78\n</answer>", 78.0),                          # unclosed: last number in the tags
    ("<answer>\n-2.5\n</answer> <answer>9</answer>", -2.5),              # the first tags
    ("the answer is 5", None),
])
def test_d1_gsm8k_number(text, number):
    assert gsm8k_number(text) == number


@pytest.mark.parametrize("text, answer", [
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("$\\boxed 7$ and \\boxed{8}", "7"),                    # "\\boxed " anywhere wins
    ("\\fbox{7}", "\\fbox{7}"),                              # only \\boxed{} is unwrapped
    ("<answer>5</answer> \\boxed{5", "5"),                   # unclosed box: the answer tags
    ("no box", "no box"),                                     # no box: the whole text
])
def test_d1_math_answer(text, answer):
    assert math_answer(text) == answer


@pytest.mark.parametrize("prediction, reference, equal", [
    ("\\dfrac12", "0.5", True), ("3/4", "\\frac{3}{4}", True), ("x = 5", "5", True),
    ("5\\text{ cm}", "5", True), ("90^\\circ", "90", True), ("\\left(1, 2\\right)", "(1,2)", True),
    ("6,277", "6277", False), ("15.975", "\\frac{639}{40}", False),
    ("\\sqrt{3}/3", "\\sqrt{3}/3", True), ("\\sqrt{3}/3", "\\sqrt{3} / 3", False),  # a/b unreadable: raw strings
])
def test_d1_math_equivalent(prediction, reference, equal):
    assert math_equivalent(prediction, reference) == equal


def test_metrics():
    gsm = TASK.from_row({"question": "q", "ground_truth": 20.0})
    math = {"problem": "p", "answer": "\\frac{1}{2}"}
    completions = ["\\boxed{20}", "\\boxed{20 hats}", "\\boxed{0.5}", "\\boxed{\\frac{2}{4}}"]
    examples = [gsm, gsm, math, math]
    rewards = [1.0, 0.0, 1.0, 1.0]  # the strict reward (math-verify); given, not recomputed
    metrics = TASK.metrics(completions, examples, rewards)
    assert list(metrics) == list(TASK.metric_names) and TASK.primary_metric == "boxed_equiv"
    assert metrics == {"boxed_equiv": 0.75, "d1_accuracy": 0.75}  # d1: 20, 20, 0.5 -> 1/2; not 2/4
