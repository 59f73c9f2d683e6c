"""The control plane's backing services, each started privately by a test: MariaDB and RabbitMQ from Debian.

Each runs as the test's own child on loopback, on ports chosen free, with its data, logs and sockets under
the test's directory, and is stopped by pid at the end: nothing of it outlives the `with` block.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from supervisor.observe.procs import alive, descendants

MARIADB_USER = "openstack"
MARIADB_PASSWORD = "openstack-db"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_tree(proc: subprocess.Popen, timeout: float = 30.0) -> list[int]:
    """SIGTERM `proc`, wait for it, then SIGKILL whatever of its tree is still alive; which pids were left."""
    tree = set(descendants(proc.pid))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    left = [pid for pid in tree if alive(pid)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_until(ready, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{tail(log)}")


def tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


# -- MariaDB ------------------------------------------------------------------------


@dataclass
class MariaDB:
    port: int
    socket_path: Path

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of database `dbname`, as oslo.db's `connection` takes it."""
        return f"mysql+pymysql://{MARIADB_USER}:{MARIADB_PASSWORD}@127.0.0.1:{self.port}/{dbname}?charset=utf8"

    def create(self, dbname: str) -> None:
        """An empty database `dbname` (if there is none)."""
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{dbname}` CHARACTER SET utf8mb4")

    def sql(self, statement: str) -> str:
        done = subprocess.run(
            ["mariadb", "--no-defaults", "-S", str(self.socket_path), "-uroot", "-N", "-e", statement],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb: {statement!r}: {done.stderr.strip()}")
        return done.stdout


@contextlib.contextmanager
def private_mariadb(workdir: Path) -> Iterator[MariaDB]:
    """A MariaDB server of the test's own on 127.0.0.1 (a free port), its data dir under `workdir`.

    A user `openstack` may do everything from loopback; `.url(name)` is a database's SQLAlchemy URL.
    """
    base = workdir / "mariadb"
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    # unix socket paths are limited to 107 bytes: pytest's dirs can be longer
    sockdir = Path(tempfile.mkdtemp(prefix="mdb-"))
    sock = sockdir / "mariadb.sock"
    log = base / "mariadb.log"
    installed = subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={data}",
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ],
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        shutil.rmtree(sockdir, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db: {installed.stdout}{installed.stderr}")
    port = free_port()
    proc = subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={sock}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            "--user=root",
            f"--pid-file={base / 'mariadb.pid'}",
            f"--log-error={log}",
            "--skip-log-bin",
            "--skip-name-resolve",
            # every worker of every service keeps a pool of connections
            "--max-connections=2000",
            "--innodb-buffer-pool-size=256M",
            # a test's data need not survive a power cut: schema migrations go much faster
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        db = MariaDB(port, sock)

        def answers() -> bool:
            if not sock.exists():
                return False
            try:
                db.sql("SELECT 1")
            except RuntimeError:
                return False
            return True

        wait_until(answers, proc, "mariadbd", log)
        db.sql(
            f"CREATE USER '{MARIADB_USER}'@'127.0.0.1' IDENTIFIED BY '{MARIADB_PASSWORD}';"
            f" GRANT ALL PRIVILEGES ON *.* TO '{MARIADB_USER}'@'127.0.0.1' WITH GRANT OPTION"
        )
        yield db
    finally:
        left = stop_tree(proc, timeout=60)
        shutil.rmtree(sockdir, ignore_errors=True)
        assert not left, f"mariadbd left processes behind: {left}"


# -- RabbitMQ -----------------------------------------------------------------------

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the script itself: /usr/sbin's switches user


@dataclass
class RabbitMQ:
    port: int
    nodename: str

    def url(self, vhost: str = "") -> str:
        """oslo.messaging's `transport_url` for this broker (the default vhost, or `vhost`)."""
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/{vhost}"


def speaks_amqp(port: int) -> bool:
    """The broker answers an AMQP 0-9-1 header with its Connection.Start frame (type 1)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"
    except OSError:
        return False


@contextlib.contextmanager
def private_rabbitmq(workdir: Path) -> Iterator[RabbitMQ]:
    """A RabbitMQ broker of the test's own on 127.0.0.1: its own node name, mnesia and log dirs, free ports,
    and an epmd of its own on a port of its own (started here and stopped here, not left for the host)."""
    base = workdir / "rabbitmq"
    base.mkdir(parents=True, exist_ok=True)
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    nodename = f"rabbit-test-{port}@localhost"
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        "loopback_users.guest = false\n"
        "log.console = false\n"
        "log.file.level = info\n"
        # the test's disk may be fuller than RabbitMQ's default alarm expects
        "disk_free_limit.absolute = 50MB\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("")
    log = base / "stdout.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(base),  # the Erlang cookie is written there
        "LANG": "C.UTF-8",
        "RABBITMQ_NODENAME": nodename,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
    }
    out = open(log, "ab")
    # epmd first, in the foreground, as our child: the node registers with it instead of starting one
    # of its own in the background, which would outlive the test
    epmd = subprocess.Popen(
        ["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    proc = None
    try:
        wait_until(lambda: listens(epmd_port), epmd, "epmd", log, timeout=20)
        proc = subprocess.Popen(
            [RABBITMQ_SERVER], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        wait_until(lambda: speaks_amqp(port), proc, "rabbitmq-server", log, timeout=120)
        yield RabbitMQ(port, nodename)
    finally:
        left = stop_tree(proc, timeout=60) if proc is not None else []
        left += stop_tree(epmd, timeout=10)
        out.close()
        assert not left, f"rabbitmq left processes behind: {left}"


def listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
