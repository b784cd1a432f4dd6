"""Per-run cgroups: one memory and pids budget for everything of a run, the judge included.

Threat model: a run may try to hold more memory than its limit (through threads, tmpfs pages or
the judge it talks to) or to outlive its end. Where this process may create cgroups (v2, else
v1: root, or a delegated subtree), each run gets its own; the caller moves the run's processes
in from outside before any program code runs (bubblewrap's ``--block-fd`` holds the sandbox until
then), so every process of the run is counted, and the run's judge joins the same cgroup before
it reads any answer. Removing a cgroup kills whatever is left in it first. Where none can be
made, the rlimits set inside the sandbox are the bound (see :mod:`bgpo.sandbox.bwrap`).
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


@lru_cache(maxsize=1)
def bases() -> dict[str, Path] | None:
    """Where this process may make cgroups with a memory and a pids limit (v2, else v1), else None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = {ctrl: path for _, ctrls, path in (line.split(":", 2) for line in lines) for ctrl in ctrls.split(",")}
    if (ROOT / "cgroup.controllers").exists() and "" in own:  # pure v2
        base = ROOT / own[""].lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        found = {"memory": base, "pids": base} if {"memory", "pids"} <= set(enabled) else None
    else:
        found = {c: ROOT / c / own.get(c, "/").lstrip("/") for c in ("memory", "pids")}
    if found is None or not all(os.access(b, os.W_OK) for b in found.values()):
        return None
    try:
        RunCgroup.create(found, 64 << 20, 8).remove(time.monotonic() + 2)
    except OSError:
        return None
    return found


@dataclass
class RunCgroup:
    """The cgroup(s) of one run: one directory per hierarchy (one in all on v2)."""

    paths: list[Path]

    @staticmethod
    def create(where: dict[str, Path], memory_bytes: int, processes: int) -> RunCgroup:
        name = f"bgpo-sandbox-{uuid.uuid4().hex[:16]}"
        made = RunCgroup([])
        try:
            for path in sorted({b / name for b in where.values()}):
                path.mkdir()
                made.paths.append(path)
                files = {f.name for f in path.iterdir()}
                for key, value in (("memory.max", memory_bytes), ("memory.swap.max", 0),
                                   ("memory.limit_in_bytes", memory_bytes),
                                   ("memory.memsw.limit_in_bytes", memory_bytes), ("pids.max", processes)):
                    if key in files:
                        (path / key).write_text(str(value))
        except BaseException:
            made.remove(time.monotonic() + 2)
            raise
        return made

    def add(self, pid: int) -> None:
        """Move process ``pid`` (all its threads; not its existing children) into the run's cgroups."""
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for memory."""
        for path in self.paths:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    fields = dict(line.split() for line in (path / name).read_text().splitlines())
                except (OSError, ValueError):
                    continue
                if int(fields.get("oom_kill", 0)) > 0:
                    return True
        return False

    def remove(self, deadline: float) -> bool:
        """Kill whatever is still in it, remove it; False when it could not be emptied by ``deadline``."""
        for path in list(self.paths):
            while True:
                try:
                    path.rmdir()
                    self.paths.remove(path)
                    break
                except FileNotFoundError:
                    self.paths.remove(path)
                    break
                except OSError as err:
                    if err.errno != errno.EBUSY or time.monotonic() > deadline:
                        return False
                    for pid in _pids(path):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except (ProcessLookupError, PermissionError):
                            pass
                    time.sleep(0.002)
        return True


def _pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []
