"""What each service holds: PSS and USS of its processes, and its TCP connections by remote port.

Read in one pass, in a thread (the sampler runs `footprints` in the loop's executor): a service's
processes are those of its control groups where there are groups (a process that left the tree
by a double fork is still the service's), else its main process's tree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from supervisor.observe.cgroups import ServiceGroups
from supervisor.observe.connections import by_remote_port
from supervisor.observe.memory import Memory, memory_of
from supervisor.observe.procs import descendants


@dataclass
class Footprint:
    pss: int = 0  # bytes, every process of the service
    uss: int = 0  # bytes, every process of the service
    processes: dict[int, Memory] = field(default_factory=dict)
    connections: Counter[int] = field(default_factory=Counter)  # remote port -> ESTABLISHED


def service_pids(groups: ServiceGroups, name: str, main: int) -> list[int]:
    members = groups.of_service(name)
    if members is None:
        return [main, *descendants(main)]
    return members if main in members else [main, *descendants(main), *members]


def footprints(groups: ServiceGroups, mains: dict[str, int]) -> dict[str, Footprint]:
    """Each service's footprint, by name, from its main process's pid."""
    tables: dict[int, dict[int, int]] = {}  # one read of each network namespace's tcp tables
    found = {}
    for name, main in mains.items():
        pids = list(dict.fromkeys(service_pids(groups, name, main)))
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
