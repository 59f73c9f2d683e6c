"""Where everything lives under the runtime dir.

What others may rely on (docs/daemon.md, "Layout of the runtime dir"): API NAME
listens on `<runtime>/NAME.sock`, the control socket is
`<runtime>/control.sock`. Everything else is internal.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DAEMON_NAME = "wsgi-supervisor"  # the daemon's own name in the logs
DEFAULT_RUNTIME_DIR = Path("/run/wsgi-supervisor")
DEFAULT_CONF_DIR = Path("/etc/wsgi-supervisor/conf.d")
# service names that would collide with files of the daemon's own
RESERVED_SERVICE_NAMES = frozenset({"control"})

# An API's server instances are "" (NAME.ini, NAME.json…), "b" and "c": a reload starts
# one that is neither serving nor still retiring from an earlier reload, so no two live
# instances ever share a file, a stats socket or a FIFO.
INSTANCES = ("", "b", "c")


def free_instance(serving: str, busy: set[str]) -> str | None:
    """An instance a reload may start: not the serving one, not one still stopping."""
    return next((i for i in INSTANCES if i != serving and i not in busy), None)


@dataclass(frozen=True)
class Layout:
    runtime_dir: Path

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    def api_socket(self, name: str) -> Path:
        return self.runtime_dir / f"{name}.sock"

    @property
    def vassal_dir(self) -> Path:
        return self.runtime_dir / "vassals"

    # Service names hold no dot, so NAME.b and NAME.c never clash with another service.

    @staticmethod
    def instance_id(name: str, instance: str = "") -> str:
        return f"{name}.{instance}" if instance else name

    def vassal_file(self, name: str, instance: str = "") -> Path:
        return self.vassal_dir / f"{self.instance_id(name, instance)}.ini"

    @property
    def stats_dir(self) -> Path:
        return self.runtime_dir / "stats"

    def master_dir(self, name: str, instance: str = "") -> Path:
        """Where a vassal's master makes its stats socket and master FIFO: its own dir, owned by the
        service's user (the launcher makes it so), since that master runs as that user."""
        return self.stats_dir / self.instance_id(name, instance)

    def stats_socket(self, name: str, instance: str = "") -> Path:
        return self.master_dir(name, instance) / "stats.sock"

    @property
    def fifo_dir(self) -> Path:
        return self.runtime_dir / "fifo"

    def master_fifo(self, name: str, instance: str = "") -> Path:
        return self.master_dir(name, instance) / "master.fifo"

    def vassal_log(self, name: str, instance: str = "") -> Path:
        """The FIFO a vassal's logger writes into (its output and its request lines)."""
        return self.fifo_dir / f"{self.instance_id(name, instance)}.log"

    @property
    def gunicorn_dir(self) -> Path:
        return self.runtime_dir / "gunicorn"

    def gunicorn_log(self, name: str, instance: str = "") -> Path:
        """The FIFO an arbiter's log relay writes into (its tree's output and request lines)."""
        return self.gunicorn_dir / f"{self.instance_id(name, instance)}.log"

    def gunicorn_spec(self, name: str, instance: str = "") -> Path:
        """What an arbiter is told (its settings); also how a next daemon recognises it."""
        return self.gunicorn_dir / f"{self.instance_id(name, instance)}.json"

    def gunicorn_board(self, name: str, instance: str = "") -> Path:
        return self.gunicorn_dir / f"{self.instance_id(name, instance)}.board"

    @property
    def notify_dir(self) -> Path:
        return self.runtime_dir / "notify"

    def notify_socket(self, name: str) -> Path:
        return self.notify_dir / f"{name}.sock"

    @property
    def daemon_dir(self) -> Path:
        return self.runtime_dir / "daemon"

    @property
    def launch_socket(self) -> Path:
        """Where the vassals' launchers ask for their service's socket (root only, 0600)."""
        return self.daemon_dir / "launch.sock"

    @property
    def log_socket(self) -> Path:
        return self.daemon_dir / "log.sock"

    @property
    def launcher(self) -> Path:
        """The emperor's wrapper: a shell line that runs the vassal's service launcher."""
        return self.daemon_dir / "launcher"

    @property
    def launch_dir(self) -> Path:
        return self.daemon_dir / "launch"

    def service_launcher(self, name: str) -> Path:
        """The launcher of one service, on that service's Python."""
        return self.launch_dir / name

    @property
    def launcher_code(self) -> Path:
        """The launchers' one copy of uwsgi/launcher.py, which each service's launcher runs from its
        bytecode (in `__pycache__` beside it). Service names hold no dot: no service is called so."""
        return self.launch_dir / "launcher.py"

    @property
    def emperor_pidfile(self) -> Path:
        return self.daemon_dir / "emperor.pid"

    @property
    def emperor_stats(self) -> Path:
        return self.daemon_dir / "emperor.stats"

    @property
    def emperor_log(self) -> Path:
        return self.daemon_dir / "emperor.log"

    @property
    def daemon_pidfile(self) -> Path:
        return self.daemon_dir / "daemon.pid"

    @property
    def state_file(self) -> Path:
        return self.daemon_dir / "state.json"

    def private_dirs(self) -> list[Path]:
        return [
            self.vassal_dir,
            self.stats_dir,
            self.fifo_dir,
            self.gunicorn_dir,
            self.notify_dir,
            self.daemon_dir,
            self.launch_dir,
        ]
