"""Python coding problems (HumanEval, MBPP, DeepCoder/APPS-style): run the answer against unit tests.

Reward (`bgpo-math.md` §7): 1 only if every test passes in the sandbox, else 0. Tests come in
two kinds, both run by :mod:`bgpo.sandbox` (concurrently, each with its own time limit):

* ``assert`` -- Python test code appended to the solution (MBPP ``assert f(x) == y`` lines,
  HumanEval ``check(candidate)``, or call-based tests turned into asserts);
* ``stdio`` -- the solution is run with ``input`` on stdin and must print ``output``
  (compared line by line, trailing white space ignored).

The code is taken from the completion's last ``<answer>`` when it holds a fenced block, else
from the whole completion: of the fenced blocks, the last one that defines the entry point
(when known), else the last one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from bgpo import sandbox
from bgpo.tasks.base import Example, Messages, RowError, Task, field, last_answer

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)

CODE_PROMPT = (
    "You are an expert Python programmer. Solve the programming problem below. Respond in the following "
    "format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n```python\n# your complete solution\n"
    "```\n</answer>"
)

LIMITS = sandbox.Limits(cpu_seconds=5, wall_seconds=10.0)


def extract_code(completion: str, entry_point: str | None = None) -> str | None:
    """The solution code of a completion (see the module docstring for the rule)."""
    answer = last_answer(completion)
    blocks = _FENCE.findall(answer) if answer else []
    blocks = blocks or _FENCE.findall(completion)
    if not blocks:
        return None
    if entry_point:
        defining = [b for b in blocks if re.search(rf"\bdef\s+{re.escape(entry_point)}\s*\(", b)]
        blocks = defining or blocks
    return blocks[-1]


def programs(code: str, example: Example) -> list[sandbox.Program]:
    """One sandbox program per test of ``example`` for the solution ``code``."""
    entry = example.get("entry_point")
    if entry and not re.search(rf"\bdef\s+{re.escape(entry)}\s*\(", code) and example.get("prefix"):
        code = example["prefix"] + code  # a function body completing the HumanEval signature
    setup = example.get("setup", "")
    out = []
    for test in example["tests"]:
        if test["kind"] == "assert":
            out.append(sandbox.Program(f"{setup}\n{code}\n\n{test['code']}\n"))
        else:
            out.append(sandbox.Program(f"{setup}\n{code}\n", stdin=test["input"], expected_stdout=test["output"]))
    return out


def _call_test(fn_name: str, args: list, expected: object) -> dict[str, str]:
    """A call-based test (APPS/TACO ``fn_name``) as an assert on the function's return value."""
    return {"kind": "assert",
            "code": f"_f = globals().get({fn_name!r}) or getattr(Solution(), {fn_name!r})\n"
                    f"_out = _f(*{args!r})\n"
                    f"assert _out == {expected!r} or [_out] == {expected!r}"}


def _tests_from(value: object, fn_name: str | None = None) -> list[dict[str, str]]:
    """Normalise the test conventions of HumanEval/MBPP/APPS/DeepCoder/verl to our two kinds."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return [{"kind": "assert", "code": value}]  # plain test code
    if isinstance(value, dict) and "inputs" in value:  # APPS / TACO input_output
        fn_name = value.get("fn_name") or fn_name
        pairs = zip(value["inputs"], value["outputs"], strict=True)
        if fn_name:
            return [_call_test(fn_name, i, o) for i, o in pairs]
        return [{"kind": "stdio", "input": _text(i), "output": _text(o)} for i, o in pairs]
    if isinstance(value, (list, tuple)):
        tests = []
        for item in value:
            if isinstance(item, str):
                tests.append({"kind": "assert", "code": item})
            elif isinstance(item, dict) and item.get("kind") in ("assert", "stdio"):
                tests.append(dict(item))
            elif isinstance(item, dict) and "input" in item:  # DeepCoder / LiveCodeBench
                meta = item.get("metadata") or {}
                meta = json.loads(meta) if isinstance(meta, str) else meta
                name = meta.get("func_name") or fn_name
                if item.get("testtype", item.get("type")) == "functional" and name:
                    args = [json.loads(line) for line in str(item["input"]).splitlines() if line.strip()]
                    tests.append(_call_test(name, args, json.loads(item["output"])))
                else:
                    tests.append({"kind": "stdio", "input": _text(item["input"]), "output": _text(item["output"])})
            else:
                raise RowError("tests", f"unknown test item {str(item)[:80]!r}")
        return tests
    raise RowError("tests", f"unknown test format {type(value).__name__}")


def _text(value: object) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


class Code(Task):
    name = "code"
    hub_sources = {
        "train": [("agentica-org/DeepCoder-Preview-Dataset", "primeintellect", "train")],
        "test": [("openai/openai_humaneval", None, "test")],
        "mbpp": [("google-research-datasets/mbpp", "full", "test")],
    }

    def messages(self, example: Example) -> Messages:
        problem = example["problem"]
        asserts = [t["code"] for t in example["tests"] if t["kind"] == "assert"]
        if example.get("show_tests") and asserts:
            problem += "\nYour code should pass these tests:\n" + "\n".join(asserts)
        elif example["tests"] and example["tests"][0]["kind"] == "stdio":
            problem += "\nRead the input from standard input and print the answer to standard output."
        return [{"role": "user", "content": f"{CODE_PROMPT}\n\n{problem}"}]

    def reward(self, completion: str, example: Example) -> float:
        return self.rewards([completion], [example])[0]

    def rewards(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """All programs of the batch go to one concurrent sandbox pool."""
        jobs: list[tuple[int, sandbox.Program]] = []
        for i, (completion, example) in enumerate(zip(completions, examples, strict=True)):
            code = extract_code(completion, example.get("entry_point"))
            if code is not None and example["tests"]:
                jobs += [(i, p) for p in programs(code, example)]
        results = sandbox.run_many([p for _, p in jobs], LIMITS)
        ran, passed = [0] * len(examples), [0] * len(examples)
        for (i, _), result in zip(jobs, results):
            ran[i] += 1
            passed[i] += result.passed
        return [float(ran[i] > 0 and passed[i] == ran[i]) for i in range(len(examples))]

    def from_row(self, row: Example) -> Example:
        example: Example = {"setup": ""}
        if "entry_point" in row and "test" in row:  # HumanEval
            example.update(problem=f"```python\n{row['prompt']}```", prefix=row["prompt"],
                           entry_point=row["entry_point"],
                           tests=[{"kind": "assert", "code": f"{row['test']}\ncheck({row['entry_point']})"}])
        elif "test_list" in row:  # MBPP (full or sanitized)
            example.update(problem=str(field(row, "text", "prompt")), show_tests=True,
                           setup="\n".join(row.get("test_imports") or []) + "\n" + (row.get("test_setup_code") or ""),
                           tests=[{"kind": "assert", "code": t} for t in row["test_list"]])
            found = re.search(r"assert\s+(\w+)\s*\(", row["test_list"][0]) if row["test_list"] else None
            example["entry_point"] = found.group(1) if found else None
        else:  # APPS / TACO / DeepCoder / verl / our own JSONL
            tests = field(row, "tests", "input_output", "ground_truth")
            example.update(problem=str(row.get("problem") or row.get("question") or ""),
                           tests=_tests_from(tests, row.get("fn_name")), entry_point=row.get("entry_point"))
            if not example["problem"] and not row.get("messages"):
                raise RowError("problem", "missing (also looked for question, prompt messages)")
        if not example["tests"]:
            raise RowError("tests", "no tests: a code problem needs at least one")
        if row.get("messages"):
            example["messages"] = row["messages"]
        return example
