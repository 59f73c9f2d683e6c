"""`daemon/state.json`: what should outlive one daemon.

Restart counts, when each service became ready, its main pid and instance,
whether it is drained, the request totals, and after `wsgictl daemon-reexec` the worker processes
and their output pipes the new image takes over. Written atomically, read
once at start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from supervisor.files import write_atomic
from supervisor.layout import Layout

if TYPE_CHECKING:
    from supervisor.observe.sampler import Sampler
    from supervisor.state.lifecycle import Lifecycle
    from supervisor.state.service import ServiceRuntime

log = logging.getLogger("wsgi-supervisor")


def save(
    layout: Layout,
    services: Iterable[ServiceRuntime],
    sampler: Sampler,
    handover: dict[str, Any] | None = None,
    probe_tokens: dict[str, dict[str, str]] | None = None,
) -> None:
    """Write the state file; with `handover`, what a re-exec hands the next image."""
    state = {
        svc.name: {
            "restarts": svc.restarts,
            "up_since": svc.up_since,
            "ready_duration": svc.ready_duration,
            "pid": svc.pid,
            "instance": svc.instance,
            "drained": svc.drained,
            "totals": sampler.totals[svc.name].to_json() if svc.name in sampler.totals else None,
            "request_counts": svc.request_counts.to_json(),
        }
        for svc in services
    }
    body = {"services": state, "workers": handover or {}, "reexec": handover is not None}
    body["probe_tokens"] = probe_tokens or {}  # of the live instances only (probe_tokens.py)
    try:
        write_atomic(layout.state_file, json.dumps(body), mode=0o600)
    except OSError as exc:
        log.warning("cannot save the state file: %s", exc)


def load(layout: Layout) -> dict[str, Any]:
    try:
        data = json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def restore_counts(layout: Layout, lifecycles: Mapping[str, Lifecycle], sampler: Sampler) -> None:
    """Counters carry on from what the previous daemon saved (a re-exec, a crash, a restart):
    they never go down while the runtime dir lives."""
    from supervisor.observe.latency import RequestCounts
    from supervisor.observe.sampler import Totals

    for name, kept in load(layout).get("services", {}).items():
        lc = lifecycles.get(name)
        if lc is None or not isinstance(kept, dict):
            continue
        lc.svc.restarts = int(kept.get("restarts") or 0)
        lc.svc.drained = kept.get("drained") is True  # operator intent, like a stop
        if isinstance(kept.get("totals"), dict):
            sampler.totals[name] = Totals.from_json(kept["totals"])
        if isinstance(kept.get("request_counts"), dict):
            lc.svc.request_counts = RequestCounts.from_json(kept["request_counts"])
