"""The operating system's layers around a run: namespaces, cgroups, uid, Landlock, rlimits, clean-up.

Threat model: the program is native code for all we know (the Python guard is the second line
only), running as long as it likes until we end it. What holds, on a Linux host where the caller
is root (this project's hosts; see :func:`probe` for what is used elsewhere):

* **namespaces** (``unshare`` as root, else in a new user namespace): PID (no other process
  visible; the run ends when its PID 1 dies), IPC (SysV shm/msg/sem and POSIX mqueues die with the
  run), network (no interfaces, no abstract Unix sockets of the host), UTS, and mount: the run sees a
  new root built by :mod:`bgpo.sandbox.launch` -- read-only system and interpreter directories, a
  private ``/tmp`` and working directory on a size-limited tmpfs, nothing else (no host sockets);
* **ending a run** never trusts the run: its PID 1 is held by a pidfd taken from outside (a child of
  the trusted ``unshare`` process, so its pid cannot be reused while held), SIGKILLed through it
  whatever it did to its session, process group, parent-death signal or pipes, and the run is over
  when that pidfd reports the exit: the kernel reaps every process of a PID namespace before its
  init exits. The cgroup is then checked empty and removed. Nothing is deleted on the host: the
  run's files lived on its tmpfs;
* **cgroups** (v1 or v2, where this process may create them): ``memory`` and ``pids`` limits for the
  whole run, not per process; without them, ``RLIMIT_AS`` and ``RLIMIT_NPROC`` per process are the
  documented bound (three children may then hold three times the memory limit);
* **uid**: the program runs as ``nobody`` (caller root) or without any capability (user namespace);
* **Landlock** (ABI >= 1; 4: no TCP; 6: no signals or abstract sockets outside the run);
* **rlimits**: CPU seconds, file size, open files, no core dumps; ``oom_score_adj = 1000``.

Without namespaces (no ``unshare``, or it fails here) a run falls back to a host working directory,
its own session and process group, the uid drop (root) and Landlock; a process that calls
``setsid`` can then outlive the run, and :func:`remove_tree` deletes the directory without ever
following a link -- do not train on untrusted code there.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import marshal
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

NOBODY = 65534
UNSHARE = ["unshare", "--pid", "--fork", "--ipc", "--net", "--mount", "--uts", "--kill-child"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
SOURCES = Path(__file__).parent


@dataclass(frozen=True)
class Layers:
    """What isolates a run on this machine (see :func:`probe`)."""

    python: str  # the program's interpreter
    uid: int | None  # the program's uid (root callers only)
    namespaces: bool  # PID/IPC/net/mount/UTS namespaces and the tmpfs root
    landlock: int  # Landlock ABI in use, 0 = none
    cgroup: bool  # memory and pids limits per run


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Source of a module that runs inside a sandbox process; harness.py and judge.py follow wire.py's text."""
    text = (SOURCES / name).read_text()
    if name == "launch.py":
        return text
    return (SOURCES / "wire.py").read_text() + "\n" + text.replace("from bgpo.sandbox.wire import", "# wire.py:")


# a shipped module runs from its marshalled code: compiling ~450 lines at every start costs ~10 ms of CPU
BOOT = "import marshal, sys\nwith open(sys.argv[1], 'rb') as f:\n    exec(marshal.loads(f.read()))"


@lru_cache(maxsize=None)
def compiled(name: str) -> bytes:
    """:func:`source` compiled and marshalled, for :data:`BOOT` (same interpreter version only)."""
    return marshal.dumps(compile(source(name), f"<bgpo.sandbox.{name}>", "exec"))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when absent), asked through landlock_create_ruleset."""
    if sys.platform != "linux":
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return max(0, int(libc.syscall(444, None, 0, 1)))  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0


def read_only_paths(python: str) -> list[str]:
    """System directories and the interpreter's (prefix, base prefix, site-packages), outermost only."""
    paths = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc"]
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    paths += [prefix, sys.prefix, sys.base_prefix, *site_paths()]
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths if os.path.lexists(p)}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def site_paths() -> list[str]:
    """The caller's site-packages directories: the program and the judge may import what it has (numpy)."""
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def landlock_rules(python: str, writable: list[str], namespaces: bool) -> list[tuple[str, int]]:
    """Read-only system and interpreter directories, /proc, the devices; everything beneath ``writable``."""
    read = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
    system = read_only_paths(python) + ["/proc"]
    devices = [("/dev/null", 2 | 4 | 1 << 14), ("/dev/zero", 4), ("/dev/urandom", 4), ("/dev/random", 4)]
    harness = [("/.harness", 1 | 4)] if namespaces else []  # its compiled code, at the new root's top
    return [(p, read) for p in system] + devices + harness + [(w, (1 << 16) - 1) for w in writable]


