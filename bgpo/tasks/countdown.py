"""Countdown with 3 numbers: write an expression over the given numbers that hits the target.

Reward (the BGPO paper's rules, after d1 and DARE): the last ``<answer>...</answer>`` must hold only digits,
``+ - * / ( )`` and white space and use exactly the given numbers (each once);

    r = 1.0 if the expression equals the target, 0.1 if an answer is present but wrong or
        invalid, 0.0 if there is no answer.

The expression is untrusted model output, so it is never ``eval``-ed: a small recursive-descent
parser evaluates it with exact fractions (no float round-off: ``(1/3)*3 == 1``).

Metrics: ``d1_success`` (d1's lenient evaluation parser, :func:`d1_success`; the number d1, wd1 and
SPG report), ``mean_reward`` (what DARE reports: the reward above, 0.1 format credit included) and
``strict_success`` (reward 1).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from fractions import Fraction

from bgpo.errors import BGPOError
from bgpo.tasks import d1_parse
from bgpo.tasks.base import D1_FORMAT_PROMPT, Example, Messages, RowError, Task, check_batch, field, last_answer, mean

_ALLOWED = re.compile(r"[\d+\-*/()\s]+")
_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")


class _Parser:
    """expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := ('+'|'-') factor | number | '(' expr ')'."""

    def __init__(self, text: str):
        self.tokens = _TOKEN.findall(text)
        if "".join(self.tokens) != re.sub(r"\s+", "", text):
            raise ValueError("stray characters")
        self.pos = 0
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError("expression ends early")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op, rhs = self.take(), self.factor()
            if op == "/" and rhs == 0:
                raise ValueError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token in ("+", "-"):
            value = self.factor()
            return value if token == "+" else -value
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise ValueError("unbalanced parenthesis")
            return value
        if token.isdigit():
            self.numbers.append(int(token))
            return Fraction(int(token))
        raise ValueError(f"unexpected '{token}'")


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Value of an arithmetic expression and the numbers it uses; ValueError when invalid."""
    if not _ALLOWED.fullmatch(expression):
        raise ValueError("only digits, + - * / ( ) and spaces are allowed")
    parser = _Parser(expression)
    value = parser.expr()
    if parser.peek() is not None:
        raise ValueError(f"unexpected '{parser.peek()}'")
    return value, parser.numbers


def score(completion: str, numbers: list[int], target: int) -> float:
    """The §7 countdown reward: 1.0 correct, 0.1 answer present but wrong/invalid, 0.0 none."""
    answer = last_answer(completion)
    if answer is None:
        return 0.0
    try:
        value, used = evaluate(answer)
    except (ValueError, ZeroDivisionError, RecursionError):
        return 0.1
    return 1.0 if sorted(used) == sorted(numbers) and value == target else 0.1


def d1_success(completion: str, numbers: list[int], target: int) -> bool:
    """d1's evaluation rule: :func:`bgpo.tasks.d1_parse.countdown_expression` uses exactly the
    given numbers (every number in it counted, each once) and is within 1e-5 of the target.

    d1 evaluates with Python's ``eval``; this evaluates the same ``+ - * / ( )`` arithmetic with
    :func:`evaluate`, so the Python-only forms ``**``, ``//``, ``2.5`` and ``07`` are invalid here
    (none occurs in LLaDA-8B-Instruct's published outputs).
    """
    expression = d1_parse.countdown_expression(completion)
    if sorted(int(n) for n in re.findall(r"\d+", expression)) != sorted(numbers):
        return False
    try:
        value, _ = evaluate(expression.strip())
    except (ValueError, ZeroDivisionError, RecursionError):
        return False
    return abs(value - target) < Fraction(1, 10**5)


def _steps(expression: str) -> list[str]:
    """Reasoning lines ``a op b = c`` in evaluation order (for SFT targets)."""
    lines: list[str] = []

    def visit(node: str) -> str:  # node: expression without outer parentheses
        split_at = None
        for ops in ("+-", "*/"):  # split at the last top-level lowest-precedence operator
            depth = 0
            for i, ch in enumerate(node):
                depth += ch == "("
                depth -= ch == ")"
                if depth == 0 and ch in ops and i > 0:
                    split_at = i
            if split_at is not None:
                break
        if split_at is None:
            return visit(node[1:-1]) if node.startswith("(") else node
        left, right = visit(node[:split_at].strip()), visit(node[split_at + 1:].strip())
        value, _ = evaluate(f"({left}){node[split_at]}({right})")
        result = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
        lines.append(f"{left} {node[split_at]} {right} = {result}")
        return result

    visit(expression)
    return lines


