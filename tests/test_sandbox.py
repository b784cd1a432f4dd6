"""The sandbox's own contract: plain-data answers, judged runs, limits, cleanup, never raising."""

from __future__ import annotations

import collections
import decimal
import enum
import fractions
import json
import math
import os
import sys
import threading

import numpy
import pytest

from bgpo import sandbox
from bgpo.sandbox import forkserver, wire

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

FAST = sandbox.Limits(cpu_seconds=2, wall_seconds=5.0, memory_bytes=256 << 20, output_bytes=256 << 10)


def _no_objects(value):
    raise TypeError(f"{type(value).__name__} is not plain data")


def _round_trip(value):
    return wire.decode(wire.loads(wire.dumps(wire.encode(value, _no_objects))), None)


def test_wire_lines_are_what_json_writes_and_reads():
    """The wire's codec is ``_json``'s, as in :mod:`json`; a line holds one value and nothing more."""
    message = ["ok", {"d": [["é\x00\ud800", [None, True, -0.0, 1e300, 2**70]]]}, [[0, {"s": []}]]]
    assert wire.dumps(message) == json.dumps(message, separators=(",", ":"))
    assert wire.loads(wire.dumps(message)) == message
    assert all(math.isinf(x) or math.isnan(x) for x in wire.loads("[NaN,Infinity,-Infinity]"))
    for bad in (" [1]", "[1] ", "[1]x", "", "nul", "[1", "1" * 5000):
        with pytest.raises(ValueError):
            wire.loads(bad)


def test_wire_rebuilds_standard_values_exactly():
    point = collections.namedtuple("Point", "x y")
    values = [None, True, 0, -7, 10**5000, 1.5, math.inf, "é\x00", [1, [2.0]], (1, (2,)), {1: "a", (2, 3): [4]},
              {1, 2}, frozenset({"x"}), 1 + 2j, b"\xff\x00", bytearray(b"ab"), [], fractions.Fraction(1, 3),
              decimal.Decimal("0.1"), collections.deque([1, 2], maxlen=3), collections.Counter("aab"),
              collections.OrderedDict(a=1), collections.defaultdict(list, a=[1]), range(1, 9, 2),
              numpy.arange(6).reshape(2, 3), numpy.float32(0.5)]
    for value in values:
        back = _round_trip(value)
        assert type(back).__name__ == type(value).__name__ and (back == value if not isinstance(value, numpy.ndarray)
                                                                 else (back == value).all()), value
    assert _round_trip(point(1, 2)) == (1, 2) and _round_trip(point(1, 2)).y == 2
    assert math.isnan(_round_trip(math.nan))


