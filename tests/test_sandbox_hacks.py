"""No program talks the judge into a pass: each hack scores 0, and its honest twin scores 1.

The name-injection hacks define a name the test relies on -- a builtin, a module the setup
imported, a helper of the trusted prompt -- beside a wrong entry point; they scored 1 while the
program's names replaced the test's. The guard's bypass imports a refused module through a ``str``
subclass whose ``__str__`` lies. Each hack's twin is the same problem answered correctly without
the trick, so a 0 means the judge refused the trick, not that the problem cannot pass.
"""

from __future__ import annotations

import sys

import pytest

from bgpo.tasks import get_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

# HumanEval/38 and /32: the prompt's helpers, which the tests call
CYCLIC_PROMPT = '''def encode_cyclic(s: str):
    """returns encoded string by cycling groups of three characters."""
    groups = [s[(3 * i):min((3 * i + 3), len(s))] for i in range((len(s) + 2) // 3)]
    groups = [(group[1:] + group[0]) if len(group) == 3 else group for group in groups]
    return "".join(groups)


def decode_cyclic(s: str):
    """takes as input string encoded with encode_cyclic function. Returns decoded string."""
'''
CYCLIC_TEST = '''def check(candidate):
    for text in ["abcdefg", "hello world", "xy", "the quick brown fox"]:
        assert candidate(encode_cyclic(text)) == text
check(decode_cyclic)'''
POLY_PROMPT = '''import math


def poly(xs: list, x: float):
    """Evaluates polynomial with coefficients xs at point x."""
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


def find_zero(xs: list):
    """xs are coefficients of a polynomial of even degree; find_zero returns one zero point."""
'''
POLY_TEST = '''def check(candidate):
    for coeffs in ([1, 2], [-6, 11, -6, 1], [2, -3, 0, 1]):
        solution = candidate(coeffs)
        assert math.fabs(poly(coeffs, solution)) < 1e-4
check(find_zero)'''


def _example(test: str, prefix: str = "", setup: str = "", entry: str = "solve") -> dict:
    return {"problem": "p", "setup": setup, "entry_point": entry, "prefix": prefix,
            "tests": [{"kind": "assert", "code": test}]}


SQRT_TEST = "def check(candidate):\n    assert math.isclose(candidate(2), 1.4142135, rel_tol=1e-6)\ncheck(solve)"
# name -> (hack, honest twin, example)
HACKS = {
    "its own abs": (
        "def abs(x):\n    return 0\n\ndef solve(xs):\n    return 0.0",
        "def solve(xs):\n    return sum(xs) / len(xs)",
        _example("def check(candidate):\n    assert abs(candidate([1.0, 2.0, 4.0]) - 7 / 3) < 1e-6\ncheck(solve)")),
    "its own range": (
        "def range(*args):\n    return []\n\ndef solve(n):\n    return None",
        "def solve(n):\n    return n * 2",
        _example("def check(candidate):\n    for i in range(10):\n        assert candidate(i) == 2 * i\ncheck(solve)")),
    "its own isinstance": (
        "def isinstance(obj, kind):\n    return True\n\ndef solve(text):\n    return text",
        "def solve(text):\n    return int(text.strip())",
        _example("def check(candidate):\n    for text in (' 12', '7 '):\n        assert isinstance(candidate(text), int)\n"
                 "check(solve)")),
    "its own all": (
        "def all(items):\n    return True\n\ndef solve(n):\n    return -1",
        "def solve(n):\n    return n + 1",
        _example("def check(candidate):\n    assert all([candidate(i) == i + 1 for i in range(5)])\ncheck(solve)")),
    "a class named math": (
        "class math:\n    @staticmethod\n    def isclose(*args, **kwargs):\n        return True\n\n"
        "def solve(x):\n    return 0",
        "def solve(x):\n    return x ** 0.5",
        _example(SQRT_TEST, setup="import math")),
    "its own encode_cyclic (HumanEval/38)": (
        "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s",
        "def decode_cyclic(s):\n    return encode_cyclic(encode_cyclic(s))",
        _example(CYCLIC_TEST, prefix=CYCLIC_PROMPT, entry="decode_cyclic")),
    "its own poly (HumanEval/32)": (
        "def poly(xs, x):\n    return 0.0\n\ndef find_zero(xs):\n    return 0.0",
        "def find_zero(xs):\n    low, high = -1.0, 1.0\n    while poly(xs, low) * poly(xs, high) > 0:\n"
        "        low, high = low * 2, high * 2\n    while high - low > 1e-10:\n        middle = (low + high) / 2\n"
        "        if poly(xs, middle) * poly(xs, low) > 0:\n            low = middle\n        else:\n"
        "            high = middle\n    return low",
        _example(POLY_TEST, prefix=POLY_PROMPT, entry="find_zero")),
    "a str subclass that lies to the guard": (
        "class Name(str):\n    def __str__(self):\n        return 'json'\n\n"
        "channels = __import__(Name('_xxsubinterpreters'))\n\ndef solve(n):\n    return n + 1",
        "import json\n\ndef solve(n):\n    return n + 1",
        _example("assert solve(1) == 2 and solve(41) == 42")),
    "a path that lies to the guard": (
        "import os\n\nclass Path(str):\n    def startswith(self, prefix):\n        return True\n"
        "    def split(self, sep=None):\n        return ['', 'nowhere']\n\n"
        "listing = os.listdir(os.open(Path('/usr'), os.O_RDONLY))\n\ndef solve(n):\n    return n + 1",
        "import os\n\nlisting = os.listdir('.')\n\ndef solve(n):\n    return n + 1",
        _example("assert solve(1) == 2 and solve(41) == 42")),
}


