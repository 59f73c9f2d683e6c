"""What `wsgictl top` shows, as text: two polls of `status` in, the lines of a screen out.

Pure (no terminal, no socket), so that it is tested on its own; `top.py`
is the curses loop around it. Rates, percentiles and the 5xx share are over
the interval between the two polls: p50/p99 from the difference of the
cumulative latency histograms (`latency`), interpolated inside a bucket as
Prometheus' `histogram_quantile` does; the 5xx share from `responses`. A
figure that cannot be had (no request in the interval, a worker service, a
daemon that does not export it) is "-".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from supervisor.visible import visible

TROUBLE = ("failed", "backoff")


@dataclass(frozen=True)
class Row:
    name: str
    state: str
    ready: bool
    req_s: float | None = None
    p50: float | None = None
    p99: float | None = None
    errors: float | None = None  # share of 5xx among the interval's responses, 0..1
    busy: int | None = None
    workers: int | None = None
    queue: int | None = None
    rss: int | None = None
    pss: int | None = None
    restarts: int = 0

    def severity(self) -> int:
        """0: failed or backing off; 1: not serving (not ready, stopped, starting…); 2: fine."""
        if self.state in TROUBLE:
            return 0
        return 2 if self.state == "running" and self.ready else 1


def quantile(q: float, le: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile of a histogram: `counts` cumulative per bound of `le`, then the +Inf total."""
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    for i, bound in enumerate(le):
        if counts[i] >= rank:
            lower, below = (le[i - 1], counts[i - 1]) if i else (0.0, 0.0)
            inside = counts[i] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
    return float(le[-1]) if le else None  # in the +Inf bucket: the highest finite bound, as Prometheus says


def _delta(now: Any, before: Any) -> float | None:
    """now - before of two counters; None when one is missing or it went down (a new service record)."""
    if not isinstance(now, int | float) or not isinstance(before, int | float) or now < before:
        return None
    return now - before


def _latency(now: dict[str, Any], before: dict[str, Any]) -> tuple[float | None, float | None]:
    new, old = now.get("latency"), before.get("latency")
    if new and not old:  # it had served nothing yet: the field comes with the first request
        old = {"le": new.get("le"), "counts": [0] * len(new.get("counts", ()))}
    if not new or new.get("le") != old.get("le"):
        return None, None
    diff = [_delta(a, b) for a, b in zip(new["counts"], old["counts"], strict=False)]
    if any(d is None for d in diff) or len(diff) != len(new["le"]) + 1:
        return None, None
    counts = [float(d or 0) for d in diff]
    return quantile(0.5, new["le"], counts), quantile(0.99, new["le"], counts)


def _errors(now: dict[str, Any], before: dict[str, Any]) -> float | None:
    new, old = now.get("responses"), before.get("responses") or {}
    if not new:
        return None
    diff = {code: _delta(new.get(code, 0), old.get(code, 0)) for code in new}
    if any(d is None for d in diff.values()):
        return None
    total = sum(d or 0 for d in diff.values())
    return (diff.get("5xx") or 0) / total if total else None


def row_of(now: dict[str, Any], before: dict[str, Any] | None, seconds: float) -> Row:
    """One service's row from its status now and, for the rates, at the poll before."""
    workers = now.get("workers")
    row = Row(
        name=now["name"],
        state=now["state"],
        ready=bool(now.get("ready")),
        busy=sum(1 for w in workers if w.get("status") == "busy") if workers is not None else None,
        workers=len(workers) if workers is not None else None,
        queue=now.get("listen_queue"),
        rss=now.get("rss_bytes"),
        pss=(now.get("memory") or {}).get("pss_bytes"),
        restarts=int(now.get("restarts") or 0),
    )
    if before is None or seconds <= 0:
        return row
    served = _delta(now.get("requests"), before.get("requests"))
    p50, p99 = _latency(now, before)
    req_s = None if served is None else served / seconds
    return replace(row, req_s=req_s, p50=p50, p99=p99, errors=_errors(now, before))


