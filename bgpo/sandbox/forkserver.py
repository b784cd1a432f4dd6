"""The judge's fork server: one trusted interpreter, started once, forks a fresh judge for every run.

Starting an interpreter costs each run ~7 ms of CPU, and a run starts two (the program's and
the judge's). The judge is trusted code with the caller's uid and no isolation of its
own to set up, so it need not be a new interpreter: the server (:func:`bgpo.sandbox.judge._serve`)
loads the judge's code once and forks per run. A fork of a process that has run nothing but that
loading starts in the same state a new interpreter would, and shares nothing with other runs; each
judge sets its own rlimits and session, as before.

Threat model: unchanged for the judge (see :mod:`bgpo.sandbox.judge`). The server runs only
trusted code, reads only the caller's socket (never anything a program made), and closes that
socket and every other judge's pidfd in each fork. The caller ends a judge through a pidfd the
server hands over, never through a pid that could be reused; the verdict is the exit status the
server reports after reaping it (and killing whatever is left in its session). If the server
dies, every judge it has not reported is killed through its pidfd and has no exit status -- a
failed run, never a pass -- and the next run starts a new server. Forks share the server's
string-hash seed (ints, the equal-hash attack's keys, were never randomised; the wire's cap on
keys with one hash holds either way) and nothing else of note: ``random`` and the test's modules
are imported in each judge, never in the server. Where this cannot work (no
``pidfd_open``, no fd passing) each judge is a new interpreter (:func:`bgpo.sandbox.runner._start_judge`).
"""

from __future__ import annotations

import atexit
import itertools
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading

from bgpo.sandbox import shipped

BOOT = ("import marshal, sys\nnamespace = {'__name__': 'bgpo_judge'}\n"
        "exec(marshal.loads(sys.stdin.buffer.read()), namespace)\nnamespace['_serve'](int(sys.argv[1]))")
START_SECONDS = 10.0  # the most a request may wait for its judge to be forked


class ForkedJudge:
    """A judge forked by the server: what :mod:`bgpo.sandbox.runner` uses of a ``Popen``."""

    def __init__(self, server: _Server, pid: int, pidfd: int, stdin: int, stdout: int, stderr: int):
        self.server, self.pid, self.pidfd = server, pid, pidfd
        self.stdin, self.stdout, self.stderr = (os.fdopen(fd, mode, buffering=0)
                                                for fd, mode in ((stdin, "wb"), (stdout, "rb"), (stderr, "rb")))
        self.returncode: int | None = None
        self.exited = threading.Event()

    def wait(self, timeout: float | None = None) -> int | None:
        if not self.exited.wait(timeout):
            raise subprocess.TimeoutExpired("judge", timeout)
        return self.returncode

    def end(self, timeout: float = 10.0) -> None:
        """Kill it (through its pidfd) unless it has exited, wait for the server's report, close."""
        if not self.exited.is_set():
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.exited.wait(timeout)
        with self.server.lock:  # no one signals through this pidfd once it is closed
            self.server.judges.pop(self.pid, None)
        os.close(self.pidfd)
        for stream in (self.stdin, self.stdout, self.stderr):
            if not stream.closed:
                stream.close()


class _Server:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", "-c", BOOT, str(theirs.fileno())], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         pass_fds=(theirs.fileno(),), start_new_session=True, cwd="/")
        finally:
            theirs.close()
        try:
            self.proc.stdin.write(shipped.compiled("judge.py"))
            self.proc.stdin.close()
        except OSError:
            ours.close()
            self.proc.kill()
            self.proc.wait()
            raise
        self.socket, self.pid, self.dead = ours, os.getpid(), False
        self.lock = threading.Lock()
        self.tokens = itertools.count()
        self.starting: dict[int, list] = {}  # token -> [event, judge or None, the caller's fds]
        self.judges: dict[int, ForkedJudge] = {}  # pid -> judge not yet reported
        threading.Thread(target=self._read, name="bgpo-judge-server", daemon=True).start()

    def spawn(self, child_fds: list[int], our_fds: tuple[int, int, int]) -> ForkedJudge:
        """Fork a judge with ``child_fds`` (stdin, stdout, stderr, requests, replies) as its fds 0-4."""
        token = next(self.tokens)
        slot = [threading.Event(), None, our_fds]
        with self.lock:
            if self.dead:
                raise OSError("the judge server is gone")
            self.starting[token] = slot
        try:  # one message each, atomic on a SOCK_SEQPACKET socket: no lock needed to send
            socket.send_fds(self.socket, [marshal.dumps(token)], child_fds)
        except OSError:
            with self.lock:
                self.starting.pop(token, None)
            raise
        slot[0].wait(START_SECONDS)
        with self.lock:  # from here on the reader ends a judge that comes too late
            self.starting.pop(token, None)
            judge = slot[1]
        if judge is None:
            raise OSError("the judge server did not start a judge")
        return judge

    def _read(self) -> None:
        try:
            while True:
                message, fds, _, _ = socket.recv_fds(self.socket, 1024, 1)
                if not message:
                    break
                kind, key, value = marshal.loads(message)
                with self.lock:
                    if kind == "started":
                        slot = self.starting.pop(key, None)
                        if slot is None:  # its request gave up waiting: end it
                            signal.pidfd_send_signal(fds[0], signal.SIGKILL)
                            os.close(fds[0])
                            continue
                        judge = slot[1] = self.judges[value] = ForkedJudge(self, value, fds[0], *slot[2])
                        slot[0].set()
                    elif kind == "failed" and key in self.starting:  # no fork: spawn() raises
                        self.starting.pop(key)[0].set()
                    elif kind == "exit" and key in self.judges:
                        judge = self.judges.pop(key)
                        judge.returncode = value
                        judge.exited.set()
        except Exception:  # a malformed message: the server is not what it should be
            pass
        finally:  # the server is gone: no judge of it will be reported, none may pass
            with self.lock:
                self.dead = True
                for judge in self.judges.values():
                    try:
                        signal.pidfd_send_signal(judge.pidfd, signal.SIGKILL)
                    except OSError:
                        pass
                    judge.exited.set()
                for slot in self.starting.values():
                    slot[0].set()
                self.judges.clear()
                self.starting.clear()
            self.socket.close()
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()


_server: _Server | None = None
_server_lock = threading.Lock()


@atexit.register
def _stop() -> None:
    """At the caller's exit: the server reads EOF and exits, and the reader reaps it."""
    server = _server
    if server is not None and not server.dead and server.pid == os.getpid():
        try:
            server.socket.shutdown(socket.SHUT_RDWR)
            server.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass


def server() -> _Server:
    """This process's judge server, started (again) when there is none alive."""
    global _server
    with _server_lock:
        if _server is None or _server.dead or _server.pid != os.getpid():
            _server = _Server()
        return _server


def available() -> bool:
    return hasattr(os, "pidfd_open") and hasattr(socket, "send_fds") and hasattr(signal, "pidfd_send_signal")