class Countdown(Task):
    name = "countdown"
    styles = ("chat", "compact")
    metric_names = ("d1_success", "mean_reward", "strict_success")
    primary_metric = "d1_success"
    hub_sources = {"train": [("Jiayi-Pan/Countdown-Tasks-3to4", None, "train")]}

    def messages(self, example: Example) -> Messages:
        numbers, target = example["numbers"], example["target"]
        if self.style == "compact":
            return [{"role": "user", "content": f"{' '.join(map(str, numbers))} = {target}"}]
        content = (
            f"{D1_FORMAT_PROMPT}\nUsing only the numbers {list(numbers)}, create an arithmetic expression "
            f"that evaluates to exactly {target}. You must use all numbers from the list, and each number "
            "must be used exactly once. You may use the operations +, -, *, and / as needed. After reasoning, "
            "provide only your final expression inside <answer></answer> tags without including an equals "
            "sign or the target number. For example, if the numbers are [2, 3, 4] and the target is 5, a "
            "valid answer is: <answer>\n2*4-3\n</answer>"
        )
        return [{"role": "user", "content": content}]

    def reward(self, completion: str, example: Example) -> float:
        return score(completion, example["numbers"], example["target"])

    def metrics(self, completions: Sequence[str], examples: Sequence[Example],
                rewards: Sequence[float]) -> dict[str, float]:
        check_batch(completions, examples, rewards)
        return {
            "d1_success": mean([d1_success(c, e["numbers"], e["target"]) for c, e in zip(completions, examples)]),
            "mean_reward": mean(rewards),
            "strict_success": mean([r == 1.0 for r in rewards]),
        }

    def sft_target(self, example: Example) -> str:
        """A completion that earns reward 1: the reference expression in the answer format."""
        expression = example.get("solution")
        if not expression:
            raise BGPOError("countdown example has no 'solution' expression; make it with generate()")
        if self.style == "compact":
            return f"<answer>{expression}</answer>"
        steps = "\n".join(_steps(expression))
        return f"<reasoning>\n{steps}\n</reasoning>\n<answer>\n{expression}\n</answer>"

    def from_row(self, row: Example) -> Example:
        truth = row.get("ground_truth")
        if isinstance(truth, dict):  # verl: {target, numbers}
            row = {**row, **truth}
        elif isinstance(truth, (list, tuple)) and len(truth) == 2:  # d1 generations: [[numbers], target]
            row = {**row, "numbers": truth[0], "target": truth[1]}
        numbers = field(row, "numbers", "nums", "input")
        if isinstance(numbers, str):
            numbers = numbers.strip("[]").split(",")
        try:
            numbers = [int(n) for n in numbers]
        except (TypeError, ValueError):
            raise RowError("numbers", f"expected integers, got {numbers!r}") from None
        target = field(row, "target", "output")
        try:
            target = int(target)
        except (TypeError, ValueError):
            raise RowError("target", "expected an integer") from None
        example = {"numbers": numbers, "target": target}
        for key in ("solution", "messages"):
            if row.get(key):
                example[key] = row[key]
        return example


def generate(n: int, seed: int = 0, *, n_numbers: int = 3, max_number: int = 99,
             max_target: int = 100) -> list[Example]:
    """``n`` reproducible countdown problems with a reachable integer target.

    Draw ``n_numbers`` numbers in ``1..max_number`` and a random expression over them (random
    order, operators and bracketing); keep it when its value is an integer in ``1..max_target``.
    The expression is stored as ``solution``, so ``Countdown().sft_target`` can emit it.
    """
    if n < 0 or n_numbers < 2 or max_number < 1 or max_target < 1:
        raise BGPOError("generate needs n >= 0, n_numbers >= 2, max_number >= 1, max_target >= 1")
    rng = random.Random(seed)
    examples: list[Example] = []
    while len(examples) < n:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        order = rng.sample(numbers, len(numbers))
        expression = str(order[0])
        for number in order[1:]:
            op = rng.choice("+-*/")
            expression = (f"{number} {op} ({expression})" if rng.random() < 0.5 and op in "-/"
                          else f"({expression}) {op} {number}")
        expression = _tidy(expression)
        try:
            value, _ = evaluate(expression)
        except ValueError:
            continue
        if value.denominator == 1 and 1 <= value <= max_target:
            examples.append({"numbers": numbers, "target": int(value), "solution": expression})
    return examples


def _tidy(expression: str) -> str:
    """Drop the brackets around a leading single number: ``(7) + 3`` -> ``7 + 3``."""
    return re.sub(r"\((\d+)\)", r"\1", expression)
