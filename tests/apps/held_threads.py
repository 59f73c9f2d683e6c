"""A pool whose thread starts at import and that can be let go of before a fork, as nova's
thread pools are (`nova.thread_pool_factory:reset_all_executors`): `stop()` ends the thread."""

import threading

_stop = threading.Event()
_thread = threading.Thread(target=_stop.wait, name="pool-worker", daemon=True)
_thread.start()


def stop():
    _stop.set()
    _thread.join(10)
