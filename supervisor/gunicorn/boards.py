"""The arbiters' boards as the daemon reads them: only the pids that are truly their arbiter's
workers (supervisor/gunicorn/trust.py), and each forged one said once, within bounds."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from supervisor.accounts import tree_uid
from supervisor.gunicorn.arbiters import read_board
from supervisor.gunicorn.trust import trusted

if TYPE_CHECKING:
    from supervisor.layout import Layout
    from supervisor.observe.stats import ServerStats
    from supervisor.state.service import ServiceRuntime

log = logging.getLogger("wsgi-supervisor")

FORGED_SAID = 32  # forged pids logged per service (a compromised worker may write any number of them)


class TrustedBoards:
    def __init__(self, layout: Layout):
        self.layout = layout
        self.forged: dict[str, set[int]] = {}  # pids a board named that are not its workers, said once

    async def read(self, wanted: list[tuple[ServiceRuntime, str, int]]) -> list[ServerStats | None]:
        """Each (service, instance, arbiter pid)'s board, with only the pids that are its arbiter's
        workers, read in a thread (a bounded read, and a look at the process table)."""
        asks = [(svc.name, svc.spec, instance, pid) for svc, instance, pid in wanted]
        read = await asyncio.get_running_loop().run_in_executor(None, self._read, asks)
        found: list[ServerStats | None] = []
        for (name, _, _, pid), (stats, forged) in zip(asks, read, strict=True):
            for worker in forged:
                said = self.forged.setdefault(name, set())
                if worker not in said and len(said) < FORGED_SAID:
                    said.add(worker)
                    log.warning(
                        "%s: its board names pid %d as a worker, which is not a worker of its arbiter (pid %d) "
                        "running as the service's user: forged, ignored",
                        name,
                        worker,
                        pid,
                    )
            found.append(stats)
        return found

    def _read(self, asks: list[tuple[str, Any, str, int]]) -> list[tuple[ServerStats | None, list[int]]]:
        out: list[tuple[ServerStats | None, list[int]]] = []
        for name, spec, instance, pid in asks:
            stats = read_board(self.layout.gunicorn_board(name, instance))
            if stats is None or stats.pid != pid:
                out.append((None, []))
            else:
                out.append(trusted(stats, tree_uid(spec.user)))
        return out
