"""The sandbox's own contract: plain-data answers, judged runs, limits, cleanup, never raising."""

from __future__ import annotations

import collections
import enum
import math
import os
import sys

import pytest

from bgpo import sandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

FAST = sandbox.Limits(cpu_seconds=2, wall_seconds=5.0, memory_bytes=256 << 20, output_bytes=256 << 10)


def test_codec_round_trips_plain_data_exactly():
    values = [None, True, 0, -7, 10**30, 1.5, math.inf, "é\x00", [1, [2.0]], (1, (2,)), {1: "a", (2, 3): [4]},
              {1, 2}, frozenset({"x"}), 1 + 2j, b"\xff\x00", []]
    for value in values:
        back = sandbox.decode(sandbox.encode(value))
        assert back == value and type(back) is type(value)
    assert type(sandbox.decode(sandbox.encode((True, 1)))[0]) is bool


def test_codec_strips_subclasses_and_refuses_objects():
    class AlwaysEqual(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Color(enum.IntEnum):
        RED = 3

    point = collections.namedtuple("Point", "x y")(1, 2)
    assert sandbox.decode(sandbox.encode(AlwaysEqual(5))) == 5 and sandbox.decode(sandbox.encode(AlwaysEqual(5))) != 6
    assert sandbox.decode(sandbox.encode(Color.RED)) == 3
    assert sandbox.decode(sandbox.encode(point)) == (1, 2)
    assert sandbox.decode(sandbox.encode(collections.Counter("aab"))) == {"a": 2, "b": 1}
    with pytest.raises(TypeError, match="not plain data"):
        sandbox.encode(object())
    for bad in ({"eval": "1"}, {"tuple": "ab"}, {"a": 1, "b": 2}, {"complex": [1, "x"]}):
        with pytest.raises(ValueError):
            sandbox.decode(bad)


def test_calls_judge_and_stdio_verdicts():
    source = "def add(a, b):\n    return a + b\n"
    results = sandbox.run_many([
        sandbox.Program(source, calls=(("add", (1, 2), {}), ("add", ((1,), (2,)), {}), ("add", (), {"a": 1, "b": 1}))),
        sandbox.Program(source, calls=(("add", (1, "x"), {}),)),
        sandbox.Program("class Solution:\n    def add(self, a, b):\n        return a + b\n", calls=(("add", (2, 2), {}),)),
        sandbox.Program(source, judge="assert candidate(1, 2) == 3 and add(2, 2) == 4", entry_point="add"),
        sandbox.Program(source.replace("+", "-"), judge="assert candidate(1, 2) == 3", entry_point="add"),
        sandbox.Program(source, judge="assert helper(candidate(1, 1)) == 4", entry_point="add",
                        judge_setup="def helper(x):\n    return 2 * x\n"),
        sandbox.Program("print(sum(map(int, input().split())))", stdin="2 3\n", expected_stdout="5"),
        sandbox.Program("print(sum(map(int, input().split())))", stdin="2 3\n", expected_stdout="6"),
        sandbox.Program("raise ValueError('boom')"),
    ], FAST)
    assert [r.status for r in results] == ["passed", "failed", "passed", "passed", "failed", "passed", "passed",
                                           "failed", "failed"]
    assert results[0].outputs == (3, (1, 2), 2)
    assert "TypeError" in results[1].reason and isinstance(results[1].outputs[0], sandbox.CallError)
    assert results[2].outputs == (4,)
    assert "AssertionError" in results[4].reason
    assert results[7].reason == "wrong output"
    assert "ValueError: boom" in results[8].reason


def test_limits_are_reported_as_such():
    results = sandbox.run_many([
        "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))",
        "while True:\n    print('x' * 100_000)",
        "open('big.bin', 'wb').write(b'x' * (8 << 20))",
        "import time\ntime.sleep(60)",
        "while True:\n    pass",
    ], FAST)
    assert [r.status for r in results[:4]] == ["limit", "limit", "limit", "timeout"]
    assert results[4].status in ("limit", "timeout")


def test_remove_tree_survives_deep_unreadable_and_fifo_trees(tmp_path):
    root = tmp_path / "tree"
    os.mkdir(root)
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1500):  # deeper than the recursion limit and longer than PATH_MAX
        os.mkdir("d" * 10, dir_fd=fd)
        child = os.open("d" * 10, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.mkfifo("fifo", dir_fd=fd)
    os.close(fd)
    os.makedirs(root / "a" / "b")
    (root / "a" / "b" / "f").write_text("x")
    os.chmod(root / "a" / "b", 0)
    os.chmod(root / "a", 0)
    sandbox.remove_tree(str(root))
    assert not root.exists()
    sandbox.remove_tree(str(root))  # a missing tree is fine too


def test_run_never_raises_on_odd_input():
    assert sandbox.run(sandbox.Program("print('\\x00')\nimport sys\nsys.stdout.buffer.write(b'\\xff')"),
                       FAST).status == "passed"
    assert sandbox.run(sandbox.Program("x = (", stdin="\x00" * 10), FAST).status == "failed"
    assert sandbox.run(sandbox.Program("def f():\n    return 1", calls=(("f", (object(),), {}),)),
                       FAST).status == "crashed"


def test_isolation_reports_its_layers():
    layers = sandbox.isolation()
    assert set(layers) == {"python", "uid", "namespaces", "landlock"}
    assert os.access(layers["python"], os.X_OK)
    if os.geteuid() == 0:
        assert layers["uid"] == sandbox.NOBODY
