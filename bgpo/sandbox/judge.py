"""The trusted judge: runs the test code, with the program's module behind a proxy.

Shipped as source after :mod:`bgpo.sandbox.wire` and run by the caller's own interpreter (the
caller's uid, its site-packages): one process per run with CPU, memory and wall limits, forked by
the judge server (:func:`_serve`, :mod:`bgpo.sandbox.forkserver`) or else a new interpreter. Its
exit status is the verdict: 0 when every test passed.

Threat model: the judge runs only trusted code (the problem's setup and tests) and receives only
data from the program. A call, attribute access, iteration, ``len``/``in``/indexing or ``str`` of
the program's objects crosses as a request; the reply is rebuilt from the wire's whitelist of
standard value types, so ``==`` in the test always compares genuine values. Any other object stays
in the program as a :class:`Remote` handle: equal only to itself, no truth value, so no code of the
program ever decides an equality or an ``assert``. Exceptions of builtin types are raised here as
the same type (the test can expect them); arguments the program changed in place come back and
update the test's objects; callables the test passes become callbacks that run here. Decoding a
hostile answer can be slow (it is bounded by the wire), and that time is the run's: the caller
waits for this process only up to the run's wall time.
"""

import builtins
import sys

from bgpo.sandbox.wire import Channel, decode, encode  # shipped: wire.py's text replaces this line


class ProgramError(Exception):
    """The program raised an exception of its own type, or answered with something malformed."""


