"""One run, start to provably over: the program's process, its judge, the pipes between them, the verdict.

Threat model: the caller (the trainer) must never raise, hang or slow down because of a program.
It never decodes anything the program made: it moves bytes between pipes with a cap on their total,
stops at the run's wall-clock deadline, and reads only exit statuses -- the judge's (trusted code,
the verdict) and the program's (which can only choose among ways to fail). The program's stdout
decides a verdict only for stdio tests; its stderr never does.
"""

from __future__ import annotations

import marshal
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from bgpo.sandbox import bwrap, cgroup, forkserver, host, seccomp, shipped
from bgpo.sandbox.harness import FILE_TOO_LARGE, MEMORY_ERROR
from bgpo.sandbox.wire import encode

STATUSES = ("passed", "failed", "timeout", "crashed", "limit")


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (defaults suit HumanEval/MBPP-size tests)."""

    cpu_seconds: int = 5  # per process (RLIMIT_CPU)
    wall_seconds: float = 10.0  # the whole run, judge included
    memory_bytes: int = 1 << 30  # the program and its judge (cgroup); the program's RLIMIT_AS without one
    file_size_bytes: int = 1 << 20  # largest file it may write (RLIMIT_FSIZE)
    disk_bytes: int = 32 << 20  # all its files together (its tmpfs)
    processes: int = 64  # threads of the run, judge included (pids cgroup; a run has one process)
    open_files: int = 64
    # output kept (stdout, stderr; a stdio run's stdout up to twice the expected); more ends the run. A judged
    # program's output past a budget is dropped in the sandbox; its answers are capped by the judge's memory
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class Program:
    """Source to run and what to judge it by.

    ``judge`` is test code the judge runs after ``judge_setup`` (trusted helpers, e.g. HumanEval's
    prompt), with the program's functions and classes -- and ``candidate``, the ``entry_point`` --
    as proxies into the program. ``checks`` are ``(name, args, kwargs, accepted)``: the judge calls
    ``name`` (a function of the program or a method of its ``Solution()``) and the answer must equal
    one of ``accepted``, values the program never sees. ``expected_stdout`` makes a stdio test
    (the program runs as ``__main__`` with ``stdin``). With none of them, a run passes when it
    exits with status 0.
    """

    source: str
    stdin: str = ""
    expected_stdout: str | None = None
    checks: tuple[tuple[str, tuple, dict, tuple], ...] = ()
    judge: str | None = None
    judge_setup: str = ""
    entry_point: str = ""

    @property
    def judged(self) -> bool:
        return self.judge is not None or bool(self.checks)


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


def _refuse(value: object) -> dict:
    raise TypeError(f"a {type(value).__name__} in a check is not plain data")


def _execute(program: Program, limits: Limits, chosen: bwrap.Isolation) -> Result:
    """One program (and its judge), start to provably over; the caller makes sure this never raises."""
    start = time.monotonic()
    deadline = start + limits.wall_seconds
    expected = len(program.expected_stdout.encode()) if program.expected_stdout else 0
    cap = max(limits.output_bytes, 2 * expected)  # a stdio answer may be as long as the expected one
    fds: list[int] = []
    run: bwrap.Sandboxed | None = None
    judge: forkserver.ForkedJudge | subprocess.Popen | None = None
    sandboxed = chosen.bwrap is not None

    def pipe() -> tuple[int, int]:
        r, w = os.pipe()
        fds.extend((r, w))
        return r, w

    def close(*ends: int) -> None:
        for fd in ends:
            fds.remove(fd)
            os.close(fd)

    try:
        boot_r, boot_w = pipe()
        harness = {"path": [bwrap.SITE] if sandboxed else bwrap.site_paths(), "cap": limits.output_bytes,
                   "requests": -1, "replies": -1, "writable": [bwrap.WORKDIR] if sandboxed else []}
        writes: dict[int, bytes] = {}
        program_fds: tuple[int, ...] = ()
        if program.judged:
            requests_r, requests_w = pipe()
            replies_r, replies_w = pipe()
            harness |= {"requests": requests_r, "replies": replies_w}
            program_fds = (requests_r, replies_w)
        python = bwrap.interpreter()
        if sandboxed:
            run = bwrap.start(python, limits, boot_r, program_fds, bool(program.stdin),
                                  cgroup.bases() if chosen.cgroup else None, deadline)
        else:
            run = host.start(python, boot_r, program_fds, bool(program.stdin))
            harness["writable"] = [run.host_dir]
        code = shipped.compiled("harness.py")  # the interpreter is ours (its base): same version
        uid = bwrap.NOBODY if sandboxed and os.geteuid() == 0 else None
        close(boot_r, *program_fds)
        fds.remove(boot_w)
        writes[boot_w] = marshal.dumps(bwrap.boot(limits, program.source, harness, code, run.cgroup is not None,
                                                      uid))
        if program.judged:
            judge = _start_judge(requests_w, replies_r)
            close(requests_w, replies_r)
            if run.cgroup is not None:
                run.cgroup.add(judge.pid)  # before it reads any answer: its memory is the run's
            forked = isinstance(judge, forkserver.ForkedJudge)
            config = {
                "path": bwrap.site_paths(), "cap": limits.output_bytes, "requests": 3 if forked else requests_w,
                "replies": 4 if forked else replies_r, "setup": program.judge_setup, "test": program.judge,
                "entry_point": program.entry_point, "checks": encode(list(program.checks), _refuse),
                "rlimits": [("RLIMIT_CPU", limits.cpu_seconds, limits.cpu_seconds + 1),
                            ("RLIMIT_AS", max(limits.memory_bytes, 1 << 30), max(limits.memory_bytes, 1 << 30))]}
            writes[_stdin(judge)] = marshal.dumps(config if forked else (shipped.compiled("judge.py"), config))
        if program.stdin:
            writes[_stdin(run.proc)] = program.stdin.encode()
        judge_reads = [judge.stdout.fileno(), judge.stderr.fileno()] if judge else []
        data, over = _communicate(writes, run.reads + judge_reads, judge_reads or run.reads, deadline,
                                  cap)
        decisive = judge or run.proc
        if not over:
            try:
                decisive.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                over = "timeout"
        program_status = run.proc.poll()
        oom = run.cgroup is not None and run.cgroup.oom_killed()
    except OSError as err:
        return Result("crashed", f"could not start the program: {err}", seconds=time.monotonic() - start)
    finally:
        if judge is not None:
            _end_judge(judge)
        gone = True if run is None else bwrap.end(run) if sandboxed else host.end(run)
        for fd in list(fds):
            close(fd)
    seconds = time.monotonic() - start
    out, err = (data[fd].decode("utf-8", "replace") for fd in run.reads)

    def result(status: str, reason: str) -> Result:
        return Result(status, reason, out, err, program_status, seconds)

    if not gone:
        return result("crashed", "the run's processes could not be proven dead")
    if over == "timeout":
        return result("timeout", f"still running after {limits.wall_seconds:g} s wall time")
    if over == "output":
        return result("limit", f"more than {cap} bytes of output")
    verdict = _classify(program_status, oom, limits)
    if judge is not None:
        if judge.returncode == 0:
            return result("passed", "the judge's tests passed")
        if verdict is not None and verdict[0] != "failed":
            return result(*verdict)
        lines = data[judge_reads[1]].decode("utf-8", "replace").strip().splitlines()
        return result("failed", f"judge: {lines[-1][:500] if lines else f'exit status {judge.returncode}'}")
    if verdict is not None:
        return result(*verdict)
    if program.expected_stdout is not None and _normalise_output(out) != _normalise_output(program.expected_stdout):
        return result("failed", "wrong output")
    return result("passed", "ran to the end")


# the judge's code (marshalled, see shipped.compiled) and its configuration come on stdin, marshalled
# together: plain data from the caller, so no file and no json/re import
JUDGE_BOOT = ("import marshal, sys\ncode, config = marshal.loads(sys.stdin.buffer.read())\n"
              "namespace = {'__name__': 'bgpo_judge'}\nexec(marshal.loads(code), namespace)\n"
              "namespace['_main'](config)")


def _start_judge(requests_w: int, replies_r: int) -> forkserver.ForkedJudge | subprocess.Popen:
    """The judge: the caller's interpreter and uid, its own session, its test code from stdin.

    A fork of the judge server (:mod:`bgpo.sandbox.forkserver`; ``requests_w``/``replies_r`` become
    its fds 3 and 4), else a new interpreter that also reads its code from stdin."""
    if forkserver.available():
        child: list[int] = []
        ours: list[int] = []
        try:
            for _ in range(3):
                r, w = os.pipe()
                child.append(r if not ours else w)
                ours.append(w if not ours else r)
            judge = forkserver.server().spawn([*child, requests_w, replies_r], tuple(ours))
            ours = []
            return judge
        except OSError:
            pass
        finally:
            for fd in child + ours:
                os.close(fd)
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", JUDGE_BOOT],
                            env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=(requests_w, replies_r), start_new_session=True, cwd="/")


def _end_judge(judge: forkserver.ForkedJudge | subprocess.Popen) -> None:
    if isinstance(judge, forkserver.ForkedJudge):
        judge.end()
        return
    try:
        os.killpg(judge.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    judge.wait()
    for stream in (judge.stdin, judge.stdout, judge.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def _stdin(proc: subprocess.Popen) -> int:
    """The process's stdin as a bare fd that :func:`_communicate` owns (and closes)."""
    fd = os.dup(proc.stdin.fileno())
    proc.stdin.close()
    return fd


