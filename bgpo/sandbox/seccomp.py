"""The seccomp filter every sandboxed program runs under: a classic BPF program built here, loaded by bwrap.

Threat model: the program is native code for all we know (the Python guard is the second line
only). The namespaces bubblewrap makes hide the host; this filter takes away the kernel's doors
that namespaces leave open or that a process of the caller's uid could use against the caller:

* the keyrings (``keyctl``, ``add_key``, ``request_key``): keys are per user, not per namespace,
  so a run could leave state for the next run of the same uid;
* ``ptrace`` and ``process_vm_readv/writev``: reading or writing another process's memory;
* ``io_uring_*``, ``bpf``, ``userfaultfd``, ``perf_event_open``: large kernel attack surface that
  no test program needs (``userfaultfd`` also stalls the kernel at a chosen moment);
* the mount API (``mount``, ``umount2``, ``pivot_root``, ``fsopen`` ...), ``chroot``, ``unshare``,
  ``setns`` and ``clone`` with a namespace flag: no new namespace (a new user namespace would give
  back every capability inside it), no change to the view bubblewrap built;
* new processes: ``fork``, ``vfork`` and ``clone`` without ``CLONE_THREAD``. The Python guard
  already refuses ``fork``/``subprocess``/``multiprocessing``, so no honest program makes one; made
  impossible for native code too, a run is one process, and its CPU (``RLIMIT_CPU``) and memory
  (``RLIMIT_AS``) limits hold for the whole run, with or without a cgroup, and nothing can be
  left running. Threads stay (``clone`` with ``CLONE_THREAD``);
* ``clone3`` answers ENOSYS: its flags sit in memory a filter cannot read, and the C library then
  falls back to ``clone``, which the filter can judge.

Everything else is allowed. A call from another ABI (i386 on x86_64, x32) kills the process: its
numbers differ and would slip past the table. Only x86_64 and aarch64 are known here; elsewhere
:func:`program` raises and the sandbox reports itself unavailable.
"""

from __future__ import annotations

import errno
import os
import struct

# sock_filter opcodes
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
NR, ARCH, ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (little-endian: low half of args[0] first)

CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
X32_BIT = 0x40000000

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SYSCALLS = {  # the denied calls and clone/clone3, by architecture (asm/unistd_64.h; asm-generic/unistd.h)
    "x86_64": {"keyctl": 250, "add_key": 248, "request_key": 249, "ptrace": 101, "process_vm_readv": 310,
               "process_vm_writev": 311, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
               "bpf": 321, "userfaultfd": 323, "perf_event_open": 298, "mount": 165, "umount2": 166,
               "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429,
               "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
               "fork": 57, "vfork": 58, "clone": 56, "clone3": 435},
    "aarch64": {"keyctl": 219, "add_key": 217, "request_key": 218, "ptrace": 117, "process_vm_readv": 270,
                "process_vm_writev": 271, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
                "bpf": 280, "userfaultfd": 282, "perf_event_open": 241, "mount": 40, "umount2": 39,
                "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "open_tree": 428, "move_mount": 429,
                "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
                "clone": 220, "clone3": 435},
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes:
    """The filter for ``machine`` (default: this one) as bytes of ``struct sock_filter``, for ``bwrap --seccomp``."""
    machine = machine or os.uname().machine
    if machine not in SYSCALLS:
        raise OSError(f"no seccomp filter for {machine} (known: {', '.join(SYSCALLS)})")
    table = SYSCALLS[machine]
    deny = _op(RET_K, RET_ERRNO | errno.EPERM)
    out = [_op(LD_W_ABS, ARCH), _op(JEQ_K, AUDIT_ARCH[machine], 1, 0), _op(RET_K, RET_KILL_PROCESS),
           _op(LD_W_ABS, NR)]
    if machine == "x86_64":
        out += [_op(JGE_K, X32_BIT, 0, 1), _op(RET_K, RET_KILL_PROCESS)]
    for name, number in table.items():
        if name not in ("clone", "clone3"):
            out += [_op(JEQ_K, number, 0, 1), deny]
    out += [_op(JEQ_K, table["clone3"], 0, 1), _op(RET_K, RET_ERRNO | errno.ENOSYS),
            _op(JEQ_K, table["clone"], 1, 0), _op(RET_K, RET_ALLOW),
            _op(LD_W_ABS, ARG0_LOW),  # clone's flags
            _op(JSET_K, CLONE_NAMESPACES, 0, 1), deny,
            _op(JSET_K, CLONE_THREAD, 0, 1), _op(RET_K, RET_ALLOW), deny]
    return b"".join(out)
