"""Backing services started privately for a test or a bench: MariaDB from Debian (`mariadb-server`).

It runs as our own child, on loopback on a free port, with its data dir and socket under a directory of the
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
