"""No false negatives: honest programs that use the standard library in their working directory.

Each defines ``solve(n)`` (return ``n + 1``) after doing what real solutions do -- temporary
files and folders, renames, threads, pathlib, logging, dataclasses -- and scores 1 through the
code task on a converted assert and on a judged test.
"""

from __future__ import annotations

import sys

import pytest

from bgpo.tasks import get_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

SOLVE = "\ndef solve(n):\n    return n + 1\n"
HONEST = {
    "tempfile.mkdtemp": "import tempfile, os\nd = tempfile.mkdtemp()\nassert os.path.isdir(d)",
    "tempfile.TemporaryDirectory": "import tempfile, os\nwith tempfile.TemporaryDirectory() as d:\n"
                                   "    open(os.path.join(d, 'x'), 'w').write('1')",
    "NamedTemporaryFile": "import tempfile\nwith tempfile.NamedTemporaryFile('w+') as f:\n    f.write('a')\n"
                          "    f.seek(0)\n    assert f.read() == 'a'",
    "os.makedirs": "import os\nos.makedirs('a/b/c', exist_ok=True)\nos.makedirs('a/b/c', exist_ok=True)",
    "os.rename and os.replace": "import os\nopen('x', 'w').close()\nos.rename('x', 'y')\nos.replace('y', 'z')\n"
                                "assert os.listdir('.').count('z') == 1",
    "shutil.rmtree and copytree": "import os, shutil\nos.makedirs('t/u')\nopen('t/u/f', 'w').write('x')\n"
                                  "shutil.copytree('t', 'v')\nshutil.rmtree('t')\nshutil.move('v', 'w')",
    "os.remove and rmdir": "import os\nos.mkdir('d')\nopen('d/f', 'w').close()\nos.remove('d/f')\nos.rmdir('d')",
    "pathlib": "from pathlib import Path\np = Path('p') / 'q.txt'\np.parent.mkdir()\np.write_text('hi')\n"
               "assert p.read_text() == 'hi'\np.unlink()",
    "os.chmod and utime": "import os\nopen('f', 'w').close()\nos.chmod('f', 0o600)\nos.utime('f')",
    "threads": "import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]\n"
               "[t.start() for t in ts]\n[t.join() for t in ts]\nassert sorted(out) == list(range(8))",
    "ThreadPoolExecutor": "from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(8) as p:\n"
                          "    assert list(p.map(abs, range(-20, 0))) == list(range(20, 0, -1))",
    "logging": "import logging\nlogging.basicConfig(level=logging.INFO)\nlogging.getLogger('x').info('hello')",
    "logging to a file": "import logging\nlogging.basicConfig(filename='log.txt')\nlogging.warning('w')",
    "dataclasses and namedtuple": "from dataclasses import dataclass\nfrom collections import namedtuple\n"
                                  "@dataclass\nclass A:\n    x: int = 1\nP = namedtuple('P', 'x y')\nassert A().x == P(1, 2).x",
    "traceback in an except block": "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
                                    "    assert 'ZeroDivisionError' in traceback.format_exc()",
    "inspect.currentframe": "import inspect\nassert inspect.currentframe() is not None",
    "os.walk and listdir": "import os\nos.makedirs('w/x')\nassert [d for d, _, _ in os.walk('w')] == ['w', 'w/x']\n"
                           "assert 'lib' in os.listdir('/usr')",
    "reading system files": "import os, json, csv, sqlite3\nassert os.path.exists('/etc/passwd')",
    "sqlite in the working directory": "import sqlite3\nc = sqlite3.connect('db.sqlite')\n"
                                       "c.execute('create table t (x)')\nc.commit()\nc.close()",
    "zipfile and gzip": "import zipfile, gzip\nwith zipfile.ZipFile('a.zip', 'w') as z:\n    z.writestr('f', 'x')\n"
                        "gzip.open('g.gz', 'wt').write('x')",
    "functools.lru_cache and recursion": "import functools, sys\nsys.setrecursionlimit(5000)\n"
                                         "@functools.lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
                                         "assert fib(300) > 0",
    "print and input guard": "if __name__ == '__main__':\n    print('debug output')",
    "os.open with dir_fd inside": "import os\nos.mkdir('d')\nfd = os.open('d', os.O_RDONLY)\n"
                                  "os.close(os.open('f', os.O_CREAT | os.O_WRONLY, dir_fd=fd))\nos.unlink('f', dir_fd=fd)",
    "returns a subclass of a builtin": "from collections import Counter\nimport enum\n"
                                       "class One(enum.IntEnum):\n    ONE = 1\n"
                                       "def solve(n):\n    return Counter({'k': n}).get('k') + One.ONE\n",
}


def test_honest_programs_score_one():
    assert len(HONEST) >= 20
    examples = [{"problem": "p", "setup": "", "entry_point": "solve",
                 "tests": [{"kind": "assert", "code": "assert solve(41) == 42\nassert solve(-1) == 0"}]},
                {"problem": "p", "setup": "", "entry_point": "solve", "prefix": "",
                 "tests": [{"kind": "assert", "code": "def check(candidate):\n"
                            "    assert all(candidate(i) == i + 1 for i in range(5))\ncheck(solve)"}]}]
    completions = [f"```python\n{body}\n{SOLVE if 'def solve' not in body else ''}\n```" for body in HONEST.values()]
    rewards = get_task("code").rewards(completions * 2, [examples[0]] * len(HONEST) + [examples[1]] * len(HONEST))
    assert dict(zip(HONEST, rewards[: len(HONEST)])) == {name: 1.0 for name in HONEST}
    assert dict(zip(HONEST, rewards[len(HONEST):])) == {name: 1.0 for name in HONEST}


