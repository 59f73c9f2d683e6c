"""Test support: a daemon under test, and clients for the API sockets."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from supervisor.observe.cgroups import base_name, cgroup2_mount
from supervisor.observe.procs import alive, descendants

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
BIN = Path(sys.executable).parent
DAEMON = BIN / "wsgi-supervisor"
WSGICTL = BIN / "wsgictl"


# -- clients ------------------------------------------------------------------


def uwsgi_request(sock_path, path="/", method="GET", body=b"", timeout=10.0, headers=None):
    """One request over the uwsgi protocol; returns (status, headers, body)."""
    path_info, _, query = path.partition("?")
    env = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": path,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "127.0.0.1",
    }
    for key, value in (headers or {}).items():
        env["HTTP_" + key.upper().replace("-", "_")] = value
    packet = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode() for k, v in env.items()
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(struct.pack("<BHB", 0, len(packet), 0) + packet + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    if not data:
        raise ConnectionError("the connection closed without a response")
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return status, hdrs, payload


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10.0):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def http_request(sock_path, path="/", method="GET", body=None, headers=None, timeout=10.0):
    conn = UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def get_json(sock_path, path="/", protocol="uwsgi"):
    if protocol == "http":
        status, _, body = http_request(sock_path, path)
    else:
        status, _, body = uwsgi_request(sock_path, path)
    assert status == 200, (status, body)
    return json.loads(body)


# -- the daemon under test ------------------------------------------------------


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def metrics_daemon(tmp: Path, manifest: str, server: str | None = None, sample_interval: float = 0.5):
    """A daemon with every service of `manifest` started (APIs under `server`), its metrics on a
    port of its own at `.metrics_url`; stopped at the end."""
    port = free_port()
    d = Daemon(tmp, extra_args=["--metrics-listen", f"127.0.0.1:{port}", "--sample-interval", str(sample_interval)])
    write_manifest(d.conf_dir, manifest, server=server)
    try:
        d.start()
        d.ctl("start", "--all")
        d.port = port
        d.metrics_url = f"http://127.0.0.1:{port}/metrics"
        yield d
    finally:
        d.stop()


def write_manifest(conf_dir: Path, text: str, name: str = "services.toml", server: str | None = None) -> None:
    """Write a manifest file; with `server`, every API table that names no server runs under that one."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    if server is not None:
        text = with_server(text, server)
    (conf_dir / name).write_text(text)


def with_server(text: str, server: str) -> str:
    """`server = "<server>"` on the line after each `kind = "api"` line of a table that has no `server =` line."""
    tables: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.lstrip().startswith("["):
            tables.append([])
        tables[-1].append(line)
    out: list[str] = []
    for table in tables:
        named = any(line.split("=", 1)[0].strip() == "server" for line in table if "=" in line)
        for line in table:
            out.append(line)
            if not named and line.replace(" ", "").strip() == 'kind="api"':
                out.append(f'server = "{server}"')
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


