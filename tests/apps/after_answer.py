"""Test app: answers at once, then goes on working in a thread it starts (as glance's import does).

`POST /work?path=P&seconds=S` starts a thread that writes `P.part`, a numbered line every 0.1 s
for S seconds, then `done`, and renames it to P; the answer (202) comes before any of that.
`?daemon=1` makes it a daemon thread that an `atexit` hook waits for (glance's own way: its
import threads are daemon threads, and `atexit` drains their pool). Any other request answers
the worker's pid and how many threads it runs.
"""

import atexit
import json
import os
import threading
import time
from urllib.parse import parse_qs

_started: list[threading.Thread] = []


def _work(path: str, seconds: float) -> None:
    part = path + ".part"
    with open(part, "w") as out:
        end = time.monotonic() + seconds
        line = 0
        while time.monotonic() < end:
            out.write(f"{line}\n")
            out.flush()
            line += 1
            time.sleep(0.1)
        out.write("done\n")
    os.rename(part, path)


@atexit.register
def _drain() -> None:
    for thread in _started:
        thread.join()


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if environ.get("PATH_INFO") == "/work":
        daemon = query.get("daemon") == ["1"]
        args = (query["path"][0], float(query["seconds"][0]))
        thread = threading.Thread(target=_work, args=args, name="after-answer", daemon=daemon)
        thread.start()
        if daemon:
            _started.append(thread)
        status, body = "202 Accepted", b"started\n"
    else:
        status, body = "200 OK", json.dumps({"pid": os.getpid(), "threads": threading.active_count()}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
