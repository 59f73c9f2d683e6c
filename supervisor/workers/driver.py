"""Worker services (conductors, schedulers, rpc servers) as the daemon's own children.

Why children and not vassals: a vassal running a command (attach-daemon2)
can never be reported ready, hides the exit status and restarts on its own
schedule. As children, the daemon gets the exact exit status, gives each
worker its own NOTIFY_SOCKET (oslo.service sends READY=1 and STATUS= there),
and reads its output through a pipe. The lifecycle, the states and the
status columns are the same as for APIs.

Every process of a worker carries `WSGI_SUPERVISOR_SERVICE=<runtime>:<name>`
in the environment it was started with (unless it was exec'd with one
without it). A stop signals the main process, its group and its
descendants; once the main process is gone, whatever still carries the tag
is killed too, even children that started sessions of their own or were
orphaned by a double fork.
"""

from __future__ import annotations

import asyncio
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
from typing import TYPE_CHECKING, Any

import psutil

from supervisor.listeners import bind_datagram
from supervisor.logs.pipes import OutputPipes, Take
from supervisor.manifest.models import WorkerService, worker_path
from supervisor.observe.procs import alive, signal_tree
from supervisor.state.events import Adopted, Ready, Reloading, Spawned, SpawnFailed, StatusText
from supervisor.state.service import ReloadAttempt, ServiceRuntime

if TYPE_CHECKING:
    from supervisor.state.drivers import Context, Failure

log = logging.getLogger("wsgi-supervisor")

TAG = "WSGI_SUPERVISOR_SERVICE"
_PR_SET_PDEATHSIG = 1
_CREDS = struct.calcsize("3i")
BASE_ENV = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child


def _die_with_parent() -> None:
    """Popen's preexec_fn: Python code run in the forked child, before exec, so that the
    worker gets SIGTERM when the daemon ends rather than outlive it unseen.

    The daemon has threads (the loop's executor, where the sampler reads the process
    table), and a lock another thread held at the fork stays held in the child: so
    this only makes one call into libc, resolved in the parent, and no import. The
    kernel sends the signal when the thread that forked ends; Popen runs on the
    event loop's thread, which lasts as long as the daemon.
    (A daemon that is killed takes its workers down; the next one starts them
    again. APIs, which must keep serving, live under the emperor instead.)
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def tagged(tag: str) -> list[int]:
    """Every process whose environment carries `TAG=tag` (those of other users, whose
    environment this daemon may not read, are skipped)."""
    return [proc.pid for proc in psutil.process_iter() if _tag_of(proc) == tag]


def _tag_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(TAG)
    except psutil.Error:  # gone, a zombie, or another user's
        return None


class ProcessDriver:
    """Worker services: the daemon's own children, each with its notify socket and output pipe."""

    def __init__(self, context: Context, take: Take):
        self.ctx = context
        self.loop = context.loop
        self.layout = context.layout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pipes = OutputPipes(context.loop, take)
        self.notify: dict[str, socket.socket] = {}
        self.adopted: dict[str, int] = {}  # main pids taken over after a re-exec (no Popen of ours)
        self.ready_timers: dict[str, asyncio.TimerHandle] = {}

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
        self.loop.add_reader(sock.fileno(), self._read_notify, svc.name)

    def _read_notify(self, name: str) -> None:
        sock = self.notify.get(name)
        if sock is None:
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
            self._notified(name, fields)

    def _notified(self, name: str, fields: dict[str, str]) -> None:
        """sd_notify fields from a worker's NOTIFY_SOCKET, as events."""
        if "STATUS" in fields:
            self.ctx.report(StatusText(name, fields["STATUS"]))
        if fields.get("RELOADING") == "1":
            self.ctx.report(Reloading(name))
        proc = self.procs.get(name)
        main = proc.pid if proc is not None else self.adopted.get(name)
        if fields.get("READY") == "1" and main is not None:
            self.ctx.report(Ready(name, main))

    def _belongs(self, name: str, pid: int) -> bool:
        proc = self.procs.get(name)
        if proc is not None and pid == proc.pid:
            return True
        try:
            return _tag_of(psutil.Process(pid)) == self.tag(name)
        except psutil.Error:
            return False

    # -- actions -------------------------------------------------------------------------

    def prepare(self, svc: ServiceRuntime) -> None:
        assert isinstance(svc.spec, WorkerService)
        self._credentials(svc.spec)  # a user or group gone since the manifest was checked: say so now
        self._open_notify(svc)

    def awaiting(self, svc: ServiceRuntime) -> str:
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        if spec.notify:
            return "waiting for READY=1 from the service"
        return f"ready once up {spec.ready_after:g}s"

    def watch_ready(self, svc: ServiceRuntime) -> None:
        """A worker that sends READY=1 reports it itself; the others are ready once up `ready_after`."""
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        if spec.notify or svc.pid is None:
            return
        old = self.ready_timers.pop(svc.name, None)
        if old is not None:
            old.cancel()
        self.ready_timers[svc.name] = self.loop.call_later(spec.ready_after, self.ctx.report, Ready(svc.name, svc.pid))

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
            try:
                account = pwd.getpwnam(spec.user) if not spec.user.isdigit() else pwd.getpwuid(int(spec.user))
            except KeyError:
                raise ValueError(f"the user {spec.user!r} does not exist on this host") from None
            creds["user"] = account.pw_uid
            creds["group"] = account.pw_gid
            creds["extra_groups"] = os.getgrouplist(account.pw_name, account.pw_gid)
        if spec.group:
            try:
                creds["group"] = grp.getgrnam(spec.group).gr_gid if not spec.group.isdigit() else int(spec.group)
            except KeyError:
                raise ValueError(f"the group {spec.group!r} does not exist on this host") from None
        return creds

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
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            os.close(read_fd)
            os.close(write_fd)
            self.ctx.report(SpawnFailed(svc.name, f"cannot run {spec.command[0]}: {exc}"))
            return
        os.close(write_fd)
        self.procs[svc.name] = proc
        self.adopted.pop(svc.name, None)
        self.pipes.add(svc.name, read_fd, svc.name)
        self.ctx.report(Spawned(svc.name, proc.pid))

    def attach(self, kept: dict[str, Any], reexec: bool) -> None:
        """After a re-exec: take over the workers the previous image started, and their output pipes."""
        if not (reexec and kept.get("reexec")):
            return
        mine = {svc.name: svc for svc in self.ctx.services() if isinstance(svc.spec, WorkerService)}
        for name, handed in kept.get("workers", {}).items():
            pid, fd = int(handed["pid"]), int(handed["fd"])
            svc = mine.get(name)
            if svc is None or not alive(pid):
                with contextlib.suppress(OSError):
                    os.close(fd)
                continue
            self._open_notify(svc)
            self.pipes.add(name, fd, name)
            self.adopted[name] = pid
            known = kept.get("services", {}).get(name, {})
            self.ctx.report(Adopted(name, pid, ready=True, up_since=known.get("up_since")))
            log.info("%s: adopted worker (pid %d)", name, pid)

    def handover(self) -> dict[str, dict[str, int]]:
        """Workers and their output pipes, kept open across an exec of the daemon."""
        kept = {}
        pids = {svc.name: svc.pid for svc in self.ctx.services()}
        for name in self.pipes.open_keys():
            fd = self.pipes.fd(name)
            if pids.get(name) is None or fd is None:
                continue
            os.set_inheritable(fd, True)
            kept[name] = {"pid": pids[name], "fd": fd}
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

    def exited(self, svc: ServiceRuntime, pid: int, status: int | None) -> str | None:
        """The main process is gone (the watcher reaped it): let Popen know, and end the strays."""
        timer = self.ready_timers.pop(svc.name, None)
        if timer is not None:
            timer.cancel()
        self.adopted.pop(svc.name, None)
        proc = self.procs.pop(svc.name, None)
        if proc is not None and status is not None:
            proc.returncode = os.waitstatus_to_exitcode(status)
        self._end_strays(svc.name)
        return None

    def describe_exit(self, svc: ServiceRuntime) -> str:
        why = svc.last_exit or "exited unexpectedly"
        return why + (f": {svc.last_exception}" if svc.last_exception else "")

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

    def reload(self, svc: ServiceRuntime) -> ReloadAttempt | bool:
        """In place: the reload signal (SIGHUP); oslo.service reloads its config on it."""
        if svc.pid is None:
            return False
        sig = getattr(signal, getattr(svc.spec, "reload_signal", "SIGHUP"))
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, sig)
        return True

    def reports_reload(self, svc: ServiceRuntime) -> bool:
        """Only a worker that says it speaks the reload protocol (`reload_notify`) is waited for.

        Not `notify` alone: oslo.service (its eventlet launcher, and cotyledon for the
        threading backend) sends READY=1 once, at start, and reloads on SIGHUP without a
        word, so waiting for a second READY=1 waits out start_timeout every time. Not
        "it sent RELOADING=1 before" either: the first reload could not know, and a new
        release of the same command may speak differently. systemd asks the same of the
        unit file (Type=notify-reload), so the manifest says it.
        """
        return bool(getattr(svc.spec, "reload_notify", False))

    def switch(self, svc: ServiceRuntime, attempt: ReloadAttempt, old_pid: int | None) -> None:
        """Never asked: a worker reloads in place."""

    def abandon(self, svc: ServiceRuntime, attempt: ReloadAttempt) -> None:
        """Never asked: a worker reloads in place."""

    def on_line(self, svc: ServiceRuntime, text: str) -> Failure | None:
        return None

    def noise(self, text: str) -> bool:
        return False  # a worker's output is all its own

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        return None

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self.ctx.say(svc.name, f"{why}: SIGKILL", 4)
            signal_tree(svc.pid, signal.SIGKILL)
        self._end_strays(svc.name)

    def kill_unready(self, svc: ServiceRuntime, why: str) -> None:
        """A worker's readiness is its own READY=1 (or the timer): nothing else to look at."""
        self.kill(svc, why)

    def disable(self, svc: ServiceRuntime) -> None:
        """Nothing to do: a worker is only started again when the core asks."""

    def release(self, svc: ServiceRuntime) -> None:
        sock = self.notify.pop(svc.name, None)
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.layout.notify_socket(svc.name).unlink()

    def close(self) -> None:
        for name in list(self.notify):
            sock = self.notify.pop(name)
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.pipes.close()