def rows_between(before: list[dict[str, Any]] | None, now: list[dict[str, Any]], seconds: float) -> list[Row]:
    """Every service's row, the worst first: failed/backoff, not serving, then by 5xx share, then by p99."""
    old = {s["name"]: s for s in before or ()}
    rows = [row_of(s, old.get(s["name"]), seconds) for s in now]
    return sorted(rows, key=lambda r: (r.severity(), -(r.errors or 0.0), -(r.p99 or 0.0), r.name))


# -- text -----------------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f}ms"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.2f}s" if value < 10 else f"{value:.0f}s"


def rate_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def bytes_text(value: int | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= size:
            number = value / size
            return f"{number:.1f}{unit}" if number < 10 else f"{number:.0f}{unit}"
    return str(value)


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


@dataclass(frozen=True)
class Column:
    header: str
    width: int
    text: Callable[[Row], str]


NAME_MIN = 8
COLUMNS = {
    "state": Column("STATE", 9, lambda r: r.state),
    "ready": Column("RDY", 3, lambda r: "yes" if r.ready else "no"),
    "req_s": Column("REQ/S", 6, lambda r: rate_text(r.req_s)),
    "p50": Column("P50", 6, lambda r: seconds_text(r.p50)),
    "p99": Column("P99", 6, lambda r: seconds_text(r.p99)),
    "errors": Column("5XX%", 5, lambda r: "-" if r.errors is None else f"{r.errors * 100:.1f}"[:5]),
    "busy": Column("BUSY", 5, lambda r: "-" if r.workers is None else f"{r.busy}/{r.workers}"),
    "queue": Column("QUEUE", 5, lambda r: _plain(r.queue)),
    "pss": Column("PSS", 5, lambda r: bytes_text(r.pss)),
    "restarts": Column("RST", 3, lambda r: str(r.restarts)),
}
# what goes first when the terminal is too narrow for every column
DROP_ORDER = ("pss", "queue", "p50", "restarts", "busy", "errors", "p99", "req_s", "ready")


def fit(width: int) -> tuple[int, list[str]]:
    """The name's width and the columns that fit in `width` characters."""
    keys = list(COLUMNS)
    for drop in (None, *DROP_ORDER):
        if drop is not None:
            keys.remove(drop)
        used = sum(COLUMNS[k].width + 1 for k in keys)
        if width - used >= NAME_MIN:
            return width - used, keys
    return max(1, width - sum(COLUMNS[k].width + 1 for k in keys)), keys


def _cell(text: str, width: int, left: bool) -> str:
    text = visible(text)  # curses would act on a control character, not show it
    if len(text) > width:
        text = text[: max(0, width - 1)] + "~" if width > 1 else text[:width]
    return text.ljust(width) if left else text.rjust(width)


def render(rows: Sequence[Row], width: int, height: int, title: str) -> list[str]:
    """The screen as lines no longer than `width - 1` (curses cannot write the last cell), at most `height`."""
    usable = max(1, width - 1)
    longest = max((len(visible(r.name)) for r in rows), default=4)
    name_width, keys = fit(usable)
    name_width = min(name_width, max(NAME_MIN, longest))
    cols = [COLUMNS[k] for k in keys]

    def line(name: str, cells: list[str]) -> str:
        parts = [_cell(name, name_width, True)]
        parts += [_cell(c, col.width, col is COLUMNS["state"]) for c, col in zip(cells, cols, strict=True)]
        return " ".join(parts)[:usable].rstrip()

    lines = [visible(title)[:usable], line("NAME", [c.header for c in cols])]
    room = max(0, height - len(lines))
    shown = rows if len(rows) <= room else rows[: max(0, room - 1)]
    lines += [line(r.name, [c.text(r) for c in cols]) for r in shown]
    if len(shown) < len(rows) and room:
        lines.append(f"... and {len(rows) - len(shown)} more"[:usable])
    return lines[:height]


def title_line(host: str, clock: str, services: list[dict[str, Any]], problem: str | None = None) -> str:
    if problem:
        return f"wsgictl top  {host}  {clock}  {problem}"
    down = sum(1 for s in services if not (s["state"] == "running" and s.get("ready")))
    return f"wsgictl top  {host}  {clock}  {len(services)} services, {down} not serving  (q quits)"
