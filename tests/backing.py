"""Backing services started privately for a test or a bench: MariaDB and RabbitMQ from Debian
(`mariadb-server`, `rabbitmq-server`).

Each runs as our own child, on loopback on a free port, with its data dir and socket under a directory of the
caller's, and is stopped by pid at the end of the `with` block, its whole tree checked.
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

DB_USER = "openstack"
DB_PASSWORD = "openstack-db"


@dataclass
class MariaDB:
    port: int
    socket_path: Path

    def url(self, dbname: str) -> str:
        """Database `dbname`'s SQLAlchemy URL (oslo.db's `connection`), over TCP so that a service's
        connections show by remote port."""
        return f"mysql+pymysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{dbname}?charset=utf8"

    def create(self, dbname: str) -> None:
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{dbname}` CHARACTER SET utf8mb4")

    def sql(self, statement: str) -> str:
        """Run `statement` as root over the unix socket; its output, or RuntimeError with MariaDB's words."""
        done = subprocess.run(
            ["mariadb", "--no-defaults", "-S", str(self.socket_path), "-uroot", "-N", "-e", statement],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb: {statement!r}: {done.stderr.strip()}")
        return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_mariadb(workdir: Path) -> Iterator[MariaDB]:
    """A MariaDB server of our own on 127.0.0.1, its data under `workdir/mariadb`; user `openstack` may do
    everything from loopback. Needs Debian's mariadb-server (`make bench` installs it)."""
    base = workdir / "mariadb"
    (base / "data").mkdir(parents=True, exist_ok=True)
    sockdir = Path(tempfile.mkdtemp(prefix="mdb-"))  # unix socket paths are limited to 107 bytes
    sock, log = sockdir / "mysqld.sock", base / "error.log"
    common = ["--no-defaults", f"--datadir={base / 'data'}", "--user=root"]
    made = subprocess.run(
        ["mariadb-install-db", *common, "--auth-root-authentication-method=socket", "--skip-test-db"],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        shutil.rmtree(sockdir, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db failed:\n{made.stdout}{made.stderr}")
    db = MariaDB(_free_port(), sock)
    proc = subprocess.Popen(
        [
            "mariadbd",
            *common,
            f"--socket={sock}",
            f"--port={db.port}",
            "--bind-address=127.0.0.1",
            f"--pid-file={base / 'mariadbd.pid'}",
            f"--log-error={log}",
            "--skip-log-bin",
            "--skip-name-resolve",
            "--max-connections=1000",  # every worker of every service holds a pool
            "--innodb-flush-log-at-trx-commit=0",  # nothing here must survive a power cut: faster migrations
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(RuntimeError):
                if sock.exists() and db.sql("SELECT 1"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd not answering after 60 s: {log}")
            time.sleep(0.1)
        db.sql(
            f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
            f" GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1'"
        )
        yield db
    finally:
        tree = [proc.pid, *descendants(proc.pid)]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in tree:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(sockdir, ignore_errors=True)


# -- helpers for RabbitMQ ---------------------------------------------------------------


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
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


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
    port, dist_port, epmd_port = _free_port(), _free_port(), _free_port()
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
