"""The OS layers hold on their own: attacks that never meet the Python guard.

Each program loads ``_posixsubprocess`` without an import event and starts ``/bin/sh``, so the
audit hook sees nothing of what the shell does (the system's python3 runs the program, since its
``_posixsubprocess`` is built in); then it checks in Python that the attack took
effect and only then defines a correct ``add``. A 0 therefore means Landlock, the uid or the
namespaces stopped the shell. Skipped where those layers are missing (see ``bgpo.sandbox``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bgpo import sandbox
from bgpo.sandbox import runner
from bgpo.tasks import get_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

FAST = sandbox.Limits(cpu_seconds=2, wall_seconds=5.0, memory_bytes=256 << 20, output_bytes=256 << 10)
ADD = "\ndef add(a, b):\n    return a + b\n"
SHELL = """
import _imp, importlib.machinery, os, time
_ps = _imp.create_builtin(importlib.machinery.ModuleSpec('_posixsubprocess', None))
def shell(script):
    _ps.fork_exec([b'/bin/sh', b'-c', script.encode()], [b'/bin/sh'], True, (), None, None,
                  -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)
    time.sleep(0.5)
"""


def _score(sources: list[str]) -> list[float]:
    example = {"problem": "p", "setup": "", "entry_point": "add",
               "tests": [{"kind": "assert", "code": "assert add(20, 22) == 42"}]}
    completions = [f"```python\n{source}\n```" for source in sources]
    return get_task("code").rewards(completions, [example] * len(completions))


@pytest.fixture(scope="module")
def shell_works():
    layers = sandbox.isolation()
    if not layers["landlock"] or not layers["namespaces"]:
        pytest.skip(f"needs Landlock and user namespaces; this machine has {layers}")
    from bgpo.tasks import code as code_task

    old, code_task.LIMITS = code_task.LIMITS, FAST
    chosen = runner.chosen_layers
    if os.path.exists("/usr/bin/python3"):  # its _posixsubprocess is built in where the venv's is not
        runner.chosen_layers = lambda: dataclasses.replace(chosen(), python="/usr/bin/python3")
    try:
        if _score([SHELL + "shell('echo ok > inside')\nassert open('inside').read() == 'ok\\n'\n" + ADD]) != [1.0]:
            pytest.skip("the attack's fork_exec call does not fit this interpreter's _posixsubprocess")
        yield
    finally:
        code_task.LIMITS = old
        runner.chosen_layers = chosen


def test_shell_attacks_are_stopped_by_the_os(shell_works):
    outside = Path(tempfile.mkdtemp(prefix="bgpo-outside-"))
    outside.chmod(0o777)
    (outside / "keep.txt").write_text("keep me")
    (outside / "answers.txt").write_text("42")
    for f in outside.iterdir():
        f.chmod(0o666)
    sentinel = subprocess.Popen(["sleep", "120"])
    out, keep, caller = str(outside), str(outside / "keep.txt"), os.getpid()
    attacks = {
        "write outside": f"shell('echo x > {out}/pwned')\nopen('{out}/pwned')",
        "delete outside": f"assert os.path.exists('{keep}')\nshell('rm -f {keep}')\nassert not os.path.exists('{keep}')",
        "FIFO outside": f"shell('mkfifo {out}/fifo')\nassert os.path.exists('{out}/fifo')",
        "write through a symlink": f"shell('ln -s {out} lnk; echo x > lnk/via')\nassert os.path.exists('{out}/via')",
        "write through a hard link": f"shell('ln {keep} hl; echo x >> hl')\nassert os.stat('hl').st_nlink == 2",
        "read the answers file": f"shell('cat {out}/answers.txt > got')\nassert open('got').read() == '42'",
        "read the caller's environment": f"shell('cat /proc/{caller}/environ > env')\n"
                                         "assert b'BGPO_TEST_SECRET' in open('env', 'rb').read()",
        "write to /dev/shm": f"shell('echo x > /dev/shm/bgpo-pwned-{caller}')\nopen('/dev/shm/bgpo-pwned-{caller}')",
        "kill the caller and a sibling": f"shell('kill -9 {caller} {sentinel.pid}')\nassert os.kill.__name__ == 'no'",
    }
    os.environ["BGPO_TEST_SECRET"] = "s3cret"
    try:
        rewards = _score([SHELL + attack + "\n" + ADD for attack in attacks.values()])
        assert dict(zip(attacks, rewards)) == {name: 0.0 for name in attacks}
        assert sorted(p.name for p in outside.iterdir()) == ["answers.txt", "keep.txt"]
        assert (outside / "keep.txt").read_text() == "keep me"
        assert not Path(f"/dev/shm/bgpo-pwned-{caller}").exists()
        assert sentinel.poll() is None
    finally:
        os.environ.pop("BGPO_TEST_SECRET", None)
        sentinel.kill()
        sentinel.wait()
        sandbox.remove_tree(out)
