"""The program's side: the Python guard, the program as a module, then a server for the judge.

Compiled with :mod:`bgpo.sandbox.wire`'s text in front (:mod:`bgpo.sandbox.shipped`) and run, as
marshalled code, by the sandbox's boot code (:data:`bgpo.sandbox.bwrap.BOOT`) once the OS layers
(:mod:`bgpo.sandbox.bwrap`: namespaces, seccomp, uid nobody, rlimits, cgroup) are in place.

Threat model: everything in this process belongs to the program. It can read and patch this code
and the wire, write anything on its pipes, exit at any moment. So nothing here decides a verdict:
the server only turns the program's values into data (or handles: one per object, so identity
holds on the judge's side) and the judge, in another process, compares. The guard (an audit hook
installed before the program runs) is the second line only: it refuses fork/exec/spawn/kill,
socket/ctypes/subprocess/multiprocessing and subinterpreters (``_xxsubinterpreters``/
``_interpreters``: audit hooks are per interpreter), symlinks and hard links, writes outside the
writable directories, ``/proc/<pid>`` and ``gc`` object introspection. It reads only exact
``str``/``bytes`` (a module name that is not a ``str`` is refused; a path-like is turned into one
once by ``os.fspath``), so no method of the program's own objects -- a ``str`` subclass whose
``__str__`` lies -- decides a check. Native code, ``os.mkfifo`` (no audit event) or ``_imp``
tricks get round it; the OS layers are what hold.
"""

import sys

import _operator

# shipped: wire.py's text replaces the next line
from bgpo.sandbox.wire import Channel, ChannelClosed, decode, encode

MEMORY_ERROR, FILE_TOO_LARGE = 86, 87  # exit statuses the caller reads as limits (never a pass)


def _install_guard(writable):
    import posix
    getcwd, readlink, stat_, fspath = posix.getcwd, posix.readlink, posix.stat, posix.fspath
    isinstance_, type_, str_, bytes_, int_, len_, any_ = isinstance, type, str, bytes, int, len, any
    PermissionError_, ImportError_ = PermissionError, ImportError
    roots = tuple(writable)
    denied = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                        "os.kill", "os.killpg", "signal.pthread_kill", "subprocess.Popen", "os.symlink",
                        "os.link", "os.chroot", "socket.__new__", "socket.bind", "socket.connect",
                        "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "gc.get_objects",
                        "gc.get_referrers", "gc.get_referents", "sys.addaudithook"})
    denied_modules = frozenset({"ctypes", "_ctypes", "socket", "_socket", "subprocess", "_posixsubprocess",
                                "multiprocessing", "_multiprocessing", "pty", "ssl", "_ssl", "_xxsubinterpreters",
                                "_interpreters", "_xxinterpchannels", "_interpchannels", "_interpqueues",
                                "_testcapi", "_testinternalcapi", "_testmultiphase", "_posixshmem"})
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
        if type_(path) is not str_ and type_(path) is not bytes_:
            path = fspath(path)  # once: a str subclass comes back as it is and is refused below
        if type_(path) is not str_ and type_(path) is not bytes_:
            raise PermissionError_("sandbox: a path must be a str or bytes (or give one through os.fspath)")
        if type_(path) is bytes_:
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
        return path is None or any_(path == r or path.startswith(r + "/") for r in roots)

    def hook(event, args):
        if event in denied:
            raise PermissionError_(f"sandbox: {event} is not allowed")
        if event == "import":
            name = args[0]
            if type_(name) is not str_:
                raise ImportError_("sandbox: a module name must be a str")
            if any_(part in denied_modules for part in name.split(".")):
                raise ImportError_(f"sandbox: import of {name} is not allowed")
        elif event == "open":
            path, mode, flags = args
            full = absolute(path, None)
            if full is not None:
                parts = full.split("/")
                if len_(parts) > 2 and parts[1] == "proc" and (parts[2].isdigit() or "self" in parts[2]) \
                        and parts[3:4] != ["fd"]:
                    raise PermissionError_("sandbox: /proc/<pid> is not readable")
            writing = (flags or 0) & write_flags or any_(c in mode for c in "wax+" if type_(mode) is str_)
            if writing and not inside(full):
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


