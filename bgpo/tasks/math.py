"""Math word problems (MATH, GSM8K): the answer is the last ``\\boxed{...}`` of the completion.

Reward (the BGPO paper's rules, after d1 and DARE): 1 if the last ``\\boxed{}`` (braces matched, so ``\\boxed{\\frac{1}{2}}``
is read whole) is equivalent to the reference, else 0. Equivalence is checked in two steps:

1. a normalised string match (spaces, ``\\left``/``\\right``, ``\\dfrac``, ``$``, degrees, percent,
   trailing units in ``\\text{}``, thousands separators, a leading ``x =`` ...), cheap and exact;
2. otherwise symbolic equivalence with Hugging Face's ``math-verify`` (LaTeX -> sympy through
   ``latex2sympy2_extended``; offline), which also compares intervals, sets and tuples.

Metrics: ``boxed_equiv`` (reward 1, the rule above) and ``d1_accuracy``, the number d1, wd1 and
SPG report: d1's parser reads a GSM8K answer as a number (its first usable ``\\boxed{}``, else the
answer tags) compared exactly with the reference, and a MATH answer as a string compared after
Hendrycks's normalisation (:mod:`bgpo.tasks.d1_parse`). Examples from GSM8K carry
``dataset: "gsm8k"`` so the two readings can be told apart.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from bgpo.tasks import d1_parse
from bgpo.tasks.base import Example, Messages, RowError, Task, check_batch, field, mean

# d1's math prompt (its GSM8K / MATH500 evaluation system prompt), a <reasoning>/<answer> template.
D1_MATH_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final "
    "answer in a \\boxed{}. \nRespond in the following format:\n<reasoning>\nYour reasoning here\n"
    "</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 7``) with braces matched."""
    boxed, fbox = text.rfind("\\boxed"), text.rfind("\\fbox")
    if boxed < 0 and fbox < 0:
        return None
    i = boxed + len("\\boxed") if boxed > fbox else fbox + len("\\fbox")
    if i < len(text) and text[i] == " ":  # "\boxed 7": up to the next space or "$"
        return re.split(r"[\s$]", text[i + 1:], maxsplit=1)[0] or None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    return None  # unclosed brace: no answer


_UNITS = re.compile(r"\\(?:text|mbox|mathrm)\{\s*[a-zA-Z ]+\}$")


def normalize(answer: str) -> str:
    """A canonical string for exact comparison (MATH-style normalisation)."""
    s = answer.strip().strip("$").strip()
    s = _UNITS.sub("", s).strip() if not _UNITS.fullmatch(s) else s
    s = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                     ("dfrac", "frac"), ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""),
                     ("\\%", ""), ("%", ""), ("\\$", ""), ("\\displaystyle", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 1,000 -> 1000
        s = s.replace(",", "")
    s = re.sub(r"^[a-zA-Z]\w*=", "", s) if s.count("=") == 1 else s  # "x=5" -> "5"
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    if re.fullmatch(r"-?\d+\.0+", s):  # 18.0 -> 18
        s = s.split(".")[0]
    return s


def _symbolic_equal(prediction: str, reference: str) -> bool:
    """math-verify's LaTeX/sympy equivalence; False when it cannot parse either side."""
    from math_verify import parse, verify

    # math-verify times out with signal.alarm, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold = parse(f"${reference}$", parsing_timeout=timeout)
        pred = parse(f"${prediction}$", parsing_timeout=timeout)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))
    except Exception:  # parser or sympy failure on model text: not equivalent
        return False


def is_equivalent(prediction: str, reference: str) -> bool:
    """Normalised string match, else symbolic equivalence."""
    a, b = normalize(prediction), normalize(reference)
    if not a or not b:
        return False
    return a == b or _symbolic_equal(a, b)


def _number_text(value: object) -> str:
    """18.0 -> '18' (GSM8K references come as floats in d1's files)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def d1_correct(completion: str, example: Example) -> bool:
    """d1's verdict: GSM8K numbers must be equal as floats, MATH strings Hendrycks-equivalent."""
    if example.get("dataset") == "gsm8k":
        try:
            reference = float(example["answer"].replace(",", ""))
        except ValueError:
            return False
        return d1_parse.gsm8k_number(completion) == reference
    answer = d1_parse.math_answer(completion)
    return answer is not None and d1_parse.math_equivalent(answer, example["answer"])


def _is_gsm8k(row: Example) -> bool:
    """GSM8K rows: a ``#### answer`` worked solution, d1's numeric reference, verl's data source,
    or one of our examples written back out (``dataset: gsm8k``)."""
    truth = row.get("ground_truth")
    return ("####" in str(row.get("answer") or "") or "gsm8k" in str(row.get("data_source") or "")
            or row.get("dataset") == "gsm8k" or (isinstance(truth, (int, float)) and not isinstance(truth, bool)))


class Math(Task):
    name = "math"
    metric_names = ("boxed_equiv", "d1_accuracy")
    primary_metric = "boxed_equiv"
    hub_sources = {
        "train": [("DigitalLearningGmbH/MATH-lighteval", None, "train"), ("openai/gsm8k", "main", "train")],
        "test": [("HuggingFaceH4/MATH-500", None, "test")],
        "gsm8k": [("openai/gsm8k", "main", "test")],
    }

    def messages(self, example: Example) -> Messages:
        return [{"role": "user", "content": f"{D1_MATH_PROMPT}\n\n{example['problem']}"}]

    def reward(self, completion: str, example: Example) -> float:
        answer = last_boxed(completion)
        return float(answer is not None and is_equivalent(answer, example["answer"]))

    def metrics(self, completions: Sequence[str], examples: Sequence[Example],
                rewards: Sequence[float]) -> dict[str, float]:
        check_batch(completions, examples, rewards)
        return {"boxed_equiv": mean([r == 1.0 for r in rewards]),
                "d1_accuracy": mean([d1_correct(c, e) for c, e in zip(completions, examples)])}

    def from_row(self, row: Example) -> Example:
        problem = str(field(row, "problem", "question", "prompt")) if not row.get("messages") else ""
        if "answer" in row and row["answer"] is not None and "####" in str(row["answer"]):  # GSM8K
            answer = str(row["answer"]).split("####")[-1].strip()
        elif "ground_truth" in row and row["ground_truth"] is None:
            raise RowError("ground_truth", "null: the row has no reference answer")
        elif row.get("answer") is not None or row.get("ground_truth") is not None:
            answer = _number_text(field(row, "answer", "ground_truth"))
        else:  # MATH train: the reference is the last \boxed{} of the worked solution
            answer = last_boxed(str(field(row, "solution")))
            if answer is None:
                raise RowError("solution", "no \\boxed{} answer in the worked solution")
        if not answer:
            raise RowError("answer", "empty reference answer")
        example = {"problem": problem, "answer": answer}
        if _is_gsm8k(row):
            example["dataset"] = "gsm8k"
        if row.get("messages"):
            example["messages"] = row["messages"]
        return example

