"""`/metrics`: one Prometheus endpoint for every service, API and worker (and `/health`, see rotation.py).

A custom collector builds fresh metric families from the daemon's snapshot
on every scrape (no I/O inside it); the HTTP side is a few lines of asyncio,
so no thread runs beside the event loop of a process that forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

import supervisor.gunicorn.board as board
from supervisor import __version__
from supervisor.manifest.models import runner
from supervisor.observe.latency import BUCKETS, CLASSES, Histogram
from supervisor.state.states import State
from supervisor.surfaces.connections import DEFAULT_CAP, IDLE_TIMEOUT, REPLY_TIMEOUT, Connections
from supervisor.surfaces.rotation import rotation

if TYPE_CHECKING:
    from supervisor.state.supervisor import Supervisor

log = logging.getLogger("wsgi-supervisor")

# what each server can say of a worker: no zeros exported for what it cannot
WORKER_STATUSES = {
    "uwsgi": ("idle", "busy", "cheap", "pause", "signal"),
    "gunicorn": ("idle", "busy", *(n for n in board.STATE_NAMES.values() if n not in ("free", "idle"))),
}


LABELS = ["service", "kind"]


class SupervisorCollector:
    def __init__(self, sup: Supervisor):
        self.sup = sup

    def collect(self) -> Iterator[Metric]:
        yield from self._services()
        yield from self._servers()
        yield from self._requests()
        yield from self._daemon()

    def _services(self) -> Iterator[Metric]:
        """What every service has, API or worker: state, restarts, memory and CPU of its tree."""
        sup, sampler, labels = self.sup, self.sup.sampler, LABELS
        info = InfoMetricFamily("wsgi_service", "Static facts of a service", labels=[*labels, "socket", "mount"])
        up = GaugeMetricFamily("wsgi_service_up", "1 when the service is running and ready", labels=labels)
        state = GaugeMetricFamily(
            "wsgi_service_state", "1 for the current state of the service", labels=[*labels, "state"]
        )
        restarts = CounterMetricFamily(
            "wsgi_service_restarts", "Times the service's main process was replaced", labels=labels
        )
        start_time = GaugeMetricFamily(
            "wsgi_service_start_time_seconds", "When the service last became ready (Unix time)", labels=labels
        )
        ready_duration = GaugeMetricFamily(
            "wsgi_service_ready_duration_seconds", "How long the last start took to become ready", labels=labels
        )
        rss = GaugeMetricFamily(
            "wsgi_resident_memory_bytes", "Resident memory of all the service's processes", labels=labels
        )
        memory = GaugeMetricFamily(
            "wsgi_service_memory_bytes",
            "Memory of all the service's processes: type pss (what the service costs, shared pages divided"
            " among their users) or uss (pages that are its processes' alone)",
            labels=[*labels, "type"],
        )
        connections = GaugeMetricFamily(
            "wsgi_service_connections",
            "ESTABLISHED TCP connections the service's processes hold, by remote port",
            labels=[*labels, "remote_port"],
        )
        cpu = CounterMetricFamily("wsgi_cpu_seconds", "CPU time of the service's process tree", labels=labels)
        drained = GaugeMetricFamily(
            "wsgi_service_drained", "1 when the service is out of the load balancer's rotation", labels=labels
        )
        for name, svc in sorted(sup.services.items()):
            values = [name, svc.kind]
            info.add_metric([*values, sup.endpoint(svc) or "", getattr(svc.spec, "mount", None) or ""], {})
            up.add_metric(values, 1.0 if svc.ready else 0.0)
            drained.add_metric(values, 1.0 if svc.drained else 0.0)
            for s in State:
                state.add_metric([*values, str(s)], 1.0 if svc.state == s else 0.0)
            restarts.add_metric(values, svc.restarts)
            if svc.up_since is not None:
                start_time.add_metric(values, svc.up_since)
            if svc.ready_duration is not None:
                ready_duration.add_metric(values, svc.ready_duration)
            if svc.pid is not None:
                sample = sampler.sample_of(name)
                rss.add_metric(values, sample.rss_bytes)
                if sample.footprint is not None:
                    memory.add_metric([*values, "pss"], sample.footprint.pss)
                    memory.add_metric([*values, "uss"], sample.footprint.uss)
                    for port, count in sorted(sample.footprint.connections.items()):
                        connections.add_metric([*values, str(port)], count)
            usage = sampler.usage.get(name)
            cpu.add_metric(values, usage.base + usage.last if usage is not None else 0)
        yield from (info, up, state, restarts, start_time, ready_duration, rss, memory, connections, cpu, drained)
        yield self._ages()

    def _ages(self) -> Metric:
        ages = GaugeMetricFamily(
            "wsgi_metrics_sample_age_seconds",
            "How old the sample behind the service's sampled figures (counters, workers, memory) is",
            labels=["service"],
        )
        now = time.monotonic()
        for name, svc in sorted(self.sup.services.items()):
            sample = self.sup.sampler.samples.get(name)
            age = sample.age(now) if sample is not None and svc.pid is not None else None
            if age is not None:
                ages.add_metric([name], age)
        return ages

    def _servers(self) -> Iterator[Metric]:
        """What a WSGI server tells of an API: requests, errors, workers, its socket's queue."""
        sup, sampler, labels = self.sup, self.sup.sampler, LABELS
        counters = {
            key: CounterMetricFamily(f"wsgi_{metric}", text, labels=labels)
            for key, metric, text in (
                ("requests", "requests", "Requests served by an API"),
                ("exceptions", "exceptions", "Uncaught exceptions in an API"),
                ("harakiri", "harakiri", "Workers killed for taking too long (harakiri)"),
                ("tx", "response_bytes", "Bytes sent in responses"),
            )
        }
        respawns = CounterMetricFamily("wsgi_worker_respawns", "Workers replaced", labels=labels)
        killed = CounterMetricFamily(
            "wsgi_requests_killed",
            "Requests still in flight when a stop or a reload's retirement had to SIGKILL the server",
            labels=labels,
        )
        workers = GaugeMetricFamily("wsgi_workers", "Workers by status", labels=[*labels, "status"])
        avg_rt = GaugeMetricFamily(
            "wsgi_average_response_time_seconds",
            "Average response time (uWSGI: its moving average; gunicorn: over each worker's life)",
            labels=labels,
        )
        queue = GaugeMetricFamily("wsgi_listen_queue_length", "Connections waiting to be accepted", labels=labels)
        queue_max = GaugeMetricFamily("wsgi_listen_queue_max", "The socket's backlog limit", labels=labels)
        for name, svc in sorted(sup.services.items()):
            if name not in sampler.totals and sup.endpoint(svc) is None:
                continue  # nothing served over a socket: a worker
            values = [name, svc.kind]
            totals = sampler.totals_of(name)
            for key, family in counters.items():
                family.add_metric(values, totals.value(key))
            respawns.add_metric(values, totals.respawns)
            killed.add_metric(values, totals.killed)
            sample = sampler.sample_of(name)
            if svc.pid is not None:
                for status in WORKER_STATUSES.get(runner(svc.spec), ()):
                    workers.add_metric([*values, status], sample.workers.get(status, 0))
                if sample.avg_response_s is not None:
                    avg_rt.add_metric(values, sample.avg_response_s)
            if sample.listen_queue is not None:
                queue.add_metric(values, sample.listen_queue)
                queue_max.add_metric(values, sample.listen_queue_max or 0)
        yield from (*counters.values(), respawns, killed, workers, avg_rt, queue, queue_max)

    def _requests(self) -> Iterator[Metric]:
        """Latency and responses by status class, from every API's request lines (either server)."""
        labels = ["service", "code"]
        duration = HistogramMetricFamily(
            "wsgi_request_duration_seconds", "Time to answer a request, by status class", labels=labels
        )
        responses = CounterMetricFamily("wsgi_responses", "Responses by status class", labels=labels)
        bounds = [floatToGoString(b) for b in BUCKETS] + ["+Inf"]
        for name, svc in sorted(self.sup.services.items()):
            if svc.kind != "api":
                continue
            for code in CLASSES:
                hist = svc.request_counts.by_class.get(code) or Histogram()
                cumulative = hist.cumulative()
                duration.add_metric([name, code], list(zip(bounds, cumulative, strict=True)), hist.total_s)
                responses.add_metric([name, code], cumulative[-1])
        yield from (duration, responses)

    def _daemon(self) -> Iterator[Metric]:
        sup = self.sup
        build = InfoMetricFamily("wsgi_supervisor_build", "The daemon's version")
        build.add_metric([], {"version": __version__})
        ok = GaugeMetricFamily(
            "wsgi_supervisor_config_last_reload_successful", "1 if the last manifest reload was applied"
        )
        ok.add_metric([], 0.0 if sup.last_reload_ok is False else 1.0)
        when = GaugeMetricFamily(
            "wsgi_supervisor_config_last_reload_success_timestamp_seconds",
            "When the manifest was last loaded successfully (Unix time)",
        )
        when.add_metric([], sup.last_reload_success or sup.started_at)
        dropped = CounterMetricFamily("wsgi_supervisor_log_lines_dropped", "Log lines a sink could not deliver")
        dropped.add_metric([], sup.drops.count)
        rejected = CounterMetricFamily(
            "wsgi_supervisor_log_lines_rejected",
            "Datagrams on the daemon's log socket dropped because their sender is not a process of the"
            " service they name, by the sender's service (empty: a process of no service)",
            labels=["service"],
        )
        for name, count in sorted(sup.intake.rejected.counts.items()):
            rejected.add_metric([name], count)
        lost = CounterMetricFamily(
            "wsgi_log_lines_dropped",
            "Lines a service's server dropped because no daemon read its log (counted there, told to the next daemon)",
            labels=["service"],
        )
        for name, count in sorted(sup.intake.lost.items()):
            lost.add_metric([name], count)
        emperor = CounterMetricFamily(
            "wsgi_supervisor_emperor_restarts", "Times the uWSGI emperor had to be started again"
        )
        emperor.add_metric([], sup.drivers["uwsgi"].emperor.restarts)  # type: ignore[attr-defined]
        yield from (build, ok, when, dropped, rejected, lost, emperor)