class _Server:
    """Answers the judge's requests about the program's module; its objects stay here as handles."""

    def __init__(self, module, channel_files, cap):
        self.module, self.objects, self.keys = module, {}, {}  # key -> object, id(object) -> key
        self.channel = Channel(*channel_files, cap, self.serve)

    def handle(self, value):
        """An object that is not plain data: kept here, sent as its one handle (kind: call, iter or
        object), or as an exception class with the module and name of each class of its MRO."""
        if isinstance(value, (_Callback, _TestIterator)):
            return {"cb" if isinstance(value, _Callback) else "it": value.id}
        key = self.keys.get(id(value))
        if key is None:  # kept in self.objects, so its id is never reused
            key = self.keys[id(value)] = len(self.objects) + 1
            self.objects[key] = value
        if isinstance(value, type) and issubclass(value, Exception):
            return {"exc": [key, value.__name__[:100], [[str(c.__module__), c.__qualname__] for c in value.__mro__]]}
        kind = "iter" if hasattr(type(value), "__next__") else "call" if callable(value) else "object"
        return {"h": [key, type(value).__name__[:100], kind]}

    def resolve(self, tag, body):
        if tag == "h" and type(body) is int and body in self.objects:
            return self.objects[body]
        if tag in ("cb", "it") and type(body) is int:
            return (_Callback if tag == "cb" else _TestIterator)(self, body)
        raise ValueError("not tagged data")

    def out(self, value):
        return encode(value, self.handle)

    def serve(self, request):
        op, *rest = request
        try:
            if op == "names":
                return ["ok", {"d": [[name, self.out(value)] for name, value in vars(self.module).items()
                                     if not name.startswith("__") and callable(value)]}]
            if op == "call":
                return self.call(*rest)
            if op != "op" or rest[0] not in _OPERATIONS:
                raise ValueError(f"unknown request {op!r}")
            operands = [decode(x, self.resolve) for x in rest[1]]
            try:
                return ["ok", self.out(_OPERATIONS[rest[0]](*operands))]
            except StopIteration:
                if rest[0] != "next":
                    raise
                return ["stop"]
        except Exception as err:
            return self.error(err)

    def error(self, err):
        """The exception as its class (a handle with its lineage), its args and its text."""
        try:
            text = str(err)[:1000]
        except Exception:
            text = ""
        try:
            args = self.out(err.args)
        except Exception:  # nested too deep: the text is what is left
            args = {"t": [text]}
        return ["err", self.out(type(err)), args, text]

    def call(self, target, args, kwargs):
        function = self.objects[target] if type(target) is int else _lookup(self.module, target)
        args = [decode(a, self.resolve) for a in args]
        kwargs = {k: decode(v, self.resolve) for k, v in kwargs}
        passed = [*enumerate(args), *kwargs.items()]
        before = {where: self.out(value) for where, value in passed if type(value) not in _SCALARS}
        result = self.out(_as_in_a_script(function, args, kwargs, 3))
        # arguments changed in place (at any depth) go back, so the judge can update its own objects
        changed = [[where, now] for where, value in passed
                   if where in before and (now := self.out(value)) != before[where]]
        return ["ok", result, changed]


_SCALARS = (int, float, bool, str, bytes, complex, type(None))  # arguments no call can change
# what the judge may ask of the program's objects; each answers as plain Python does
_OPERATIONS = {name: getattr(_operator, name) for name in (
    "add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and_", "xor", "or_",
    "iadd", "isub", "imul", "imatmul", "itruediv", "ifloordiv", "imod", "ipow", "ilshift", "irshift", "iand",
    "ixor", "ior", "neg", "pos", "abs", "invert", "index", "lt", "le", "gt", "ge", "contains", "getitem",
    "setitem", "delitem")}
_OPERATIONS.update(getattr=getattr, setattr=setattr, iter=iter, next=next, len=len, str=str, repr=repr, bool=bool,
                   int=int, float=float, complex=complex, isinstance=isinstance, issubclass=issubclass)


