"""What each service holds: PSS and USS of its processes, and its TCP connections by remote port.

Read in one pass, in a thread (the sampler runs `footprints` in the loop's executor): a service's
processes are those of its control groups where there are groups (a process that left the tree
by a double fork is still the service's), else its main process's tree.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

import psutil

from supervisor.observe.cgroups import ServiceGroups
from supervisor.observe.connections import by_remote_port
from supervisor.observe.memory import Memory, memory_of


@dataclass
class Footprint:
    pss: int = 0  # bytes, every process of the service
    uss: int = 0  # bytes, every process of the service
    processes: dict[int, Memory] = field(default_factory=dict)
    connections: Counter[int] = field(default_factory=Counter)  # remote port -> ESTABLISHED


class Trees:
    """Process trees from one read of the process table, made only when a service needs one (no
    groups, or a main process outside its group): psutil's `children(recursive=True)` reads the
    whole table on every call, over a second for 100 services (bench/memory_cost.py)."""

    def __init__(self) -> None:
        self._children: dict[int, list[int]] | None = None

    def of(self, main: int) -> list[int]:
        if self._children is None:
            self._children = {}
            for proc in psutil.process_iter():
                with contextlib.suppress(psutil.Error):
                    self._children.setdefault(proc.ppid(), []).append(proc.pid)
        tree, todo = [], [main]
        while todo:
            pid = todo.pop()
            if pid in tree:  # a pid reused during the read can make a loop of parents
                continue
            tree.append(pid)
            todo.extend(self._children.get(pid, ()))
        return tree


def service_pids(groups: ServiceGroups, name: str, main: int, trees: Trees) -> list[int]:
    members = groups.of_service(name)
    if members is None:
        return trees.of(main)
    return members if main in members else [*trees.of(main), *members]


def footprints(groups: ServiceGroups, mains: dict[str, int]) -> dict[str, Footprint]:
    """Each service's footprint, by name, from its main process's pid."""
    tables: dict[int, dict[int, int]] = {}  # one read of each network namespace's tcp tables
    trees = Trees()
    found = {}
    for name, main in mains.items():
        pids = list(dict.fromkeys(service_pids(groups, name, main, trees)))
        result = Footprint()
        for pid in pids:
            memory = memory_of(pid)
            if memory is not None:
                result.processes[pid] = memory
                result.pss += memory.pss
                result.uss += memory.uss
        result.connections = by_remote_port(pids, tables)
        found[name] = result
    return found
