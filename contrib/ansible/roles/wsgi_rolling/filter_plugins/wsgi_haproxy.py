"""Filters of rolling.yml: what HAProxy says of one server of one backend.

`show stat` on HAProxy's stats socket and the stats page's `;csv` export give
the same CSV: a `# pxname,svname,...,status,...` header, then one row per
proxy and server. `wsgi_haproxy_status(csv, backend, server)` is that
server's status (`UP`, `UP 1/2` while it goes down, `DOWN`, `DOWN 1/2` while
it comes up, `MAINT`, `DRAIN`, `NOLB`, `no check`), or `absent` when the
backend has no such server.
"""

from __future__ import annotations

import csv
import io

IN_ROTATION = ("UP",)  # UP, and "UP 1/2": still UP while the checks fail, until `fall` of them
OUT_OF_ROTATION = ("DOWN", "MAINT", "DRAIN", "NOLB")  # "DOWN 1/2" is still DOWN, until `rise` checks pass


def wsgi_haproxy_status(text: str, backend: str, server: str) -> str:
    lines = (text or "").splitlines()
    if not lines or not lines[0].startswith("# "):
        return "no CSV from HAProxy: " + (lines[0][:200] if lines else "empty")
    header = next(csv.reader([lines[0][2:]]))
    for row in csv.DictReader(io.StringIO("\n".join(lines[1:])), fieldnames=header):
        if row.get("pxname") == backend and row.get("svname") == server:
            return (row.get("status") or "").strip()
    return "absent"


def _word(status: str) -> str:
    return status.split(" ", 1)[0].upper() if status else ""


def wsgi_haproxy_in_rotation(status: str) -> bool:
    return _word(status) in IN_ROTATION


def wsgi_haproxy_out_of_rotation(status: str) -> bool:
    return _word(status) in OUT_OF_ROTATION


def wsgi_haproxy_rotation(status: str, want: str) -> bool:
    """Whether `status` is what rolling.yml waits for: want "out" (of rotation) or "in"."""
    if want not in ("in", "out"):
        raise ValueError(f"want is 'in' or 'out', not {want!r}")
    return wsgi_haproxy_in_rotation(status) if want == "in" else wsgi_haproxy_out_of_rotation(status)


def wsgi_haproxy_late(answers: list, backends: dict, server: str, want: str) -> list[str]:
    """From the registered results of tasks/haproxy_wait.yml's loops (items: [haproxy, service]), one line
    for each HAProxy whose last answer was not what was waited for: where, and what it said."""
    late = []
    for answer in answers or []:
        if answer.get("skipped"):
            continue
        where, service = answer["item"][0], answer["item"][1]
        text = answer.get("stdout", answer.get("content", "")) or ""
        status = wsgi_haproxy_status(text, backends[service], server)
        if not wsgi_haproxy_rotation(status, want):
            error = (answer.get("stderr") or answer.get("msg") or "").strip()
            line = f"{where}: backend {backends[service]}, server {server}: {status}"
            late.append(line + (f" ({error})" if error else ""))
    return late


class FilterModule:
    def filters(self):
        return {
            "wsgi_haproxy_status": wsgi_haproxy_status,
            "wsgi_haproxy_in_rotation": wsgi_haproxy_in_rotation,
            "wsgi_haproxy_out_of_rotation": wsgi_haproxy_out_of_rotation,
            "wsgi_haproxy_rotation": wsgi_haproxy_rotation,
            "wsgi_haproxy_late": wsgi_haproxy_late,
        }
