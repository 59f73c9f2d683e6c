"""When a paused vassal may go at once: every worker in its pause loop, running no thread of the app, and
every worker's last line in."""

import asyncio
import subprocess
import sys
import time

import pytest

import supervisor.uwsgi.pause as pause
from supervisor.manifest.models import ApiService
from supervisor.observe.stats import ServerStats, WorkerStats

MASTER = 4_000_000
GONE = (4_000_001, 4_000_002)  # pids that do not exist: such a worker accepts nothing, as if paused


def _paused_vassal() -> ServerStats:
    return ServerStats(
        MASTER, tuple(WorkerStats(i, pid, False, "pause", 0, 0, 0, 0, 0, 0, 0, 1, 0) for i, pid in enumerate(GONE, 1))
    )


def _wait(logged: set[int], fill_after: float | None) -> tuple[bool, set[int]]:
    async def run():
        async def read_stats():
            return _paused_vassal()

        if fill_after is not None:
            asyncio.get_running_loop().call_later(fill_after, logged.update, {1, 2})
        idle = await pause.wait_paused(read_stats, MASTER, 60.0, logged, own_threads=1, working={})
        return idle, set(logged)

    return asyncio.run(run())


def test_it_waits_for_each_workers_suspended_line(monkeypatch):
    monkeypatch.setattr(pause, "LOG_GRACE", 60.0)
    idle, logged_then = _wait(set(), fill_after=0.05)
    assert idle and logged_then == {1, 2}


def test_a_line_that_never_comes_holds_the_stop_up_only_briefly(monkeypatch):
    monkeypatch.setattr(pause, "LOG_GRACE", 0.05)
    idle, logged_then = _wait(set(), fill_after=None)
    assert idle and logged_then == set()


@pytest.mark.parametrize("other_stats", [None, ServerStats(MASTER + 9, ())])
def test_another_master_or_no_stats_means_a_graceful_stop(other_stats):
    async def run():
        async def read_stats():
            return other_stats

        return await pause.wait_paused(read_stats, MASTER, 1.0, set(), own_threads=1, working={})

    assert asyncio.run(run()) is False


# a stand-in for a paused uWSGI worker: its main thread waits in poll(NULL, 0, 10000), as uWSGI's
# pause loop does, while a thread it started before (work after an answer) runs on
PAUSED_WITH_A_THREAD = """
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
libc = ctypes.CDLL(None)
while True:
    libc.poll(None, 0, 10000)
"""


@pytest.mark.parametrize("own_threads", [1, 2])
def test_a_paused_worker_that_runs_a_thread_of_the_app_is_stopped_gracefully(own_threads):
    worker = subprocess.Popen([sys.executable, "-c", PAUSED_WITH_A_THREAD], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline() == "ready\n"
        time.sleep(0.2)  # into the poll

        async def run():
            async def read_stats():
                return ServerStats(MASTER, (WorkerStats(1, worker.pid, False, "pause", 0, 0, 0, 0, 0, 0, 0, 1, 0),))

            working: dict[int, int] = {}
            idle = await pause.wait_paused(read_stats, MASTER, 5.0, {1}, own_threads=own_threads, working=working)
            return idle, working

        idle, working = asyncio.run(run())
    finally:
        worker.kill()
        worker.wait()
    if own_threads == 1:  # the thread is the app's: the worker still works
        assert (idle, working) == (False, {worker.pid: 1})
    else:  # the thread is the server's own (an offload thread): nothing runs
        assert (idle, working) == (True, {})


@pytest.mark.parametrize(
    "fields, threads",
    [
        ({}, 1),
        ({"threads": 4}, 4),
        ({"uwsgi": {"offload-threads": 2, "py-tracebacker": "/run/tb"}}, 4),  # measured: 4 tasks per idle worker
        ({"uwsgi": {"offload-threads": "3"}}, 4),
    ],
)
def test_the_threads_uwsgi_runs_in_a_worker_are_not_the_apps(fields, threads):
    assert pause.own_threads(ApiService(kind="api", app="keystone.wsgi.api", **fields)) == threads
