"""Worker services (conductors, schedulers, rpc servers) as the daemon's own children.

Why children and not vassals: a vassal running a command (attach-daemon2)
can never be reported ready, hides the exit status and restarts on its own
schedule. As children, the daemon gets the exact exit status, gives each
worker its own NOTIFY_SOCKET (oslo.service sends READY=1 and STATUS= there),
and reads its output through a pipe. The lifecycle, the states and the
status columns are the same as for APIs.

Every process of a worker carries `WSGI_SUPERVISOR_SERVICE=<runtime>:<name>`
in its environment, so a stop finds the whole tree, even children that
started sessions of their own or were orphaned by a double fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import logging
import os
import pwd
import signal
import socket
import struct
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .listeners import bind_datagram
from .manifest import WorkerService, worker_path
from .procs import signal_tree
from .service import ServiceRuntime

if TYPE_CHECKING:
    from .core import Supervisor

log = logging.getLogger("wsgi-supervisor")

TAG = "WSGI_SUPERVISOR_SERVICE"
_PR_SET_PDEATHSIG = 1
_CREDS = struct.calcsize("3i")
BASE_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")


def _die_with_parent() -> None:
    """In the child, before exec: end with the daemon rather than outlive it unseen.

    (A daemon that is killed takes its workers down; the next one starts them
    again. APIs, which must keep serving, live under the emperor instead.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def tagged(tag: str) -> list[int]:
    """Every process whose environment carries `TAG=tag`."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


class ProcessDriver:
    def __init__(self, sup: Supervisor):
        self.sup = sup
        self.layout = sup.layout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pipes: dict[str, tuple[int, bytearray]] = {}
        self.notify: dict[str, socket.socket] = {}

    def tag(self, name: str) -> str:
        return f"{self.layout.runtime_dir}:{name}"

    # -- the notify socket ------------------------------------------------------------

    def _open_notify(self, svc: ServiceRuntime) -> None:
        if svc.name in self.notify:
            return
        path = self.layout.notify_socket(svc.name)
        # writable by the worker's user; senders are checked by pid below
        sock = bind_datagram(path, 0o666)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.setblocking(False)
        self.notify[svc.name] = sock
        self.sup.loop.add_reader(sock.fileno(), self._read_notify, svc.name)

    def _read_notify(self, name: str) -> None:
        sock = self.notify.get(name)
        svc = self.sup.services.get(name)
        if sock is None or svc is None:
            return
        for _ in range(64):
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(_CREDS))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            pid = None
            for level, kind, cdata in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", cdata[:_CREDS])[0]
            if pid is None or not self._belongs(name, pid):
                continue
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)
            self.sup.on_notify(svc, fields)

    def _belongs(self, name: str, pid: int) -> bool:
        proc = self.procs.get(name)
        if proc is not None and pid == proc.pid:
            return True
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"{TAG}={self.tag(name)}".encode() in environ

    # -- actions -------------------------------------------------------------------------

    def prepare(self, svc: ServiceRuntime) -> None:
        self._open_notify(svc)

    def _environment(self, svc: ServiceRuntime) -> dict[str, str]:
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        env = {k: v for k, v in os.environ.items() if k in BASE_ENV}
        if spec.venv:
            env["VIRTUAL_ENV"] = spec.venv
        env["PATH"] = worker_path(spec)
        env["PYTHONUNBUFFERED"] = "1"
        if spec.user:
            try:
                account = pwd.getpwnam(spec.user) if not spec.user.isdigit() else pwd.getpwuid(int(spec.user))
                env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
            except KeyError:
                pass
        else:
            env["HOME"] = os.environ.get("HOME", "/")
        env.update(spec.environment)
        env["NOTIFY_SOCKET"] = str(self.layout.notify_socket(svc.name))
        env[TAG] = self.tag(svc.name)
        return env

    def _credentials(self, spec: WorkerService) -> dict[str, object]:
        if not spec.user and not spec.group:
            return {}
        creds: dict[str, object] = {}
        if spec.user:
            account = pwd.getpwnam(spec.user) if not spec.user.isdigit() else pwd.getpwuid(int(spec.user))
            creds["user"] = account.pw_uid
            creds["group"] = account.pw_gid
            creds["extra_groups"] = os.getgrouplist(account.pw_name, account.pw_gid)
        if spec.group:
            creds["group"] = grp.getgrnam(spec.group).gr_gid if not spec.group.isdigit() else int(spec.group)
        return creds

    def awaiting(self, svc: ServiceRuntime) -> str:
        """What a start waits for once launched, as status shows it."""
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        if spec.notify:
            return "waiting for READY=1 from the service"
        return f"ready once up {spec.ready_after:g}s"

    def launch(self, svc: ServiceRuntime) -> None:
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        env = self._environment(svc)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                list(spec.command),
                executable=self._program(spec, env["PATH"]),
                env=env,
                cwd=spec.chdir or "/",
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **self._credentials(spec),  # type: ignore[arg-type]
            )
        except (OSError, subprocess.SubprocessError, KeyError) as exc:
            os.close(read_fd)
            os.close(write_fd)
            self.sup.loop.call_soon(self.sup.on_spawn_failed, svc, f"cannot run {spec.command[0]}: {exc}")
            return
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.procs[svc.name] = proc
        self.pipes[svc.name] = (read_fd, bytearray())
        self.sup.loop.add_reader(read_fd, self._read_output, svc.name, read_fd)
        self.sup.on_spawned(svc, proc.pid)

    def adopt(self, svc: ServiceRuntime, pid: int, pipe_fd: int) -> None:
        """Take over a worker the previous image of this daemon started (after a re-exec)."""
        self._open_notify(svc)
        os.set_blocking(pipe_fd, False)
        os.set_inheritable(pipe_fd, False)
        self.pipes[svc.name] = (pipe_fd, bytearray())
        self.sup.loop.add_reader(pipe_fd, self._read_output, svc.name, pipe_fd)

    def handover(self) -> dict[str, dict[str, int]]:
        """Workers and their output pipes, kept open across an exec of the daemon."""
        kept = {}
        for name, (fd, _) in self.pipes.items():
            svc = self.sup.services.get(name)
            if svc is None or svc.pid is None:
                continue
            os.set_inheritable(fd, True)
            kept[name] = {"pid": svc.pid, "fd": fd}
        return kept

    @staticmethod
    def _program(spec: WorkerService, path: str) -> str:
        program = spec.command[0]
        if "/" in program:
            return program
        for directory in path.split(":"):
            candidate = Path(directory) / program
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise FileNotFoundError(f"{program!r} is not on the PATH ({path})")

    def reaped(self, svc: ServiceRuntime, status: int | None) -> None:
        """The main process is gone (the watcher reaped it): let Popen know, and end the strays."""
        proc = self.procs.pop(svc.name, None)
        if proc is not None and status is not None:
            proc.returncode = os.waitstatus_to_exitcode(status)
        self._end_strays(svc.name)

    def _end_strays(self, name: str) -> None:
        strays = [p for p in tagged(self.tag(name)) if p != os.getpid()]
        if strays:
            log.info("%s: ending %d process(es) its main process left behind", name, len(strays))
            for pid in strays:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        if svc.pid is None:
            return False
        sig = getattr(signal, getattr(svc.spec, "stop_signal", "SIGTERM"))
        signal_tree(svc.pid, sig)
        return True

    def ask_reload(self, svc: ServiceRuntime) -> bool:
        if svc.pid is None:
            return False
        sig = getattr(signal, getattr(svc.spec, "reload_signal", "SIGHUP"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, sig)
        return True

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.sup.say(svc, f"{why}: SIGKILL", priority=4)
            signal_tree(svc.pid, signal.SIGKILL)
        self._end_strays(svc.name)

    def disable(self, svc: ServiceRuntime) -> None:
        """Nothing to do: a worker is only started again when the core asks."""

    def release(self, svc: ServiceRuntime) -> None:
        sock = self.notify.pop(svc.name, None)
        if sock is not None:
            self.sup.loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.layout.notify_socket(svc.name).unlink()

    # -- output ---------------------------------------------------------------------------

    def _read_output(self, name: str, fd: int) -> None:
        try:
            chunk = os.read(fd, 256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        entry = self.pipes.get(name)
        if entry is None or entry[0] != fd:
            return
        buffer = entry[1]
        if not chunk:
            self.sup.loop.remove_reader(fd)
            os.close(fd)
            del self.pipes[name]
            if buffer:
                self.sup.intake.take(name, "o", bytes(buffer))
            return
        buffer.extend(chunk)
        cut = buffer.rfind(b"\n")
        if cut >= 0:
            complete = bytes(buffer[: cut + 1])
            del buffer[: cut + 1]
            self.sup.intake.take(name, "o", complete)
        elif len(buffer) > 64 * 1024:  # a very long line without a newline: pass it on as it is
            self.sup.intake.take(name, "o", bytes(buffer))
            buffer.clear()

    def close(self) -> None:
        for name in list(self.notify):
            sock = self.notify.pop(name)
            self.sup.loop.remove_reader(sock.fileno())
            sock.close()
        for fd, _ in list(self.pipes.values()):
            self.sup.loop.remove_reader(fd)
            os.close(fd)
        self.pipes.clear()