class Remote:
    """An object that lives in the program: every use of it is a request, its identity is its own."""

    __slots__ = ("_judge", "_id", "_type", "_kind")

    def __init__(self, judge, id_, type_name, kind):
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_id", id_)
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_kind", kind)

    def __call__(self, *args, **kwargs):
        return self._judge.call(self._id, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._judge.ask(["getattr", self._id, name])

    def __setattr__(self, name, value):
        self._judge.ask(["setattr", self._id, name, self._judge.out(value)])

    def __iter__(self):
        return self if self._kind == "iter" else self._judge.ask(["iter", self._id])

    def __next__(self):
        return self._judge.ask(["next", self._id])

    def __len__(self):
        return _typed(self._judge.ask(["len", self._id]), int)

    def __getitem__(self, key):
        return self._judge.ask(["getitem", self._id, self._judge.out(key)])

    def __contains__(self, item):
        return _typed(self._judge.ask(["contains", self._id, self._judge.out(item)]), bool)

    def __str__(self):
        return _typed(self._judge.ask(["str", self._id]), str)

    def __repr__(self):
        return f"<program {self._type} object>"

    def __bool__(self):
        raise TypeError(f"the truth of a program's {self._type} object is not decided by the program")

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


def _typed(value, kind):
    if type(value) is not kind:
        raise ProgramError(f"the program answered a {type(value).__name__} where a {kind.__name__} was due")
    return value


class Judge:
    """The judge's end of the wire: requests out, replies rebuilt, the test's callbacks served."""

    def __init__(self, channel_files, cap):
        self.channel = Channel(*channel_files, cap, self.serve)
        self.remotes, self.callbacks = {}, {}

    def out(self, value):
        return encode(value, self.reference)

    def reference(self, value):
        if isinstance(value, Remote):
            return {"h": value._id}
        if callable(value):
            self.callbacks[id(value)] = value
            return {"cb": id(value)}
        raise TypeError(f"a {type(value).__name__} cannot be sent to the program")

    def rebuild(self, tag, body):
        if tag == "h" and type(body) is list and len(body) == 3 and type(body[0]) is int:
            key, type_name, kind = body
            if key not in self.remotes:
                self.remotes[key] = Remote(self, key, str(type_name)[:100], kind)
            return self.remotes[key]
        if tag == "cb" and body in self.callbacks:
            return self.callbacks[body]
        raise ValueError("not tagged data")

    def ask(self, request):
        reply = self.channel.ask(request)
        if reply[0] == "ok":
            return decode(reply[1], self.rebuild)
        if reply[0] == "stop":
            raise StopIteration
        raise _exception(reply)

    def call(self, target, args, kwargs):
        reply = self.channel.ask(["call", target, [self.out(a) for a in args],
                                  [[k, self.out(v)] for k, v in kwargs.items()]])
        if reply[0] != "ok":
            raise _exception(reply)
        result = decode(reply[1], self.rebuild)
        for index, value in reply[2]:
            _update(args[index], decode(value, self.rebuild))
        return result

    def serve(self, request):
        """A callback the program calls: run it here, answer with its value or its exception."""
        op, key, args, kwargs = request
        if op != "call" or key not in self.callbacks:
            raise ProgramError(f"the program sent an unknown request {op!r}")
        try:
            value = self.callbacks[key](*[decode(a, self.rebuild) for a in args],
                                        **{k: decode(v, self.rebuild) for k, v in kwargs})
            return ["ok", self.out(value)]
        except Exception as err:
            return ["err", type(err).__name__, str(err)[:1000]]


def _exception(reply):
    """The program's exception as the same builtin type, else a ProgramError."""
    if len(reply) != 3 or not all(type(x) is str for x in reply[1:]):
        return ProgramError("malformed reply")
    kind = getattr(builtins, reply[1], None)
    if isinstance(kind, type) and issubclass(kind, Exception) and kind is not StopIteration:
        return kind(reply[2])
    return ProgramError(f"{reply[1]}: {reply[2]}")


def _update(original, value):
    """Make ``original`` (a container the test passed) equal to the program's changed copy, in place."""
    if type(original) is not type(value):
        return
    if isinstance(original, list):
        if len(original) == len(value):
            for i, (old, new) in enumerate(zip(original, value)):
                if type(old) in (list, dict, set, bytearray) and type(old) is type(new):
                    _update(old, new)
                else:
                    original[i] = new
        else:
            original[:] = value
    elif isinstance(original, bytearray):
        original[:] = value
    else:  # dict, set, deque
        original.clear()
        if hasattr(original, "extend"):
            original.extend(value)
        else:
            original.update(value)


def _main(config):
    """Run the tests configured by the caller's plain data (see ``runner._start_judge``)."""
    import os, resource
    sys.path[:0] = config["path"]
    for name, soft, hard in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    requests = os.fdopen(config["requests"], "wb", buffering=0)
    replies = os.fdopen(config["replies"], "rb")
    judge = Judge((replies, requests), config["cap"])
    program = {name: value for name, value in judge.ask(["names"]).items() if isinstance(value, Remote)}

    def lookup(name):
        """A function of the program, or a method of its ``Solution()`` (LeetCode style)."""
        if name in program:
            return program[name]
        if "Solution" in program:
            return getattr(program["Solution"](), name)
        raise NameError(f"the program defines no {name}")

    namespace = {"__name__": "__judge__"}
    exec(compile(config["setup"], "setup.py", "exec"), namespace)
    namespace.update(program)
    if config["entry_point"] and (config["entry_point"] in program or "Solution" in program):
        namespace["candidate"] = namespace[config["entry_point"]] = lookup(config["entry_point"])
    if config["test"]:
        exec(compile(config["test"], "test.py", "exec"), namespace)
    for index, (name, args, kwargs, accepted) in enumerate(decode(config["checks"], _refuse)):
        answer = lookup(name)(*args, **kwargs)
        if not any(_same(answer, value) for value in accepted):
            raise AssertionError(f"check {index + 1}: {name}(...) returned a wrong value")


def _serve(control_fd):
    """The judge's fork server (see :mod:`bgpo.sandbox.forkserver`): a fresh judge per request.

    Requests come from the caller only, over the SOCK_SEQPACKET socket ``control_fd``: a token and
    the judge's five fds (stdin, stdout, stderr, requests, replies). Each judge is a fork of this
    process, which has loaded the judge's code and run nothing else: it starts as a new interpreter
    would, in its own session. This process answers ("started", token, pid) with a pidfd on the
    judge (the caller ends it through that, never through a pid that could be reused), and
    ("exit", pid, status) once it has killed whatever is left in the judge's session and reaped it.
    It exits when the caller closes the socket.
    """
    import marshal, os, select, signal, socket
    control = socket.socket(fileno=control_fd)
    poller = select.poll()
    poller.register(control_fd, select.POLLIN)
    children = {}  # pidfd -> pid
    while True:
        for fd, _ in poller.poll():
            if fd != control_fd:
                pid = children.pop(fd)
                poller.unregister(fd)
                try:  # the judge is a zombie now: its pid, and so its session's id, is not reused yet
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
                os.close(fd)
                control.sendall(marshal.dumps(("exit", pid, status)))
                continue
            message, fds, _, _ = socket.recv_fds(control, 1024, 5)
            if not message:  # the caller is gone
                os._exit(0)
            if len(fds) != 5:
                for each in fds:
                    os.close(each)
                continue
            try:
                pid = os.fork()
            except OSError:  # the caller starts this judge as a new interpreter instead
                pid = -1
            if pid == 0:
                _forked(fds, [control_fd, *children])
            for each in fds:
                os.close(each)
            if pid < 0:
                control.sendall(marshal.dumps(("failed", marshal.loads(message), 0)))
                continue
            pidfd = os.pidfd_open(pid)
            children[pidfd] = pid
            poller.register(pidfd, select.POLLIN)
            socket.send_fds(control, [marshal.dumps(("started", marshal.loads(message), pid))], [pidfd])


def _forked(fds, server_fds):
    """A judge forked by :func:`_serve`: its fds in place, then :func:`_main` as a new interpreter runs it."""
    import marshal, os
    code = 1
    try:
        os.setsid()
        for fd in server_fds:
            os.close(fd)
        high = [os.dup(fd) for fd in fds]  # above 4 (fds 0-4 are taken here), then onto 0-4
        while min(high) <= 4:
            high = [os.dup(fd) for fd in high]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(5, os.sysconf("SC_OPEN_MAX"))
        chunks = []
        while chunk := os.read(0, 1 << 20):
            chunks.append(chunk)
        try:
            _main(marshal.loads(b"".join(chunks)))
            code = 0
        except SystemExit as done:  # as the interpreter exits
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:
                print(done.code, file=sys.stderr)
        except BaseException:
            sys.excepthook(*sys.exc_info())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
    finally:
        os._exit(code)


def _refuse(tag, body):
    raise ValueError("the checks hold plain data only")


def _same(answer, expected):
    """``answer == expected`` between rebuilt values; an elementwise (numpy) comparison is not a match."""
    result = answer == expected
    return result is True or (type(result).__name__ == "bool_" and bool(result))


if __name__ == "__main__":  # from source: the configuration alone on stdin, marshalled
    import marshal
    _main(marshal.loads(sys.stdin.buffer.read()))
