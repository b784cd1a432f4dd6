"""The program's side: the Python guard, the program as a module, then a server for the judge.

Shipped as source after :mod:`bgpo.sandbox.wire` and run by the sandbox's interpreter once the OS
layers (:mod:`bgpo.sandbox.launch`) are in place.

Threat model: everything in this process belongs to the program. It can read and patch this code
and the wire, write anything on its pipes, exit at any moment. So nothing here decides a verdict:
the server only turns the program's values into data (or handles) and the judge, in another
process, compares. The guard (an audit hook installed before the program runs) is the second
line only: it refuses fork/exec/spawn/kill, socket/ctypes/subprocess/multiprocessing and
subinterpreters (``_xxsubinterpreters``/``_interpreters``: audit hooks are per interpreter),
symlinks and hard links, writes outside the writable directories, ``/proc/<pid>`` and ``gc``
object introspection. Native code, ``os.mkfifo`` (no audit event) or ``_imp`` tricks get round it;
the namespaces, uid, cgroup and Landlock are what hold.
"""

import sys

# shipped: wire.py's text replaces the next line
from bgpo.sandbox.wire import Channel, ChannelClosed, decode, deque, encode

MEMORY_ERROR, FILE_TOO_LARGE = 86, 87  # exit statuses the caller reads as limits (never a pass)


def _install_guard(writable):
    import posix
    getcwd, readlink, stat_, fspath = posix.getcwd, posix.readlink, posix.stat, posix.fspath
    isinstance_, str_, bytes_, int_, len_, any_ = isinstance, str, bytes, int, len, any
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
        return path is None or any_(path == r or path.startswith(r + "/") for r in roots)

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


class _Server:
    """Answers the judge's requests about the program's module; its objects stay here as handles."""

    def __init__(self, module, channel_files, cap):
        self.module, self.objects = module, {}
        self.channel = Channel(*channel_files, cap, self.serve)

    def handle(self, value):
        """An object that is not plain data: kept here, sent as a handle (kind: call, iter or object)."""
        if isinstance(value, _Callback):
            return {"cb": value.id}
        key = len(self.objects) + 1
        self.objects[key] = value
        kind = "iter" if hasattr(type(value), "__next__") else "call" if callable(value) else "object"
        return {"h": [key, type(value).__name__[:100], kind]}

    def resolve(self, tag, body):
        if tag == "h" and type(body) is int and body in self.objects:
            return self.objects[body]
        if tag == "cb" and type(body) is int:
            return _Callback(self, body)
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
            target = self.objects[rest[0]]
            if op == "next":
                try:
                    return ["ok", self.out(next(target))]
                except StopIteration:
                    return ["stop"]
            if op == "getattr":
                return ["ok", self.out(getattr(target, rest[1]))]
            if op == "setattr":
                setattr(target, rest[1], decode(rest[2], self.resolve))
                return ["ok", None]
            answer = {"iter": iter, "len": len, "str": str, "repr": repr}.get(op)
            if answer is not None:
                return ["ok", self.out(answer(target))]
            if op == "getitem":
                return ["ok", self.out(target[decode(rest[1], self.resolve)])]
            if op == "contains":
                return ["ok", self.out(decode(rest[1], self.resolve) in target)]
            raise ValueError(f"unknown request {op!r}")
        except Exception as err:
            return ["err", type(err).__name__, str(err)[:1000]]

    def call(self, target, args, kwargs):
        function = self.objects[target] if type(target) is int else _lookup(self.module, target)
        args = [decode(a, self.resolve) for a in args]
        kwargs = {k: decode(v, self.resolve) for k, v in kwargs}
        before = [self.out(a) if type(a) in _MUTABLE else None for a in args]
        result = self.out(function(*args, **kwargs))
        # arguments changed in place go back, so the judge can update its own objects
        after = [[i, now] for i, (a, old) in enumerate(zip(args, before)) if old is not None and (now := self.out(a)) != old]
        return ["ok", result, after]


_MUTABLE = (list, dict, set, bytearray, deque)  # arguments the judge updates in place


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


def _main():
    import marshal, os, types
    config = marshal.loads(bytes.fromhex(sys.argv[-1]))  # the caller's plain data (no json/re import)
    del sys.argv[1:]
    sys.argv[0] = "main.py"
    sys.path[:0] = config["path"]
    with open("main.py", encoding="utf-8") as f:
        code = compile(f.read(), "main.py", "exec")
    _install_guard(config["writable"])
    serving = config["requests"] >= 0
    module = types.ModuleType("__main__" if not serving else "solution")
    module.__file__ = os.path.abspath("main.py")
    sys.modules[module.__name__] = module
    try:
        exec(code, module.__dict__)
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
        server = _Server(module, (requests, replies), config["cap"])
        while True:
            try:
                request = server.channel.receive()
            except ChannelClosed:  # the judge is done
                return
            server.channel.send(server.serve(request))


if __name__ == "__main__":
    _main()
