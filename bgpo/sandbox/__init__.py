"""Run untrusted, model-written Python and judge it from outside, without ever raising.

The code reward runs programs that a policy wrote, and a policy optimises whatever the reward pays
for, so every program is treated as hostile -- and every honest program must still score 1, since a
reward with false negatives teaches the wrong thing. Three parts, one file each, each with its
threat model:

* :mod:`~bgpo.sandbox.bwrap` -- the operating system's layer, bubblewrap: user/PID/IPC/network/
  UTS/mount namespaces with a read-only view of exactly the interpreter, its stdlib and numpy, a
  size-limited tmpfs, a seccomp filter (:mod:`~bgpo.sandbox.seccomp`: no keyrings, ptrace, mounts,
  new namespaces or processes), uid ``nobody``, a cgroup per run (:mod:`~bgpo.sandbox.cgroup`),
  rlimits; a run ends by killing its PID namespace from outside and is over only when that is
  proven. Where it cannot be had, the code reward refuses in one line naming the fix, unless the
  user chose ``trusted-only`` (:mod:`~bgpo.sandbox.host`);
* :mod:`~bgpo.sandbox.harness` -- the program's side: the Python guard (second line only), the
  program as a module, a server that turns its values into data and keeps its objects as handles;
* :mod:`~bgpo.sandbox.judge` -- the trusted judge, a separate process that runs the test code with
  the program's module behind a proxy: values come back rebuilt as genuine standard types
  (:mod:`~bgpo.sandbox.wire`), so no code of the program ever decides an equality or a verdict;
  each judge is a fork of a trusted server that has loaded the judge's code and run nothing else
  (:mod:`~bgpo.sandbox.forkserver`), which saves every run an interpreter start.

:mod:`~bgpo.sandbox.runner` ties them together for one run: the caller only moves bytes with a cap
and a deadline and reads exit statuses, so no program can stall it. Every outcome is a
:class:`Result`: ``passed | failed | timeout | crashed | limit`` with a reason.
"""

from bgpo.sandbox.host import remove_tree
from bgpo.sandbox.bwrap import NOBODY, POLICIES, IsolationUnavailable, set_policy
from bgpo.sandbox.runner import STATUSES, Limits, Program, Result, isolation_line, require, run, run_many
from bgpo.sandbox.runner import isolation_report as isolation

__all__ = ["NOBODY", "POLICIES", "STATUSES", "IsolationUnavailable", "Limits", "Program", "Result", "isolation", "isolation_line",
           "remove_tree", "require", "run", "run_many", "set_policy"]
