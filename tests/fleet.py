"""Several real hosts on one machine: a private LAN, systemd containers on it, sshd, HAProxy, Prometheus.

    with Fleet(workdir, MANIFEST) as fleet:
        fleet.ansible("all", "ansible.builtin.command", f"{CTL} status --json")   # over SSH
        fleet.get("/hello")                     # through HAProxy, from the LAN side
        fleet.promql("sum(wsgi_requests_total)")
        fleet.hosts[2].run("systemctl", "stop", "wsgi-supervisor")

The layout (see notes/fleet.md), every name carrying a tag unique to the run (`wsgifleet-<pid>`):

- a LAN network namespace `<tag>-lan` with a bridge, its "outside" address .254 (HAProxy on
  :8000, Prometheus on :9090, Ansible's controller, the test's clients);
- per host a network namespace `<tag>-hN`, a veth pair into the bridge, address .N, and a
  volatile systemd-nspawn container `<tag>-hN` joined to it (tests/nspawn.py) that runs sshd
  (:22), the daemon under systemd from this checkout's venv (metrics on :9180) with the
  manifest given, and nginx (:8080) on `wsgictl proxy-config nginx --vhost`.

The namespaces are linked to nothing else (no route out, nothing in the root namespace), so
traffic stays between them, and two runs with the same subnet never see each other. Whatever
was started is stopped in `stop()`, which `__exit__` calls whatever happened: the LAN side's
processes by pid, the containers (with everything they run), the namespaces; it then checks
that nothing is left and says what was.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import ctypes
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from nspawn import CGROUP_ROOTS, Container, die_with_parent, reap_stale

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CTL = f"{VENV_BIN}/wsgictl"
RUN = "/run/wsgi-supervisor"
CONF_DIR = "/etc/wsgi-supervisor/conf.d"
ETC = "/etc/fleet"  # this harness's own files inside each container

PREFIX = "wsgifleet-"  # every run's names: PREFIX + the test process's pid + "-lan", "-h1", …

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _enter_netns(path: str) -> None:
    """Move the calling thread into a network namespace (a socket made there stays there)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class AnsibleRun:
    """One run of ansible or ansible-playbook: its exit status, output, and each host's last result."""

    returncode: int
    stdout: str
    stderr: str
    results: dict[str, dict] = field(default_factory=dict)

    def check(self) -> AnsibleRun:
        if self.returncode != 0:
            raise AssertionError(f"ansible -> {self.returncode}\n{self.stdout}\n{self.stderr}")
        return self


@dataclass
class Host:
    name: str  # h1, h2, … (the inventory name)
    address: str
    netns: str
    container: Container

    def run(self, *cmd: str, check: bool = True, timeout: float = 120, input: str | None = None):
        return self.container.run(*cmd, check=check, timeout=timeout, input=input)

    def write(self, path: str, text: str, mode: str | None = None) -> None:
        self.container.write(path, text, mode)

    def ctl(self, *args: str, check: bool = True):
        return self.run(CTL, "--runtime-dir", RUN, "--conf-dir", CONF_DIR, *args, check=check)

    def status(self) -> dict[str, dict]:
        out = self.ctl("status", "--json", check=False).stdout
        return {s["name"]: s for s in json.loads(out)}

    def kill(self) -> None:
        """The host crashes: every process on it is gone at once (its network stays: what reaches
        its address is refused, as after a kernel's panic-reboot or an OOM of everything)."""
        self.container.kill()

    def journal(self, unit: str, lines: int = 40) -> str:
        return self.run("journalctl", "-u", unit, "-n", str(lines), "--no-pager", check=False).stdout


