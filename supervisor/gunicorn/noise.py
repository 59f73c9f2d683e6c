"""gunicorn's own routine INFO lines (its start, its workers booting and exiting, the signals
it handles), and the one boot.py writes when a worker has loaded the app.

They go to journald and the files at debug priority, and are left out of
the console and of `wsgictl logs` unless asked for (`-v`). A WARNING or an
ERROR of gunicorn's is never routine.
"""

from __future__ import annotations

import re

# gunicorn's log format: "[2026-12-02 12:59:18 +0000] [13423] [INFO] Listening at: …"
_HEAD = re.compile(r"\[[^\]]+\] \[\d+\] \[INFO\] ")
_ROUTINE = re.compile(
    r"Starting gunicorn \S+"
    r"|Listening at: .*"
    r"|Using worker: \S+"
    r"|Booting worker with pid: \d+"
    r"|worker \d+ loaded the app"
    r"|Worker exiting \(pid: \d+\)"
    r"|Handling signal: \w+"
    r"|Shutting down: Master"
    r"|Hang up: Master"
    r"|Control socket listening at .*"
)


def is_noise(text: str) -> bool:
    head = _HEAD.match(text)
    return head is not None and _ROUTINE.fullmatch(text[head.end() :].rstrip()) is not None
