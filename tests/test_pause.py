"""When a paused vassal may go at once: every worker in its pause loop, and every worker's last line in."""

import asyncio

import pytest

import supervisor.uwsgi.pause as pause
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
        idle = await pause.wait_paused(read_stats, MASTER, 60.0, logged)
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

        return await pause.wait_paused(read_stats, MASTER, 1.0, set())

    assert asyncio.run(run()) is False
