"""Run untrusted, model-written Python and say how it went, without ever raising.

The code reward executes programs that a policy wrote, so they are treated as hostile. Each
program runs in a fresh interpreter with layered defences (Linux; macOS lacks the namespaces):

OS layer (holds even against native code)
    * its own session and process group; a wall-clock timeout kills the whole group (SIGKILL);
    * where unprivileged user namespaces work: new PID and network namespaces (``unshare``) --
      no network interface but a down loopback, no way to signal processes outside, and every
      process of the namespace dies with it;
    * rlimits: CPU seconds, address space, file size, open files, no core dumps, and
      ``RLIMIT_NPROC = 0`` by default (no fork, no threads);
    * as root, the program runs as ``nobody`` (65534), so file permissions and NPROC apply;
    * a fresh temporary working directory, removed afterwards; a scrubbed environment;
      stdout/stderr captured up to a byte cap, then the group is killed.
Python layer (defence in depth; native code or frame introspection can get round it)
    * an audit hook refuses fork/exec/spawn/system/kill, imports of ``ctypes``, ``socket``,
      ``subprocess``, ``multiprocessing``, writes/renames/deletes outside the working directory,
      and reading ``/proc/<pid>`` of other processes.

A program *passes* only if it runs to its end and the guard then prints a per-run random token
(read from a pipe, never in the source), so ``sys.exit(0)`` before the tests, ``os._exit``,
or a closed stdout all fail. Every outcome is a :class:`Result`:
``passed | failed | timeout | crashed | limit`` with a human-readable reason.
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

STATUSES = ("passed", "failed", "timeout", "crashed", "limit")
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Resource limits of one program (defaults suit HumanEval/MBPP-size tests)."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30  # address space (RLIMIT_AS)
    file_size_bytes: int = 1 << 20  # largest file it may write (RLIMIT_FSIZE)
    processes: int = 0  # RLIMIT_NPROC: 0 = cannot fork or start threads
    open_files: int = 64
    output_bytes: int = 1 << 20  # stdout + stderr kept; more kills the program


@dataclass(frozen=True)
class Program:
    """Source to run, its standard input, and (for stdin/stdout tests) the expected output."""

    source: str
    stdin: str = ""
    expected_stdout: str | None = None


UNSHARE_SIGKILL = "unshare: sigprocmask unblock failed"  # see the classification in run()


@dataclass(frozen=True)
class Result:
    status: str  # one of STATUSES
    reason: str
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Runs inside the sandboxed interpreter (`python -I -B -c GUARD fd limits`): limits, audit hook,
# then the program as __main__, then the pass token. Kept in one function so no helper lingers
# in the program's globals.
GUARD = r"""
import os, sys
def _guard():
    import resource, runpy
    fd = int(sys.argv[1])
    token = os.read(fd, 256)
    os.close(fd)
    cpu, memory, fsize, nproc, nofile = map(int, sys.argv[2].split(","))
    for kind, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, memory),
                        (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_NOFILE, nofile),
                        (resource.RLIMIT_NPROC, nproc)):
        resource.setrlimit(kind, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    root = os.path.realpath(os.getcwd())
    denied = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty",
                        "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.Popen",
                        "socket.__new__", "socket.connect", "socket.bind", "ctypes.dlopen",
                        "ctypes.dlsym", "ctypes.call_function", "os.chroot", "os.setuid"})
    denied_modules = frozenset({"ctypes", "_ctypes", "socket", "_socket", "subprocess",
                                "_posixsubprocess", "multiprocessing", "_multiprocessing",
                                "pty", "ssl", "_ssl"})
    # event -> (indices of path arguments, indices of dir_fd arguments)
    path_events = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.rename": ((0, 1), (2, 3)),
                   "os.mkdir": ((0,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
                   "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)), "os.truncate": ((0,), ()),
                   "os.utime": ((0,), (3,)), "shutil.rmtree": ((0,), (1,))}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path):
        if isinstance(path, int):
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep)

    def hook(event, args):
        if event in denied:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].partition(".")[0] in denied_modules:
            raise ImportError(f"sandbox: import of {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            if isinstance(path, (str, bytes)):
                text = os.path.abspath(os.fsdecode(path))
                parts = text.split("/")
                if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit():
                    raise PermissionError("sandbox: /proc of other processes is not readable")
            if ((flags or 0) & writing or any(c in (mode or "") for c in "wax+")) and not inside(path):
                raise PermissionError(f"sandbox: writing outside the sandbox: {path!r}")
        elif event in path_events:
            paths, dir_fds = path_events[event]
            if any(i < len(args) and args[i] is not None for i in dir_fds) or \
                    not all(inside(args[i]) for i in paths if i < len(args)):
                raise PermissionError(f"sandbox: {event} outside the sandbox")

    sys.addaudithook(hook)
    del sys.argv[1:]
    sys.argv[0] = "main.py"
    runpy.run_path("main.py", run_name="__main__")
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, b"\n" + token + b"\n")
_guard()
"""


def _cleanup(path: str) -> None:
    """Remove the working directory, even where the program made parts unreadable."""
    def fix(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), stat.S_IRWXU)
            os.chmod(target, stat.S_IRWXU)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _normalise_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _execute(program: Program, limits: Limits, namespaces: bool, drop_uid: bool) -> Result:
    """One program, start to reaped; the caller has already made sure this never raises."""
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="bgpo-sandbox-")
    read_fd = write_fd = -1
    proc = None
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(program.source)
        if drop_uid:
            os.chown(workdir, NOBODY, NOBODY)
            os.chown(os.path.join(workdir, "main.py"), NOBODY, NOBODY)
        token = secrets.token_hex(16).encode()
        read_fd, write_fd = os.pipe()
        os.write(write_fd, token)
        os.close(write_fd)
        write_fd = -1
        rlimits = f"{limits.cpu_seconds},{limits.memory_bytes},{limits.file_size_bytes}," \
                  f"{limits.processes},{limits.open_files}"
        command = [sys.executable, "-I", "-B", "-c", GUARD, str(read_fd), rlimits]
        if namespaces:
            command = ["unshare", "--user", "--pid", "--net", "--fork", "--kill-child", "--"] + command
        env = {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
               "BGPO_SANDBOX": "1"}
        ids = dict(user=NOBODY, group=NOBODY, extra_groups=[]) if drop_uid else {}
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(read_fd,), start_new_session=True, **ids)
        os.close(read_fd)
        read_fd = -1
        stdout, stderr, over = _communicate(proc, program.stdin.encode(), start + limits.wall_seconds,
                                            limits.output_bytes)
        returncode = proc.returncode
    except OSError as err:
        return Result("crashed", f"could not start the program: {err}", seconds=time.monotonic() - start)
    finally:
        if proc is not None:
            _kill_group(proc)
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
        _cleanup(workdir)
    seconds = time.monotonic() - start
    out, err = stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace")
    marker = "\n" + token.decode() + "\n"
    finished = returncode == 0 and out.endswith(marker)
    if finished:
        out = out[: -len(marker)]

    def result(status: str, reason: str) -> Result:
        return Result(status, reason, out, err, returncode, seconds)

    if over == "timeout":
        return result("timeout", f"still running after {limits.wall_seconds:g} s wall time")
    if over == "output":
        return result("limit", f"more than {limits.output_bytes} bytes of output")
    if finished:
        if program.expected_stdout is not None and \
                _normalise_output(out) != _normalise_output(program.expected_stdout):
            return result("failed", "wrong output")
        return result("passed", "ran to the end")
    last_line = err.strip().splitlines()[-1] if err.strip() else ""
    if UNSHARE_SIGKILL in err:
        # `unshare --fork` re-raises its child's fatal signal on itself; for SIGKILL (the hard CPU
        # limit; our own timeout kill is reported above) that fails with this message and exit 1
        return result("limit", f"killed by SIGKILL (CPU limit {limits.cpu_seconds} s)")
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return result("limit", f"killed by {sig.name} (CPU limit {limits.cpu_seconds} s)")
        if sig == signal.SIGXFSZ:
            return result("limit", f"wrote a file over {limits.file_size_bytes} bytes")
        return result("crashed", f"killed by {sig.name}")
    if "File too large" in last_line:  # Python ignores SIGXFSZ, so the write fails with EFBIG
        return result("limit", f"wrote a file over {limits.file_size_bytes} bytes")
    if "MemoryError" in last_line:
        return result("limit", f"out of memory ({limits.memory_bytes} bytes address space)")
    if returncode == 0:
        return result("failed", "exited before the program finished (sys.exit / os._exit / closed stdout)")
    return result("failed", last_line or f"exit status {returncode}")


def _communicate(proc: subprocess.Popen, stdin: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str]:
    """Feed stdin, collect output until exit; stop at the deadline or the byte cap.

    Returns (stdout, stderr, over) with over in {"", "timeout", "output"}.
    """
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    total, over = 0, ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        if stdin:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        pending = memoryview(stdin)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                over = "timeout"
                break
            for key, _ in sel.select(timeout=remaining):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(key.fd, pending[:65536]):]
                    except (BrokenPipeError, BlockingIOError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                chunks[key.fd].append(data)
                total += len(data)
                if total > cap:
                    over = "output"
                    break
            if over:
                break
    if not over:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            over = "timeout"
    out = b"".join(chunks[proc.stdout.fileno()])
    err = b"".join(chunks[proc.stderr.fileno()])
    return out, err, over


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group and reap it (always, even after a clean exit)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


@lru_cache(maxsize=1)
def isolation() -> dict[str, bool]:
    """Which OS layers work on this machine, found by running a trivial program once."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    probe = Program("print('ok')", expected_stdout="ok")
    for namespaces in (True, False):
        for drop_uid in (True, False) if root else (False,):
            if namespaces and shutil.which("unshare") is None:
                continue
            if _execute(probe, Limits(), namespaces, drop_uid).passed:
                return {"namespaces": namespaces, "drop_uid": drop_uid}
    return {"namespaces": False, "drop_uid": False}


def run(program: Program | str, limits: Limits = Limits()) -> Result:
    """Run one program in the sandbox; never raises (a sandbox failure is a ``crashed`` result)."""
    if isinstance(program, str):
        program = Program(program)
    try:
        layers = isolation()
        return _execute(program, limits, layers["namespaces"], layers["drop_uid"])
    except Exception as err:  # the caller must never see an exception from untrusted code
        return Result("crashed", f"sandbox error: {type(err).__name__}: {err}")


def run_many(programs: Sequence[Program | str], limits: Limits = Limits(),
             workers: int | None = None) -> list[Result]:
    """Run programs concurrently on a bounded pool of threads (each waits on its own process)."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))  # programs mostly wait: 2 per core
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run(p, limits), programs))