def rlimits(memory_bytes: int | None, limits) -> list[tuple[str, int, int]]:
    """Per-process rlimits; ``memory_bytes``/``processes`` only where no cgroup bounds the run."""
    out = [("RLIMIT_CORE", 0, 0), ("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
           ("RLIMIT_FSIZE", limits.file_size_bytes, limits.file_size_bytes),
           ("RLIMIT_NOFILE", limits.open_files, limits.open_files)]
    if memory_bytes is not None:
        out += [("RLIMIT_AS", memory_bytes, memory_bytes), ("RLIMIT_NPROC", limits.processes, limits.processes)]
    return out


# --- cgroups -----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def cgroup_bases() -> dict[str, Path] | None:
    """Where this process may make cgroups with a memory and a pids limit (v2, else v1), else None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = {ctrl: path for _, ctrls, path in (line.split(":", 2) for line in lines) for ctrl in ctrls.split(",")}
    if (CGROUP_ROOT / "cgroup.controllers").exists() and "" in own:  # pure v2
        base = CGROUP_ROOT / own[""].lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        bases = {"memory": base, "pids": base} if {"memory", "pids"} <= set(enabled) else None
    else:
        bases = {c: CGROUP_ROOT / c / own.get(c, "/").lstrip("/") for c in ("memory", "pids")}
    if bases is None or not all(os.access(b, os.W_OK) for b in bases.values()):
        return None
    try:
        RunCgroup.create(bases, 64 << 20, 8).remove(time.monotonic() + 2)
    except OSError:
        return None
    return bases


@dataclass
class RunCgroup:
    """The cgroup(s) of one run: one per hierarchy (one directory on v2)."""

    paths: list[Path]

    @staticmethod
    def create(bases: dict[str, Path], memory_bytes: int, processes: int) -> RunCgroup:
        name = f"bgpo-sandbox-{uuid.uuid4().hex[:16]}"
        paths = sorted({b / name for b in bases.values()})
        made = RunCgroup([])
        try:
            for path in paths:
                path.mkdir()
                made.paths.append(path)
            for path in paths:
                files = {f.name for f in path.iterdir()}
                for name_, value in (("memory.max", memory_bytes), ("memory.swap.max", 0),
                                     ("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes", memory_bytes),
                                     ("pids.max", processes)):
                    if name_ in files:
                        (path / name_).write_text(str(value))
        except BaseException:
            made.remove(time.monotonic() + 2)
            raise
        return made

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
                        _kill(pid)
                    time.sleep(0.002)
        return True


def _pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- one sandboxed process tree ----------------------------------------------------------------------

@dataclass
class Sandboxed:
    """A started run: the trusted ``unshare`` (or launcher) process, its PID 1, its cgroup, its directory."""

    proc: subprocess.Popen
    pid1: int | None = None  # a pidfd on the run's PID 1
    cgroup: RunCgroup | None = None
    workdir: str | None = None  # host directory (fallback without namespaces only)
    reads: list[int] = field(default_factory=list)


def start(layers: Layers, limits, files: dict[str, str], harness: dict, pass_fds: tuple[int, ...],
          config_fd: int, stdin: bool) -> tuple[Sandboxed, bytes]:
    """Start the harness (configured by ``harness``) in the sandbox; returns it and the launch
    configuration to feed to ``config_fd``'s write end."""
    cgroup = RunCgroup.create(cgroup_bases() or {}, limits.memory_bytes, limits.processes) if layers.cgroup else None
    workdir = None
    try:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "BGPO_SANDBOX": "1",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        code = compiled("harness.py") if layers.python == sys.executable else None
        config = {"mount": layers.namespaces, "landlock": layers.landlock, "uid": layers.uid, "files": files, "code": code,
                  "disk_bytes": limits.disk_bytes, "cgroups": [str(p) for p in cgroup.paths] if cgroup else [],
                  "rlimits": rlimits(None if cgroup else limits.memory_bytes, limits)}
        python_flags = [layers.python, "-I", "-S", "-B", "-c", source("launch.py"), str(config_fd)]
        if layers.namespaces:
            writable = ["/sandbox", "/tmp"]
            config |= {"read_only": read_only_paths(layers.python)}
            command = UNSHARE + ([] if layers.uid is not None else ["--user", "--map-root-user"]) + ["--", *python_flags]
            env |= {"HOME": "/sandbox", "TMPDIR": "/tmp"}
            cwd, ids = "/", {}
        else:
            workdir = tempfile.mkdtemp(prefix="bgpo-sandbox-")
            writable = [workdir]
            for name, text in files.items():
                Path(workdir, name).write_text(text, encoding="utf-8")
            if layers.uid is not None:
                for name in [*files, ""]:
                    os.chown(os.path.join(workdir, name), layers.uid, layers.uid)
            command, cwd = python_flags, workdir
            env |= {"HOME": workdir, "TMPDIR": workdir}
            ids = dict(user=layers.uid, group=layers.uid, extra_groups=[]) if layers.uid is not None else {}
        config["rules"] = landlock_rules(layers.python, writable, layers.namespaces)
        harness = marshal.dumps(harness | {"writable": writable}).hex()  # plain data, read with marshal
        config["argv"] = [layers.python, "-I", "-S", "-B", "-c", BOOT, "/.harness" if layers.namespaces else
                          os.path.join(workdir, ".harness"), harness] if code else \
            [layers.python, "-I", "-S", "-B", "-c", source("harness.py"), harness]
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(config_fd, *pass_fds),
                                start_new_session=True, **ids)
    except BaseException:
        if cgroup:
            cgroup.remove(time.monotonic() + 2)
        if workdir:
            remove_tree(workdir)
        raise
    run = Sandboxed(proc, None, cgroup, workdir, [proc.stdout.fileno(), proc.stderr.fileno()])
    return run, marshal.dumps(config)


