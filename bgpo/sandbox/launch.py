"""The last trusted code before the program: build its world, drop every privilege, exec the harness.

Shipped as source and run by the sandbox's interpreter as PID 1 of fresh PID, mount, IPC, network
and UTS namespaces (``unshare``; as root, or as the mapped root of a new user namespace). It reads
its configuration (marshalled plain data) from the pipe named in ``argv[1]``, then:

1. joins the run's cgroups (memory and pids for the whole run, see :mod:`bgpo.sandbox.isolation`);
2. builds a new root on a size-limited tmpfs: read-only bind mounts of the system and interpreter
   directories, a fresh ``/proc`` of the run's PID namespace, ``/dev/{null,zero,random,urandom}``,
   a private writable ``/tmp`` and ``/sandbox`` (the working directory, holding ``main.py``),
   ``/.harness`` (the harness's compiled code), and
   nothing else -- no ``/run``, no ``/sys``, no host sockets, no host ``/tmp`` or ``/dev/shm``;
   ``pivot_root`` into it and detaches the old root, so no host path is reachable at all;
3. sets rlimits and ``oom_score_adj = 1000``; drops to ``nobody`` (as root) or drops every
   capability (in a user namespace); sets ``no_new_privs``; applies Landlock (writes only beneath
   ``/sandbox`` and ``/tmp``, no TCP, no signals or abstract sockets outside the run);
4. replaces itself (``execv``) with a fresh interpreter running the harness, so nothing loaded
   here (``ctypes``) is left in the process the program runs in.

Threat model: no untrusted code has run yet. Every step that fails raises, the run then ends
with a ``crashed`` result and nothing of the program runs: a half-built sandbox never runs code.
Without namespaces (``config["mount"]`` false) steps 1--2 are skipped and the caller has already
dropped the uid and made a host working directory.
"""

import ctypes
import marshal
import os
import resource
import struct
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _check(result, what):
    if result < 0:
        raise OSError(ctypes.get_errno(), f"{what} failed")
    return result


def _mount(source, target, fstype, flags, data=None):
    def c(text):
        return None if text is None else text.encode()
    _check(libc.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)), f"mount {target}")


def _bind_read_only(source, target):
    """``source`` at ``target``, read-only, keeping the flags a user namespace may not clear."""
    _mount(source, target, None, MS_BIND | MS_REC)
    kept = os.statvfs(source).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    for st, ms in ((8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        flags |= ms if kept & st else 0
    _mount(None, target, None, flags)


def _build_root(config):
    new = "/tmp"  # any directory will do: this mount namespace is the run's own
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, f"size={config['disk_bytes']},mode=755")
    for path in config["read_only"]:
        target = new + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.islink(path):  # /bin -> usr/bin on merged-/usr systems
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            _bind_read_only(path, target)
    os.mkdir(new + "/dev")
    for device in ("null", "zero", "random", "urandom"):
        open(f"{new}/dev/{device}", "w").close()
        _mount(f"/dev/{device}", f"{new}/dev/{device}", None, MS_BIND)
    os.mkdir(new + "/proc")
    _mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for directory, mode in (("/tmp", 0o1777), ("/sandbox", 0o755)):
        os.makedirs(new + directory, exist_ok=True)
        os.chmod(new + directory, mode)
    uid = config["uid"] if config["uid"] is not None else os.getuid()
    os.chown(new + "/sandbox", uid, uid)
    for name, text in config["files"].items():
        with open(f"{new}/sandbox/{name}", "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(f"{new}/sandbox/{name}", uid, uid)
    if config["code"]:
        with open(new + "/.harness", "wb") as f:
            f.write(config["code"])
    os.chdir(new)
    number = PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {os.uname().machine}")
    _check(libc.syscall(number, b".", b"."), "pivot_root")
    _check(libc.umount2(b".", 2), "detaching the old root")  # MNT_DETACH
    os.chdir("/sandbox")


def _drop_capabilities():
    """Every capability of a user namespace's root: bounding set, then effective/permitted/inheritable."""
    for cap in range(64):
        if libc.prctl(24, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # PR_CAPBSET_DROP; EINVAL: past the last
            break
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    _check(libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(bytes(24))), "capset")


def _landlock(abi, rules):
    def call(*args):
        return _check(libc.syscall(*args), f"landlock syscall {args[0]}")

    fs = (1 << 13) - 1 | (abi >= 2) << 13 | (abi >= 3) << 14 | (abi >= 5) << 15
    attr = struct.pack("QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = call(444, ctypes.c_char_p(attr), size, 0)
    file_rights = 1 | 2 | 4 | 1 << 14 | 1 << 15
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            rights &= file_rights
        call(445, ruleset, 1, ctypes.c_char_p(struct.pack("=Qi", rights & fs, fd)), 0)
        os.close(fd)
    call(446, ruleset, 0)


def main():
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        config = marshal.loads(f.read())  # plain data from the caller (marshal: no json/re import here)
    if config["mount"]:
        for cgroup in config["cgroups"]:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
        _build_root(config)
    elif config["code"]:
        with open(".harness", "wb") as f:
            f.write(config["code"])
    for name, soft, hard in config["rlimits"]:
        resource.setrlimit(getattr(resource, name), (soft, hard))
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    if config["mount"] and config["uid"] is not None:
        os.setgroups([])
        os.setgid(config["uid"])
        os.setuid(config["uid"])
    elif config["mount"]:
        _drop_capabilities()
    _check(libc.prctl(38, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if config["landlock"]:
        _landlock(config["landlock"], config["rules"])
    os.execv(config["argv"][0], config["argv"])


if __name__ == "__main__":
    main()
