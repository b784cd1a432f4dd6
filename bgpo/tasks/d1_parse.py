"""d1's evaluation parser, re-implemented from its rules, for the ``d1_*`` metrics.

d1 (Zhao et al., 2025), and wd1 and SPG after it, report accuracies computed by
``eval/parse_and_get_acc.py`` with the Hendrycks MATH helpers of ``eval/parser_helper.py``. That
parser is more lenient than the paper's training reward (it reads ``\\boxed{}`` anywhere, unclosed
tags, LaTeX operators), so a number from those tables is only comparable with the same reading.
These functions follow its rules, quirks included, because the point is to reproduce the published
numbers: where a rule looks odd, the docstring says so. The training reward never uses them.
"""

from __future__ import annotations

import re

_BOXED_SPACE = "\\boxed "


# --- answer extraction ----------------------------------------------------------------------------
def boxed(text: str) -> str | None:
    """The answer d1 takes from the last box of ``text``.

    * if ``\\boxed 7`` (a space after ``\\boxed``) occurs anywhere, the text after its last
      occurrence up to a ``$``;
    * else the last ``\\boxed`` (or, without any, ``\\fbox``) up to the ``}`` that closes the braces
      opened after it, unwrapped when it reads ``\\boxed{...}`` (an ``\\fbox{...}`` stays wrapped);
    * with no box at all, the whole text; with an unclosed one, None.
    """
    if _BOXED_SPACE in text:
        return text.rsplit(_BOXED_SPACE, 1)[1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
    if start < 0:
        return text
    depth = 0
    for end in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if text[end] == "}" and depth == 0:
            box = text[start:end + 1]
            return box[len("\\boxed{"):-1] if box.startswith("\\boxed{") else box
    return None


def first_answer(text: str) -> str | None:
    """Content of the *first* closed ``<answer>...</answer>`` (stripped), as d1 reads it."""
    match = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return match.group(1).strip() if match else None


_NUMBER = re.compile(r"-?\d+\.?\d*")
_BOX_TO_FIRST_BRACE = re.compile(r"\\boxed\{(.*?)\}")


def _as_number(text: str, pick: int) -> float | None:
    """``float(text)``, else the number at position ``pick`` of the numbers in ``text``."""
    try:
        return float(text)
    except ValueError:
        numbers = _NUMBER.findall(text)
        return float(numbers[pick]) if numbers else None


def gsm8k_number(text: str) -> float | None:
    """d1's GSM8K answer: a number from the *first* usable box, else from the first answer tags.

    A box is read from ``\\boxed{`` to the first ``}`` on the same line (so ``\\boxed{\\frac{2}{3}}``
    reads ``\\frac{2``, whose first number is 2); empty boxes and ``...`` are passed over, as are
    boxes without a number. Without one, the answer tags give their text as a number, else their
    last number.
    """
    for content in _BOX_TO_FIRST_BRACE.findall(text):
        content = content.strip()
        if content and content.strip(".") and (number := _as_number(content, 0)) is not None:
            return number
    answer = first_answer(text)
    return _as_number(answer, -1) if answer else None


def math_answer(text: str) -> str | None:
    """d1's MATH answer: :func:`boxed`, else (unclosed or empty box) the first answer tags."""
    return boxed(text) or first_answer(text)


# --- MATH string equivalence (Hendrycks et al., 2021, as d1 uses it) -------------------------------
class _Unreadable(Exception):
    """A normalisation step failed: d1 then compares the raw strings."""


def _fix_sqrt(s: str) -> str:
    """``\\sqrt3`` -> ``\\sqrt{3}`` (the first character after ``\\sqrt``)."""
    head, *pieces = s.split("\\sqrt")
    if any(not piece for piece in pieces):
        raise _Unreadable("\\sqrt at the end")
    return head + "".join("\\sqrt" + (p if p[0] == "{" else "{" + p[0] + "}" + p[1:]) for p in pieces)


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``; unchanged if one is too short."""
    head, *pieces = s.split("\\frac")
    out = head
    for piece in pieces:
        if not piece:
            raise _Unreadable("\\frac at the end")
        if piece[0] != "{":
            if len(piece) < 2:
                return s
            a, b, rest = piece[0], piece[1], piece[2:]
            piece = "{" + a + "}" + ("{" + b + "}" if b != "{" else b) + rest
        out += "\\frac" + piece
    return out


def _fix_slash(s: str) -> str:
    """``3/4`` -> ``\\frac{3}{4}``; a single ``/`` between non-integers makes the string unreadable."""
    parts = s.split("/")
    if len(parts) != 2:
        return s
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        raise _Unreadable("a/b with a non-integer side") from None
    return f"\\frac{{{a}}}{{{b}}}" if s == f"{a}/{b}" else s


def math_normalize(s: str) -> str:
    """Hendrycks's ``strip_string``; raises :class:`_Unreadable` where it would fail."""
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    for old, new in (("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""), ("\\right", ""),
                     ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", "")):
        s = s.replace(old, new)
    if "\\text{ " in s:  # units on the right, e.g. "5\\text{ cm}"; twice is an error
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            raise _Unreadable("two \\text{ units")
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(parts := s.split("=")) == 2 and len(parts[0]) <= 2:  # "k = 5" -> " 5"
        s = parts[1]
    s = _fix_fracs(_fix_sqrt(s).replace(" ", ""))
    return _fix_slash("\\frac{1}{2}" if s == "0.5" else s)


def math_equivalent(prediction: str, reference: str) -> bool:
    """Equal after :func:`math_normalize`; when either side cannot be normalised, raw equality."""
    try:
        return math_normalize(prediction) == math_normalize(reference)
    except _Unreadable:
        return prediction == reference


# --- countdown -------------------------------------------------------------------------------------
_EXPRESSION_BEFORE_EQUALS = re.compile(r"([0-9+\-*/() ]+)=[0-9. ]+")


def countdown_expression(text: str) -> str:
    """The expression d1 evaluates: :func:`boxed` (with no box, the whole text; with an unclosed
    one, the first answer tags, else the whole text), LaTeX ``\\div``/``\\times``/``\\cdot`` as
    operators, and from ``expr = number`` only ``expr``."""
    expression = boxed(text)
    if expression is None:
        expression = first_answer(text)
    if expression is None:
        expression = text
    expression = expression.replace("\\div", "/").replace("\\times", "*").replace("\\cdot", "*")
    match = _EXPRESSION_BEFORE_EQUALS.search(expression)
    return match.group(1).strip() if match else expression


# --- sudoku ----------------------------------------------------------------------------------------
_END = r"(?:<\|eot_id\|>|<\|endoftext\|>|</answer>)"
# Tried in order; the first whose group is not blank gives the grid.
_SUDOKU_READINGS = (
    re.compile(r"<answer>.*?```\s*([\d\s]+)```", re.DOTALL),  # a code fence inside the answer
    re.compile(r"<answer>(.*?)" + _END, re.DOTALL),  # the answer, closed or cut at end of text
    re.compile(r"</answer>\s*(.*?)(?:<\|eot_id\|>|<\|endoftext\|>|$)", re.DOTALL),  # after the answer
    re.compile(r".*?(\d{16})\s*</answer>", re.DOTALL),  # 16 digits right before </answer>
    re.compile(r"\b(\d{16})\b"),  # any 16-digit run
)


def sudoku_grid(text: str) -> str:
    """d1's reading of a 4x4 answer: 16 characters (whitespace dropped, padded with ``0`` or cut),
    or "" when nothing is found. Non-digits are kept, so ``4123\\\\41...`` shifts the cells."""
    for reading in _SUDOKU_READINGS:
        match = reading.search(text)
        if match and match.group(1).strip():
            grid = re.sub(r"\s", "", match.group(1))
            return grid[:16].ljust(16, "0")
    return ""
