"""What a process's memory costs: PSS and USS from /proc/PID/smaps_rollup.

RSS counts every page a process maps, shared ones included, so once workers share the app their
master loaded, the RSS of a tree counts those pages once per worker. PSS divides each shared page
among the processes that map it: the PSS of a service's processes adds up to what the service
costs. USS (private clean + private dirty) is what is the process's alone: what one more worker
costs, and what a worker frees when it is replaced.

smaps_rollup (Linux 4.14) is one summary per process, cheaper to read than the per-mapping smaps;
psutil 7's `memory_full_info` reads it too, with a statm read and objects around it that this does
without (bench/memory_cost.py measures the three). Reading it takes the mm lock of the process, and
it is readable only by the process's owner or root: the sampler runs as root and reads it in a
thread, off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Memory:
    pss: int  # bytes
    uss: int  # bytes


_FIELDS = {b"Pss:": "pss", b"Private_Clean:": "uss", b"Private_Dirty:": "uss"}


def parse_rollup(text: bytes) -> Memory:
    """PSS and USS in bytes from the text of a smaps_rollup (values there are in kB)."""
    totals = {"pss": 0, "uss": 0}
    for line in text.splitlines():
        name, _, rest = line.partition(b" ")
        key = _FIELDS.get(name)
        if key is not None:
            totals[key] += int(rest.split()[0]) * 1024
    return Memory(**totals)


def memory_of(pid: int) -> Memory | None:
    """The process's PSS and USS, or None when it is gone or cannot be read (a kernel thread has
    no memory: its rollup is empty, which reads as zero)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            return parse_rollup(rollup.read())
    except (OSError, ValueError, IndexError):
        return None
