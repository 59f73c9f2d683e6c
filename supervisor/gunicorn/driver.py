"""API services as gunicorn arbiters: the driver the lifecycle asks to act.

The daemon starts each arbiter itself (`boot.py`, in the service's venv),
in a session of its own and without a parent-death signal, so that like a
uWSGI vassal it outlives a daemon that is killed or re-executed and the
next daemon adopts it (found by its command line, which names its spec
file). Start: hold the socket, write the spec, start the arbiter with the
socket as fd 3. Readiness: every worker slot of its scoreboard says the
app is loaded (woken by the line each worker logs when it is). Stop:
SIGTERM, gunicorn's graceful stop (workers finish what they serve, and
what their app's threads still do after answering: a worker exits through
Python's shutdown, which joins them and runs `atexit`); what the arbiter
leaves in its control group (it joins it before the exec) is SIGKILLed once
it is gone. Reload: a second arbiter on the same socket;
the old one gets SIGTERM once the new one serves. It reports what it sees
as events and never changes a service's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from typing import TYPE_CHECKING, Any

import supervisor.gunicorn.board as board
import supervisor.gunicorn.noise as noise
import supervisor.gunicorn.spawn as spawn
from supervisor import preload
from supervisor.files import write_atomic
from supervisor.gunicorn.arbiters import (
    failure_hint,
    interpreter,
    read_board,
    ready_workers,
    render_spec,
    running_arbiters,
)
from supervisor.gunicorn.boards import TrustedBoards
from supervisor.layout import INSTANCES, free_instance
from supervisor.listeners import HeldSockets
from supervisor.logs.fifos import LogFifos
from supervisor.logs.pipes import OutputPipes, Take
from supervisor.manifest.models import ApiService, runner
from supervisor.observe.app_threads import before_a_kill
from supervisor.observe.cgroups import group_name, joining
from supervisor.observe.procs import descendants, take_listener
from supervisor.state.drivers import Context, Failure
from supervisor.state.events import Adopted, Ready, Spawned, SpawnFailed
from supervisor.state.service import ReloadAttempt, ServiceRuntime
from supervisor.state.states import State

if TYPE_CHECKING:
    from supervisor.observe.sampler import Sampler

log = logging.getLogger("wsgi-supervisor")

# readiness: woken by each worker's "loaded the app" line; this is the fallback
PROBE_INTERVAL = 0.5
LOADED = " loaded the app"


def own_threads(service: ApiService) -> int:
    """The threads gunicorn runs in each worker: the main one, and a gthread worker's pool
    (`threads`, started as requests come). Any beyond these are the app's own."""
    return 1 + (service.threads if service.threads > 1 else 0)