class Daemon:
    """A wsgi-supervisor process on a private runtime dir, stopped and checked for leftovers."""

    def __init__(self, tmp: Path, extra_args=(), wrapper=(), runtime_base="/tmp", env=None):
        self.conf_dir = tmp / "conf.d"
        # unix socket paths are limited to 107 bytes: keep the runtime dir short
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="wsr-", dir=runtime_base))
        self.log_path = tmp / "daemon.log"
        self.extra_args = list(extra_args)
        if "--metrics-listen" not in self.extra_args:
            self.extra_args += ["--metrics-listen", ""]  # tests that scrape ask for a port of their own
        self.wrapper = list(wrapper)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.seen: set[int] = set()

    def start(self, wait=True, timeout=30.0):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *self.wrapper,
                str(DAEMON),
                "--conf-dir",
                str(self.conf_dir),
                "--runtime-dir",
                str(self.runtime_dir),
                *self.extra_args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        if wait:
            self.wait_control(timeout)
        return self

    def wait_control(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            if self.ctl("status", "--json", check=False).returncode in (0, 3):
                return
            time.sleep(0.05)
        raise AssertionError(f"daemon not answering after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def ctl(self, *args, check=True, timeout=120):
        result = subprocess.run(
            [str(WSGICTL), "--runtime-dir", str(self.runtime_dir), "--conf-dir", str(self.conf_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"wsgictl {' '.join(args)} -> {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def status(self, *names) -> dict[str, dict]:
        result = self.ctl("status", "--json", *names, check=False)
        assert result.returncode in (0, 3), result.stderr
        return {s["name"]: s for s in json.loads(result.stdout)}

    def socket(self, name) -> Path:
        return self.runtime_dir / f"{name}.sock"

    def wait_for(self, predicate, timeout=30.0, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.status()
            if predicate(last):
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(last, indent=1)}")

    def wait_state(self, name, state, timeout=30.0):
        return self.wait_for(lambda s: s[name]["state"] == state, timeout, f"{name} {state}")[name]

    def remember_processes(self):
        if self.proc and self.proc.poll() is None:
            self.seen.update(descendants(self.proc.pid))

    def stop(self, timeout=20.0, remove=True) -> float:
        """SIGTERM the daemon; returns how long it took. Kills and fails on leftovers.

        The runtime dir is removed, unless `remove` is false (the test looks into it, then removes it).
        """
        if self.proc is None:
            return 0.0
        self.remember_processes()
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        took = time.monotonic() - started
        self.log.close()
        leftovers = kill_leftovers(self.seen, self.runtime_dir)
        self.proc = None
        if remove:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        assert not leftovers, f"processes left behind: {leftovers}"
        return took


def kill_leftovers(pids, runtime_dir: Path) -> list[int]:
    """Kill what the test started and is still alive (by pid), and say which."""
    left = [p for p in pids if alive(p)]
    pidfile = runtime_dir / "daemon" / "emperor.pid"
    if pidfile.exists():
        try:
            emperor = int(pidfile.read_text())
            if alive(emperor) and emperor not in left:
                left.append(emperor)
                left.extend(p for p in descendants(emperor) if p not in left)
        except ValueError:
            pass
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left + [f"control group {g}" for g in remove_groups(runtime_dir)]


def daemon_groups(runtime_dir: Path) -> list[Path]:
    """The control group a daemon on `runtime_dir` made (observe/cgroups.py), wherever it is in the hierarchy."""
    mount = cgroup2_mount()
    if mount is None:
        return []
    wanted = base_name(runtime_dir)
    return [Path(top) / d for top, dirs, _ in os.walk(mount) for d in dirs if d == wanted]


def remove_groups(runtime_dir: Path) -> list[Path]:
    """Kill what is left in a stopped daemon's control groups and remove them; which were left."""
    left = daemon_groups(runtime_dir)
    for base in left:
        with contextlib.suppress(OSError):
            (base / "cgroup.kill").write_text("1")
        for _ in range(100):
            if "populated 0" in (base / "cgroup.events").read_text():
                break
            time.sleep(0.05)
        for path in sorted((Path(top) for top, _, _ in os.walk(base)), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
    return left


def wsgictl_as(user: str, group: str, runtime_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """wsgictl run as another local user (with Debian's own Python: the venv's lives under /root)."""
    return subprocess.run(
        ["/usr/bin/python3", "-m", "supervisor.cli.commands", "--runtime-dir", str(runtime_dir), *args],
        capture_output=True,
        text=True,
        user=user,
        group=group,
        extra_groups=[],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        cwd="/",
        timeout=30,
    )


class Load:
    """Steady load on one API socket: `threads` clients sending requests back to back.

    Counts every request that did not get a 200 (status, reset, refused,
    timeout) and keeps every latency, so a test can say how many failed
    while something else was going on.
    """

    def __init__(self, sock_path, threads: int = 4, path: str = "/", timeout: float = 30.0):
        import threading

        self.sock_path = sock_path
        self.path = path
        self.timeout = timeout
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        while not self.stop_flag.is_set():
            started = time.monotonic()
            try:
                status, _, _ = uwsgi_request(self.sock_path, self.path, timeout=self.timeout)
                error = None if status == 200 else f"status {status}"
            except OSError as exc:
                error = f"{type(exc).__name__}: {exc}"
            took = time.monotonic() - started
            with self.lock:
                self.latencies.append((started, took))
                if error is None:
                    self.ok += 1
                else:
                    self.failures.append(error)

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < n and time.monotonic() < deadline:
            time.sleep(0.01)


# -- real OpenStack services from PyPI --------------------------------------------


SERVER_PACKAGES = ("pyuwsgi", "gunicorn")  # a service venv runs its API under either server


def service_venv(name: str, *packages: str) -> Path:
    """A venv of its own under .cache/ with `packages`, pyuwsgi and gunicorn, made once and kept across runs.

    The marker names what was installed: a venv made before with fewer packages gets the rest added.
    Made under the real path of .cache (a worktree's is a link to the main checkout's), since its
    scripts' `#!` lines name the path it was made at: they then outlive the worktree.
    """
    venv = (ROOT / ".cache").resolve() / f"{name}-venv"
    marker = venv / ".ready"
    wanted = " ".join((*packages, *SERVER_PACKAGES))
    if marker.exists() and not scripts_run(venv):
        marker.unlink()  # made elsewhere (a worktree since removed): made again here
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *packages, *SERVER_PACKAGES], check=True)
        marker.write_text(wanted)
    return venv


def contrib_for_this_host(project: str, venv: Path, config_dir: Path | str, environment: str = "") -> str:
    """contrib/openstack/PROJECT.toml as shipped, only its [defaults] set for this host: the test's venv, no
    user (the suite runs as root), the config dir, and `environment`'s entries (TOML) beside it if given."""
    text = (ROOT / "contrib" / "openstack" / f"{project}.toml").read_text()
    variable = f"OS_{project.upper()}_CONFIG_DIR"
    more = f", {environment}" if environment else ""
    for shipped, here in (
        (f'venv = "/opt/openstack/{project}"', f'venv = "{venv}"'),
        (f'user = "{project}"\n', ""),
        (f'{variable} = "/etc/{project}"', f'{variable} = "{config_dir}"{more}'),
    ):
        assert text.count(shipped) == 1, shipped
        text = text.replace(shipped, here)
    return text


def scripts_run(venv: Path) -> bool:
    """Whether the interpreter that the venv's scripts name (their `#!` line) is there."""
    try:
        first = (venv / "bin" / "pip").read_text().split("\n", 1)[0]
    except OSError:
        return False
    return first.startswith("#!") and Path(first[2:].split()[0]).exists()


def stop_foreground(proc: subprocess.Popen) -> None:
    """Ctrl-C to a foreground command (`wsgictl serve`): it must end; killed (and the test failed) if not."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()  # leave nothing behind, and fail
        proc.wait()
        raise


@contextlib.contextmanager
def holding_listener():
    """A loopback TCP port that accepts and holds every connection, as a database or memcached would
    (for what a count of connections or the fork-safety guard sees); yields the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(srv.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        thread.join(5)
        for conn in held:
            conn.close()
