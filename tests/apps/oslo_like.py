"""Test app that fails at import the way aodh does under oslo.log.

oslo.log installs a sys.excepthook that logs the exception at CRITICAL
("Unhandled error") with the traceback lines prefixed by time, pid, level
and logger, so no line of it starts with the exception class. uWSGI prints
an import error through sys.excepthook.
"""

import logging
import os
import sys
import time

_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s [-] %(message)s"))
_log = logging.getLogger("oslo_like")
_log.addHandler(_handler)


def _excepthook(exc_type, value, tb):
    import traceback

    _log.critical("Unhandled error: %s: %s", exc_type.__name__, value)
    now = time.time()
    prefix = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} {os.getpid()} "
    prefix += "ERROR oslo_like "
    for chunk in traceback.format_exception(exc_type, value, tb):
        for line in chunk.rstrip("\n").split("\n"):
            sys.stderr.write(prefix + line + "\n")
    sys.stderr.flush()


sys.excepthook = _excepthook

"".join([b"config-file"])  # TypeError: sequence item 0: expected str instance, bytes found


def application(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
