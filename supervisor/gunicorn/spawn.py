"""How the daemon starts an arbiter: as whom, with which descriptors, in which environment.

A service with `user` has its whole gunicorn tree run as that user, the
arbiter included: the kernel drops root's rights before the exec
(subprocess's user=, group=, extra_groups=), with the user's primary group
unless `group` names another, and its supplementary groups as initgroups(3)
gives them, as uWSGI and systemd do. So no Python of the service's (a
module it planted in its `chdir`) or of gunicorn's ever runs as root.

Such an arbiter can open nothing in the daemon's private dirs: everything
it needs of the daemon comes as descriptors the daemon opened (`Handed`):
the listening socket, its spec, its log FIFO and its board.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import supervisor.gunicorn.board as board
from supervisor.accounts import identity, popen_credentials
from supervisor.gunicorn.arbiters import BOOT_FILE
from supervisor.manifest.models import ApiService

# what every arbiter inherits from the daemon's environment, as the emperor passes to vassals
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "HOME", "TMPDIR")


@dataclass(frozen=True)
class Handed:
    """The descriptors an arbiter gets, by the environment variable boot.py finds each in."""

    listener: int  # the daemon's held socket: the daemon keeps it, the others are closed once passed
    spec: int
    log: int
    board: int

    @classmethod
    def open(cls, listener: int, spec: Path, log_fifo: Path, board_path: Path, slots: int) -> Handed:
        opened: list[int] = []
        try:
            opened.append(os.open(spec, os.O_RDONLY | os.O_CLOEXEC))
            # read-write: the FIFO keeps what the relay writes while no daemon reads it (logs/fifos.py)
            opened.append(os.open(log_fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
            opened.append(board.make_file(board_path, slots))
        except OSError:
            for fd in opened:
                os.close(fd)
            raise
        return cls(listener, *opened)

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.listener, self.spec, self.log, self.board)

    def environment(self) -> dict[str, str]:
        return {
            "WSGI_SUPERVISOR_FD": str(self.listener),
            "WSGI_SUPERVISOR_SPEC_FD": str(self.spec),
            "WSGI_SUPERVISOR_LOG_FD": str(self.log),
            "WSGI_SUPERVISOR_BOARD_FD": str(self.board),
        }

    def close(self) -> None:
        for fd in (self.spec, self.log, self.board):
            with contextlib.suppress(OSError):
                os.close(fd)


def credentials(service: ApiService) -> dict[str, Any]:
    """subprocess's user=, group=, extra_groups= for the service's tree ({} when it runs as the daemon)."""
    return popen_credentials(identity(service.user, service.group))


def environment(service: ApiService, handed: Handed) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
    who = identity(service.user, service.group)
    if who is not None and who.name is not None:
        env.update(HOME=who.home or "/", USER=who.name, LOGNAME=who.name)
    env["PYTHONUNBUFFERED"] = "1"
    if service.venv:
        env["VIRTUAL_ENV"] = service.venv
        env["PATH"] = f"{service.venv}/bin:" + env.get("PATH", "/usr/bin:/bin")
    env.update(service.environment)
    env.update(handed.environment())
    return env


def start(
    python: Path,
    spec_path: Path,
    service: ApiService,
    handed: Handed,
    output: int,
    preexec: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """The arbiter, started; OSError says why it could not be (in words for the operator).

    `preexec` runs in the child before the exec (it joins the service's control group)."""
    try:
        return subprocess.Popen(
            [str(python), str(BOOT_FILE), str(spec_path)],
            env=environment(service, handed),
            cwd="/",  # boot.py goes into the service's chdir, as the service's user
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            pass_fds=handed.fds,
            start_new_session=True,  # outlives the daemon, like a vassal, and is adopted
            preexec_fn=preexec,
            **credentials(service),
        )
    except PermissionError as exc:
        if service.user and exc.filename is not None:  # the exec was refused (not a step before it)
            raise OSError(exc.errno, f"the venv's python {python} is not executable by user {service.user}") from None
        raise OSError(exc.errno, f"cannot run {python}: {exc.strerror or exc}") from None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise OSError(getattr(exc, "errno", None), f"cannot run {python}: {why}") from None
