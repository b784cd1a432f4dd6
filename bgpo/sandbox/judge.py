"""The trusted judge: runs the test code, with the program's module behind a proxy.

Compiled with :mod:`bgpo.sandbox.wire`'s text in front (:mod:`bgpo.sandbox.shipped`) and run
outside the sandbox by the caller's own interpreter (the caller's uid, its site-packages): one
process per run, forked by the judge server (:func:`_serve`, :mod:`bgpo.sandbox.forkserver`) or
else a new interpreter, with CPU and address-space rlimits, in the run's cgroup where there is one
(its memory counts against the run's) and ended at the run's wall deadline. Its exit status is the
verdict: 0 when every test passed.

Threat model: the judge runs only trusted code (the problem's setup and tests) and receives only
data from the program -- data the program chooses freely, since it can rewrite the harness that
answers. So:

* **names**: the test runs with the judge's own builtins, the setup's names (its imports, the
  prompt's helpers) and the entry point. The program's other functions and classes are a fallback
  behind the builtins -- a name the test uses that nothing trusted defines (a helper or a class the
  test calls by name) -- so a program's ``abs``, ``isinstance``, ``math`` or ``encode_cyclic``
  never replaces the test's;
* **values**: a call, attribute, operator, iteration, ``len``/``in``/indexing, ``str``/``repr`` or
  truth value of the program's objects crosses as a request; the reply is rebuilt from the wire's
  whitelist of standard value types, so ``==`` in the test always compares genuine values. Any
  other object stays in the program as a :class:`Remote` handle, one per object: equal and hashed
  only as itself, so no code of the program ever decides an equality;
* **operators** on handles are the program's (a class of the program answers its own ``v * 2`` and
  ``a < b``), but a test's value never buys a plain answer: ordering and conversions (``abs``,
  ``float``, truth) take untouched program objects only, and arithmetic with a test's value, or
  with what such arithmetic returned, must answer with a program object. So
  ``abs(candidate(x) - expected) < 1e-6`` cannot be answered by an object that has seen
  ``expected`` (``expected in answer`` still asks the answer: a test should not write that);
* **exceptions** come back as the program's class mapped onto the nearest trusted one: the
  builtin or already-imported standard class itself, else a judge-side subclass of it with the
  same name, args and text (``except ValueError`` catches the program's ``ValueError``
  subclass); never ``StopIteration`` or ``unittest.SkipTest``, never a non-``Exception``;
* arguments the program changed in place (positional or keyword, at any depth) come back and
  update the test's objects; callables and iterators the test passes run here when the program
  calls or advances them.

Decoding a hostile answer can be slow or large (it is bounded by the wire and this process's
limits), and that time is the run's: the caller waits for this process only up to the run's wall
time.
"""

import builtins
import sys

from bgpo.sandbox.wire import Channel, decode, deque, encode  # shipped: wire.py's text replaces this line


class ProgramError(Exception):
    """The program answered with something malformed, or where it may not answer."""


_ARITHMETIC = ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and_",
               "xor", "or_")
_ORDER = ("lt", "le", "gt", "ge")
_CONVERSIONS = ("neg", "pos", "abs", "invert", "index", "int", "float", "complex", "bool")
_FED = {*_ARITHMETIC, *("i" + name.rstrip("_") for name in _ARITHMETIC)}  # answers stay program objects if fed
_PLAIN = {*_ORDER, *_CONVERSIONS}  # answers are plain values: of untouched program objects only