def test_wire_strips_subclasses_and_refuses_what_could_stall_the_judge():
    class AlwaysEqual(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Color(enum.IntEnum):
        RED = 3

    assert _round_trip(AlwaysEqual(5)) == 5 and _round_trip(AlwaysEqual(5)) != 6
    assert type(_round_trip(Color.RED)) is int
    with pytest.raises(TypeError, match="not plain data"):
        wire.encode(object(), _no_objects)
    one_hash = {"s": [{"i": hex(((1 << 61) - 1) * i)} for i in range(1, 200)]}
    deep = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    for bad in ({"eval": "1"}, {"t": "ab"}, {"a": 1, "b": 2}, {"c": [1, "x"]}, one_hash,
                {"nd": ["|O", [1], [None]]}, {"dd": ["eval", []]}):
        with pytest.raises((ValueError, TypeError)):
            wire.decode(bad, None)
    with pytest.raises(ValueError, match="deeper"):
        wire.encode(deep, _no_objects)


def test_checks_judge_and_stdio_verdicts():
    source = "def add(a, b):\n    return a + b\n"
    results = sandbox.run_many([
        sandbox.Program(source, checks=(("add", (1, 2), {}, (3,)), ("add", ((1,), (2,)), {}, ((1, 2),)),
                                        ("add", (), {"a": 1, "b": 1}, (2,)))),
        sandbox.Program(source, checks=(("add", (1, "x"), {}, (3,)),)),
        sandbox.Program("class Solution:\n    def add(self, a, b):\n        return a + b\n", checks=(("add", (2, 2), {}, (4,)),)),
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
    assert "TypeError" in results[1].reason
    assert "AssertionError" in results[4].reason
    assert results[7].reason == "wrong output"
    assert "ValueError: boom" in results[8].stderr


def test_the_caller_is_never_stalled_by_an_answer():
    """A megabyte of ints with one hash, and a nest past the cap: refused in the judge, in the run's time."""
    stalls = ["def add(a, b):\n    m = (1 << 61) - 1\n    return {m * i for i in range(1, 100_000)}",
              "def add(a, b):\n    return {((1 << 61) - 1) * i: 0 for i in range(1, 100_000)}"]
    for source in stalls:
        result = sandbox.run(sandbox.Program(source, checks=(("add", (1, 2), {}, (3,)),)), FAST)
        assert result.status in ("failed", "limit", "timeout") and result.seconds < FAST.wall_seconds + 1


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


def test_remove_tree_never_follows_a_symlink_swapped_in(tmp_path):
    """A directory swapped for a symlink to the outside while the tree is removed: the outside keeps its modes."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    (outside / "keep").write_text("x")
    os.chmod(outside, 0o777)
    os.chmod(outside / "keep", 0o666)
    for attempt in range(5):
        root = tmp_path / f"tree{attempt}"
        for i in range(300):
            os.makedirs(root / f"d{i}" / "e")
        stop = threading.Event()

        def swap():
            while not stop.is_set():
                try:
                    os.rename(root / "d0", root / "x")
                    os.symlink(outside, root / "d0")
                    os.unlink(root / "d0")
                    os.rename(root / "x", root / "d0")
                except OSError:
                    pass

        swapper = threading.Thread(target=swap)
        swapper.start()
        sandbox.remove_tree(str(root))
        stop.set()
        swapper.join()
        sandbox.remove_tree(str(root))
        assert (outside.stat().st_mode & 0o777, (outside / "keep").stat().st_mode & 0o777) == (0o777, 0o666)
        assert (outside / "keep").read_text() == "x"


def test_run_never_raises_on_odd_input():
    assert sandbox.run(sandbox.Program("print('\\x00')\nimport sys\nsys.stdout.buffer.write(b'\\xff')"),
                       FAST).status == "passed"
    assert sandbox.run(sandbox.Program("x = (", stdin="\x00" * 10), FAST).status == "failed"
    assert sandbox.run(sandbox.Program("def f():\n    return 1", checks=(("f", (object(),), {}, (1,)),)),
                       FAST).status == "crashed"


def test_isolation_reports_its_layers():
    layers = sandbox.isolation()
    assert layers["sandbox"] and layers["policy"] == "required"
    assert {"pid", "ipc", "net", "uts", "mount"} <= set(layers["namespaces"])
    assert os.access(layers["python"], os.X_OK) and os.access(layers["bwrap"], os.X_OK)
    assert layers["uid"].startswith("nobody" if os.geteuid() == 0 else "65534 in a user namespace")


@pytest.mark.skipif(not forkserver.available(), reason="no pidfd_open or fd passing: judges are new interpreters")
def test_forked_judges_report_like_new_interpreters_and_a_lost_server_passes_nothing():
    """Each judge is a fork of the judge server: same verdicts and reasons, its session ends with it,
    and a server that dies mid-run fails the runs it had (no exit status, no pass) and is replaced."""
    add = "def add(a, b):\n    return a + b"
    runs = sandbox.run_many([
        sandbox.Program(add, judge="assert add(1, 2) == 3"),
        sandbox.Program(add, judge="assert add(1, 2) == 4, 'wrong sum'"),
        sandbox.Program(add, judge="raise SystemExit(3)"),
        sandbox.Program(add, judge="import subprocess, time\nsubprocess.Popen(['sleep', '987'])\ntime.sleep(60)"),
    ], FAST)
    assert [r.status for r in runs] == ["passed", "failed", "failed", "timeout"]
    assert runs[1].reason == "judge: AssertionError: wrong sum" and runs[2].reason == "judge: exit status 3"
    assert "sleep 987" not in os.popen("ps -eo args").read()  # the judge's session died with it
    lost = forkserver.server()
    threading.Timer(0.5, os.kill, (lost.proc.pid, 9)).start()
    result = sandbox.run(sandbox.Program(add, judge="import time\ntime.sleep(3)"), FAST)
    assert result.status == "failed" and lost.dead
    assert sandbox.run(sandbox.Program(add, judge="assert add(1, 2) == 3"), FAST).passed
    assert forkserver.server() is not lost


def test_judges_as_new_interpreters_where_there_is_no_fork_server(monkeypatch):
    monkeypatch.setattr(forkserver, "available", lambda: False)
    add = "def add(a, b):\n    return a + b"
    runs = sandbox.run_many([sandbox.Program(add, judge="assert add(1, 2) == 3"),
                             sandbox.Program(add, checks=(("add", (1, 2), {}, (3,)),)),
                             sandbox.Program(add, judge="assert add(1, 2) == 4, 'wrong sum'")], FAST)
    assert [r.status for r in runs] == ["passed", "passed", "failed"]
    assert runs[2].reason == "judge: AssertionError: wrong sum"
