"""Trusted-only runs: the program on the host, for a user who runs only code they trust.

Threat model: none. This is what ``rollout.code_isolation=trusted-only`` asks for where bubblewrap
cannot run (see :func:`bgpo.sandbox.bwrap.require`, which warns once): a working directory on
the host, the program's own session (killed as a group at the end), the same rlimits and the
same Python guard as in the sandbox -- which a hostile program gets round. The directory is then
deleted by :func:`remove_tree`, which never follows a link the program left.
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import tempfile

from bgpo.sandbox.bwrap import BOOT, Sandboxed, reap


def start(python: str, boot_fd: int, pass_fds: tuple[int, ...], stdin: bool) -> Sandboxed:
    """Start :data:`~bgpo.sandbox.bwrap.BOOT` in a fresh host directory, in a session of its own."""
    workdir = tempfile.mkdtemp(prefix="bgpo-trusted-")
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir, "BGPO_SANDBOX": "1",
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        proc = subprocess.Popen([python, "-I", "-S", "-B", "-c", BOOT, str(boot_fd)], cwd=workdir, env=env,
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(boot_fd, *pass_fds), start_new_session=True)
    except BaseException:
        remove_tree(workdir)
        raise
    return Sandboxed(proc, None, None, [proc.stdout.fileno(), proc.stderr.fileno()], workdir)


def end(run: Sandboxed) -> bool:
    """Kill the run's session, reap it, delete its directory; True (a host run proves nothing more)."""
    reap(run)
    if run.host_dir is not None:
        remove_tree(run.host_dir)
    return True


def remove_tree(path: str) -> None:
    """Delete ``path`` whatever a program left in it, never following a link and never raising.

    Every directory is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to an fd of its parent and
    changed only through that fd, so swapping a directory for a symlink mid-way makes the open
    fail instead of reaching outside. Iterative and flat: each directory's subdirectories are
    moved up into the top one, so depth costs neither recursion nor long paths; FIFOs and sockets
    are unlinked, never opened.
    """
    try:
        top = _open_dir(None, path)
    except OSError:  # gone already, or not a directory
        return
    fresh = (f".bgpo-up-{i}" for i in itertools.count())
    try:
        while names := os.listdir(top):
            progress = False
            for name in names:
                try:
                    _remove_entry(top, name, fresh)
                    progress = True
                except OSError:
                    pass
            if not progress:
                break
    except OSError:
        pass
    finally:
        os.close(top)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _open_dir(parent: int | None, name: str, keep: bool = True) -> int | None:
    """A readable fd on directory ``name`` (made ``rwx`` for us first), refusing symlinks; with
    ``keep=False`` only the ``rwx`` (an ordinary user moves a directory only if it may write it)."""
    flags = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    handle = os.open(name, flags | os.O_PATH, dir_fd=parent)
    try:
        os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)  # the very inode the handle holds, not a path
        return os.open(".", flags | os.O_RDONLY, dir_fd=handle) if keep else None
    finally:
        os.close(handle)


def _remove_entry(top: int, name: str, fresh) -> None:
    """Remove entry ``name`` of ``top``; a directory's subdirectories are moved up into ``top``."""
    try:
        os.unlink(name, dir_fd=top)
        return
    except IsADirectoryError:
        pass
    except PermissionError:  # EPERM from unlink(2) on a directory
        if not stat.S_ISDIR(os.stat(name, dir_fd=top, follow_symlinks=False).st_mode):
            raise
    fd = _open_dir(top, name)
    try:
        for child in os.listdir(fd):
            try:
                os.unlink(child, dir_fd=fd)
            except (IsADirectoryError, PermissionError):
                try:  # rename(2) of a directory to another parent writes its '..' entry
                    _open_dir(fd, child, keep=False)
                except OSError:  # not a directory (or a link): moved as it is
                    pass
                os.rename(child, next(fresh), src_dir_fd=fd, dst_dir_fd=top)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=top)


