"""A real systemd, booted with systemd-nspawn over the host's own /usr (see notes/real-components.md).

`Container` boots one; several can run at once (tests/fleet.py boots three, and other test
runs on the same machine boot theirs): each nspawn starts in a cgroup of its own, named after
its machine, because an nspawn started from the root cgroup without a host systemd puts its
payload in `/payload`, the same for every container, and one container's systemd would then
stop the other's processes with its own units.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

# units the host's packages enable but that have no business in the test container: with an
# empty /etc (volatile), systemd presets enable every unit it finds in /usr
MASKED = (
    "apache2",
    "apache-htcacheclean",
    "nginx",
    "prometheus",
    "prometheus-node-exporter",
    "haproxy",
    "ssh",
)

# the cgroup hierarchies nspawn uses on these machines (cgroup v1 with a named systemd
# hierarchy, plus the mostly empty unified one)
CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the thread that started it ends (the test process
    killed, even by SIGKILL): nspawn then halts its container. Start such children from a thread
    that lives as long as they should (the main thread), not from a short-lived worker thread."""
    PR_SET_PDEATHSIG = 1
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Container:
    """A booted systemd in systemd-nspawn, entered with nsenter.

    `network_namespace` is the path of a network namespace the container joins
    (`/run/netns/NAME`); without it the container has a private, loopback-only network.
    `binds_ro` are host paths the container sees at the same place, read-only.
    """

    def __init__(self, name: str, binds_ro: list[Path], log: Path, network_namespace: str | None = None):
        self.name = name
        self.binds_ro = binds_ro
        self.log_path = log
        self.network_namespace = network_namespace
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None
        # the creator's pid too: two runs that pick the same machine name still get two cgroups
        self.cgroup = f"nspawn-{name}.{os.getpid()}"

    def command(self) -> list[str]:
        args = [
            "systemd-nspawn",
            "--quiet",
            "--directory=/",
            "--volatile=yes",
            "--boot",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
        ]
        if self.network_namespace:
            args.append(f"--network-namespace-path={self.network_namespace}")
        else:
            args.append("--private-network")
        args += [f"--bind-ro={p}" for p in self.binds_ro]
        args += ["systemd.firstboot=off", "systemd.unit=multi-user.target"]
        args += [f"systemd.mask={unit}.service" for unit in MASKED]
        return args

    def spawn(self) -> Container:
        """Start nspawn and return at once; `wait_booted` waits for its systemd (see die_with_parent)."""
        cgroups = [root / self.cgroup for root in CGROUP_ROOTS if root.is_dir()]
        for path in cgroups:
            path.mkdir(exist_ok=True)

        def before_exec():  # in the child: its own cgroup, which nspawn then nests below
            for path in cgroups:
                (path / "cgroup.procs").write_text(str(os.getpid()))
            die_with_parent()

        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=before_exec,
        )
        return self

    def wait_booted(self, timeout: float = 60.0) -> Container:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}: see {self.log_path}")
            if self.pid1 is None:
                self.pid1 = self._find_pid1()
            elif self.run("systemctl", "is-system-running", check=False).stdout.strip() in ("running", "degraded"):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the container's systemd did not finish booting: see {self.log_path}")

    def start(self, timeout: float = 60.0) -> Container:
        self.spawn()
        try:
            return self.wait_booted(timeout)
        except BaseException:
            self.stop()
            raise

    def _find_pid1(self) -> int | None:
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                    return int(child)
        return None

    def run(self, *cmd: str, check: bool = True, timeout: float = 120, input: str | None = None):
        assert self.pid1 is not None
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-i", "-n", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def write(self, path: str, text: str, mode: str | None = None) -> None:
        script = f'mkdir -p "$(dirname {path})" && cat > {path}'
        if mode:
            script += f" && chmod {mode} {path}"
        self.run("sh", "-c", script, input=text)

    def signal_stop(self) -> None:
        """Ask for an orderly halt and return at once (`stop` waits for it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self, timeout: float = 20.0) -> None:
        """Pull the plug: SIGKILL to the container's systemd ends every process in it at once, as a
        host that crashes does (no unit stops, nothing says goodbye); then clean up as `stop` does."""
        if self.pid1 is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        self.stop(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        self.signal_stop()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None
        self.cleanup()

    def cleanup(self) -> None:
        """Without a host systemd, nspawn leaves its cgroup dirs and /run/systemd/nspawn* behind:
        remove this container's own (rmdir, depth first), nothing of another's."""
        for root in CGROUP_ROOTS:
            remove_empty_tree(root / self.cgroup)
        remove_empty_tree(Path("/run/systemd/nspawn/propagate") / self.name)


def reap_stale() -> list[str]:
    """Remove what containers of runs that were killed outright (SIGKILL: no teardown) left: their
    cgroup dirs, named `nspawn-MACHINE.PID` after a creator that is gone. Only empty dirs go
    (rmdir), so nothing that still has a process is touched."""
    reaped = []
    for root in CGROUP_ROOTS:
        for path in root.glob("nspawn-*.*"):
            pid = path.name.rpartition(".")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                remove_empty_tree(path)
                if not path.exists():
                    reaped.append(str(path))
    return reaped


def remove_empty_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)