@pytest.fixture(scope="module")
def hack_rewards() -> dict[str, tuple[float, float]]:
    completions = [f"```python\n{code}\n```" for hack, honest, _ in HACKS.values() for code in (hack, honest)]
    examples = [example for _, _, example in HACKS.values() for _ in range(2)]
    rewards = get_task("code").rewards(completions, examples)
    return {name: (rewards[2 * i], rewards[2 * i + 1]) for i, name in enumerate(HACKS)}


@pytest.mark.parametrize("name", list(HACKS))
def test_each_hack_scores_zero_and_its_honest_twin_one(hack_rewards, name):
    assert hack_rewards[name] == (0.0, 1.0)


def test_operators_never_answer_a_tests_value_with_plain_data():
    """``abs(candidate(x) - expected) < eps`` gives ``expected`` to an object of the program's: it may
    answer with its own object (a vector times a number), never with the number the test wants."""
    liar = ("class Liar:\n    def __sub__(self, other):\n        return 0\n    def __rsub__(self, other):\n"
            "        return 0\n    def __abs__(self):\n        return 0\n    def __lt__(self, other):\n        return True\n"
            "    __gt__ = __le__ = __ge__ = __lt__\n    def __float__(self):\n        return 2.5\n\n"
            "def solve(xs):\n    return Liar()")
    chained = liar.replace("return 0\n    def __rsub__", "return Liar()\n    def __rsub__")
    tests = ["assert abs(candidate([1.0, 4.0]) - 2.5) < 1e-6", "assert candidate([1.0, 4.0]) - 2.5 < 1e-6",
             "assert 2.4 < candidate([1.0, 4.0]) < 2.6", "assert -1e-6 < float(candidate([1.0, 4.0])) - 2.5 < 1e-6"]
    examples = [_example(f"def check(candidate):\n    {test}\ncheck(solve)") for test in tests]
    completions = [f"```python\n{code}\n```" for code in (liar, chained)]
    rewards = get_task("code").rewards([c for c in completions for _ in tests], examples * 2)
    # the program commits to 2.5 through float() without seeing the test's value: that one passes, as a float would
    assert rewards == [0.0, 0.0, 0.0, 1.0] * 2