def hold_pid1(run: Sandboxed, deadline: float) -> None:
    """Take a pidfd on the run's PID 1 (the ``unshare`` process's only child) as soon as it exists."""
    pid = run.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    while run.pid1 is None and run.proc.poll() is None and time.monotonic() < deadline:
        try:
            found = children.read_text().split()
        except OSError:
            return
        if found:
            fd = os.pidfd_open(int(found[0]))
            if children.read_text().split()[:1] == found[:1]:  # still our child: the pidfd is its own
                run.pid1 = fd
                return
            os.close(fd)
        time.sleep(0.0005)


def end(run: Sandboxed) -> bool:
    """Kill everything of the run and wait until it is provably gone; True when it is.

    Only then is anything removed: the cgroup (which must be empty) and, without namespaces, the
    host working directory.
    """
    gone = True
    if run.pid1 is not None:
        try:
            signal.pidfd_send_signal(run.pid1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        gone = bool(select.select([run.pid1], [], [], 10.0)[0])  # readable: PID 1, and so its namespace, is gone
        os.close(run.pid1)
        run.pid1 = None
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    run.proc.wait()
    for stream in (run.proc.stdin, run.proc.stdout, run.proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()
    if run.cgroup is not None:
        gone = run.cgroup.remove(time.monotonic() + 5.0) and gone
    if run.workdir is not None:
        remove_tree(run.workdir)
    return gone


# --- clean-up of a host directory (fallback without namespaces) -------------------------------------

def remove_tree(path: str) -> None:
    """Delete ``path`` whatever a program left in it, never following a link and never raising.

    Every directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to an fd of its parent and
    changed only through that fd, so swapping a directory for a symlink mid-way makes the open
    fail instead of reaching outside. Iterative and flat: each directory's subdirectories are
    moved up into the top one, so depth costs neither recursion nor long paths; FIFOs and sockets
    are unlinked, never opened.
    """
    try:
        top = _open_dir(None, path)
    except OSError:  # gone already, or not a directory
        return
    fresh = (f".bgpo-up-{i}" for i in itertools.count())
    try:
        while names := os.listdir(top):
            progress = False
            for name in names:
                try:
                    _remove_entry(top, name, fresh)
                    progress = True
                except OSError:
                    pass
            if not progress:
                break
    except OSError:
        pass
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _open_dir(parent: int | None, name: str) -> int:
    """A readable fd on directory ``name`` (made ``rwx`` for us first), refusing symlinks."""
    flags = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    handle = os.open(name, flags | os.O_PATH, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)  # the very inode the handle holds, not a path
        return os.open(".", flags | os.O_RDONLY, dir_fd=handle)
    finally:
        os.close(handle)


def _remove_entry(top: int, name: str, fresh) -> None:
    """Remove entry ``name`` of ``top``; a directory's subdirectories are moved up into ``top``."""
    try:
        os.unlink(name, dir_fd=top)
        return
    except IsADirectoryError:
        pass
    except PermissionError:  # EPERM from unlink(2) on a directory
        if not stat.S_ISDIR(os.stat(name, dir_fd=top, follow_symlinks=False).st_mode):
            raise
    fd = _open_dir(top, name)
    try:
        for child in os.listdir(fd):
            try:
                os.unlink(child, dir_fd=fd)
            except (IsADirectoryError, PermissionError):
                os.rename(child, next(fresh), src_dir_fd=fd, dst_dir_fd=top)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=top)


def probe(run_probe) -> Layers:
    """The strongest layers under which ``run_probe(layers)`` passes a trivial program here."""
    root = os.geteuid() == 0
    landlock = landlock_abi()
    namespaces = shutil.which("unshare") is not None
    cgroup = cgroup_bases() is not None
    pythons = [sys.executable]
    if root:
        pythons += [p for p in (shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin"),) if p]
    candidates = [Layers(python, uid, ns, ll, cg and ns)
                  for ns in ((True, False) if namespaces else (False,))
                  for uid in ((NOBODY,) if root else (None,))
                  for python in (pythons if not ns else [sys.executable])
                  for ll in ((landlock, 0) if landlock else (0,))
                  for cg in ((True, False) if cgroup else (False,))]
    for layers in candidates:
        if run_probe(layers):
            return layers
    return Layers(sys.executable, None, False, 0, False)