def _classify(returncode: int | None, oom: bool, limits: Limits) -> tuple[str, str] | None:
    """(status, reason) for a program that did not exit cleanly, else None; never reads its output.

    bwrap exits with its program's status, and with 128 + N when signal N killed it."""
    if oom or returncode == MEMORY_ERROR:
        return "limit", f"out of memory ({limits.memory_bytes} bytes)"
    if returncode == FILE_TOO_LARGE:
        return "limit", f"wrote a file over {limits.file_size_bytes} bytes"
    if returncode is not None and 128 < returncode < 128 + signal.NSIG:
        returncode = 128 - returncode
    if returncode is not None and returncode < 0:
        sig = signal.Signals(-returncode)
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "limit", f"killed by {sig.name} (CPU limit {limits.cpu_seconds} s)"
        if sig == signal.SIGXFSZ:
            return "limit", f"wrote a file over {limits.file_size_bytes} bytes"
        return "crashed", f"killed by {sig.name}"
    if returncode not in (0, None):
        return "failed", f"exit status {returncode}"
    return None


def _normalise_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _communicate(writes: dict[int, bytes], reads: list[int], decisive: list[int], deadline: float,
                 cap: int) -> tuple[dict[int, bytes], str]:
    """Feed ``writes`` and collect ``reads`` until every ``decisive`` stream has ended.

    Stops at the deadline or once more than ``cap`` bytes came in. Returns (data per read fd, over)
    with over in {"", "timeout", "output"}. It owns the write fds: each is closed once its data is
    written (the reader sees EOF), and all of them on the way out.
    """
    chunks: dict[int, list[bytes]] = {fd: [] for fd in reads}
    pending = {fd: memoryview(data) for fd, data in writes.items()}
    open_decisive = set(decisive)
    total, over = 0, ""
    try:
        with selectors.DefaultSelector() as sel:
            for fd in reads:
                sel.register(fd, selectors.EVENT_READ)
            for fd in pending:
                os.set_blocking(fd, False)
                sel.register(fd, selectors.EVENT_WRITE)
            while open_decisive and not over:
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
                        open_decisive.discard(fd)
                        continue
                    chunks[fd].append(data)
                    total += len(data)
                    if total > cap:
                        over = "output"
                        break
    finally:
        for fd in pending:  # those not finished (and closed) yet
            os.close(fd)
    return {fd: b"".join(c) for fd, c in chunks.items()}, over


