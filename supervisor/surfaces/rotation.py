"""What a load balancer asks: should this service (or this host) get requests?

`GET /health/NAME` on the metrics listener answers 200 when the service is
running, ready (its app's own health check passes, if it has one) and not
drained, else 503; `GET /health` answers for the host: 200 when every
service that should run is in rotation. HAProxy's `option httpchk GET
/health/NAME` with `check port 9180` is the client.

The listener asks for no credentials, so a body names a state only
(`drained`, `not ready`, `backoff`…), never the reason behind it: a reason
quotes the app's own words (an exception that holds a database URL and its
password, say). The reason is on the control socket (`wsgictl status`),
whose peers are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.state.service import ServiceRuntime
    from supervisor.state.supervisor import Supervisor


LEAVING = "the daemon is stopping (--stop-drain): out of rotation, still serving"


def in_rotation(svc: ServiceRuntime) -> str | None:
    """None when a load balancer should send the service requests, else the state that keeps it out,
    in a word or two that quote nothing of the service's own (no reason, no output)."""
    if svc.drained:
        return "drained"
    if not svc.state.up:
        return str(svc.state)
    if not svc.ready:
        return "not ready"
    return None


def rotation(sup: Supervisor, name: str) -> tuple[int, str]:
    """What `GET /health/NAME` (or `/health`, the host: every service that should run) answers."""
    if name:
        svc = sup.services.get(name)
        if svc is None:
            return 404, "not in the manifest\n"
        why = LEAVING if sup.leaving else in_rotation(svc)
        return (200, f"{name}: ok\n") if why is None else (503, f"{name}: {why}\n")
    if sup.leaving:
        return 503, f"host: {LEAVING}\n"
    wanted = [svc for svc in sup.services.values() if svc.goal_running or svc.state.active]
    problems = [(svc.name, why) for svc in wanted if (why := in_rotation(svc)) is not None]
    if problems:
        return 503, "".join(f"{n}: {why}\n" for n, why in problems)
    return 200, f"ok: {len(wanted)} services in rotation\n"
