"""Run untrusted, model-written Python and judge it from outside, without ever raising.

The code reward runs programs that a policy wrote, and a policy optimises whatever the reward
pays for, so every program is treated as hostile. Two rules follow.

**The verdict never comes from inside the program's process.** Anything the harness knows in
there, the program can read (frames, memory), and any check that runs there, it can patch. So
the program only *computes*: its process answers calls ``name(*args, **kwargs)`` with plain data
(JSON of ``None``/``bool``/``int``/``float``/``str``/list/tuple/dict/set/frozenset/complex/bytes;
an object of the program's own class never leaves the process, a subclass of a builtin leaves
as its builtin value) and the comparison happens elsewhere, between genuine builtins:

* ``calls`` -- the caller sends the inputs and gets :attr:`Result.outputs`; the code task compares
  them with the expected values it never sent;
* ``judge`` -- test code that cannot be reduced to input/expected pairs (``check(candidate)``,
  ``math.isclose``, random inputs) runs in a second, separate *judge* process where the names
  ``candidate`` and ``entry_point`` call into the program over a pipe; the verdict is the
  judge's exit status. The program can only send data to the judge, so it cannot forge a
  verdict without returning the right values;
* ``expected_stdout`` -- the caller compares the program's standard output.

**Isolation is the operating system's job.** Each process runs under these layers (each is probed
once with a trivial program; :func:`isolation` says which hold on this machine):

* always: a fresh working directory (deleted afterwards even when deep, unreadable or full of
  FIFOs), a scrubbed environment, its own session and process group, a wall-clock timeout that
  SIGKILLs the group, stdout/stderr capped, and rlimits: CPU seconds, address space, file size,
  open files, no core dumps, ``RLIMIT_NPROC`` (threads count) and ``oom_score_adj = 1000`` so the
  kernel's OOM killer takes sandboxed processes before the trainer;
* caller is root: the program runs as ``nobody`` (65534) with the first Python interpreter
  ``nobody`` can execute (the caller's own, else the system's ``python3``; programs get the
  standard library only). Where there is none, :func:`run` refuses (a ``crashed`` result)
  rather than run untrusted code as root. File permissions then apply, root's exemption from ``RLIMIT_NPROC``
  does not, and the program cannot signal or read the memory of the caller or of its judge,
  which keep the caller's uid;
* user namespaces (``unshare``): new user, PID, network and mount namespaces with a private
  ``/proc`` -- no network, no other process visible, every process of the run dies with it,
  and ``RLIMIT_NPROC`` counts per run (concurrent runs do not share it);
* Landlock (Linux >= 5.13 with Landlock enabled; ABI >= 6 for signal scoping): writes, deletes,
  links, device/FIFO/socket creation allowed only beneath the working directory; reads only of
  the system and interpreter directories, ``/proc`` and the working directory (so not of the
  data files holding the expected answers); TCP bind/connect denied (ABI >= 4); no signals or
  abstract sockets outside the run (ABI >= 6); no ptrace or ``/proc/<pid>/mem`` of processes
  outside the run.

On this project's Linux hosts (root, user namespaces, Landlock ABI 7) all layers hold. Where a
layer is missing, what is left open: without user namespaces, another process of the same uid is
visible, a process that calls ``setsid`` can outlive the run (its CPU limit still ends it if it
computes) and ``RLIMIT_NPROC`` is shared by all runs of the uid; without Landlock, writes are
stopped only by file permissions (as ``nobody``: everything but world-writable places such as
``/tmp``) and by the Python guard below, and world-readable files can be read; a non-root caller
without namespaces and Landlock has only the rlimits and the Python guard between the program and
its own files and processes -- do not train on untrusted code there. macOS is not supported.

The Python guard (an audit hook installed before the program runs) is defence in depth only: it
refuses fork/exec/spawn/kill, the socket/ctypes/subprocess/multiprocessing modules (under any
dotted alias), symlinks and hard links, writes outside the working directory (resolving
``dir_fd`` and refusing to open directories outside, since the ``open`` event does not carry
``dir_fd``), ``/proc/<pid>`` and ``gc`` object introspection. It binds everything it calls
when it starts. Native code, ``os.mkfifo``/``os.mknod`` (no audit event) or ``_imp`` tricks get
round it -- the OS layers above are what hold.

Every outcome is a :class:`Result`: ``passed | failed | timeout | crashed | limit`` with a reason.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

STATUSES = ("passed", "failed", "timeout", "crashed", "limit")
NOBODY = 65534
UNSHARE = ["unshare", "--user", "--pid", "--net", "--mount", "--mount-proc", "--fork", "--kill-child", "--"]
UNSHARE_SIGKILL = "unshare: sigprocmask unblock failed"  # see the classification in _classify()


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (defaults suit HumanEval/MBPP-size tests)."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 1 << 30  # address space per process (RLIMIT_AS)
    file_size_bytes: int = 1 << 20  # largest file it may write (RLIMIT_FSIZE)
    processes: int = 64  # RLIMIT_NPROC: processes + threads (a thread pool must still work)
    open_files: int = 64
    output_bytes: int = 1 << 20  # all output kept (stdout, stderr, answers); more kills the run


@dataclass(frozen=True)
class Program:
    """Source to run and what to judge it by (see the module docstring).

    ``calls`` are ``(name, args, kwargs)``: ``name`` is a function of the program (or a method of
    its ``Solution()``); the answers come back as :attr:`Result.outputs`. ``judge`` is test code
    run in the judge process after ``judge_setup`` (trusted helpers, e.g. HumanEval's prompt),
    with ``candidate`` and ``entry_point`` calling into the program. With none of
    ``calls``/``judge``/``expected_stdout``, a run passes when it exits with status 0.
    """

    source: str
    stdin: str = ""
    expected_stdout: str | None = None
    calls: tuple[tuple[str, tuple, dict], ...] = ()
    judge: str | None = None
    judge_setup: str = ""
    entry_point: str = ""


@dataclass(frozen=True)
class CallError:
    """A call that raised in the program (never equal to any expected value)."""

    message: str


@dataclass(frozen=True)
class Result:
    status: str  # one of STATUSES
    reason: str
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    outputs: tuple = ()  # answers to Program.calls: plain values or CallError

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# --- the wire format: plain data only ------------------------------------------------------------
# These two functions also run inside the sandboxed processes (shipped as source), so they use
# builtins only. Objects are tags; a bare JSON value is None/bool/int/float/str or a list.

def encode(value, depth=0):
    """``value`` as JSON-ready plain data; raises TypeError for anything else."""
    if depth > 100:
        raise TypeError("nested deeper than 100 levels")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    for base, tag in ((tuple, "tuple"), (set, "set"), (frozenset, "frozenset")):
        if kind is base:
            return {tag: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if kind in (bytes, bytearray):
        return {"bytes": bytes(value).hex()}
    # subclasses (namedtuple, defaultdict, IntEnum, a str with a custom __eq__ ...) leave as the
    # builtin value they hold: their methods stay behind, so they cannot pretend to be equal
    for base in (bool, int, float, str, list, tuple, dict, set, frozenset):
        if isinstance(value, base):
            plain = base(value.items()) if base is dict else base(value)
            if type(plain) is base:
                return encode(plain, depth + 1)
    raise TypeError(f"returned a {kind.__name__}, not plain data")


def decode(data):
    """Inverse of :func:`encode`; anything else raises ValueError."""
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(v) for v in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag in ("tuple", "set", "frozenset") and type(body) is list:
            return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](decode(v) for v in body)
        if tag == "dict" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k): decode(v) for k, v in body}
        if tag == "complex" and type(body) is list and len(body) == 2 and all(type(x) is float for x in body):
            return complex(body[0], body[1])
        if tag == "bytes" and type(body) is str:
            return bytes.fromhex(body)
    raise ValueError(f"not plain data: {str(data)[:80]}")


CODEC = inspect.getsource(encode) + "\n" + inspect.getsource(decode)

# --- code that runs inside the sandbox -----------------------------------------------------------
# LAUNCH runs first, before any untrusted code: rlimits, OOM score, Landlock; then it replaces
# itself (execv) with a fresh interpreter running HARNESS or JUDGE, so nothing it loaded
# (ctypes) is left in the process the program runs in.
LAUNCH = r"""
import json, os, resource, struct, sys
config = json.loads(sys.argv[1])
for name, soft, hard in config["rlimits"]:
    resource.setrlimit(getattr(resource, name), (soft, hard))
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("1000")
abi = config["landlock"]
if abi:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    def call(*args):
        result = libc.syscall(*args)
        if result < 0:
            raise OSError(ctypes.get_errno(), f"landlock syscall {args[0]} failed")
        return result
    fs = (1 << 13) - 1 | (abi >= 2) << 13 | (abi >= 3) << 14 | (abi >= 5) << 15
    attr = struct.pack("QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = call(444, ctypes.c_char_p(attr), size, 0)
    file_rights = 1 | 2 | 4 | 1 << 14 | 1 << 15
    for path, rights in config["rules"]:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            rights &= file_rights
        call(445, ruleset, 1, ctypes.c_char_p(struct.pack("=Qi", rights & fs, fd)), 0)
        os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    call(446, ruleset, 0)
os.execv(sys.executable, [sys.executable, "-I", "-S", "-B", "-c", config["code"]] + config["args"])
"""

# The program's process: guard, then the program as __main__, then answer calls until EOF.
HARNESS = CODEC + r"""
import sys

def _install_guard():
    import posix
    getcwd, readlink, stat_, fspath = posix.getcwd, posix.readlink, posix.stat, posix.fspath
    isinstance_, str_, bytes_, int_, len_, any_ = isinstance, str, bytes, int, len, any
    PermissionError_, ImportError_ = PermissionError, ImportError
    root = getcwd()
    denied = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                        "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.Popen", "os.symlink",
                        "os.link", "os.chroot", "socket.__new__", "socket.bind", "socket.connect",
                        "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "gc.get_objects",
                        "gc.get_referrers", "gc.get_referents", "sys.addaudithook"})
    denied_modules = frozenset({"ctypes", "_ctypes", "socket", "_socket", "subprocess", "_posixsubprocess",
                                "multiprocessing", "_multiprocessing", "pty", "ssl", "_ssl"})
    # event -> (indices of path arguments, index of each one's dir_fd argument or None)
    writes = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
              "os.mkdir": ((0, 2),), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
              "os.truncate": ((0, None),), "os.utime": ((0, 3),), "shutil.rmtree": ((0, 1),),
              "os.setxattr": ((0, None),), "os.removexattr": ((0, None),)}
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_APPEND | posix.O_TRUNC

    def absolute(path, dir_fd):
        # the lexical absolute path; exact because the program cannot create symlinks
        if isinstance_(path, int_):
            return None
        path = fspath(path)
        if isinstance_(path, bytes_):
            path = path.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            base = getcwd() if dir_fd is None or dir_fd == -1 else readlink(f"/proc/self/fd/{dir_fd}")
            path = base + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        return "/" + "/".join(parts)

    def inside(path):
        return path is None or path == root or path.startswith(root + "/")

    def hook(event, args):
        if event in denied:
            raise PermissionError_(f"sandbox: {event} is not allowed")
        if event == "import":
            if any_(part in denied_modules for part in str_(args[0]).split(".")):
                raise ImportError_(f"sandbox: import of {args[0]} is not allowed")
        elif event == "open":
            path, mode, flags = args
            full = absolute(path, None)
            if full is not None:
                parts = full.split("/")
                if len_(parts) > 2 and parts[1] == "proc" and (parts[2].isdigit() or "self" in parts[2]) \
                        and parts[3:4] != ["fd"]:
                    raise PermissionError_("sandbox: /proc/<pid> is not readable")
            if ((flags or 0) & write_flags or any_(c in str_(mode or "") for c in "wax+")) and not inside(full):
                raise PermissionError_(f"sandbox: writing outside the sandbox: {path!r}")
            if not inside(full):
                try:
                    is_dir = stat_(full).st_mode & 0o170000 == 0o040000
                except OSError:
                    is_dir = False
                if is_dir:
                    raise PermissionError_(f"sandbox: opening a directory outside the sandbox: {path!r}")
        elif event in writes:
            for path_index, fd_index in writes[event]:
                dir_fd = args[fd_index] if fd_index is not None and fd_index < len_(args) else None
                if path_index < len_(args) and not inside(absolute(args[path_index], dir_fd)):
                    raise PermissionError_(f"sandbox: {event} outside the sandbox")

    sys.addaudithook(hook)


