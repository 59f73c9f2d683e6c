"""What `wsgictl status --json` (and a `watch`) says of one service."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.observe.sampler import Sample, Sampler
    from supervisor.state.drivers import Driver
    from supervisor.state.service import ServiceRuntime


def describe(svc: ServiceRuntime, driver: Driver, sampler: Sampler) -> dict[str, Any]:
    spec = svc.spec
    info: dict[str, Any] = {
        "name": svc.name,
        "kind": svc.kind,
        "server": getattr(spec, "server", None),  # an API's WSGI server; None for a worker
        "state": str(svc.state),
        "ready": svc.ready,
        "pid": svc.pid,
        "restarts": svc.restarts,
        "socket": driver.endpoint(svc),
        "mount": getattr(spec, "mount", None),
        "since": svc.since,
        "uptime": svc.uptime(),
        "reason": svc.reason,
        "last_exit": svc.last_exit,
        "failures": svc.failures,
        "next_retry": svc.next_retry,
        "status_text": svc.status_text,
        "ready_duration": svc.ready_duration,
        "draining": svc.drained,
    }
    if svc.kind == "api":
        # the master says it in its log as it starts; one adopted from an earlier daemon said it to that one
        unsaid = "unknown (started before this daemon)" if svc.adopted else "pending"
        info["preload"] = (svc.preload or unsaid) if getattr(spec, "preload", False) else "off"
    health = getattr(spec, "health", None)
    if health is not None:
        waiting = f"waiting for the first answer from {health}" if svc.state.up else None
        info["health"] = "ok" if svc.healthy else (svc.health_reason or waiting)
        if svc.state.up and not svc.ready:
            info["reason"] = info["health"]
    sample = sampler.samples.get(svc.name)
    if sample is not None and svc.pid is not None:
        if sample.stats is not None and sample.stats.pid == svc.pid:
            info["workers"] = [
                {"pid": w.pid, "status": w.status, "requests": w.requests} for w in sample.stats.workers if w.pid > 0
            ]
        info["rss_bytes"] = sample.rss_bytes
        if sample.footprint is not None:
            info["memory"] = memory_view(svc.pid, sample)
            info["connections"] = {str(port): n for port, n in sorted(sample.footprint.connections.items())}
        info["sample_age"] = sample.age(time.monotonic())
        if info["socket"] is not None:
            info["listen_queue"] = sample.listen_queue
    if svc.request_counts.served:
        info["latency"] = svc.request_counts.latency()
        info["responses"] = svc.request_counts.responses()
    totals = sampler.totals.get(svc.name)
    if totals is not None or info["socket"] is not None:
        totals = sampler.totals_of(svc.name)
        info["requests"] = totals.value("requests")
        info["harakiri"] = totals.value("harakiri")
        info["worker_respawns"] = totals.respawns
        info["requests_killed"] = totals.killed
    return info


def memory_view(main: int, sample: Sample) -> dict[str, Any]:
    """PSS and USS of every process of the service, and USS of each worker: the workers its server's
    stats name, else every process but the main one (a worker service of one process: that one)."""
    footprint = sample.footprint
    assert footprint is not None
    named = {w.pid for w in sample.stats.workers if w.pid > 0} if sample.stats and sample.stats.pid == main else None
    workers = [pid for pid in footprint.processes if (pid in named if named is not None else pid != main)]
    if not workers and named is None and main in footprint.processes:
        workers = [main]
    return {
        "pss_bytes": footprint.pss,
        "uss_bytes": footprint.uss,
        "workers": [{"pid": pid, "uss_bytes": footprint.processes[pid].uss} for pid in sorted(workers)],
    }