class GunicornDriver:
    def __init__(self, context: Context, sampler: Sampler, sockets: HeldSockets, take: Take):
        self.ctx = context
        self.layout = context.layout
        self.config = context.config
        self.sampler = sampler
        self.sockets = sockets
        self.pipes = OutputPipes(context.loop, take)  # each arbiter's first lines, until its relay runs
        self.logs = LogFifos(context.loop, self.layout.gunicorn_log, take)
        self.arbiters: dict[tuple[str, str], int] = {}  # (service, instance) -> arbiter pid
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.probes: dict[str, asyncio.Event] = {}
        self.retiring: dict[str, set[str]] = {}
        self.boards = TrustedBoards(self.layout)  # what each arbiter says of its workers
        sampler.sources.append(self.sample)

    # -- files and processes ------------------------------------------------------------------

    @staticmethod
    def group(name: str, instance: str) -> str:
        """The control group of an arbiter and its workers (observe/cgroups.py)."""
        return group_name(name, "gunicorn", instance)

    def _spawn(self, svc: ServiceRuntime, instance: str) -> int | str:
        """Start an arbiter for `instance`; its pid, or why it could not be started."""
        spec = svc.spec
        assert isinstance(spec, ApiService)
        fd = self.sockets.hold(svc.name, self)
        python = interpreter(spec, self.config.default_venv)
        join_fd = self.ctx.groups.fresh_procs_fd(self.group(svc.name, instance), lambda t: self.ctx.say(svc.name, t, 4))
        if join_fd is None and self.ctx.groups.available:
            return "cannot make its control group (the daemon's log says why)"
        self.logs.follow(svc.name, instance)
        spec_path = self.layout.gunicorn_spec(svc.name, instance)
        token = self.ctx.tokens.issue("gunicorn", svc.name, instance)  # this arbiter's own (state/probe_tokens.py)
        write_atomic(spec_path, render_spec(svc.name, spec, token, str(self.layout.daemon_pidfile)))
        try:
            handed = spawn.Handed.open(
                fd,
                spec_path,
                self.layout.gunicorn_log(svc.name, instance),
                self.layout.gunicorn_board(svc.name, instance),
                board.slots_for(spec.processes),
            )
        except OSError as exc:
            if join_fd is not None:
                os.close(join_fd)
            return f"cannot prepare the arbiter's files: {exc}"
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            # into its control group before the exec, so that a stop reaches all it starts
            preexec = None if join_fd is None else joining(join_fd)
            proc = spawn.start(python, spec_path, spec, handed, write_fd, preexec)
        except OSError as exc:
            os.close(read_fd)
            return exc.strerror or str(exc)
        finally:
            os.close(write_fd)
            handed.close()
            if join_fd is not None:
                os.close(join_fd)
        self.pipes.add(f"{svc.name}.{instance}", read_fd, svc.name)
        self.arbiters[svc.name, instance] = proc.pid
        self.procs[proc.pid] = proc
        return proc.pid

    def _remove_files(self, name: str, instance: str) -> None:
        self.logs.unfollow(name, instance)
        for path in (self.layout.gunicorn_spec(name, instance), self.layout.gunicorn_board(name, instance)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _gone(self, name: str, instance: str, pid: int) -> None:
        """An arbiter exited: what its board counted stays in the totals."""
        stats = read_board(self.layout.gunicorn_board(name, instance))
        if stats is not None and stats.pid == pid:
            self.sampler.fold(name, stats)
        self.sampler.master_gone(name, pid)
        if self.arbiters.get((name, instance)) == pid:
            del self.arbiters[name, instance]
            self.ctx.tokens.drop("gunicorn", name, instance)
        proc = self.procs.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(ChildProcessError):
                proc.poll()  # reaped by the watcher already: only lets Popen know
        # its first-lines pipe closes by itself once read to the end: its last lines (a
        # traceback at boot) are still read, whichever of the two the loop sees first

    def _kill_counting(self, svc: ServiceRuntime, instance: str, pid: int, why: str) -> None:
        """SIGKILL an arbiter that did not stop in time, saying what that ends: the requests in
        flight, and the threads its app still ran after answering (gunicorn's graceful stop
        waits for them: a worker exits through Python's own shutdown, which joins non-daemon
        threads and runs `atexit`)."""
        stats = read_board(self.layout.gunicorn_board(svc.name, instance))
        assert isinstance(svc.spec, ApiService)
        in_flight, line, priority = before_a_kill(stats, pid, own_threads(svc.spec), why)
        if in_flight:
            self.sampler.count_killed(svc.name, in_flight)
        self.ctx.say(svc.name, line, priority)
        self.ctx.groups.kill_all(self.group(svc.name, instance), pid)

    # -- the lifecycle's asks -----------------------------------------------------------------

    def prepare(self, svc: ServiceRuntime) -> None:
        assert isinstance(svc.spec, ApiService)
        python = interpreter(svc.spec, self.config.default_venv)
        if not python.exists():
            raise OSError(f"{python} does not exist: is {python.parent.parent} a virtualenv?")
        spawn.credentials(svc.spec)  # a user or group gone since the manifest was checked: say so now
        self.sockets.hold(svc.name, self)

    def launch(self, svc: ServiceRuntime) -> None:
        started = self._spawn(svc, svc.instance)
        if isinstance(started, str):
            self.ctx.report(SpawnFailed(svc.name, started))
        else:
            self.ctx.report(Spawned(svc.name, started, svc.instance))

    def awaiting(self, svc: ServiceRuntime) -> str:
        return "waiting for every worker to load the app"

    def watch_ready(self, svc: ServiceRuntime) -> None:
        if svc.name in self.probes:
            self.probes[svc.name].set()
            return
        self.probes[svc.name] = asyncio.Event()
        self.ctx.spawn(self._probe(svc), f"probe-{svc.name}")

    async def _probe(self, svc: ServiceRuntime) -> None:
        """Read the board while the service starts or reloads; Ready once every worker has the app."""
        wake = self.probes[svc.name]
        reported: set[int] = set()
        try:
            while svc.state in (State.STARTING, State.RELOADING):
                attempt = svc.reload
                pid, instance = (attempt.pid, attempt.instance) if attempt else (svc.pid, svc.instance)
                if pid is not None and pid not in reported and not svc.waiting_for:
                    (stats,) = await self.boards.read([(svc, instance, pid)])
                    if stats is not None:
                        if attempt is None:
                            self.sampler.observe(svc.name, stats)
                        if ready_workers(stats) >= svc.spec.processes:  # type: ignore[union-attr]
                            reported.add(pid)
                            self.ctx.report(Ready(svc.name, pid))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_INTERVAL):
                        await wake.wait()
                wake.clear()
        finally:
            self.probes.pop(svc.name, None)

    def ask_stop(self, svc: ServiceRuntime) -> bool:
        """SIGTERM: gunicorn's graceful stop (workers finish their requests and their app's threads)."""
        if svc.pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(svc.pid, signal.SIGTERM)
        return True

    def kill(self, svc: ServiceRuntime, why: str) -> None:
        if svc.pid is not None:
            self._kill_counting(svc, svc.instance, svc.pid, why)

    def kill_unready(self, svc: ServiceRuntime, why: str) -> None:
        self.kill(svc, why)

    def disable(self, svc: ServiceRuntime) -> None:
        """Nothing brings an arbiter back by itself."""

    def release(self, svc: ServiceRuntime) -> None:
        self.sockets.release(svc.name, self)
        for instance in INSTANCES:
            if (svc.name, instance) not in self.arbiters:
                self._remove_files(svc.name, instance)

    def exited(self, svc: ServiceRuntime, pid: int, status: int | None) -> str | None:
        self._gone(svc.name, svc.instance, pid)
        return None

    def describe_exit(self, svc: ServiceRuntime) -> str:
        return "exited unexpectedly" + (f" ({svc.last_exit})" if svc.last_exit else "")

    def reload(self, svc: ServiceRuntime) -> ReloadAttempt:
        instance = free_instance(svc.instance, self.retiring.get(svc.name, set()))
        if instance is None:
            raise OSError("the old arbiters of the last reloads are still stopping: try again once they are gone")
        started = self._spawn(svc, instance)
        if isinstance(started, str):
            raise OSError(started)
        self.ctx.report(Spawned(svc.name, started, instance))
        return ReloadAttempt(instance, replaces=svc.instance)

    def reports_reload(self, svc: ServiceRuntime) -> bool:
        return True

    def switch(self, svc: ServiceRuntime, attempt: ReloadAttempt, old_pid: int | None) -> None:
        if old_pid is not None:
            self.retire(svc, attempt.replaces, old_pid)

    def retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """Stop an arbiter that no longer serves (the old one after a reload), gracefully."""
        self.retiring.setdefault(svc.name, set()).add(instance)
        task = self.ctx.spawn(self._retire(svc, instance, pid), f"retire-{svc.name}")
        task.add_done_callback(lambda _: self.retiring.get(svc.name, set()).discard(instance))

    async def _retire(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        gone = asyncio.get_running_loop().create_future()
        self.ctx.watcher.watch(pid, lambda p, s: gone.done() or gone.set_result(None))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(gone, svc.spec.stop_timeout)
        except TimeoutError:
            self._kill_counting(
                svc,
                instance,
                pid,
                f"the old arbiter (pid {pid}) is still up {svc.spec.stop_timeout:g}s after the reload",
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone, 2)
        finally:
            self.ctx.watcher.unwatch(pid)
        await self._empty(svc, instance, pid)
        self._gone(svc.name, instance, pid)
        if instance != svc.instance and (svc.reload is None or svc.reload.instance != instance):
            self._remove_files(svc.name, instance)

    async def _empty(self, svc: ServiceRuntime, instance: str, pid: int) -> None:
        """A retired arbiter is gone: so is whatever it left in its group."""
        group = self.group(svc.name, instance)
        if self.ctx.groups.left_behind(group):
            hit = self.ctx.groups.kill(group)
            self.ctx.say(svc.name, f"the old arbiter (pid {pid}) left {hit} process(es) in its group: SIGKILL", 4)
        await self.ctx.groups.emptied(group, 5.0)

    def abandon(self, svc: ServiceRuntime, attempt: ReloadAttempt) -> None:
        pid = self.arbiters.get((svc.name, attempt.instance))
        if pid is not None:
            self.ctx.groups.kill_all(self.group(svc.name, attempt.instance), pid)
            self.ctx.watcher.watch(pid, lambda p, s: self._abandoned(svc.name, attempt.instance, p))

    def _abandoned(self, name: str, instance: str, pid: int) -> None:
        self._gone(name, instance, pid)
        self._remove_files(name, instance)

    def on_line(self, svc: ServiceRuntime, text: str) -> Failure | None:
        if (said := preload.verdict(text)) is not None:
            svc.preload = said
            return None
        if text.endswith(LOADED):
            wake = self.probes.get(svc.name)
            if wake is not None:
                wake.set()
            return None
        return failure_hint(text, svc.spec.venv)

    def noise(self, text: str) -> bool:
        return noise.is_noise(text)

    def endpoint(self, svc: ServiceRuntime) -> str | None:
        return str(self.layout.api_socket(svc.name))

    async def sample(self) -> None:
        """The serving arbiters' boards, for the snapshot."""
        wanted = [(s, s.instance, s.pid) for s in self._mine() if s.pid is not None and s.state != State.STOPPED]
        for (svc, _, pid), stats in zip(wanted, await self.boards.read(wanted), strict=True):
            if stats is not None and svc.pid == pid:
                self.sampler.observe(svc.name, stats)

    def _mine(self) -> list[ServiceRuntime]:
        return [s for s in self.ctx.services() if runner(s.spec) == "gunicorn"]

    # -- after the daemon restarted -----------------------------------------------------------

    async def attach(self, kept: dict[str, Any], reexec: bool) -> None:
        """Take over the arbiters a previous daemon (or image) left serving; report each Adopted."""
        previous = kept.get("services", {})
        found = await asyncio.get_running_loop().run_in_executor(None, running_arbiters, self.layout)
        mine = {svc.name: svc for svc in self._mine()}
        by_service: dict[str, dict[str, int]] = {}
        for (name, instance), pid in found.items():
            if name not in mine:
                log.info("%s: not a gunicorn service of the manifest: stopping its arbiter (pid %d)", name, pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                continue
            by_service.setdefault(name, {})[instance] = pid
        for name, instances in by_service.items():
            svc = mine[name]
            known = previous.get(name, {})
            keep = known.get("instance", "")
            keep = keep if keep in instances else next(iter(instances))
            for instance, pid in instances.items():
                self.arbiters[name, instance] = pid
                self._enclose(name, instance, pid)
                self.logs.follow(name, instance)
                self.ctx.tokens.adopt("gunicorn", name, instance)  # its probes are still told apart
                if instance != keep:
                    self.retire(svc, instance, pid)
            pid = instances[keep]
            fd = None
            with contextlib.suppress(OSError):
                fd = take_listener(pid, self.layout.api_socket(name))
            if fd is not None:
                self.sockets.take_over(name, self, fd)
            assert isinstance(svc.spec, ApiService)
            token = self.ctx.tokens.get("gunicorn", name, keep)
            rendered = render_spec(name, svc.spec, token, str(self.layout.daemon_pidfile))
            try:
                changed = rendered != self.layout.gunicorn_spec(name, keep).read_text()
            except OSError:
                changed = True
            same = known.get("pid") == pid
            history = {"up_since": known.get("up_since"), "ready_duration": known.get("ready_duration")} if same else {}
            self.ctx.report(Adopted(name, pid, keep, changed=changed, **history))
            log.info("%s: adopted gunicorn arbiter (pid %d)", name, pid)

    def _enclose(self, name: str, instance: str, pid: int) -> None:
        """An adopted arbiter that runs outside its group (an older daemon started it) is moved in."""
        group = self.group(name, instance)
        if self.ctx.groups.available and pid not in self.ctx.groups.members(group):
            moved = self.ctx.groups.enclose(group, [pid, *descendants(pid)])
            log.info("%s: moved %d process(es) of its arbiter (pid %d) into its control group", name, moved, pid)

    def close(self) -> None:
        self.pipes.close()
        self.logs.close()