class ListenerCollector:
    """The metrics listener's own connections: how many are open, how many it turned away."""

    def __init__(self, connections: Connections):
        self.connections = connections

    def collect(self) -> Iterator[Metric]:
        conns = self.connections
        open_now = GaugeMetricFamily(
            "wsgi_supervisor_listener_connections", "Connections open on the metrics and health listener"
        )
        open_now.add_metric([], len(conns.open))
        limit = GaugeMetricFamily(
            "wsgi_supervisor_listener_connections_max",
            "The listener's cap on open connections (--metrics-max-connections)",
        )
        limit.add_metric([], conns.cap)
        refused = CounterMetricFamily(
            "wsgi_supervisor_listener_refused",
            "Connections closed unserved because the listener was at its cap (the new one, or the oldest idle one)",
        )
        refused.add_metric([], conns.refused)
        idle = CounterMetricFamily(
            "wsgi_supervisor_listener_idle_closed", "Connections closed for sending no request within the idle timeout"
        )
        idle.add_metric([], conns.timed_out)
        yield from (open_now, limit, refused, idle)


def registry_for(sup: Supervisor) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(sup))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)  # the daemon's own CPU, memory, fds
    return registry


class MetricsServer:
    """A minimal HTTP/1.1 server for GET /metrics and /health on loopback, its connections bounded
    (connections.py): one request per connection, then it is closed."""

    def __init__(self, sup: Supervisor, listen: str, max_connections: int = DEFAULT_CAP):
        self.sup = sup
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.connections = Connections(max_connections)
        self.registry = registry_for(sup)
        self.registry.register(ListenerCollector(self.connections))  # type: ignore[arg-type]
        self.server: asyncio.base_events.Server | None = None
        self.address: str | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        sockname = self.server.sockets[0].getsockname()
        self.address = f"{sockname[0]}:{sockname[1]}"
        log.info("metrics on http://%s/metrics", self.address)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.connections.admit(writer):
            writer.transport.abort()
            return
        try:
            try:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    request = await reader.readline()
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
            except TimeoutError:
                self.connections.timed_out += 1
                return
            if not self.connections.asked(writer):
                return  # closed to make room while it sent nothing whole
            async with asyncio.timeout(REPLY_TIMEOUT):
                await self._answer(request, writer)
        except (TimeoutError, ConnectionError, OSError, ValueError):
            pass  # ValueError: a line past the reader's limit
        finally:
            self.connections.forget(writer)
            writer.close()  # what the reply left in the buffer is still sent
            with contextlib.suppress(Exception):
                async with asyncio.timeout(IDLE_TIMEOUT):
                    await writer.wait_closed()
            writer.transport.abort()  # a client that reads nothing does not keep it past that

    async def _answer(self, request: bytes, writer: asyncio.StreamWriter) -> None:
        parts = request.decode("latin-1").split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            await self._reply(writer, 405, b"only GET\n", "text/plain")
        elif parts[1].split("?")[0] == "/health" or parts[1].startswith("/health/"):
            status, text = rotation(self.sup, parts[1].split("?")[0].removeprefix("/health").strip("/"))
            await self._reply(writer, status, text.encode() if parts[0] == "GET" else b"", "text/plain")
        elif parts[1].split("?")[0] not in ("/metrics", "/"):
            await self._reply(writer, 404, b"see /metrics or /health/NAME\n", "text/plain")
        else:
            await self.sup.sampler.fresh()  # bounded: a vassal that does not answer leaves its last figures
            self.sup.sampler.refresh()  # the kernel answers at once
            body = generate_latest(self.registry)
            await self._reply(writer, 200, body if parts[0] == "GET" else b"", CONTENT_TYPE_LATEST)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
