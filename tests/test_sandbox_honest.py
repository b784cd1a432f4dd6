"""No false negatives: honest programs that use the standard library in their working directory.

Each defines ``solve(n)`` (return ``n + 1``) after doing what real solutions do -- temporary
files and folders, renames, threads, pathlib, logging, dataclasses -- and scores 1 through the
code task on a converted assert and on a judged test. Then the kinds of correct answers a judge
behind a process boundary used to fail, each written as a model would answer: the program's objects
used as Python uses them (identity, sets, truth, ordering, isinstance, repr, operators, iteration),
standard values and containers both ways, exceptions as the test expects them, arguments changed in
place, answers and output of megabytes, annotations, recursion depth, the prompt's helpers.
"""

from __future__ import annotations

import subprocess
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
    "reading system files": "import os, json, csv, sqlite3, pwd, grp, getpass, time\n"
                            "assert os.path.exists('/etc/passwd')\n"
                            "assert pwd.getpwuid(os.getuid()).pw_name == getpass.getuser()\n"
                            "assert grp.getgrgid(os.getgid()).gr_name\nassert time.localtime().tm_year > 2000",
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
    # program objects: one handle each, with identity, hashing, truth, ordering, isinstance, repr, operators
    "a linked list walked with while node": (
        "class ListNode:\n    def __init__(self, val=0, next=None):\n        self.val = val\n        self.next = next\n\n"
        "def solve(head):\n    prev = None\n    while head:\n        head.next, prev, head = prev, head, head.next\n"
        "    return prev",
        "head = None\nfor v in [1, 2, 3]:\n    head = ListNode(v, head)\nnode, out = solve(head), []\nwhile node:\n"
        "    out.append(node.val)\n    node = node.next\nassert out == [1, 2, 3]"),
    "Enum members": (
        "from enum import Enum\n\nclass Light(Enum):\n    RED = 'red'\n    GREEN = 'green'\n    YELLOW = 'yellow'\n\n"
        "def solve(light):\n    order = [Light.GREEN, Light.YELLOW, Light.RED]\n"
        "    return order[(order.index(light) + 1) % len(order)]",
        "assert solve(Light.GREEN) is Light.YELLOW and solve(Light.RED) == Light.GREEN\n"
        "assert {solve(Light.YELLOW), Light.RED} == {Light.RED} and Light('red') is Light.RED\n"
        "assert [light.name for light in Light] == ['RED', 'GREEN', 'YELLOW'] and len(Light) == 3"),
    "a set of the program's objects": (
        "class Node:\n    def __init__(self, name):\n        self.name = name\n        self.edges = []\n\n"
        "def solve(start):\n    seen, stack = set(), [start]\n    while stack:\n        node = stack.pop()\n"
        "        if node not in seen:\n            seen.add(node)\n            stack.extend(node.edges)\n    return seen",
        "a, b, c, d = Node('a'), Node('b'), Node('c'), Node('d')\na.edges = [b]\nb.edges = [c, a]\n"
        "assert solve(a) == {a, b, c} and d not in solve(a) and {n.name for n in solve(c)} == {'c'}"),
    "sorting the program's objects": (
        "import functools\n\n@functools.total_ordering\nclass Version:\n    def __init__(self, text):\n"
        "        self.parts = tuple(int(p) for p in text.split('.'))\n    def __eq__(self, other):\n"
        "        return self.parts == other.parts\n    def __lt__(self, other):\n        return self.parts < other.parts\n"
        "    def __hash__(self):\n        return hash(self.parts)\n\n"
        "def solve(texts):\n    return sorted(Version(t) for t in texts)",
        "import heapq\nv = solve(['1.10', '1.2', '1.9'])\nassert [x.parts for x in v] == [(1, 2), (1, 9), (1, 10)]\n"
        "assert v[0] < v[1] <= v[2] and max(v) is v[2] and heapq.nsmallest(1, v)[0] is v[0]"),
    "isinstance against the program's classes": (
        "class Shape:\n    pass\n\nclass Circle(Shape):\n    def __init__(self, r):\n        self.r = r\n\n"
        "class Square(Shape):\n    def __init__(self, side):\n        self.side = side\n\n"
        "def solve(kind, size):\n    return {'circle': Circle, 'square': Square}[kind](size)",
        "c = solve('circle', 2)\nassert isinstance(c, Circle) and isinstance(c, Shape) and not isinstance(c, Square)\n"
        "assert issubclass(Square, Shape) and not isinstance(3, Shape) and c.r == 2"),
    "repr and str of the program's objects": (
        "from dataclasses import dataclass\n\n@dataclass\nclass Point:\n    x: int\n    y: int\n"
        "    def __str__(self):\n        return f'({self.x}, {self.y})'\n\ndef solve(x, y):\n    return Point(x, y)",
        "p = solve(1, 2)\nassert repr(p) == 'Point(x=1, y=2)' and str(p) == '(1, 2)' and f'{p}' == '(1, 2)'"),
    "arithmetic operators of the program's class": (
        "class Vector:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
        "    def __add__(self, other):\n        return Vector(self.x + other.x, self.y + other.y)\n"
        "    def __sub__(self, other):\n        return Vector(self.x - other.x, self.y - other.y)\n"
        "    def __mul__(self, k):\n        return Vector(self.x * k, self.y * k)\n    __rmul__ = __mul__\n"
        "    def __neg__(self):\n        return Vector(-self.x, -self.y)\n"
        "    def __abs__(self):\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n"
        "    def __iadd__(self, other):\n        self.x += other.x\n        self.y += other.y\n        return self\n\n"
        "def solve(points):\n    total = Vector(0, 0)\n    for x, y in points:\n        total += Vector(x, y)\n    return total",
        "v = solve([(1, 2), (2, 2)])\nw = v + Vector(1, 0)\nassert (w.x, w.y) == (4, 4) and abs(v - Vector(0, 0)) == 5.0\n"
        "assert ((2 * v).x, (v * 3).y, (-v).x) == (6, 12, -3)\nu = v\nu += Vector(1, 1)\nassert u is v and v.x == 4"),
    "iterating the program's object": (
        "class Countdown:\n    def __init__(self, start):\n        self.start = start\n    def __iter__(self):\n"
        "        n = self.start\n        while n > 0:\n            yield n\n            n -= 1\n"
        "    def __len__(self):\n        return self.start\n    def __getitem__(self, i):\n"
        "        return list(self)[i]\n    def __contains__(self, n):\n        return 0 < n <= self.start\n\n"
        "def solve(n):\n    return Countdown(n)",
        "c = solve(3)\nassert list(c) == [3, 2, 1] and len(c) == 3 and c[0] == 3 and 2 in c and 5 not in c\n"
        "assert sorted(c) == [1, 2, 3] and list(reversed(c)) == [1, 2, 3] and [x for x in c if x > 1] == [3, 2]"),
    # standard values and containers, both ways
    "dict views returned": (
        "from collections import Counter\n\ndef solve(words):\n    counts = Counter(words)\n    return counts.items()\n\n"
        "def vocabulary(words):\n    return dict.fromkeys(words).keys()",
        "assert sorted(solve(['a', 'b', 'a'])) == [('a', 2), ('b', 1)]\n"
        "assert vocabulary(['x', 'y', 'x']) == {'x', 'y'} and list(vocabulary('ba')) == ['b', 'a']"),
    "dates, times and durations": (
        "from datetime import date, datetime, time, timedelta, timezone\n\n"
        "def solve(start, days):\n    return start + timedelta(days=days)\n\n"
        "def meeting(day, at):\n    return datetime.combine(day, at, tzinfo=timezone.utc)\n\n"
        "def gap(a, b):\n    return abs(b - a)",
        "import datetime as dt\nassert solve(dt.date(2024, 2, 28), 1) == dt.date(2024, 2, 29)\n"
        "m = meeting(dt.date(2024, 1, 2), dt.time(9, 30))\n"
        "assert m == dt.datetime(2024, 1, 2, 9, 30, tzinfo=dt.timezone.utc) and m.tzinfo is not None\n"
        "assert gap(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2, 1)) == dt.timedelta(hours=25)"),
    "Fraction and Decimal both ways": (
        "from fractions import Fraction\nfrom decimal import Decimal, ROUND_HALF_UP\n\n"
        "def solve(x):\n    return Fraction(x) * 3\n\ndef money(amount):\n"
        "    return (amount * Decimal('1.07')).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)",
        "from fractions import Fraction\nfrom decimal import Decimal\n"
        "assert solve(Fraction(1, 3)) == 1 and money(Decimal('10.00')) == Decimal('10.70')"),
    "a generator and a map passed in": (
        "def solve(numbers):\n    best = None\n    for n in numbers:\n        if best is None or n > best:\n"
        "            best = n\n    return best",
        "assert solve(x * x % 7 for x in range(10)) == 4 and solve(map(int, '3 9 2'.split())) == 9\n"
        "assert solve(iter([5])) == 5"),
    # exceptions as the test expects them
    "its own ValueError subclass": (
        "class InvalidRomanNumeral(ValueError):\n    pass\n\n"
        "def solve(text):\n    values = {'I': 1, 'V': 5, 'X': 10}\n    if not text or any(ch not in values for ch in text):\n"
        "        raise InvalidRomanNumeral(f'not a roman numeral: {text!r}')\n    total = 0\n"
        "    for a, b in zip(text, text[1:] + ' '):\n        total += -values[a] if values.get(b, 0) > values[a] else values[a]\n"
        "    return total",
        "assert solve('XIV') == 14\ntry:\n    solve('ABC')\nexcept ValueError as err:\n"
        "    assert 'ABC' in str(err) and type(err).__name__ == 'InvalidRomanNumeral'\nelse:\n    raise AssertionError\n"
        "try:\n    solve('')\nexcept InvalidRomanNumeral:\n    pass\nelse:\n    raise AssertionError"),
    "statistics.StatisticsError": (
        "import statistics\n\ndef solve(xs):\n    return statistics.median(xs)",
        "import statistics\nassert solve([3, 1, 2]) == 2\ntry:\n    solve([])\nexcept statistics.StatisticsError:\n"
        "    pass\nelse:\n    raise AssertionError"),
    "a KeyError with its key": (
        "def solve(inventory, item):\n    return inventory[item]",
        "try:\n    solve({'apple': 1}, 'pear')\nexcept KeyError as err:\n    assert err.args == ('pear',) and str(err) == \"'pear'\"\n"
        "else:\n    raise AssertionError"),
    # arguments changed in place come back, however they were passed
    "a matrix rotated in place": (
        "def solve(matrix):\n    n = len(matrix)\n    for i in range(n):\n        for j in range(i + 1, n):\n"
        "            matrix[i][j], matrix[j][i] = matrix[j][i], matrix[i][j]\n    for row in matrix:\n        row.reverse()",
        "m = [[1, 2], [3, 4]]\nfirst = m[0]\nassert solve(m) is None\nassert m == [[3, 1], [4, 2]] and first is m[0]"),
    "keyword and defaultdict arguments": (
        "def solve(edges, *, graph, degree):\n    for a, b in edges:\n        graph[a].append(b)\n"
        "        graph[b].append(a)\n        degree[a] = degree.get(a, 0) + 1\n        degree[b] = degree.get(b, 0) + 1",
        "from collections import defaultdict\ngraph, degree = defaultdict(list), {}\nsolve([(1, 2), (2, 3)], graph=graph, degree=degree)\n"
        "assert graph == {1: [2], 2: [1, 3], 3: [2]} and degree == {1: 1, 2: 2, 3: 1}\n"
        "assert graph[4] == [] and type(graph) is defaultdict"),
    "a nested argument changed in place": (
        "def solve(library, book):\n    library['shelves'][0].append(book)\n    library['count'] += 1",
        "shelf = ['a']\nlibrary = {'shelves': [shelf, []], 'count': 1}\nsolve(library, 'b')\n"
        "assert library == {'shelves': [['a', 'b'], []], 'count': 2} and shelf == ['a', 'b']"),
    # no walls that plain Python does not have
    "an answer of several megabytes": (
        "def solve(n):\n    return [str(i) for i in range(n)]",
        "assert solve(300_000)[-1] == '299999' and len(solve(300_000)) == 300_000"),
    "megabytes of debug output": (
        "def solve(n):\n    for i in range(n):\n        print(f'step {i}: ' + '.' * 60)\n    return n",
        "assert solve(30_000) == 30_000"),
    "annotations read at run time": (
        "from dataclasses import dataclass, fields\n\n@dataclass\nclass Settings:\n    retries: int = 3\n"
        "    ratio: float = 0.5\n\ndef solve(raw):\n"
        "    return Settings(**{f.name: f.type(raw[f.name]) for f in fields(Settings) if f.name in raw})",
        "s = solve({'retries': '5', 'ratio': '0.25'})\nassert (s.retries, s.ratio) == (5, 0.25)"),
    "recursion as deep as plain Python allows": (
        "def solve(n):\n    return 0 if n == 0 else 1 + solve(n - 1)",
        "assert solve(997) == 997"),
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


