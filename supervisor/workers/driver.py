"""Worker services (conductors, schedulers, rpc servers) as the daemon's own children.

Why children and not vassals: a vassal running a command (attach-daemon2)
can never be reported ready, hides the exit status and restarts on its own
schedule. As children, the daemon gets the exact exit status, gives each
worker its own NOTIFY_SOCKET (oslo.service sends READY=1 and STATUS= there),
and reads its output through a pipe. The lifecycle, the states and the
status columns are the same as for APIs.

Every process of a worker runs in the service's control group
(`observe/cgroups.py`), which it joins before its command is exec'd. A stop
sends the stop signal once to each process of the group, as systemd's
KillMode=control-group does; once the main process is gone, whatever is
left in the group is ended too (by the supervisor, before the exit counts),
even children that started sessions of their own, were orphaned by a
double fork or dropped their environment. No environment tag is trusted:
a process may change its own. Who may notify for a worker (notify.py)
and which processes `stack` looks at are decided by the control group (else
the process tree of the main process) and the user its processes run as.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.accounts import identity, popen_credentials
from supervisor.logs.pipes import OutputPipes, Take
from supervisor.manifest.models import WorkerService, runner, worker_path
from supervisor.observe.cgroups import group_name, joining
from supervisor.observe.procs import alive, processes_of, running_as
from supervisor.state.events import Adopted, Ready, Reloading, Spawned, SpawnFailed, StatusText
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.workers.notify import NotifySockets, Owner

if TYPE_CHECKING:
    from supervisor.state.drivers import Context, Failure

log = logging.getLogger("wsgi-supervisor")

_PR_SET_PDEATHSIG = 1
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


def _in_group(procs_fd: int | None) -> Callable[[], None]:
    """Popen's preexec_fn for a worker: `_die_with_parent`, then into the service's control group
    (`cgroups.joining`: the daemon opened the group's `cgroup.procs` as root, and the kernel checks
    the opener, so the write works after Popen dropped to the service's user)."""
    join = joining(procs_fd) if procs_fd is not None else None

    def preexec() -> None:
        _die_with_parent()
        if join is not None:
            join()

    return preexec


class ProcessDriver:
    """Worker services: the daemon's own children, each with its notify socket and output pipe."""

    def __init__(self, context: Context, take: Take):
        self.ctx = context
        self.loop = context.loop
        self.layout = context.layout
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pipes = OutputPipes(context.loop, take)
        self.notify = NotifySockets(context.loop, self._notified, context.say)
        self.adopted: dict[str, int] = {}  # main pids taken over after a re-exec (no Popen of ours)
        self.ready_timers: dict[str, asyncio.TimerHandle] = {}

    @staticmethod
    def group(svc: ServiceRuntime) -> str:
        return group_name(svc.name, runner(svc.spec))

    # -- the notify socket ------------------------------------------------------------

    def main_pid(self, name: str) -> int | None:
        """The worker's main process: the one the daemon started, or took over after a re-exec."""
        proc = self.procs.get(name)
        return proc.pid if proc is not None else self.adopted.get(name)

    def _owner(self, svc: ServiceRuntime) -> Owner:
        """Whom the worker's processes run as: its `user` (and `group`), else the daemon's own."""
        assert isinstance(svc.spec, WorkerService)
        creds = self._credentials(svc.spec)
        uid, gid = creds.get("user"), creds.get("group")
        return Owner(
            uid if isinstance(uid, int) else os.geteuid(),
            gid if isinstance(gid, int) else os.getegid(),
            lambda: self.main_pid(svc.name),
        )

    def _open_notify(self, svc: ServiceRuntime) -> None:
        self.notify.open(svc.name, self.layout.notify_socket(svc.name), self._owner(svc))

    def _notified(self, name: str, fields: dict[str, str]) -> None:
        """sd_notify fields from the worker's own processes, as events."""
        if "STATUS" in fields:
            self.ctx.report(StatusText(name, fields["STATUS"]))
        if fields.get("RELOADING") == "1":
            self.ctx.report(Reloading(name))
        main = self.main_pid(name)
        if fields.get("READY") == "1" and main is not None:
            self.ctx.report(Ready(name, main))

    def members(self, svc: ServiceRuntime) -> list[int]:
        """The worker's processes that run as its user: its main process and the rest of its control
        group (where there are no groups, the main process's descendants). One that changed user is
        not the service's to show."""
        main = self.main_pid(svc.name)
        if main is None:
            return []
        grouped = self.ctx.groups.of_service(svc.name)
        if grouped is None:
            return processes_of(main, self._owner(svc).uid)
        return running_as([main, *(p for p in grouped if p != main)], self._owner(svc).uid)

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
        try:
            who = identity(spec.user, None)
        except ValueError:
            who = None  # the start says so (prepare)
        if who is not None:
            env.update(HOME=who.home or "/", USER=who.name or "", LOGNAME=who.name or "")
        else:
            env["HOME"] = os.environ.get("HOME", "/")
        env.update(spec.environment)
        env["NOTIFY_SOCKET"] = str(self.layout.notify_socket(svc.name))
        return env

    @staticmethod
    def _credentials(spec: WorkerService) -> dict[str, object]:
        return popen_credentials(identity(spec.user, spec.group))

    def launch(self, svc: ServiceRuntime) -> None:
        spec = svc.spec
        assert isinstance(spec, WorkerService)
        env = self._environment(svc)
        join_fd = self.ctx.groups.fresh_procs_fd(self.group(svc), lambda text: self.ctx.say(svc.name, text, 4))
        if join_fd is None and self.ctx.groups.available:
            self.ctx.report(SpawnFailed(svc.name, "cannot make its control group (the daemon's log says why)"))
            return
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
                preexec_fn=_in_group(join_fd),
                **self._credentials(spec),  # type: ignore[arg-type]
            )
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            os.close(read_fd)
            os.close(write_fd)
            self.ctx.report(SpawnFailed(svc.name, f"cannot run {spec.command[0]}: {exc}"))
            return
        finally:
            if join_fd is not None:
                os.close(join_fd)
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
            try:
                self._open_notify(svc)
            except (OSError, ValueError) as exc:  # its user gone meanwhile: it runs on, unheard
                log.warning("%s: no notify socket: %s", name, exc)
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
        """The main process is gone (the watcher reaped it, and the supervisor emptied its group): let Popen know."""
        timer = self.ready_timers.pop(svc.name, None)
        if timer is not None:
            timer.cancel()
        self.adopted.pop(svc.name, None)
        proc = self.procs.pop(svc.name, None)
        if proc is not None and status is not None:
            proc.returncode = os.waitstatus_to_exitcode(status)
        return None

    def describe_exit(self, svc: ServiceRuntime) -> str:
        why = svc.last_exit or "exited unexpectedly"
        return why + (f": {svc.last_exception}" if svc.last_exception else "")

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        """The stop signal, once to each process of the service (not to the main process only:
        a worker's children may be built to be stopped by it, as under systemd)."""
        if svc.pid is None:
            return False
        sig = getattr(signal, getattr(svc.spec, "stop_signal", "SIGTERM"))
        self.ctx.groups.signal_each(self.group(svc), svc.pid, sig)
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
        hit = self.ctx.groups.kill_all(self.group(svc), svc.pid)
        if hit:
            self.ctx.say(svc.name, f"{why}: SIGKILL to {hit} process{'es' if hit != 1 else ''}", 4)

    def kill_unready(self, svc: ServiceRuntime, why: str) -> None:
        """A worker's readiness is its own READY=1 (or the timer): nothing else to look at."""
        self.kill(svc, why)

    def disable(self, svc: ServiceRuntime) -> None:
        """Nothing to do: a worker is only started again when the core asks."""

    def release(self, svc: ServiceRuntime) -> None:
        self.notify.close(svc.name, self.layout.notify_socket(svc.name))

    def close(self) -> None:
        self.notify.close_all()
        self.pipes.close()
