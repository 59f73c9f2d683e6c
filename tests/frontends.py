"""Private Apache and nginx instances on loopback, with configs of their own."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MODULES = "/usr/lib/apache2/modules"


def proxy_config(daemon, server: str, port: int) -> str:
    """`wsgictl proxy-config SERVER --vhost` for a daemon under test, listening on 127.0.0.1:PORT."""
    from support import WSGICTL

    return subprocess.run(
        [
            str(WSGICTL),
            "--runtime-dir",
            str(daemon.runtime_dir),
            "--conf-dir",
            str(daemon.conf_dir),
            "proxy-config",
            server,
            "--vhost",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


class FrontEnd:
    name = ""

    def __init__(self, workdir: Path, site: str, port: int):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        (self.dir / "site.conf").write_text(site)
        self.proc: subprocess.Popen | None = None

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.test_command(), capture_output=True, text=True)

    def start(self) -> FrontEnd:
        log = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.dir / 'stdout.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} does not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Apache(FrontEnd):
    name = "apache"

    def conf(self) -> Path:
        conf = self.dir / "apache.conf"
        modules = ["mpm_event", "authz_core", "proxy", "proxy_uwsgi", "proxy_http", "headers"]
        loads = "\n".join(f"LoadModule {m}_module {MODULES}/mod_{m}.so" for m in modules)
        conf.write_text(
            f"""ServerRoot "/usr/lib/apache2"
ServerName localhost
Listen 127.0.0.1:{self.port}
PidFile {self.dir}/apache.pid
DefaultRuntimeDir {self.dir}
Mutex file:{self.dir} default
ErrorLog {self.dir}/error.log
LogLevel warn
User www-data
Group www-data
{loads}
Include {self.dir}/site.conf
"""
        )
        return conf

    def command(self) -> list[str]:
        return ["apache2", "-f", str(self.conf()), "-DFOREGROUND"]

    def test_command(self) -> list[str]:
        return ["apache2", "-f", str(self.conf()), "-t"]

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)  # a graceful restart


class Nginx(FrontEnd):
    name = "nginx"

    temp: Path | None = None

    def conf(self) -> Path:
        shutil.copy("/etc/nginx/uwsgi_params", self.dir / "uwsgi_params")
        if self.temp is None:
            # nginx's workers (www-data) spool request bodies there (a chunked body to a uwsgi
            # backend is always spooled): outside pytest's dirs, which are root's alone (0700)
            self.temp = Path(tempfile.mkdtemp(prefix="ngx-temp-"))
            self.temp.chmod(0o711)
        temps = ""
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            path = self.temp / kind
            path.mkdir(exist_ok=True)
            shutil.chown(path, "www-data", "www-data")
            temps += f"    {kind}_temp_path {path};\n"
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""user www-data www-data;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temps}    include {self.dir}/site.conf;
}}
"""
        )
        return conf

    def command(self) -> list[str]:
        return [
            "nginx",
            "-p",
            str(self.dir),
            "-c",
            str(self.conf()),
            "-e",
            str(self.dir / "error.log"),
            "-g",
            "daemon off;",
        ]

    def test_command(self) -> list[str]:
        return ["nginx", "-p", str(self.dir), "-c", str(self.conf()), "-e", str(self.dir / "error.log"), "-t"]

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        super().stop()
        if self.temp is not None:
            shutil.rmtree(self.temp, ignore_errors=True)
            self.temp = None