def test_recursion_is_as_deep_as_in_plain_python():
    """The harness's frames do not count: the deepest call a script's top level makes works, one more fails."""
    program = "def solve(n):\n    return 0 if n == 0 else 1 + solve(n - 1)\n"
    probe = program + ("deepest = 0\nfor n in range(900, 1100):\n    try:\n        solve(n)\n    except RecursionError:\n"
                       "        break\n    deepest = n\nprint(deepest)")
    deepest = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    checked = {"problem": "p", "setup": "", "entry_point": "solve",
               "tests": [{"kind": "assert", "code": f"assert solve({deepest}) == {deepest}"}]}
    refused = {"problem": "p", "setup": "", "entry_point": "solve", "prefix": "",
               "tests": [{"kind": "assert", "code": f"try:\n    solve({deepest + 1})\nexcept RecursionError:\n    pass\n"
                                                    "else:\n    raise AssertionError('deeper than plain Python')"}]}
    assert get_task("code").rewards([f"```python\n{program}```"] * 2, [checked, refused]) == [1.0, 1.0]


def test_a_whole_function_may_call_the_prompts_helper():
    """HumanEval-style: the prompt defines a helper; the answer rewrites the whole function and calls it."""
    prompt = ('VOWELS = "aeiou"\n\n\ndef is_vowel(ch: str) -> bool:\n    return ch.lower() in VOWELS\n\n\n'
              'def count_vowels(text: str) -> int:\n    """How many vowels text has.\n    >>> count_vowels("Hello")\n'
              '    2\n    """\n')
    example = {"problem": "p", "setup": "", "entry_point": "count_vowels", "prefix": prompt,
               "tests": [{"kind": "assert", "code": "def check(candidate):\n    assert candidate('Hello') == 2\n"
                                                    "    assert candidate('xyz') == 0\ncheck(count_vowels)"}]}
    answer = ("```python\nfrom __future__ import annotations\n\n\ndef count_vowels(text: str) -> int:\n"
              "    return sum(1 for ch in text if is_vowel(ch))\n```")
    assert get_task("code").rewards([answer], [example]) == [1.0]


def test_a_stdio_answer_may_be_longer_than_the_output_cap():
    """The expected output of a stdio test sets how much stdout is kept: 2.3 MB of lines is an answer, not a limit."""
    n = 400_000
    example = {"problem": "p", "setup": "", "entry_point": None,
               "tests": [{"kind": "stdio", "input": str(n), "output": "\n".join(map(str, range(n)))}]}
    answer = "```python\nimport sys\nn = int(input())\nsys.stdout.write('\\n'.join(map(str, range(n))) + '\\n')\n```"
    assert get_task("code").rewards([answer], [example]) == [1.0]
