"""The uWSGI emperor process: started or adopted, poked, read, stopped.

The emperor outlives the daemon on purpose: a daemon that is killed or
upgraded leaves the emperor and every vassal serving, and the next daemon
adopts them from the pid file in the runtime dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import stat
import sys
from pathlib import Path

import supervisor.uwsgi.core as uwsgi
from supervisor.config import DEFAULT_PATH
from supervisor.layout import Layout
from supervisor.observe.procs import alive, cmdline

log = logging.getLogger("wsgi-supervisor")

# what the emperor and so every vassal inherit from the daemon's environment
PASS_ENV = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "HOME", "TMPDIR")
# what every vassal gets: set in the emperor, the launchers' interpreters start with it already
EMPEROR_ENV = {"PYTHONUNBUFFERED": "1"}


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


def prepare_runtime_dir(layout: Layout, default_venv: Path) -> None:
    """The runtime dir's tree with its modes, and the launcher the emperor runs for every vassal."""
    rd = layout.runtime_dir
    rd.mkdir(parents=True, exist_ok=True)
    os.chmod(rd, 0o755)  # the front end must reach NAME.sock
    for d in layout.private_dirs():
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
    # services running as other users reach the sockets meant for them (a worker's notify socket is its
    # user's, 0600); nobody else may list these dirs
    os.chmod(layout.daemon_dir, 0o711)
    os.chmod(layout.notify_dir, 0o711)
    os.chmod(layout.stats_dir, 0o711)  # each master reaches its own dir (layout.master_dir), and no other
    _install(layout.launcher, DISPATCHER)
    # a copy, not the package's file: an upgrade on disk must not change what this daemon's vassals run
    _install(layout.launcher_code, _launcher_source())


# The emperor's wrapper runs for every vassal start, so it is the cheapest
# thing that can pick the service's own Python: the shell, with no value from
# the manifest in it (the vassal file's name is the service's, [a-z0-9_-], then
# `.ini` or `.INSTANCE.ini`: service names hold no dot).
DISPATCHER = """#!/bin/sh
# wsgi-supervisor: start this vassal through its service's launcher
for ini do :; done
name=${ini##*/}; name=${name%%.*}
exec "${0%/*}/launch/$name" "$@"
"""


def install_service_launcher(layout: Layout, name: str, python: Path, default_python: Path) -> None:
    """The launcher of one service, started by the service's own Python (the kernel reads the `#!` line).

    On that interpreter the launcher can run pyuwsgi in its own process:
    one Python start per vassal instead of two. A path the `#!` line cannot
    carry (spaces, too long) gets the daemon's Python, and the launcher then
    execs the service's.
    """
    shebang = str(python)
    if len(shebang) > 200 or any(c.isspace() for c in shebang):
        shebang = str(default_python)
    _install(layout.service_launcher(name), f"#!{shebang}\n" + LAUNCHER_STUB.format(code=str(layout.launcher_code)))


# What each service's launcher file holds after its `#!` line. A script is compiled from source at
# every start (Python keeps no bytecode for it), and launcher.py would cost each vassal start about
# 1.3 ms of that here; through the import system's loader it comes from its `__pycache__` (written
# by the first launcher of each Python version: launchers run as root until they become the user).
LAUNCHER_STUB = """\
# wsgi-supervisor: this service's launcher, which runs launcher.py beside it from its bytecode
from importlib.machinery import SourceFileLoader
code = {code!r}
exec(SourceFileLoader("__main__", code).get_code("__main__"), {{"__name__": "__main__", "__file__": code}})
"""


@functools.cache
def _launcher_source() -> str:
    return (Path(__file__).parent / "launcher.py").read_text()


def _install(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o700)
    os.replace(tmp, path)


def clear_runtime_dir(layout: Layout) -> None:
    """After a clean stop (no vassal left): the sockets that only running processes use."""
    stale = (
        layout.log_socket,
        layout.emperor_stats,
        *layout.stats_dir.glob("*/stats.sock"),
        *layout.stats_dir.glob("*/master.fifo"),
        *layout.stats_dir.glob("*.sock"),  # where an earlier version kept them
        *layout.fifo_dir.glob("*.fifo"),
        *layout.fifo_dir.glob("*.log"),
    )
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for path in layout.stats_dir.glob("*"):
        with contextlib.suppress(OSError):
            path.rmdir()


class Emperor:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.pid: int | None = None
        self.adopted = False
        self.stopping = False  # the daemon stops it: its death is no news
        self.restarts = 0  # times it died and was started again

    def alive(self) -> bool:
        return self.pid is not None and alive(self.pid)

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
        env = {k: v for k, v in os.environ.items() if k in PASS_ENV} | EMPEROR_ENV
        env.setdefault("PATH", DEFAULT_PATH)
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

    def start_or_adopt(self) -> None:
        """Adopt the emperor a previous daemon left serving, or start one (with no vassal yet)."""
        running = self.find_running()
        if running is not None:
            self.adopt(running)
            return
        for stale in self.layout.vassal_dir.glob("*.ini"):  # a dead emperor's leftovers
            stale.unlink()
        self.spawn()

    def kill_if_ours(self) -> None:
        """Undo a start that went no further (a bad manifest): it has no vassal yet."""
        if self.pid is not None and not self.adopted:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            with contextlib.suppress(FileNotFoundError):
                self.layout.emperor_pidfile.unlink()
            self.pid = None

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
