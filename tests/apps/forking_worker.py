"""Test worker shaped like a cotyledon or oslo.service launcher: a master and WORKER_CHILDREN children.

Each child writes a line to SIGNAL_LOG for every SIGTERM it gets, with the pid that sent it, and stops
gracefully (it takes GRACE seconds, and still counts the signals that arrive meanwhile). The master waits
for its children and exits once they are gone; it forwards nothing, so every signal a child logs came
from whoever stops the service.
"""

import os
import signal
import sys
import time

CHILDREN = int(os.environ.get("WORKER_CHILDREN", "2"))
GRACE = float(os.environ.get("GRACE", "1.0"))
LOG = os.environ["SIGNAL_LOG"]


def child() -> None:
    info = signal.sigwaitinfo({signal.SIGTERM})
    deadline = time.monotonic() + GRACE
    while info is not None:
        with open(LOG, "a") as f:
            f.write(f"child {os.getpid()} caught SIGTERM from {info.si_pid}\n")
        left = deadline - time.monotonic()
        info = signal.sigtimedwait({signal.SIGTERM}, left) if left > 0 else None
    os._exit(0)


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the children wait for it with sigwaitinfo
children = []
for _ in range(CHILDREN):
    pid = os.fork()
    if pid == 0:
        child()
    children.append(pid)
print(f"master {os.getpid()} children {' '.join(map(str, children))}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: None)  # the master's stop: wait for the children below
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
for pid in children:
    while True:
        try:
            os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
sys.exit(0)
