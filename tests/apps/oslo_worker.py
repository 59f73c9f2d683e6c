"""A worker built on oslo.service, as nova-conductor or cinder-scheduler are: `oslo_worker.py eventlet|threading`.

oslo.service's launcher sends READY=1 to $NOTIFY_SOCKET once, at start (the
eventlet backend's ServiceLauncher, and cotyledon's ServiceManager for the
threading backend), and reloads its configuration on SIGHUP without a word. (The eventlet hub notices
the signal at its next timer: the periodic task below is what real services have.)
"""

import logging
import os
import sys

from oslo_config import cfg
from oslo_service import backend

if sys.argv[1] == "threading":
    backend.init_backend(backend.BackendType.THREADING)
else:
    backend.init_backend(backend.BackendType.EVENTLET)

from oslo_service import service  # after the backend is chosen


class Worker(service.Service):
    def start(self) -> None:
        super().start()
        self.tg.add_timer(1.0, self.periodic_tasks)  # as a real service's periodic tasks and RPC heartbeats
        print(f"oslo worker {os.getpid()} started ({sys.argv[1]} backend)", flush=True)

    def periodic_tasks(self) -> None:
        pass

    def reset(self) -> None:
        print(f"oslo worker {os.getpid()} reset: configuration reloaded", flush=True)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")  # as oslo.log would
conf = cfg.CONF
conf([], project="oslo-worker")
service.launch(conf, Worker(), workers=1).wait()