@lru_cache(maxsize=1)
def chosen() -> bwrap.Isolation:
    """The sandbox this machine gives (probed once): bubblewrap with a cgroup per run where one can be
    made, else without; or no sandbox and the one line that says why and how to fix it."""
    binary, version = bwrap.bwrap_binary()
    if binary is None:
        return bwrap.Isolation(None, problem=version)
    try:
        seccomp.program()
    except OSError as err:
        return bwrap.Isolation(None, problem=f"{err}; {bwrap.OPT_OUT}")
    trivial = Program("import sys\nprint('ok', sys.version_info >= (3, 8))", expected_stdout="ok True")
    stderr = ""
    for with_cgroup in ((True, False) if cgroup.bases() else (False,)):
        candidate = bwrap.Isolation(binary, version, with_cgroup)
        result = _execute(trivial, Limits(), candidate)
        if result.passed:
            return candidate
        stderr = result.stderr or result.reason
    return bwrap.Isolation(None, problem=bwrap.problem(stderr))


def isolation_report() -> dict[str, Any]:
    """What isolates a run here (bubblewrap, namespaces, seccomp, uid, cgroup), or why nothing does."""
    return chosen().report()


def require() -> bool:
    """True when programs run sandboxed here; False when the ``trusted-only`` policy lets them run on
    the host (warned once); raises :class:`~bgpo.sandbox.bwrap.IsolationUnavailable` otherwise."""
    return bwrap.require(chosen())


def isolation_line() -> str:
    """The same in one line, with no path of this machine (logs, ``bgpo doctor``)."""
    return bwrap.line(chosen())


def run(program: Program | str, limits: Limits = Limits()) -> Result:
    """Run one program in the sandbox. Never raises because of the program (a sandbox failure is a
    ``crashed`` result); raises :class:`~bgpo.sandbox.bwrap.IsolationUnavailable` when this
    machine cannot sandbox and the policy is ``required``."""
    if isinstance(program, str):
        program = Program(program)
    require()
    try:
        return _execute(program, limits, chosen())
    except Exception as err:  # the caller must never see an exception from untrusted code
        return Result("crashed", f"sandbox error: {type(err).__name__}: {err}")


def run_many(programs: Sequence[Program | str], limits: Limits = Limits(),
             workers: int | None = None) -> list[Result]:
    """Run programs concurrently on a bounded pool of threads (each waits on its own processes)."""
    # a run mostly waits (the judge and the program answer each other; the kernel tears namespaces down):
    # 4 per core keeps the cores busy (measured: 64 judged runs on 2 cores, 4.3 s with 4 workers, 2.8 s with 8)
    workers = workers or min(32, 4 * (os.cpu_count() or 1))
    require()  # refuses once, before any program runs
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run(p, limits), programs))
