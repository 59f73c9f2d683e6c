"""What becomes of one request line: counted for the metrics, and logged or not."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.state.service import ServiceRuntime
    from supervisor.uwsgi.core import Request


def app_path(path: str, mount: str | None) -> str:
    """The request's path as the app sees it: under its `mount`, as `health` and `request_log_skip` name it."""
    if mount and mount != "/" and (path == mount or path.startswith((mount + "/", mount + "?"))):
        return path[len(mount) :] or "/"
    return path


def take_request(svc: ServiceRuntime | None, req: Request) -> bool:
    """Count `req` in the service's latency and responses; True if its line goes on to the log.

    The daemon's own health probes are neither counted nor logged; the paths
    of `request_log_skip` are counted, not logged.
    """
    if req.probe:
        return False
    if svc is None:
        return True
    svc.request_counts.observe(req.status, req.duration_s)
    skip = getattr(svc.spec, "request_log_skip", ())
    return not (skip and app_path(req.path, getattr(svc.spec, "mount", None)).startswith(tuple(skip)))
