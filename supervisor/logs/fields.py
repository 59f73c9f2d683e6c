"""A line's journald fields: what the journal gets, and what `--log-format json` writes."""

from __future__ import annotations

import json
from collections.abc import Callable

from supervisor.layout import DAEMON_NAME
from supervisor.state.service import LogLine

STREAMS = {"o": "output", "r": "request", "d": "supervisor"}


def journal_fields(line: LogLine, kind_of: Callable[[str], str]) -> dict[str, str]:
    """MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, the WSGI_* fields and, for a request line, REQUEST_*."""
    fields = {"MESSAGE": line.text, "PRIORITY": str(line.priority)}
    if line.service == DAEMON_NAME:
        fields["SYSLOG_IDENTIFIER"] = DAEMON_NAME
        return fields
    fields |= {
        "SYSLOG_IDENTIFIER": DAEMON_NAME if line.stream == "d" else line.service,
        "WSGI_SERVICE": line.service,
        "WSGI_KIND": kind_of(line.service),
        "OBJECT_SYSTEMD_UNIT": f"wsgi@{line.service}.service",
        "WSGI_STREAM": STREAMS.get(line.stream, line.stream),
    }
    req = line.request
    if req is not None:
        fields |= {
            "REQUEST_METHOD": req.method,
            "REQUEST_PATH": req.path,
            "REQUEST_STATUS": str(req.status),
            "REQUEST_DURATION_US": str(round(req.duration_s * 1e6)),
            "REQUEST_BYTES": str(req.size),
        }
        if req.request_id is not None:
            fields["REQUEST_ID"] = req.request_id
    return fields


def json_line(line: LogLine, kind_of: Callable[[str], str]) -> str:
    """One JSON object, journald's field names and string values (as `journalctl -o json`), and its time."""
    fields = {"__REALTIME_TIMESTAMP": str(round(line.ts * 1e6)), **journal_fields(line, kind_of)}
    return json.dumps(fields, ensure_ascii=False)
