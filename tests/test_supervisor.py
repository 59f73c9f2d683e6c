"""The supervisor's queue with scripted drivers: commands and a new manifest, one at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from supervisor.config import Config
from supervisor.manifest.models import ApiService, Manifest, WorkerService
from supervisor.state.events import Exited, Ready, Spawned
from supervisor.state.states import State


class Watcher:
    def watch(self, pid, callback):
        return True

    def unwatch(self, pid):
        pass

    def close(self):
        pass


class Driver:
    """Processes that come up at once and stop when asked, a little later, as real ones would."""

    def __init__(self, loop):
        self.loop = loop
        self.report = None
        self.next_pid = 1000
        self.launched: list[str] = []
        self.hold: set[str] = set()  # services whose processes never say they are ready by themselves
        self.held: dict[str, int] = {}  # their pids

    def prepare(self, svc):
        pass

    def launch(self, svc):
        self.next_pid += 1
        self.launched.append(svc.name)
        pid = self.next_pid
        self.loop.call_soon(self.report, Spawned(svc.name, pid))
        if svc.name in self.hold:
            self.held[svc.name] = pid
        else:
            self.loop.call_later(0.01, self.report, Ready(svc.name, pid))

    def awaiting(self, svc):
        return "waiting"

    def watch_ready(self, svc):
        pass

    def ask_stop(self, svc):
        if svc.pid is None:
            return False
        self.loop.call_later(0.02, self.report, Exited(svc.name, svc.pid, 0))
        return True

    def kill(self, svc, why):
        pass

    def kill_unready(self, svc, why):
        self.kill(svc, why)

    def disable(self, svc):
        pass

    def release(self, svc):
        pass

    def exited(self, svc, pid, status):
        return None

    def describe_exit(self, svc):
        return "exited"

    def reload(self, svc):
        return True  # in place, and done at once

    def reports_reload(self, svc):
        return False

    def switch(self, svc, attempt, old_pid):
        pass

    def abandon(self, svc, attempt):
        pass

    def on_line(self, svc, text):
        return None

    def endpoint(self, svc):
        return None

    def close(self):
        pass


def api(**fields):
    return ApiService(kind="api", app="x.y", **fields)


def worker(**fields):
    return WorkerService(kind="worker", command=("x",), **fields)


def manifest(**services):
    return Manifest(services=services, sources=dict.fromkeys(services, "test.toml"))


async def supervisor(tmp_path: Path, first: Manifest):
    from supervisor.registry import Registry, Server
    from supervisor.state.supervisor import Supervisor
    from supervisor.wiring import assemble

    loop = asyncio.get_running_loop()
    driver = Driver(loop)
    servers = Registry()
    for name in ("uwsgi", "gunicorn", "process"):
        servers.add(Server(name, lambda parts: driver), "tests")
    sup = Supervisor(
        Config(conf_dir=tmp_path, runtime_dir=tmp_path / "run", metrics_listen=None),
        first,
        assemble(servers),
        Watcher(),
    )
    driver.report = sup.report
    return sup, driver


def test_a_manifest_change_and_commands_that_arrive_meanwhile(tmp_path):
    async def story():
        sup, _driver = await supervisor(tmp_path, manifest(a=api(), gone=api(), x=api(enabled=False)))
        assert all(ok for ok, _ in await asyncio.gather(*sup.start_enabled()))
        # x changes kind while stopped, and a new service comes after it; gone goes away
        change = asyncio.ensure_future(sup.apply_manifest(manifest(a=api(), x=worker(), y=worker(after=("x",)))))
        await asyncio.sleep(0)
        revive = sup.command("start", "gone")  # arrives while gone is stopping: it must not come back
        result = await change
        assert result["removed"] == ["gone"] and result["added"] == ["y"] and result["ok"]
        assert await revive == (False, "gone is not in the manifest")
        assert set(sup.services) == {"a", "x", "y"} and not sup.rollover.retiring
        assert sup.services["x"].kind == "worker" and sup.services["x"].state == State.RUNNING
        assert sup.services["y"].state == State.RUNNING  # it waited for x, which it started
        # commands sent at once are applied in order, none refused for the others: the stop is
        # overtaken by the start that follows it, and says so
        answers = await asyncio.gather(
            sup.command("restart", "a"), sup.command("stop", "a"), sup.command("start", "a"), sup.command("reload", "y")
        )
        assert answers == [
            (True, "running"),
            (False, "started again by another request"),
            (True, "running"),
            (True, "running"),
        ]
        for task in list(sup.tasks):
            task.cancel()

    asyncio.run(story())


def test_replacing_a_running_service_starts_the_new_one_after_the_old_one_stopped(tmp_path):
    async def story():
        sup, driver = await supervisor(tmp_path, manifest(x=api()))
        await asyncio.gather(*sup.start_enabled())
        result = await sup.apply_manifest(manifest(x=worker()))
        assert result["ok"] and result["changed"] == ["x"]
        assert sup.services["x"].kind == "worker" and sup.services["x"].state == State.RUNNING
        assert driver.launched == ["x", "x"] and not sup.rollover.retiring
        for task in list(sup.tasks):
            task.cancel()

    asyncio.run(story())


def test_a_manifest_is_taken_before_its_changes_are_done_and_they_go_on(tmp_path):
    """take_manifest answers once the queue has the manifest (what `reload-config --no-block` and a
    --timeout rest on): the new service is still starting, its change unfinished; the outcome comes
    once it is ready, and nobody waiting for it meanwhile changed nothing."""

    async def story():
        sup, driver = await supervisor(tmp_path, manifest(a=api()))
        await asyncio.gather(*sup.start_enabled())
        driver.hold.add("slow")
        applied = await sup.take_manifest(manifest(a=api(), slow=worker()))
        assert applied.summary["added"] == ["slow"] and applied.summary["unchanged"] == 1
        assert applied.unfinished() == ["slow"] and not applied.outcome.done()
        assert sup.services["slow"].state == State.STARTING
        driver.report(Ready("slow", driver.held["slow"]))
        result = await applied.outcome
        assert result["ok"] and result["added"] == ["slow"] and applied.unfinished() == []
        assert sup.services["slow"].state == State.RUNNING
        for task in list(sup.tasks):
            task.cancel()

    asyncio.run(story())