# kinds of correct programs that a boundary of plain builtins used to score 0: (program, test code)
KINDS = {
    "Fraction compared with a float": ("from fractions import Fraction\ndef solve(n):\n    return Fraction(n, 2)",
                                       "assert solve(3) == 1.5"),
    "Decimal compared with a float": ("from decimal import Decimal\ndef solve(n):\n    return Decimal(n) / 4",
                                      "assert solve(1) == 0.25"),
    "generator": ("def solve(n):\n    for i in range(n):\n        yield i * i", "assert list(solve(4)) == [0, 1, 4, 9]"),
    "map, itertools and deque consumed with list": (
        "import collections, itertools\ndef solve(n):\n    return map(str, range(n))\n"
        "def pairs(n):\n    return itertools.combinations(range(n), 2)\n"
        "def window(n):\n    return collections.deque(range(n), maxlen=2)",
        "assert list(solve(3)) == ['0', '1', '2']\nassert list(pairs(3)) == [(0, 1), (0, 2), (1, 2)]\n"
        "assert list(window(5)) == [3, 4] and window(5) == __import__('collections').deque([3, 4])"),
    "the program's own class through its methods": (
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n        self.items.append(x)\n"
        "    def pop(self):\n        return self.items.pop()\n    def __len__(self):\n        return len(self.items)\n"
        "    def __iter__(self):\n        return iter(self.items)\n"
        "def solve(n):\n    return n",
        "s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2 and len(s) == 1 and list(s) == [1] and s.items == [1]"),
    "raises the exception the test expects": (
        "def solve(n):\n    if n < 0:\n        raise ValueError('negative')\n    return n",
        "try:\n    solve(-1)\nexcept ValueError as err:\n    assert 'negative' in str(err)\nelse:\n    raise AssertionError"),
    "an argument mutated in place": ("def solve(xs):\n    xs.sort()\n    if isinstance(xs[0], list):\n        xs[0][0] = 9",
                                     "a = [3, 1, 2]\nsolve(a)\nassert a == [1, 2, 3]\n"
                                     "inner = [5]\nb = [inner, [7]]\nsolve(b)\nassert b == [[9], [7]] and inner == [9]"),
    "a second function of the program": ("def helper(n):\n    return n * 2\ndef solve(n):\n    return helper(n)",
                                         "assert helper(3) == 6 and solve(1) == 2"),
    "a lambda passed by the test": ("def solve(xs, key):\n    return sorted(xs, key=key)",
                                    "assert solve([3, -4, 1], lambda x: abs(x)) == [1, 3, -4]"),
    "an int of more than 4300 digits": ("def solve(n):\n    return 7 ** n",
                                        "assert solve(6000) % 1000 == pow(7, 6000, 1000)"),
    "a list nested 150 deep": ("def solve(n):\n    x = []\n    for _ in range(n):\n        x = [x]\n    return x",
                               "x, depth = solve(150), 0\nwhile x:\n    x, depth = x[0], depth + 1\nassert depth == 150"),
    "numpy": ("import numpy as np\ndef solve(n):\n    return np.arange(n) * 2\ndef total(n):\n    return solve(n).sum()",
              "import numpy as np\nassert (solve(3) == np.array([0, 2, 4])).all() and total(3) == 6"),
    "a __main__ block that reads input()": ("def solve(n):\n    return n + 1\nif __name__ == '__main__':\n"
                                            "    print(solve(int(input())))", "assert solve(1) == 2"),
    "a debug line on stderr mentioning MemoryError": ("import sys\ndef solve(n):\n"
                                                      "    print('debug: MemoryError avoided', file=sys.stderr)\n    return n + 1",
                                                      "assert solve(1) == 2"),
}


@pytest.fixture(scope="module")
def kind_rewards():
    examples = [{"problem": "p", "setup": "", "entry_point": "solve", "prefix": "",
                 "tests": [{"kind": "assert", "code": test}]} for _, test in KINDS.values()]
    completions = [f"```python\n{program}\n```" for program, _ in KINDS.values()]
    # the same programs where the test is an MBPP-style assert line too (converted to a check)
    simple = {"a __main__ block that reads input()", "a debug line on stderr mentioning MemoryError"}
    converted = [{"problem": "p", "setup": "", "entry_point": "solve",
                  "tests": [{"kind": "assert", "code": "assert solve(1) == 2"}]}] * len(simple)
    rewards = get_task("code").rewards(completions + [f"```python\n{KINDS[k][0]}\n```" for k in sorted(simple)],
                                       examples + converted)
    return dict(zip(KINDS, rewards)), rewards[len(KINDS):]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_honest_kind_scores_one(kind_rewards, kind):
    assert kind_rewards[0][kind] == 1.0
    assert kind_rewards[1] == [1.0, 1.0]
