"""Per-service latency and response counts, from the request lines both servers write.

One `RequestCounts` lives in each service's record, cumulative since the
record began and carried across daemons in state.json, as the servers'
totals are: the metrics (a Prometheus histogram and counter) and
`wsgictl status --json` (`latency`, `responses`) read the same numbers.
Requests of the daemon's own health probe are not counted (they are not
the app's traffic, and would add one request a `health_interval` to a quiet
service's rates); lines that `request_log_skip` keeps out of the log are.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# seconds: what suits API calls, from a cached GET to a slow upload
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CLASSES = ("2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str | None:
    """ "2xx" … "5xx"; None for a status outside them (1xx, or nonsense)."""
    cls = f"{status // 100}xx"
    return cls if cls in CLASSES else None


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # per bucket, not cumulative
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[int]:
        """Per bucket, the requests that took at most its bound, then the +Inf total."""
        out, running = [], 0
        for count in self.counts:
            running += count
            out.append(running)
        return out


@dataclass
class RequestCounts:
    by_class: dict[str, Histogram] = field(default_factory=dict)

    def observe(self, status: int, seconds: float) -> None:
        cls = status_class(status)
        if cls is not None:
            self.by_class.setdefault(cls, Histogram()).observe(seconds)

    def every(self) -> Histogram:
        """Every status class together (summed when asked: a request updates one histogram only)."""
        total = Histogram()
        for hist in self.by_class.values():
            total.counts = [a + b for a, b in zip(total.counts, hist.counts, strict=True)]
            total.total_s += hist.total_s
        return total

    @property
    def served(self) -> int:
        return sum(sum(h.counts) for h in self.by_class.values())

    def responses(self) -> dict[str, int]:
        return {cls: sum(self.by_class[cls].counts) if cls in self.by_class else 0 for cls in CLASSES}

    def to_json(self) -> dict[str, Any]:
        return {cls: {"counts": h.counts, "sum": h.total_s} for cls, h in self.by_class.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestCounts:
        """What a previous daemon saved (state.json); anything malformed starts from zero."""
        counts = cls()
        for code, kept in data.items():
            try:
                hist = Histogram([int(n) for n in kept["counts"]], float(kept["sum"]))
            except (KeyError, TypeError, ValueError):
                continue
            if code in CLASSES and len(hist.counts) == len(BUCKETS) + 1:
                counts.by_class[code] = hist
        return counts

    def latency(self) -> dict[str, Any]:
        """The `latency` object of `wsgictl status --json` (every status class together)."""
        every = self.every()
        return {"le": list(BUCKETS), "counts": every.cumulative(), "sum": every.total_s}
