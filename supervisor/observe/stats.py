"""What a server tells of its workers, in the same terms for every server.

uWSGI's stats socket and gunicorn's scoreboard are both read into these;
the sampler folds them into totals and the snapshot without knowing which
server said it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerStats:
    id: int
    pid: int
    accepting: bool
    status: str
    requests: int
    exceptions: int
    harakiri_count: int
    respawn_count: int
    avg_rt_us: int
    tx: int
    apps: int
    last_spawn: int
    in_flight: int = 0  # requests this worker is serving now (busy cores)
    serving: tuple[str, ...] = ()  # what those requests are, as "METHOD URI", where the server tells


@dataclass(frozen=True)
class ServerStats:
    pid: int
    workers: tuple[WorkerStats, ...]

    @property
    def paused(self) -> bool:
        """No worker will accept a connection: each is suspended or gone."""
        return all(w.status == "pause" or w.pid <= 0 for w in self.workers)

    @property
    def serving(self) -> bool:
        """Every worker has the app loaded and accepts requests."""
        return bool(self.workers) and all(
            w.accepting and w.apps > 0 and w.pid > 0 and w.status != "cheap" for w in self.workers
        )

    @property
    def in_flight(self) -> int:
        """Requests being served right now, by every worker."""
        return sum(w.in_flight for w in self.workers)
