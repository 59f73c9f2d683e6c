"""A real systemd, booted with systemd-nspawn over the host's own /usr (see notes/real-components.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

# units the host's packages enable but that have no business in the test container
MASKED = ("apache2", "apache-htcacheclean", "nginx", "prometheus", "prometheus-node-exporter")


class Container:
    def __init__(self, name: str, binds_ro: list[Path], log: Path):
        self.name = name
        self.binds_ro = binds_ro
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None

    def start(self, timeout: float = 60.0) -> Container:
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
            "--private-network",
        ]
        args += [f"--bind-ro={p}" for p in self.binds_ro]
        args += ["systemd.firstboot=off", "systemd.unit=multi-user.target"]
        args += [f"systemd.mask={unit}.service" for unit in MASKED]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}")
            if self.pid1 is None:
                self.pid1 = self._find_pid1()
            elif self.run("systemctl", "is-system-running", check=False).stdout.strip() in ("running", "degraded"):
                return self
            time.sleep(0.2)
        raise RuntimeError("the container's systemd did not finish booting")

    def _find_pid1(self) -> int | None:
        assert self.proc is not None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
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

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", f'mkdir -p "$(dirname {path})" && cat > {path}', input=text)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # an orderly halt
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.proc = None
        cleanup_after_nspawn()


def cleanup_after_nspawn() -> None:
    """Without a host systemd, nspawn leaves empty cgroup dirs and /run/systemd/nspawn* behind."""
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        for top in ("payload", "supervisor"):
            base = Path(root) / top
            if not base.is_dir():
                continue
            for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda entry: -entry[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
    for leftover in ("/run/systemd/nspawn", "/run/systemd/nspawn-root"):
        for dirpath, _dirs, _files in sorted(os.walk(leftover), key=lambda entry: -entry[0].count("/")):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