class Fleet:
    """`hosts` systemd hosts on a private LAN, each running the daemon with `manifest` behind nginx;
    HAProxy and Prometheus on the LAN side. A context manager: `with Fleet(...) as fleet:`.

    check_path/check_port: what HAProxy's `option httpchk` asks each host, on the daemon's metrics
    port by default: /metrics (the daemon answers), or /health/NAME and /health (the API, the host
    in rotation: docs/health.md). check_interval: seconds between two checks (`inter`);
    a host is down after `fall` failed checks in a row, up after `rise` good ones.
    """

    lan_port = 8000  # HAProxy's frontend
    stats_port = 8404  # HAProxy's stats page (CSV at /stats;csv), which rolling.yml asks
    prometheus_port = 9090
    nginx_port = 8080
    metrics_port = 9180

    def __init__(
        self,
        workdir: Path | None,
        manifest: str,
        *,
        hosts: int = 3,
        subnet: str = "10.77.0",
        check_path: str = "/metrics",
        check_port: int | None = None,
        check_interval: float = 0.5,
        fall: int = 2,
        rise: int = 2,
        sample_interval: float = 0.5,
        scrape_interval: float = 1.0,
        daemon_args: tuple[str, ...] = (),
        tag: str | None = None,
    ):
        assert 1 <= hosts <= 9
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="fleet-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.count = hosts
        self.subnet = subnet
        self.check_path = check_path
        self.check_port = check_port or self.metrics_port
        self.check_interval = check_interval
        self.fall = fall
        self.rise = rise
        self.sample_interval = sample_interval
        self.scrape_interval = scrape_interval
        self.daemon_args = daemon_args
        self.tag = tag or f"{PREFIX}{os.getpid()}"
        self.lan = f"{self.tag}-lan"
        self.lan_address = f"{subnet}.254"
        self.hosts: list[Host] = []
        self.timings: dict[str, float] = {}
        self._netns: list[str] = []  # created, in order
        self._procs: dict[str, subprocess.Popen] = {}  # LAN-side processes by name
        self._logs: list[io.BufferedWriter] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Fleet:
        self._previous_sigterm = None
        if _in_main_thread():
            # a SIGTERM (a CI time-out) unwinds through __exit__ instead of leaving everything up
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)

    def start(self) -> Fleet:
        began = time.monotonic()
        self.reaped = reap_stale_runs()
        self._phase("network", self._make_network)
        # HAProxy and Prometheus first: they start while the hosts boot, and find them once up
        self._phase("lan services", self._start_lan_side)
        self._phase("keys", self._make_keys)
        self._phase("boot", self._boot)
        self._phase("hosts", lambda: self._on_each_host(self._set_up_host))
        self._phase("healthy", self._wait_healthy)
        self.timings["up"] = time.monotonic() - began
        return self

    def _phase(self, name: str, step) -> None:
        began = time.monotonic()
        step()
        self.timings[name] = time.monotonic() - began

    def stop(self) -> None:
        """Stop everything started, in reverse, each step whatever the one before did; then check."""
        with _sigterm_ignored():  # a second SIGTERM does not cut the teardown short
            self._stop()

    def _stop(self) -> None:
        began = time.monotonic()
        problems: list[str] = []
        for name, proc in reversed(list(self._procs.items())):
            try:
                stop_process(proc)
            except Exception as e:
                problems.append(f"{name}: {e}")
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # its threads hold the LAN namespace
            self._pool = None
        for host in self.hosts:  # halt all at once, then wait for each
            host.container.signal_stop()
        for host in self.hosts:
            try:
                host.container.stop()
            except Exception as e:
                problems.append(f"container {host.container.name}: {e}")
        for name in reversed(self._netns):
            try:
                ip("netns", "del", name)
            except RuntimeError as e:
                problems.append(str(e))
        self.timings["down"] = time.monotonic() - began
        problems += self.leftovers()
        self._procs.clear()
        self.hosts, self._netns = [], []
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            raise AssertionError("the fleet left something behind: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """What of this run is still there: namespaces, processes, containers' cgroups."""
        left = [f"network namespace {n}" for n in netns_list() if n.startswith(f"{self.tag}-")]
        left += [f"process {name} ({p.pid})" for name, p in self._procs.items() if alive(p.pid)]
        for host in self.hosts:
            if host.container.proc is not None:
                left.append(f"container {host.container.name} (nspawn {host.container.proc.pid})")
        for root in CGROUP_ROOTS:
            left += [f"cgroup {p}" for p in root.glob(f"nspawn-{self.tag}-*")]
        return left

    # -- the network ---------------------------------------------------------------

    def address(self, index: int) -> str:
        return f"{self.subnet}.{index}"

    def addresses(self) -> dict[str, str]:
        """Each host's name and address (known before the hosts exist)."""
        return {f"h{i}": self.address(i) for i in range(1, self.count + 1)}

    def _add_netns(self, name: str) -> None:
        ip("netns", "add", name)
        self._netns.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _make_network(self) -> None:
        self._add_netns(self.lan)
        ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lan, "link", "set", "br0", "up")
        ip("-n", self.lan, "addr", "add", f"{self.lan_address}/24", "dev", "br0")
        for i in range(1, self.count + 1):
            ns = f"{self.tag}-h{i}"
            self._add_netns(ns)
            # both ends are made inside the run's own namespaces: no name in the root namespace
            ip("-n", self.lan, "link", "add", f"v{i}", "type", "veth", "peer", "name", f"e{i}", "netns", ns)
            ip("-n", self.lan, "link", "set", f"v{i}", "master", "br0")
            ip("-n", self.lan, "link", "set", f"v{i}", "up")
            ip("-n", ns, "link", "set", f"e{i}", "up")
            ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", f"e{i}")
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=8, thread_name_prefix="lan", initializer=_enter_netns, initargs=(f"/run/netns/{self.lan}",)
        )

    def lan_call(self, fn, *args, **kwargs):
        """Call fn in a thread of the LAN namespace: the sockets it opens are on the LAN."""
        assert self._pool is not None
        return self._pool.submit(fn, *args, **kwargs).result()

    def lan_submit(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        assert self._pool is not None
        return self._pool.submit(fn, *args, **kwargs)

    def lan_run(self, *cmd: str, timeout: float = 120, env: dict | None = None, check: bool = False):
        """A command on the LAN side (`ip netns exec`), e.g. curl."""
        return subprocess.run(
            ["ip", "netns", "exec", self.lan, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def _lan_popen(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lan, *cmd],  # ip execs the command: the pid is its own
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        self._procs[name] = proc
        return proc

    # -- keys and hosts ------------------------------------------------------------

    def _make_keys(self) -> None:
        self.keys = self.workdir / "ssh"
        self.keys.mkdir(exist_ok=True)
        names = ["client"] + [f"host-h{i}" for i in range(1, self.count + 1)]
        for name in names:
            comment = f"{self.tag}-{name}"
            keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(self.keys / name)]
            subprocess.run(keygen, check=True, capture_output=True)
        self.client_key = self.keys / "client"

    def _boot(self) -> None:
        binds = [ROOT, Path(sys.base_prefix)]
        if not Path(sys.prefix).is_relative_to(ROOT):
            binds.append(Path(sys.prefix))
        for i in range(1, self.count + 1):
            name = f"{self.tag}-h{i}"
            container = Container(name, binds, self.workdir / f"console-h{i}.log", f"/run/netns/{name}")
            self.hosts.append(Host(f"h{i}", self.address(i), name, container))
            container.spawn()  # from this thread: see Container.spawn
        self._on_each_host(lambda h: h.container.wait_booted())

    def _on_each_host(self, step) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            futures = {pool.submit(step, h): h for h in self.hosts}
            errors = []
            for future, host in futures.items():
                try:
                    future.result()
                except Exception as e:
                    errors.append(f"{host.name}: {e}")
        if errors:
            raise RuntimeError("; ".join(errors))

    def _set_up_host(self, host: Host) -> None:
        self._start_sshd(host)
        self._start_daemon(host)
        self._start_nginx(host)

    def _start_sshd(self, host: Host) -> None:
        # /etc is the container's own tmpfs: the privilege separation user and an unlocked root
        # (a locked account, "!" in shadow, may not log in even with a key) go there
        if host.run("getent", "passwd", "sshd", check=False).returncode != 0:
            host.run(
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/run/sshd",
                "--shell",
                "/usr/sbin/nologin",
                "sshd",
            )
        host.run("usermod", "-p", "*", "root")
        key = (self.keys / f"host-{host.name}").read_text()
        host.write(f"{ETC}/ssh/host_ed25519", key, mode="600")
        host.write(f"{ETC}/ssh/authorized_keys", (self.keys / "client.pub").read_text(), mode="644")
        host.write(
            f"{ETC}/ssh/sshd_config",
            f"""ListenAddress {host.address}:22
HostKey {ETC}/ssh/host_ed25519
AuthorizedKeysFile {ETC}/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
""",
        )
        host.run("install", "-d", "-m", "755", "/run/sshd")  # its privilege separation dir
        host.run("/usr/sbin/sshd", "-t", "-f", f"{ETC}/ssh/sshd_config")
        host.run("systemd-run", "--unit=fleet-sshd", "/usr/sbin/sshd", "-D", "-e", "-f", f"{ETC}/ssh/sshd_config")

    def _start_daemon(self, host: Host) -> None:
        host.write(f"{CONF_DIR}/fleet.toml", self.manifest)
        host.run(CTL, "--conf-dir", CONF_DIR, "units", "install", "--socket-group", "www-data")
        # the unit as installed, plus what a fleet host needs: metrics on the host's address
        unit = host.run("cat", "/etc/systemd/system/wsgi-supervisor.service").stdout
        exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
        exec_start += f" --metrics-listen {host.address}:{self.metrics_port} --sample-interval {self.sample_interval}"
        exec_start += "".join(f" {arg}" for arg in self.daemon_args)
        host.write("/etc/systemd/system/wsgi-supervisor.service.d/fleet.conf", f"[Service]\nExecStart=\n{exec_start}\n")
        host.run("systemctl", "daemon-reload")
        started = host.run("systemctl", "start", "wsgi-supervisor", check=False, timeout=180)
        if started.returncode != 0:
            raise RuntimeError(f"wsgi-supervisor did not start:\n{started.stderr}\n{host.journal('wsgi-supervisor')}")

    def _start_nginx(self, host: Host) -> None:
        site = host.ctl("proxy-config", "nginx", "--vhost", "--listen", f"{host.address}:{self.nginx_port}").stdout
        conf = f"{ETC}/nginx"
        host.write(f"{conf}/site.conf", site)
        host.write(f"{conf}/uwsgi_params", Path("/etc/nginx/uwsgi_params").read_text())
        temps = "".join(
            f"    {k}_temp_path /var/lib/fleet-nginx/{k};\n"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        host.write(
            f"{conf}/nginx.conf",
            f"""user www-data www-data;
worker_processes 1;
pid /run/fleet-nginx/nginx.pid;
error_log stderr;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temps}    include {conf}/site.conf;
}}
""",
        )
        host.run("install", "-d", "-o", "www-data", "-g", "www-data", "/var/lib/fleet-nginx", "/run/fleet-nginx")
        nginx = ["nginx", "-c", f"{conf}/nginx.conf", "-e", "stderr"]
        host.run(*nginx, "-t")
        host.run("systemd-run", "--unit=fleet-nginx", *nginx, "-g", "daemon off;")

    # -- the LAN side --------------------------------------------------------------

    def haproxy_config(self) -> str:
        inter = f"{int(self.check_interval * 1000)}ms"
        rise_fall = f"fall {self.fall} rise {self.rise}"
        servers = "".join(f"    server {n} {a}:{self.nginx_port}\n" for n, a in self.addresses().items())
        return f"""global
    stats socket {self.workdir}/haproxy.sock mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    # only a request that never reached a server (its connection refused) is sent to another:
    # safe for any method. A 502 or a reset answer is not retried, so a host taken away without
    # a drain costs failed requests, which the tests count.
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend api
    bind {self.lan_address}:{self.lan_port}
    default_backend hosts

listen stats
    bind {self.lan_address}:{self.stats_port}
    stats enable
    stats uri /stats

backend hosts
    balance roundrobin
    option httpchk GET {self.check_path}
    http-check expect status 200
    http-response set-header X-Served-By %[srv_name]
    default-server check port {self.check_port} inter {inter} fastinter {inter} downinter {inter} {rise_fall}
{servers}"""

    def prometheus_config(self) -> str:
        targets = ", ".join(f"'{a}:{self.metrics_port}'" for a in self.addresses().values())
        every = f"{int(self.scrape_interval * 1000)}ms"  # Prometheus durations are integers with a unit
        return (
            f"global:\n  scrape_interval: {every}\n  evaluation_interval: {every}\n"
            f"scrape_configs:\n  - job_name: wsgi-supervisor\n    static_configs:\n      - targets: [{targets}]\n"
        )

    def _start_lan_side(self) -> None:
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.haproxy_config())
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        self._lan_popen("haproxy", "haproxy", "-db", "-f", str(cfg))
        prom = self.workdir / "prometheus.yml"
        prom.write_text(self.prometheus_config())
        self._lan_popen(
            "prometheus",
            "prometheus",
            f"--config.file={prom}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address={self.lan_address}:{self.prometheus_port}",
        )

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        for host in self.hosts:
            wait(lambda h=host: self.lan_call(port_open, h.address, 22), timeout, f"sshd on {host.name}")
        wait(lambda: self._lan_alive() and self._all_up(), timeout, "HAProxy's checks to pass on every host")
        wait(lambda: self._lan_alive() and self._targets_up() == len(self.hosts), timeout, "Prometheus: all scraped")

    def _all_up(self) -> bool:
        # a server is UP before its first check: only a passed check counts
        servers = self.haproxy_servers()
        return len(servers) == len(self.hosts) and all(
            s["status"] == "UP" and s["check_status"] == "L7OK" for s in servers.values()
        )

    def _lan_alive(self) -> bool:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
        return True

    def _targets_up(self) -> int:
        try:
            data = self.prometheus_api("targets")
        except OSError:
            return 0
        return sum(t["health"] == "up" for t in data["activeTargets"])

    # -- clients -------------------------------------------------------------------

    def get(self, path: str, port: int | None = None, address: str | None = None, timeout: float = 10.0):
        """A GET from the LAN side (HAProxy by default): (status, headers, body)."""
        return self.lan_call(http_get, address or self.lan_address, port or self.lan_port, path, timeout)

    def prometheus_api(self, endpoint: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, _, body = self.get(f"/api/v1/{endpoint}{query}", port=self.prometheus_port)
        if status != 200:
            raise OSError(f"prometheus {endpoint}: {status} {body[:200]!r}")
        return json.loads(body)["data"]

    def promql(self, query: str) -> list[dict]:
        """An instant query against the fleet's Prometheus: its result vector."""
        return self.prometheus_api("query", query=query)["result"]

    def haproxy(self, command: str) -> str:
        """A command on HAProxy's stats socket (a unix socket: reachable from any namespace)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def haproxy_servers(self) -> dict[str, dict]:
        """HAProxy's `show stat` row of each host (status, check_status, stot: sessions, …)."""
        try:
            text = self.haproxy("show stat")
        except OSError:
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        hosts = self.addresses()
        return {r["svname"]: r for r in rows if r["pxname"] == "hosts" and r["svname"] in hosts}

    def haproxy_states(self) -> dict[str, str]:
        """Each host's state as HAProxy's checks see it: UP, DOWN, or on the way (`UP 1/2`, `DOWN 1/2`)."""
        return {name: row["status"] for name, row in self.haproxy_servers().items()}

    # -- Ansible -------------------------------------------------------------------

    def inventory(self) -> Path:
        path = self.workdir / "inventory.ini"
        lines = ["[fleet]"]
        lines += [f"{h.name} ansible_host={h.address}" for h in self.hosts]
        lines += [
            "",
            "[fleet:vars]",
            "ansible_user=root",
            f"ansible_ssh_private_key_file={self.client_key}",
            "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
            "ansible_python_interpreter=/usr/bin/python3",
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def _ansible(self, program: str, args: list[str], timeout: float) -> AnsibleRun:
        home = self.workdir / "ansible"
        tree = Path(tempfile.mkdtemp(prefix="tree-", dir=self.workdir))
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(home),
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            # no ControlPersist: no ssh master process outlives the run
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
            "ANSIBLE_CALLBACK_TREE_DIR": str(tree),
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "True",
        }
        cmd = [str(VENV_BIN / program), "-i", str(self.inventory()), *args]
        result = self.lan_run(*cmd, timeout=timeout, env=env)
        results = {}
        for path in tree.iterdir():
            with contextlib.suppress(ValueError):
                results[path.name] = json.loads(path.read_text())
        return AnsibleRun(result.returncode, result.stdout, result.stderr, results)

    def ansible(self, pattern: str, module: str, args: str = "", *, timeout: float = 120) -> AnsibleRun:
        """An ad-hoc task over SSH: `ansible PATTERN -m MODULE -a ARGS`."""
        return self._ansible("ansible", [pattern, "-m", module, *(["-a", args] if args else [])], timeout)

    def rollout(self, variables: dict, *, timeout: float = 300) -> AnsibleRun:
        """contrib/ansible/rolling.yml over the fleet, HAProxy asked on its stats page; `variables`
        (-e) add to and override what every rollout here has: the fleet's venv, conf dir and
        metrics address, the backend `hosts` for every service."""
        base = {
            "wsgi_rolling_hosts": "fleet",
            "wsgi_supervisor_venv": str(VENV_BIN.parent),
            "wsgi_supervisor_install": False,
            "wsgi_supervisor_conf_dir": CONF_DIR,
            "wsgi_supervisor_metrics_listen": "{{ ansible_host }}:" + str(self.metrics_port),
            "wsgi_rolling_haproxy_stats_urls": [f"http://{self.lan_address}:{self.stats_port}/stats"],
            "wsgi_rolling_haproxy_timeout": 30,
            "wsgi_rolling_timeout": 60,
        }
        services = variables.get("wsgi_rolling_service", [])
        names = [services] if isinstance(services, str) else services
        base["wsgi_rolling_haproxy_backends"] = dict.fromkeys(names, "hosts")
        path = Path(tempfile.mkstemp(prefix="rollout-", suffix=".json", dir=self.workdir)[1])
        path.write_text(json.dumps(base | variables))
        return self._ansible("ansible-playbook", [str(ROOT / "contrib/ansible/rolling.yml"), "-e", f"@{path}"], timeout)

    def playbook(self, text: str, *, limit: str | None = None, timeout: float = 300) -> AnsibleRun:
        """ansible-playbook on a playbook given as YAML text, over SSH."""
        path = Path(tempfile.mkstemp(prefix="playbook-", suffix=".yml", dir=self.workdir)[1])
        path.write_text(text)
        return self._ansible("ansible-playbook", [str(path), *(["--limit", limit] if limit else [])], timeout)


def reap_stale_runs() -> list[str]:
    """What runs that were killed outright (SIGKILL: no teardown) left: their network namespaces
    (named after a test process that is gone, with no process left in them) and container cgroups.
    A SIGKILLed run's processes end with it (die_with_parent); its namespaces cannot."""
    reaped = reap_stale()
    for name in sorted(netns_list()):
        pid = name.removeprefix(PREFIX).partition("-")[0]
        if not name.startswith(PREFIX) or not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        inside = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if not inside:
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", name)
                reaped.append(f"network namespace {name}")
    return reaped


# -- pytest ---------------------------------------------------------------------------


def fleet_fixture(manifest: str, scope: str = "module", **options):
    """A pytest fixture with a Fleet on `manifest` (options: Fleet's), up for the module by default:

        fleet = fleet_fixture(MANIFEST)

        def test_something(fleet): ...

    It prints how long bringing the fleet up and tearing it down took.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def fleet(request, tmp_path_factory):
        with Fleet(tmp_path_factory.mktemp("fleet"), manifest, **options) as f:
            phases = ", ".join(f"{k} {v:.1f}s" for k, v in f.timings.items() if k != "up")
            if f.reaped:
                netns = sum(r.startswith("network namespace") for r in f.reaped)
                what = f"{netns} network namespaces, {len(f.reaped) - netns} cgroup dirs"
                report(request.config, f"removed what runs killed before their teardown left: {what}")
            report(request.config, f"fleet of {f.count} up in {f.timings['up']:.1f}s ({phases})")
            yield f
        report(request.config, f"fleet down in {f.timings['down']:.1f}s")

    return fleet


def report(config, line: str) -> None:
    """A line on the terminal even when pytest captures output (-q included)."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n[fleet] {line}")


# -- helpers ------------------------------------------------------------------------


def http_get(address: str, port: int, path: str, timeout: float = 10.0):
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        # HTTPMessage: names without case (HAProxy sends them in lower case)
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def port_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((address, port)) == 0


def wait(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sigterm_to_exit(signum, frame):
    # as Ctrl-C: pytest stops the session and still tears its fixtures down
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_ignored():
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
