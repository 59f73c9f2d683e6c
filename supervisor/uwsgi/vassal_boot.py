"""Imported by uWSGI in every worker of a vassal, before the app (`import = <this file>`).

uWSGI hands its workers the write end of a non-blocking socket as stdout
and stderr; an app that prints faster than the master forwards gets
BlockingIOError and, at import time, dies. A blocking write end makes a
fast writer wait instead: nothing is lost and nothing crashes. (The
master reads that socket in its own logger thread, `threaded-logger`, so
its main loop never waits on it.)

Runs in the service's own Python: keep it to the standard library.
"""

import os as _os

for _fd in (1, 2):
    try:
        _os.set_blocking(_fd, True)
    except OSError:
        pass
del _fd, _os
