"""Throughput of the code reward's sandbox pool: 128 honest programs, this tree against a baseline.

``python -m bgpo.sandbox.bench [--rounds 4] [--baseline 9a1b7df]`` scores one batch (half MBPP-style
asserts, half a HumanEval-style ``check``) with this tree's :class:`bgpo.tasks.code.Code` and with
the baseline commit's single-file ``bgpo/sandbox.py`` and ``bgpo/tasks/code.py`` (taken from git
into a temporary directory), alternating in one process, and prints wall time and CPU time (this
process, its children and the judge server's) per round. Absolute times depend on the machine's
load; only the two columns of one run compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MBPP = {"problem": "p", "setup": "", "entry_point": "add", "show_tests": True,
        "tests": [{"kind": "assert", "code": t} for t in
                  ("assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0")]}
HUMANEVAL = {"problem": "p", "setup": "", "entry_point": "add", "prefix": "",
             "tests": [{"kind": "assert", "code": "def check(candidate):\n    assert candidate(2, 2) == 4\n"
                                                  "    assert candidate(-1, 1) == 0\ncheck(add)"}]}


def batch(size: int = 128) -> tuple[list[str], list[dict]]:
    completions = [f"```python\ndef add(a, b):\n    return a + {i} - {i} + b\n```" for i in range(size)]
    return completions, [MBPP if i % 2 else HUMANEVAL for i in range(size)]


def baseline_task(commit: str, directory: str):
    """The code task of ``commit``, on that commit's single-file sandbox (loaded from git)."""
    root = Path(__file__).resolve().parents[2]
    for name, path in (("old_sandbox", "bgpo/sandbox.py"), ("old_code", "bgpo/tasks/code.py")):
        text = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        text = text.replace("from bgpo import sandbox", "import old_sandbox as sandbox")
        Path(directory, f"{name}.py").write_text(text)
    sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location("old_code", Path(directory, "old_code.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Code()


def cpu_seconds() -> float:
    """CPU of this process, its reaped children and the judge server (whose judges it reaps)."""
    from bgpo.sandbox import forkserver

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    server = forkserver._server
    if server is not None and not server.dead:
        try:
            fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        except OSError:
            pass
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--baseline", default="9a1b7df", help="a commit with the single-file bgpo/sandbox.py")
    args = parser.parse_args(argv)
    from bgpo.tasks import get_task

    completions, examples = batch()
    with tempfile.TemporaryDirectory(prefix="bgpo-bench-") as directory:
        scorers = {"old": baseline_task(args.baseline, directory), "new": get_task("code")}
        for scorer in scorers.values():  # warm-up: each probes its layers once
            scorer.rewards(completions[:2], examples[:2])
        for round_ in range(args.rounds):
            for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                start, cpu = time.monotonic(), cpu_seconds()
                rewards = scorers[name].rewards(completions, examples)
                wall, cpu = time.monotonic() - start, cpu_seconds() - cpu
                print(f"round {round_} {name}: {wall:5.2f} s wall, {cpu:5.2f} s CPU for {len(completions)} programs, "
                      f"mean reward {sum(rewards) / len(rewards):.2f}", flush=True)


if __name__ == "__main__":
    main()
