"""An app that says where it was loaded and what its worker inherited: the pid that imported it,
the worker's pid, and how many objects the collector had frozen (gc.get_freeze_count()).

PRELOAD_HOLD makes it hold something at import, as apps that must not be forked do:
"socket:PORT" connects to 127.0.0.1:PORT and keeps the connection, "thread" starts a thread.
"""

import gc
import json
import os
import socket
import threading
import time

LOADED_IN = os.getpid()
HOLD = os.environ.get("PRELOAD_HOLD", "")
WARMED = []  # paths warmed up in the process that imported this module

if HOLD.startswith("socket:"):
    KEPT = socket.create_connection(("127.0.0.1", int(HOLD.split(":", 1)[1])))
elif HOLD == "thread":
    threading.Thread(target=lambda: time.sleep(3600), name="import-time-poller", daemon=True).start()


def application(environ, start_response):
    if environ.get("HTTP_USER_AGENT") == "wsgi-supervisor-warmup":
        WARMED.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("warm-up path that fails")
    body = json.dumps(
        {
            "pid": os.getpid(),
            "loaded_in": LOADED_IN,
            "frozen": gc.get_freeze_count(),
            "warmed": WARMED,
            "stdout_blocks": os.get_blocking(1),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
