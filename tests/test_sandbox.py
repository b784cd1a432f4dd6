"""The sandbox against hostile programs: each scores 0, leaves nothing behind, harms nothing outside.

Every hostile program attacks first and *then* defines a correct ``add``; the code reward runs
``assert add(1, 2) == 3``. So an attack that got through would score 1, and a blocked one scores
0. The whole suite runs concurrently in one batch (a few seconds).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bgpo import sandbox
from bgpo.tasks import code as code_task
from bgpo.tasks import get_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

FAST = sandbox.Limits(cpu_seconds=1, wall_seconds=3.0, memory_bytes=256 << 20, file_size_bytes=1 << 20,
                      output_bytes=256 << 10)
ADD = "\ndef add(a, b):\n    return a + b\n"


def hostile_programs(outside: Path, keep: Path, port: int, sentinel: int) -> dict[str, str]:
    caller = os.getpid()
    attacks = {
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))",
        "infinite loop": "while True:\n    pass",
        "deep recursion": "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        "huge output": "while True:\n    print('x' * 100_000)",
        "big file": "open('big.bin', 'wb').write(b'x' * (8 << 20))",
        "write outside": f"open({str(outside / 'pwned.txt')!r}, 'w').write('pwned')",
        "delete outside": f"import os\nos.remove({str(keep)!r})",
        "rename outside": f"import os\nos.rename({str(keep)!r}, {str(outside / 'moved.txt')!r})",
        "environment secret": "import os\nassert os.environ['BGPO_TEST_SECRET'] == 's3cret'",
        "caller environ via /proc": f"assert b's3cret' in open('/proc/{caller}/environ', 'rb').read()",
        "network socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "network via importlib": f"import importlib\ns = importlib.import_module('_socket')\n"
                                 f"c = s.socket()\nc.connect(('127.0.0.1', {port}))",
        "subprocess": "import subprocess\nsubprocess.run(['sleep', '60'])",
        "os.system": "import os\nassert os.system('sleep 60 &') == 0",
        "kill the caller": f"import os, signal\nos.kill({caller}, signal.SIGKILL)",
        "kill a sibling": f"import os, signal\nos.kill({sentinel}, signal.SIGKILL)",
        "ignore signals and spin": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU):\n"
                                   "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        "sleep past the timeout": "import time\ntime.sleep(60)",
        "segfault via ctypes": "import ctypes\nctypes.string_at(0)",
    }
    programs = {name: attack + ADD for name, attack in attacks.items()}
    # Correct solutions that try to skip or fake the tests.
    programs["close stdout"] = ADD + "import os\nos.close(1)\nos.close(2)"
    programs["sys.exit(0) before the tests"] = ADD + "import sys\nsys.exit(0)"
    programs["os._exit(0) before the tests"] = ADD + "import os\nos._exit(0)"
    programs["fake pass marker"] = ADD + "print('passed')\nimport os\nos._exit(0)"
    return programs


def _sandbox_processes() -> list[int]:
    """Processes that still carry the sandbox's environment marker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"BGPO_SANDBOX=1" in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    keep = outside / "keep.txt"
    keep.write_text("keep me")
    before = _snapshot(outside)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    sentinel = subprocess.Popen(["sleep", "120"])
    workdirs = set(Path(tempfile.gettempdir()).glob("bgpo-sandbox-*"))
    os.environ["BGPO_TEST_SECRET"] = "s3cret"
    old_limits = code_task.LIMITS
    try:
        code_task.LIMITS = FAST
        programs = hostile_programs(outside, keep, listener.getsockname()[1], sentinel.pid)
        example = {"problem": "Write add(a, b).", "setup": "", "entry_point": "add",
                   "tests": [{"kind": "assert", "code": "assert add(1, 2) == 3"}]}
        completions = [f"<answer>\n```python\n{source}\n```\n</answer>" for source in programs.values()]
        start = time.monotonic()
        rewards = get_task("code").rewards(completions, [example] * len(completions))
        seconds = time.monotonic() - start
        results = sandbox.run_many([sandbox.Program(s + "\nassert add(1, 2) == 3\n") for s in programs.values()],
                                   FAST)
        leftovers = _sandbox_processes()
        try:
            listener.accept()
            connected = True
        except BlockingIOError:
            connected = False
        yield {"names": list(programs), "rewards": rewards, "results": results, "seconds": seconds,
               "leftovers": leftovers, "connected": connected, "before": before, "after": _snapshot(outside),
               "sentinel_alive": sentinel.poll() is None,
               "new_workdirs": set(Path(tempfile.gettempdir()).glob("bgpo-sandbox-*")) - workdirs}
    finally:
        code_task.LIMITS = old_limits
        os.environ.pop("BGPO_TEST_SECRET", None)
        sentinel.kill()
        sentinel.wait()
        listener.close()


def test_hostile_suite_is_large_enough(hostile_run):
    assert len(hostile_run["names"]) >= 15


def test_every_hostile_program_scores_zero(hostile_run):
    scored = dict(zip(hostile_run["names"], hostile_run["rewards"]))
    assert scored == {name: 0.0 for name in hostile_run["names"]}


def test_every_hostile_program_fails_with_a_reason(hostile_run):
    for name, result in zip(hostile_run["names"], hostile_run["results"]):
        assert result.status in ("failed", "timeout", "crashed", "limit"), (name, result)
        assert result.reason, name


def test_limits_are_reported_as_such(hostile_run):
    status = {name: r.status for name, r in zip(hostile_run["names"], hostile_run["results"])}
    assert status["memory bomb"] == "limit"
    assert status["huge output"] == "limit"
    assert status["big file"] == "limit"
    assert status["sleep past the timeout"] == "timeout"
    assert status["infinite loop"] in ("timeout", "limit")
    assert status["ignore signals and spin"] in ("timeout", "limit")


def test_nothing_survives_and_nothing_outside_changes(hostile_run):
    assert hostile_run["leftovers"] == []
    assert hostile_run["after"] == hostile_run["before"]
    assert not hostile_run["connected"]
    assert hostile_run["sentinel_alive"]


def test_no_sandbox_directories_are_left(hostile_run):
    assert hostile_run["new_workdirs"] == set()


def test_benign_programs():
    results = sandbox.run_many([
        sandbox.Program("print(sum(map(int, input().split())))", stdin="2 3\n", expected_stdout="5"),
        sandbox.Program("print(sum(map(int, input().split())))", stdin="2 3\n", expected_stdout="6"),
        sandbox.Program("from typing import List\nimport math, re, heapq, itertools, collections\n"
                        "open('scratch.txt', 'w').write('ok')\nprint(open('scratch.txt').read())",
                        expected_stdout="ok"),
        sandbox.Program("assert 1 + 1 == 3"),
        sandbox.Program("raise ValueError('boom')"),
    ], FAST)
    assert [r.status for r in results] == ["passed", "failed", "passed", "failed", "failed"]
    assert results[1].reason == "wrong output"
    assert results[0].stdout.strip() == "5"
    assert "AssertionError" in results[3].reason
    assert "ValueError: boom" in results[4].reason


def test_run_never_raises_on_odd_input():
    assert sandbox.run(sandbox.Program("print('\\x00')\nimport sys\nsys.stdout.buffer.write(b'\\xff')"),
                       FAST).status == "passed"
    assert sandbox.run(sandbox.Program("x = (", stdin="\x00" * 10), FAST).status == "failed"
