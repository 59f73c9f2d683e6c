"""The uWSGI emperor process: started or adopted, poked, read, stopped.

The emperor outlives the daemon on purpose: a daemon that is killed or
upgraded leaves the emperor and every vassal serving, and the next daemon
adopts them from the pid file in the runtime dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from pathlib import Path

from . import uwsgi
from .layout import Layout
from .procs import alive, cmdline

log = logging.getLogger("wsgi-supervisor")

# what the emperor and so every vassal inherit from the daemon's environment
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "HOME", "TMPDIR")


class EmperorError(RuntimeError):
    pass


def own_uwsgi() -> tuple[Path, Path]:
    """The Python and pyuwsgi entry point installed beside this daemon."""
    venv = Path(sys.prefix)
    python = venv / "bin" / "python3"
    entry = venv / "bin" / "uwsgi"
    if not entry.exists():
        raise EmperorError(f"pyuwsgi is not installed beside wsgi-supervisor ({entry} is missing)")
    return python, entry


class Emperor:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.pid: int | None = None
        self.adopted = False

    # -- start / adopt --------------------------------------------------------

    def _log_fifo(self) -> int:
        """The emperor's stdout and stderr: a FIFO the daemon reads.

        Opened read-write and non-blocking on the emperor's side, so the
        emperor never gets EPIPE or blocks when no daemon reads it (it is
        restarting): its lines are dropped instead.
        """
        path = self.layout.emperor_log
        if path.exists() and not stat.S_ISFIFO(path.stat().st_mode):
            path.unlink()
        if not path.exists():
            os.mkfifo(path, 0o600)
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def spawn(self) -> int:
        python, entry = own_uwsgi()
        argv = uwsgi.emperor_argv(entry, python, self.layout)
        env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        out = self._log_fifo()
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            pid = os.posix_spawn(
                str(python),
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0),
                    (os.POSIX_SPAWN_DUP2, out, 1),
                    (os.POSIX_SPAWN_DUP2, out, 2),
                ],
                # its own session: a Ctrl-C at the daemon's terminal must not
                # reach the emperor; the daemon stops it in order
                setsid=True,
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE, signal.SIGCHLD),
            )
        finally:
            os.close(out)
            os.close(devnull)
        self.pid = pid
        self.adopted = False
        self.layout.emperor_pidfile.write_text(f"{pid}\n")
        log.info("emperor started (pid %d)", pid)
        return pid

    def find_running(self) -> int | None:
        """The pid of an emperor a previous daemon left serving this runtime dir."""
        try:
            pid = int(self.layout.emperor_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        argv = cmdline(pid)
        if not alive(pid) or "--emperor" not in argv or str(self.layout.vassal_dir) not in argv:
            return None
        return pid

    def adopt(self, pid: int) -> None:
        self.pid = pid
        self.adopted = True
        log.info("adopted the running emperor (pid %d)", pid)

    # -- talk ----------------------------------------------------------------

    async def stats(self, timeout: float = 2.0) -> tuple[int, dict[str, uwsgi.EmperorVassal]] | None:
        """The emperor's view of its vassals. Connecting also makes it rescan
        the vassal dir at once, which is how the daemon pokes it."""
        raw = await read_unix(self.layout.emperor_stats, timeout)
        if raw is None:
            return None
        try:
            return uwsgi.parse_emperor_stats(raw)
        except ValueError:
            return None

    async def poke(self) -> None:
        await self.stats(timeout=1.0)

    def signal(self, sig: int) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


async def read_unix(path: Path, timeout: float) -> bytes | None:
    """Everything a stats socket sends, or None if it does not answer in time."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                return await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
