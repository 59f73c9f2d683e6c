"""CPU burners: a host as busy as operators' (load average 15+ on 2 cores), made and ended by the test.

Tests marked `busy` run twice: once on the quiet machine, once beside `2 × cores` busy loops at the
same priority as everything else. They assert the same things both times: a defect that shows only
on a busy host is a defect, never a flaky test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

BURN = "while True: pass"


@contextlib.contextmanager
def burning(per_core: int = 2) -> Iterator[list[int]]:
    """`per_core` busy loops per core for the length of the block; their pids. Each is killed by pid after."""
    count = per_core * (os.cpu_count() or 1)
    procs = [
        subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
