"""Opening the log dir and the log files so that no one else chooses what the daemon writes.

The daemon writes as root, so a log file opened by following a symbolic link
would write wherever the link points (`/etc/shadow`, a unit file): a user who
could once write into the log dir could plant one. Every open of a log file,
at the first line and after each rotation, refuses a symbolic link
(O_NOFOLLOW), anything but a regular file, a file with other hard links and
one that another user owns; and sets the file's mode and group, so that a
file made by an earlier version (0644) is tightened. The log dir gets its
mode, group and owner at start, unless it holds what is not the daemon's
(`--log-dir /var/log` by mistake must not close the host's logs to syslog).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("wsgi-supervisor")

# what the daemon writes in its log dir: NAME.log and its rotated NAME.log.N
OURS = re.compile(r"[a-z0-9][a-z0-9_-]*\.log(\.[0-9]+)?")
FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafeLogFile(OSError):
    """A log file the daemon refuses to write to, and why."""


@dataclass(frozen=True)
class LogAccess:
    """Who may read the logs: the dir's and the files' modes and their group (None: the daemon's)."""

    dir_mode: int = 0o750
    file_mode: int = 0o640
    gid: int | None = None


def prepare_dir(directory: Path, access: LogAccess) -> None:
    """Make the log dir, or take it in hand: the daemon's user owns it, with `access`'s mode and group."""
    directory.mkdir(parents=True, exist_ok=True, mode=access.dir_mode)
    others = sorted(name for name in os.listdir(directory) if not OURS.fullmatch(name))
    if others:
        log.warning(
            "log dir %s holds files that are not the daemon's (%s): its mode and owner are left as they are; "
            "give the daemon a dir of its own",
            directory,
            ", ".join(others[:5]),
        )
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        gid = access.gid if access.gid is not None else os.getegid()
        if st.st_uid != os.geteuid() or st.st_gid != gid:
            try:
                os.fchown(fd, os.geteuid(), gid)
            except OSError as exc:
                log.warning("log dir %s: cannot make it ours (uid %d, gid %d): %s", directory, os.geteuid(), gid, exc)
        if stat.S_IMODE(st.st_mode) != access.dir_mode:
            os.fchmod(fd, access.dir_mode)
    finally:
        os.close(fd)


def open_log(path: str | os.PathLike[str], access: LogAccess) -> int:
    """A descriptor to append to `path`, made with `access`'s mode and group; UnsafeLogFile
    (an OSError) for a symbolic link, anything but a regular file, or a file with other links."""
    try:
        fd = os.open(path, FLAGS, access.file_mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeLogFile(
                errno.ELOOP, f"{path} is a symbolic link: not followed, nothing written (remove it: it may be planted)"
            ) from None
        if exc.errno == errno.ENXIO:
            raise UnsafeLogFile(errno.ENXIO, f"{path} is a FIFO, not a log file: nothing written") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeLogFile(errno.EINVAL, f"{path} is not a regular file: nothing written")
        if st.st_nlink > 1:
            raise UnsafeLogFile(errno.EMLINK, f"{path} has other hard links: nothing written (remove it)")
        if st.st_uid != os.geteuid():
            raise UnsafeLogFile(errno.EPERM, f"{path} belongs to uid {st.st_uid}: nothing written (remove it)")
        if access.gid is not None and st.st_gid != access.gid:
            os.fchown(fd, -1, access.gid)
        if stat.S_IMODE(st.st_mode) != access.file_mode:
            os.fchmod(fd, access.file_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