def _main():
    import json, os, types
    calls_fd, answers_fd = int(sys.argv[1]), int(sys.argv[2])
    del sys.argv[1:]
    sys.argv[0] = "main.py"
    with open("main.py", encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec")
    _install_guard()
    module = types.ModuleType("__main__")
    module.__file__ = "main.py"
    sys.modules["__main__"] = module
    exec(code, module.__dict__)
    if calls_fd < 0:
        return
    sys.stdout.flush()
    with os.fdopen(calls_fd, "rb") as calls, os.fdopen(answers_fd, "wb", buffering=0) as answers:
        for line in calls:
            name, args, kwargs = json.loads(line)
            try:
                function = module.__dict__.get(name)
                if not callable(function):
                    function = getattr(module.__dict__["Solution"](), name)
                answer = ["ok", encode(function(*decode(args), **decode(kwargs)))]
            except Exception as err:
                answer = ["error", f"{type(err).__name__}: {err}"[:1000]]
            answers.write(json.dumps(answer).encode() + b"\n")

_main()
"""

# The judge's process: trusted test code; `candidate`/entry point are proxies into the program.
JUDGE = CODEC + r"""
import sys

def _main():
    import json, os, resource
    calls = os.fdopen(int(sys.argv[1]), "wb", buffering=0)
    answers = os.fdopen(int(sys.argv[2]), "rb")
    cap = int(sys.argv[3])
    for name, soft, hard in json.loads(sys.argv[4]):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    setup, test, entry = json.loads(sys.stdin.read())

    class ProgramError(Exception):
        pass

    def candidate(*args, **kwargs):
        calls.write(json.dumps([entry, encode(list(args)), encode(kwargs)]).encode() + b"\n")
        line = answers.readline(cap)
        if not line.endswith(b"\n"):
            raise ProgramError("the program stopped answering (it exited, crashed or flooded)")
        kind, value = json.loads(line)
        if kind == "ok":
            return decode(value)
        raise ProgramError(f"the program raised {value}")

    namespace = {"__name__": "__judge__"}
    exec(compile(setup, "setup.py", "exec"), namespace)
    namespace["candidate"] = namespace[entry] = candidate
    exec(compile(test, "test.py", "exec"), namespace)

_main()
"""


# --- running ---------------------------------------------------------------------------------------

@dataclass
class _Layers:
    python: str
    uid: int | None  # run the program as this uid (root callers only)
    namespaces: bool
    landlock: int  # Landlock ABI in use, 0 = none


@dataclass
class _Process:
    proc: subprocess.Popen
    workdir: str
    reads: list[int] = field(default_factory=list)


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when absent), asked through landlock_create_ruleset."""
    if sys.platform != "linux":
        return 0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return max(0, int(libc.syscall(444, None, 0, 1)))  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0


def _landlock_rules(python: str, workdir: str) -> list[tuple[str, int]]:
    """Read-only system and interpreter directories, /proc, /dev/null; everything beneath workdir."""
    read = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    system = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", prefix]
    return [(path, read) for path in system] + [("/dev/null", 2 | 4 | 1 << 14), ("/dev/urandom", 4),
                                                (workdir, (1 << 16) - 1)]


def _rlimits(limits: Limits) -> list[tuple[str, int, int]]:
    return [("RLIMIT_CORE", 0, 0), ("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
            ("RLIMIT_AS", limits.memory_bytes, limits.memory_bytes),
            ("RLIMIT_FSIZE", limits.file_size_bytes, limits.file_size_bytes),
            ("RLIMIT_NOFILE", limits.open_files, limits.open_files),
            ("RLIMIT_NPROC", limits.processes, limits.processes)]


def _spawn(layers: _Layers, code: str, args: list[str], untrusted: bool, limits: Limits,
           pass_fds: tuple[int, ...], stdin: bool, files: dict[str, str] | None = None) -> _Process:
    """Start an interpreter running ``code`` in a fresh working directory holding ``files``.

    An ``untrusted`` one gets every OS layer of ``layers`` through LAUNCH; the judge (trusted
    test code that only receives data) keeps the caller's uid and sets its own rlimits.
    """
    workdir = tempfile.mkdtemp(prefix="bgpo-sandbox-")
    try:
        uid = layers.uid if untrusted else None
        for name, text in (files or {}).items():
            with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                f.write(text)
            if uid is not None:
                os.chown(os.path.join(workdir, name), uid, uid)
        if uid is not None:
            os.chown(workdir, uid, uid)
        if untrusted:
            config = {"rlimits": _rlimits(limits), "landlock": layers.landlock, "code": code, "args": args,
                      "rules": _landlock_rules(layers.python, workdir)}
            command = [layers.python, "-I", "-S", "-B", "-c", LAUNCH, json.dumps(config)]
            if layers.namespaces:
                command = UNSHARE + command
        else:
            command = [layers.python, "-I", "-S", "-B", "-c", code, *args]
        env = {"PATH": os.defpath, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "BGPO_SANDBOX": "1"}
        ids = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
                                start_new_session=True, **ids)
    except BaseException:
        remove_tree(workdir)
        raise
    return _Process(proc, workdir, [proc.stdout.fileno(), proc.stderr.fileno()])


def _execute(program: Program, limits: Limits, layers: _Layers) -> Result:
    """One program (and its judge), start to reaped; the caller makes sure this never raises."""
    start = time.monotonic()
    processes: list[_Process] = []
    fds: list[int] = []  # our ends and not-yet-handed-over ends, closed at the end

    def pipe() -> tuple[int, int]:
        r, w = os.pipe()
        fds.extend((r, w))
        return r, w

    def close(fd: int) -> None:
        if fd in fds:
            fds.remove(fd)
            os.close(fd)

    try:
        writes: dict[int, bytes] = {}
        answers_fd = -1
        if program.judge is not None:
            calls_r, calls_w = pipe()
            answers_r, answers_w = pipe()
            judge_in = json.dumps([program.judge_setup, program.judge, program.entry_point]).encode()
            judge = _spawn(layers, JUDGE, [str(calls_w), str(answers_r), str(limits.output_bytes),
                                           json.dumps(_rlimits(limits))], False, limits, (calls_w, answers_r), stdin=True)
            processes.append(judge)
            user = _spawn_program(program, layers, limits, [str(calls_r), str(answers_w)], (calls_r, answers_w))
            for fd in (calls_r, calls_w, answers_r, answers_w):
                close(fd)
            writes[_stdin(judge)] = judge_in
        elif program.calls:
            calls_r, calls_w = pipe()
            answers_r, answers_w = pipe()
            user = _spawn_program(program, layers, limits, [str(calls_r), str(answers_w)], (calls_r, answers_w))
            close(calls_r)
            close(answers_w)
            fds.remove(calls_w)  # handed to _communicate, which closes it after the last call
            writes[calls_w] = b"".join(json.dumps([n, encode(list(a)), encode(dict(k))]).encode() + b"\n"
                                       for n, a, k in program.calls)
            answers_fd = answers_r
            user.reads.append(answers_r)
        else:
            user = _spawn_program(program, layers, limits, ["-1", "-1"], ())
        processes.insert(0, user)
        if program.stdin:
            writes[_stdin(user)] = program.stdin.encode()
        for p in processes:  # stdin that carries nothing: EOF now
            if p.proc.stdin is not None and not p.proc.stdin.closed:
                p.proc.stdin.close()
        read_fds = [fd for p in processes for fd in p.reads]
        data, over = _communicate(writes, read_fds, [p.proc for p in processes], start + limits.wall_seconds,
                                  limits.output_bytes)
    except OSError as err:
        return Result("crashed", f"could not start the program: {err}", seconds=time.monotonic() - start)
    finally:
        for p in processes:
            _kill_group(p.proc)
        for fd in list(fds):
            close(fd)
        for p in processes:
            remove_tree(p.workdir)
    seconds = time.monotonic() - start
    text = {fd: raw.decode("utf-8", "replace") for fd, raw in data.items()}
    out, err = text[user.reads[0]], text[user.reads[1]]

    def result(status: str, reason: str, outputs: tuple = ()) -> Result:
        return Result(status, reason, out, err, user.proc.returncode, seconds, outputs)

    if over == "timeout":
        return result("timeout", f"still running after {limits.wall_seconds:g} s wall time")
    if over == "output":
        return result("limit", f"more than {limits.output_bytes} bytes of output")
    verdict = _classify(user.proc.returncode, err, limits)
    if program.judge is not None:
        judge = processes[1]
        judge_err = text[judge.reads[1]]
        if judge.proc.returncode == 0:
            return result("passed", "the judge's tests passed")
        if verdict is not None and verdict[0] != "failed":
            return result(*verdict)
        lines = judge_err.strip().splitlines()
        return result("failed", f"judge: {lines[-1] if lines else f'exit status {judge.proc.returncode}'}")
    if verdict is not None:
        return result(*verdict)
    if program.calls:
        outputs = _answers(data[answers_fd], len(program.calls))
        if outputs is None:
            return result("failed", "answers are not one line of plain data per call")
        errors = [(call, o) for call, o in zip(program.calls, outputs) if isinstance(o, CallError)]
        if errors:
            (name, args, _), error = errors[0]
            return result("failed", f"{name}{tuple(args)!r} raised {error.message}"[:500], outputs)
        return result("passed", "answered every call", outputs)
    if program.expected_stdout is not None and _normalise_output(out) != _normalise_output(program.expected_stdout):
        return result("failed", "wrong output")
    return result("passed", "ran to the end")


def _spawn_program(program: Program, layers: _Layers, limits: Limits, args: list[str],
                   pass_fds: tuple[int, ...]) -> _Process:
    """The untrusted process: its source as main.py in its working directory, run by HARNESS."""
    return _spawn(layers, HARNESS, args, True, limits, pass_fds, stdin=bool(program.stdin),
                  files={"main.py": program.source})


def _stdin(process: _Process) -> int:
    """The process's stdin as a bare fd that :func:`_communicate` owns (and closes)."""
    fd = os.dup(process.proc.stdin.fileno())
    process.proc.stdin.close()
    return fd


def _answers(raw: bytes, count: int) -> tuple | None:
    """Decoded answers, one per call, or None when the stream is not exactly that."""
    lines = raw.split(b"\n")
    if len(lines) != count + 1 or lines[-1]:
        return None
    outputs = []
    try:
        for line in lines[:-1]:
            kind, value = json.loads(line)
            if kind == "ok":
                outputs.append(decode(value))
            elif kind == "error" and type(value) is str:
                outputs.append(CallError(value))
            else:
                return None
    except (ValueError, TypeError, RecursionError):
        return None
    return tuple(outputs)


def _classify(returncode: int | None, err: str, limits: Limits) -> tuple[str, str] | None:
    """(status, reason) for a program that did not exit cleanly, else None."""
    last_line = err.strip().splitlines()[-1] if err.strip() else ""
    if UNSHARE_SIGKILL in err:
        # `unshare --fork` re-raises its child's fatal signal on itself; for SIGKILL (the hard CPU
        # limit; our own timeout kill is reported before) that fails with this message and exit 1
        return "limit", f"killed by SIGKILL (CPU limit {limits.cpu_seconds} s)"
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "limit", f"killed by {sig.name} (CPU limit {limits.cpu_seconds} s)"
        if sig == signal.SIGXFSZ:
            return "limit", f"wrote a file over {limits.file_size_bytes} bytes"
        return "crashed", f"killed by {sig.name}"
    if "File too large" in last_line:  # Python ignores SIGXFSZ, so the write fails with EFBIG
        return "limit", f"wrote a file over {limits.file_size_bytes} bytes"
    if "MemoryError" in last_line:
        return "limit", f"out of memory ({limits.memory_bytes} bytes address space)"
    if returncode != 0:
        return "failed", last_line or f"exit status {returncode}"
    return None


def _normalise_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _communicate(writes: dict[int, bytes], reads: list[int], procs: list[subprocess.Popen], deadline: float,
                 cap: int) -> tuple[dict[int, bytes], str]:
    """Feed ``writes``, collect ``reads`` until every stream ends and ``procs`` exit.

    Stops at the deadline or once more than ``cap`` bytes came in. Returns (data per read fd,
    over) with over in {"", "timeout", "output"}. It owns the write fds: each is closed once its
    data is written (the reader sees EOF), and all of them on the way out.
    """
    chunks: dict[int, list[bytes]] = {fd: [] for fd in reads}
    pending = {fd: memoryview(data) for fd, data in writes.items()}
    try:
        over = _pump(pending, chunks, deadline, cap)
    finally:
        for fd in pending:  # those _pump has not finished (and closed) yet
            os.close(fd)
    for proc in procs:
        if not over:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                over = "timeout"
    return {fd: b"".join(c) for fd, c in chunks.items()}, over


def _pump(pending: dict[int, memoryview], chunks: dict[int, list[bytes]], deadline: float, cap: int) -> str:
    """The select loop of :func:`_communicate`; returns "", "timeout" or "output"."""
    total, over = 0, ""
    with selectors.DefaultSelector() as sel:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        for fd in pending:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_WRITE)
        while sel.get_map() and not over:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                over = "timeout"
                break
            for key, _ in sel.select(timeout=remaining):
                fd = key.fd
                if fd in pending:
                    try:
                        pending[fd] = pending[fd][os.write(fd, pending[fd][:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the reader is gone: nothing more to say
                        pending[fd] = pending[fd][:0]
                    if not pending[fd]:
                        sel.unregister(fd)
                        os.close(fd)
                        del pending[fd]
                    continue
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    continue
                chunks[fd].append(data)
                total += len(data)
                if total > cap:
                    over = "output"
                    break
    return over


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process's whole group and reap it (always, even after a clean exit)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def remove_tree(path: str) -> None:
    """Delete ``path`` whatever a program left in it, never raising.

    Iterative and flat: each directory's subdirectories are first moved up into the top one, so
    depth costs neither recursion nor long paths; directories are made writable before they are
    emptied, and FIFOs and sockets are unlinked, never opened.
    """
    try:
        os.chmod(path, stat.S_IRWXU, follow_symlinks=False)
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except (OSError, NotImplementedError):  # gone already, or no lchmod on this platform
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


def _remove_entry(top: int, name: str, fresh: Iterator[str]) -> None:
    """Remove entry ``name`` of ``top``; a directory's subdirectories are moved up into ``top``."""
    if not stat.S_ISDIR(os.lstat(name, dir_fd=top).st_mode):
        os.unlink(name, dir_fd=top)
        return
    os.chmod(name, stat.S_IRWXU, dir_fd=top)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
    try:
        for child in os.listdir(fd):
            if stat.S_ISDIR(os.lstat(child, dir_fd=fd).st_mode):
                os.rename(child, next(fresh), src_dir_fd=fd, dst_dir_fd=top)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=top)


@lru_cache(maxsize=1)
def _layers() -> _Layers:
    """The strongest layers that run a trivial program on this machine (probed once)."""
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    namespaces = shutil.which("unshare") is not None
    landlock = _landlock_abi()
    pythons = [sys.executable]
    if root:
        pythons += [p for p in (shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin"),) if p]
    probe = Program("import sys\nprint('ok', sys.version_info >= (3, 8))", expected_stdout="ok True")
    candidates = [_Layers(python, uid, ns, ll)
                  for uid in ((NOBODY, None) if root else (None,))
                  for python in pythons
                  for ns in ((True, False) if namespaces else (False,))
                  for ll in ((landlock, 0) if landlock else (0,))]
    for layers in candidates:
        if _execute(probe, Limits(), layers).passed:
            return layers
    return _Layers(sys.executable, None, False, 0)


def isolation() -> dict[str, Any]:
    """Which OS layers hold on this machine: interpreter, uid, namespaces, Landlock ABI (0 = none)."""
    layers = _layers()
    return {"python": layers.python, "uid": layers.uid, "namespaces": layers.namespaces,
            "landlock": layers.landlock}


def run(program: Program | str, limits: Limits = Limits()) -> Result:
    """Run one program in the sandbox; never raises (a sandbox failure is a ``crashed`` result)."""
    if isinstance(program, str):
        program = Program(program)
    try:
        layers = _layers()
        if layers.uid is None and hasattr(os, "geteuid") and os.geteuid() == 0:
            return Result("crashed", "refusing to run untrusted code as root: no Python interpreter that 'nobody' "
                                     "can execute was found; install python3 system-wide or run as a normal user")
        return _execute(program, limits, layers)
    except Exception as err:  # the caller must never see an exception from untrusted code
        return Result("crashed", f"sandbox error: {type(err).__name__}: {err}")


def run_many(programs: Sequence[Program | str], limits: Limits = Limits(),
             workers: int | None = None) -> list[Result]:
    """Run programs concurrently on a bounded pool of threads (each waits on its own processes)."""
    workers = workers or min(16, 2 * (os.cpu_count() or 1))  # programs mostly wait: 2 per core
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run(p, limits), programs))