def _as_in_a_script(function, args, kwargs, plain):
    """``function(*args, **kwargs)`` with the recursion depth plain Python leaves it.

    This module's frames (the boot, the server loop, the request) and the interpreter's C calls
    between them lie under the program's; the recursion limit grows by their number less ``plain``,
    what :func:`_depth` reads at the same point of a plain script (measured: 1 where ``exec`` runs a
    module's code, 3 where its top level calls a function), so a program recurses exactly as deep
    as on its own. A limit the program set itself while running is left as it set it."""
    extra = _depth() - plain
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + extra)
    try:
        return function(*args, **kwargs)
    finally:
        if sys.getrecursionlimit() == limit + extra:
            sys.setrecursionlimit(limit)


def _depth():
    """The interpreter's recursion depth at its caller, frames and C calls alike, found as the lowest
    recursion limit it accepts there (no API tells it, and ``sys._getframe`` counts frames only)."""
    limit = sys.getrecursionlimit()
    low, high = 1, limit
    while low < high:
        middle = (low + high) // 2
        try:
            sys.setrecursionlimit(middle)
            high = middle
        except RecursionError:
            low = middle + 1
    sys.setrecursionlimit(limit)
    return low - 1


def _lookup(module, name):
    """A function of the program, or a method of its ``Solution()`` (LeetCode style)."""
    function = vars(module).get(name)
    if callable(function):
        return function
    return getattr(vars(module)["Solution"](), name)


class _Callback:
    """A callable the test passed in: calling it asks the judge to run it there."""

    def __init__(self, server, id_):
        self.server, self.id = server, id_

    def __call__(self, *args, **kwargs):
        reply = self.server.channel.ask(["call", self.id, [self.server.out(a) for a in args],
                                         [[k, self.server.out(v)] for k, v in kwargs.items()]])
        if reply[0] == "ok":
            return decode(reply[1], self.server.resolve)
        raise RuntimeError(f"the test's callback raised {reply[1]}: {reply[2]}")


class _TestIterator:
    """An iterator the test passed in (a generator, ``map``, ...): each ``next`` advances it in the judge."""

    def __init__(self, server, id_):
        self.server, self.id = server, id_

    def __iter__(self):
        return self

    def __next__(self):
        reply = self.server.channel.ask(["next", self.id])
        if reply[0] == "ok":
            return decode(reply[1], self.server.resolve)
        if reply[0] == "stop":
            raise StopIteration
        raise RuntimeError(f"the test's iterator raised {reply[1]}: {reply[2]}")


class _Kept:
    """The program's ``sys.stdout``/``sys.stderr`` in a judged run: the first ``budget`` characters
    (at most 4 bytes each) go through, the rest is dropped, so a debugging print is never a limit."""

    def __init__(self, stream, budget):
        self._stream, self._left = stream, budget

    def write(self, text):
        if self._left > 0:
            self._stream.write(text[: self._left])
            self._left -= len(text)
            if self._left <= 0:
                self._stream.write("\n[the rest of this output was dropped]\n")
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _main():
    import marshal, os, types
    config = marshal.loads(bytes.fromhex(sys.argv[-1]))  # the caller's plain data (no json/re import)
    del sys.argv[1:]
    sys.argv[0] = "main.py"
    sys.path[:0] = config["path"]
    with open("main.py", encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec", dont_inherit=True)  # none of this file's future flags
    _install_guard(config["writable"])
    serving = config["requests"] >= 0
    module = types.ModuleType("__main__" if not serving else "solution")
    module.__file__ = os.path.abspath("main.py")
    sys.modules[module.__name__] = module
    if serving:  # its output decides nothing: what passes the caller's cap is dropped here, not a limit
        sys.stdout, sys.stderr = _Kept(sys.stdout, config["cap"] // 16), _Kept(sys.stderr, config["cap"] // 16)
    try:
        _as_in_a_script(exec, (code, module.__dict__), {}, 1)
    except MemoryError:
        os._exit(MEMORY_ERROR)
    except OSError as err:
        if err.errno == 27:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
            os._exit(FILE_TOO_LARGE)
        raise
    if not serving:
        return
    sys.stdout.flush()
    with os.fdopen(config["requests"], "rb") as requests, os.fdopen(config["replies"], "wb", buffering=0) as replies:
        server = _Server(module, (requests, replies), 1 << 40)  # the judge's requests: trusted, any size
        while True:
            try:
                request = server.channel.receive()
            except ChannelClosed:  # the judge is done
                return
            server.channel.send(server.serve(request))


if __name__ == "__main__":
    _main()
