"""Small Linux process helpers: pidfds, process trees, taking an fd from another process.

Process trees, states and command lines come from psutil. What psutil does
not offer is read here by hand: pidfd_getfd(2), the syscall a task waits in
(/proc/PID/syscall), and which fd of a process is the listening unix socket
bound at a path (psutil's unix connections carry no inode and no listening
flag, so a listener and the connections it accepted look the same).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_PIDFD_GETFD = 438  # the same number on x86_64 and aarch64


def pidfd_open(pid: int) -> int | None:
    """A pidfd for `pid` (readable once it exits), or None if it is gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def pidfd_getfd(pid: int, target_fd: int) -> int:
    """Duplicate file descriptor `target_fd` of process `pid` into this one."""
    pidfd = os.pidfd_open(pid)
    try:
        fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd
    finally:
        os.close(pidfd)


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (one of another user counts as alive)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


MAX_DEPTH = 64  # a service's tree is a handful of levels deep; a longer chain ends the search


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (in parentheses) may hold spaces and parentheses: the fields follow the last ")"
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def lineage(pid: int) -> Iterator[int]:
    """`pid`, its parent, its grandparent… up to (not including) init."""
    for _ in range(MAX_DEPTH):
        if pid <= 1:
            return
        yield pid
        parent = parent_of(pid)
        if parent is None:
            return
        pid = parent


def is_descendant(pid: int, ancestor: int) -> bool:
    """Whether `pid` is a live process below `ancestor` (its child, grandchild…).

    psutil checks each parent against pid reuse: a parent younger than its child is not it.
    The walk stops at `ancestor`: a launcher is the emperor's child, so this is one step, where
    psutil's `parents()` climbs to pid 1 first (6 ms a launch, 0.12 s of a 20-API cold start).
    """
    try:
        proc: psutil.Process | None = psutil.Process(pid)
        while proc is not None:
            proc = proc.parent()
            if proc is not None and proc.pid == ancestor:
                return True
    except psutil.Error:
        pass
    return False


def descendants(pid: int) -> list[int]:
    """Every live process below `pid`, each before its own children (a /proc snapshot)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def running_as(pids: list[int], uid: int) -> list[int]:
    """Those of `pids` that are alive and run as `uid` (real and effective)."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            ids = psutil.Process(pid).uids()
            if ids.real == uid and ids.effective == uid:
                found.append(pid)
    return found


def processes_of(main: int, uid: int) -> list[int]:
    """`main` and every live process below it that runs as `uid` (real and effective): a service's
    processes, as far as the process tree says (a child that changed user is no longer the service's)."""
    return running_as([main, *descendants(main)], uid)


def signal_tree(pid: int, sig: int) -> int:
    """Send `sig` once to `pid` and to each of its descendants; how many it reached.

    Once each, as systemd's control-group kill does: a second SIGTERM cuts an
    oslo.service child's graceful stop short. What left the tree (a double
    fork) is not reached: a service's control group (`cgroups.py`) is.
    """
    reached = 0
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)
            reached += 1
    return reached


def socket_inode(path: Path) -> int | None:
    """The inode of the listening unix socket bound at `path`, from /proc/net/unix."""
    want = str(path)
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening
        if len(parts) >= 8 and parts[7] == want and int(parts[3], 16) & 0x10000:
            return int(parts[6])
    return None


def take_listener(pid: int, path: Path) -> int | None:
    """Duplicate the listening socket bound at `path` out of process `pid`."""
    inode = socket_inode(path)
    if inode is None:
        return None
    needle = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == needle:
                return pidfd_getfd(pid, int(fd))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EBADF):
                continue
            raise
    return None


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def describe_wait_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal_name(os.WTERMSIG(status))}"
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    return f"wait status {status}"


# poll(2) and ppoll(2) by architecture: uWSGI's paused worker waits in poll(NULL, 0, 10000)
_POLL_SYSCALLS = {"x86_64": (7, 271), "aarch64": (73,)}.get(os.uname().machine, ())


def in_pause_loop(pid: int) -> bool | None:
    """Whether uWSGI worker `pid` waits in its pause loop (a poll on no fd at all), where it
    accepts nothing until it is resumed; None when this cannot be told (no /proc/PID/syscall
    access, an unknown architecture)."""
    if not _POLL_SYSCALLS:
        return None
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except FileNotFoundError:
        return True  # gone: it accepts nothing either
    except OSError:
        return None
    if len(fields) < 3 or not fields[0].isdigit():
        return False  # "running", or the task is at no syscall
    return int(fields[0]) in _POLL_SYSCALLS and int(fields[1], 16) == 0 and int(fields[2], 16) == 0


def stopped(pid: int) -> bool:
    """Whether `pid` is stopped by a signal (state T), or gone."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return True