class Remote:
    """An object that lives in the program: every use of it is a request, its identity is its own."""

    __slots__ = ("_judge", "_id", "_type", "_kind", "_fed")

    def __init__(self, judge, id_, type_name, kind):
        for name, value in (("_judge", judge), ("_id", id_), ("_type", type_name), ("_kind", kind), ("_fed", False)):
            object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self._judge.call(self._id, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._judge.operate("getattr", self, name)

    def __setattr__(self, name, value):
        self._judge.operate("setattr", self, name, value)

    def __iter__(self):
        return self if self._kind == "iter" else self._judge.operate("iter", self)

    def __next__(self):
        return self._judge.operate("next", self)

    def __len__(self):
        return _typed(self._judge.operate("len", self), int)

    def __getitem__(self, key):
        return self._judge.operate("getitem", self, key)

    def __setitem__(self, key, value):
        self._judge.operate("setitem", self, key, value)

    def __delitem__(self, key):
        self._judge.operate("delitem", self, key)

    def __contains__(self, item):
        return _typed(self._judge.operate("contains", self, item), bool)

    def __str__(self):
        return _typed(self._judge.operate("str", self), str)

    def __repr__(self):
        return _typed(self._judge.operate("repr", self), str)

    def __instancecheck__(self, instance):
        return _typed(self._judge.operate("isinstance", instance, self), bool)

    def __subclasscheck__(self, subclass):
        return _typed(self._judge.operate("issubclass", subclass, self), bool)

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


def _forwarded(name, reflected=False):
    if name in _CONVERSIONS:
        return lambda self: self._judge.operate(name, self)
    if reflected:
        return lambda self, other: self._judge.operate(name, other, self)
    return lambda self, other: self._judge.operate(name, self, other)


for _name in _ARITHMETIC:
    _dunder = _name.rstrip("_")
    setattr(Remote, f"__{_dunder}__", _forwarded(_name))
    setattr(Remote, f"__r{_dunder}__", _forwarded(_name, reflected=True))
    setattr(Remote, f"__i{_dunder}__", _forwarded("i" + _dunder))
for _name in (*_ORDER, *_CONVERSIONS):
    setattr(Remote, f"__{_name}__", _forwarded(_name))


def _typed(value, kind):
    if type(value) is not kind:
        raise ProgramError(f"the program answered a {type(value).__name__} where a {kind.__name__} was due")
    return value


class Judge:
    """The judge's end of the wire: requests out, replies rebuilt, the test's callbacks served."""

    def __init__(self, channel_files, cap):
        self.channel = Channel(*channel_files, cap, self.serve)
        self.remotes, self.callbacks = {}, {}  # key -> Remote; id -> the test's callable or iterator
        self.exceptions, self.exception_keys = {}, {}  # key -> the judge's class for it, and back

    def out(self, value):
        return encode(value, self.reference)

    def reference(self, value):
        if isinstance(value, Remote):
            return {"h": value._id}
        if isinstance(value, type) and value in self.exception_keys:
            return {"h": self.exception_keys[value]}
        if hasattr(type(value), "__next__") or callable(value):
            self.callbacks[id(value)] = value
            return {"it" if hasattr(type(value), "__next__") else "cb": id(value)}
        raise TypeError(f"a {type(value).__name__} cannot be sent to the program")

    def rebuild(self, tag, body):
        if tag == "h" and type(body) is list and len(body) == 3 and type(body[0]) is int:
            key, type_name, kind = body
            if key not in self.remotes:
                self.remotes[key] = Remote(self, key, str(type_name)[:100], kind)
            return self.remotes[key]
        if tag == "exc" and type(body) is list and len(body) == 3 and type(body[0]) is int:
            key, name, lineage = body
            if key not in self.exceptions:
                self.exceptions[key] = _exception_class(str(name)[:100], lineage)
                self.exception_keys.setdefault(self.exceptions[key], key)
            return self.exceptions[key]
        if tag in ("cb", "it") and body in self.callbacks:
            return self.callbacks[body]
        raise ValueError("not tagged data")

    def decoded(self, data):
        try:
            return decode(data, self.rebuild)
        except (ValueError, TypeError, OverflowError) as err:
            raise ProgramError(f"the program answered malformed data: {err}") from None

    def ask(self, request):
        reply = self.channel.ask(request)
        if reply[0] == "ok" and len(reply) == 2:
            return self.decoded(reply[1])
        if reply[0] == "stop":
            raise StopIteration
        raise self.exception(reply)

    def operate(self, name, *operands):
        """An operation on the program's objects, answered by the program (see the threat model)."""
        if name not in _FED and name not in _PLAIN:
            return self.ask(["op", name, [self.out(x) for x in operands]])
        fed = any(not isinstance(x, Remote) or x._fed for x in operands)  # a test's value reaches the answer
        if fed and name in _ORDER:
            return NotImplemented  # so Python raises its TypeError, as for unorderable types
        if fed and name in _CONVERSIONS:
            raise ProgramError(f"{name} of a program object that a test's value reached is not the program's to say")
        answer = self.ask(["op", name, [self.out(x) for x in operands]])
        if fed:
            if not isinstance(answer, Remote):
                raise ProgramError(f"the program answered {name} with a test's value by plain data")
            object.__setattr__(answer, "_fed", True)
        return answer

    def call(self, target, args, kwargs):
        reply = self.channel.ask(["call", target, [self.out(a) for a in args],
                                  [[k, self.out(v)] for k, v in kwargs.items()]])
        if reply[0] != "ok" or len(reply) != 3 or type(reply[2]) is not list:
            raise self.exception(reply)
        result = self.decoded(reply[1])
        for change in reply[2]:
            where, value = change if type(change) is list and len(change) == 2 else (None, None)
            if type(where) is int and 0 <= where < len(args):
                _update(args[where], self.decoded(value))
            elif type(where) is str and where in kwargs:
                _update(kwargs[where], self.decoded(value))
        return result

    def exception(self, reply):
        """The program's exception as the judge's class for it (see :func:`_exception_class`)."""
        if reply[0] != "err" or len(reply) != 4 or type(reply[3]) is not str:
            return ProgramError("malformed reply")
        kind, args = self.decoded(reply[1]), self.decoded(reply[2])
        if not (isinstance(kind, type) and issubclass(kind, Exception)) or type(args) is not tuple:
            return ProgramError("malformed reply")
        try:
            err = kind(*args)
        except Exception:
            return ProgramError(f"{kind.__name__}: {reply[3]}")
        if kind.__dict__.get("__str__") is _program_text:
            err.text_in_program = reply[3]
        return err

    def serve(self, request):
        """A callback the program calls or an iterator it advances: run here, answer with its value or exception."""
        op, key, *rest = request if len(request) >= 2 else (None, None)
        target = self.callbacks.get(key) if type(key) is int else None
        if target is None or (op, len(rest)) not in (("call", 2), ("next", 0)):
            raise ProgramError(f"the program sent an unknown request {op!r}")
        try:
            if op == "next":
                return ["ok", self.out(next(target))]
            args, kwargs = rest
            return ["ok", self.out(target(*[self.decoded(a) for a in args],
                                          **{k: self.decoded(v) for k, v in kwargs}))]
        except StopIteration:
            return ["stop"]
        except Exception as err:
            return ["err", type(err).__name__, str(err)[:1000]]


def _program_text(err):
    """``str()`` of a judge-side exception class: the text the program's exception had."""
    return err.__dict__.get("text_in_program") or type(err).__mro__[1].__str__(err)


def _exception_class(name, lineage):
    """The judge's class for a program's exception class, from its MRO's (module, qualified name) pairs.

    The first trusted class in the MRO -- a builtin, or a class of a module the judge has imported
    already (``statistics.StatisticsError`` once the test imported statistics; nothing is imported
    for the program) -- is the answer when it is the class itself, else the base of a new class
    with the program's name whose ``str()`` is the program's text.
    """
    for depth, entry in enumerate(lineage if type(lineage) is list else ()):
        trusted = _trusted_exception(entry)
        if trusted is not None:
            if depth == 0:
                return trusted
            return type(name, (trusted,), {"__module__": "program", "__str__": _program_text})
    return type(name, (Exception,), {"__module__": "program", "__str__": _program_text})


def _trusted_exception(entry):
    if type(entry) is not list or len(entry) != 2 or not all(type(x) is str for x in entry):
        return None
    module, name = entry
    owner = builtins if module == "builtins" else sys.modules.get(module)
    try:
        kind = vars(owner).get(name)
    except TypeError:
        return None
    silent = (StopIteration, StopAsyncIteration, getattr(sys.modules.get("unittest"), "SkipTest", StopIteration))
    if isinstance(kind, type) and issubclass(kind, Exception) and not issubclass(kind, silent):
        return kind
    return None


def _update(original, value):
    """Make ``original`` (the test's argument) equal to the program's changed copy, in place, keeping
    the identity of the containers it holds (the test may hold them too)."""
    if type(original) is not type(value):
        return
    if isinstance(original, (list, deque)):
        kept = [_merged(old, new) for old, new in zip(original, value)] + list(value)[len(original):]
        original.clear()
        original.extend(kept)
    elif isinstance(original, dict):
        kept = [(k, _merged(original[k], v) if k in original else v) for k, v in value.items()]
        original.clear()
        original.update(kept)
    elif isinstance(original, set):
        original.clear()
        original.update(value)
    elif isinstance(original, bytearray):
        original[:] = value
    elif isinstance(original, tuple) and len(original) == len(value):
        for old, new in zip(original, value):
            _merged(old, new)


def _merged(old, new):
    """``old`` changed into ``new`` when both are containers of one type, else ``new``."""
    if type(old) is type(new) and isinstance(old, (list, deque, dict, set, bytearray, tuple)):
        _update(old, new)
        return old if type(old) is not tuple or old == new else new
    return new


def _main(config):
    """Run the tests configured by the caller's plain data (see ``runner._start_judge``)."""
    import os, resource
    sys.path[:0] = config["path"]
    for name, soft, hard in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    requests = os.fdopen(config["requests"], "wb", buffering=0)
    replies = os.fdopen(config["replies"], "rb")
    # an answer may be as large as this process's memory allows: its line, its text and the values built
    space = max([soft for name, soft, _ in config["rlimits"] if name == "RLIMIT_AS"] or [0])
    judge = Judge((replies, requests), max(config["cap"], space // 16))
    names = judge.ask(["names"])
    program = {k: v for k, v in names.items() if type(k) is str} if type(names) is dict else {}

    def lookup(name):
        """A function of the program, or a method of its ``Solution()`` (LeetCode style)."""
        if name in program:
            return program[name]
        if "Solution" in program:
            return getattr(program["Solution"](), name)
        raise NameError(f"the program defines no {name}")

    # the test's names: its own, the setup's, the entry point, then the builtins, then the program's
    namespace = {"__name__": "__judge__", "__builtins__": {**program, **vars(builtins)}}
    exec(compile(config["setup"], "setup.py", "exec", dont_inherit=True), namespace)
    if config["entry_point"] and (config["entry_point"] in program or "Solution" in program):
        namespace["candidate"] = namespace[config["entry_point"]] = lookup(config["entry_point"])
    if config["test"]:
        exec(compile(config["test"], "test.py", "exec", dont_inherit=True), namespace)
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
