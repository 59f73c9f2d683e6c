"""Test app: /stuck?N holds the worker N seconds inside `stuck_in_here`; /fail answers 500; else 200.

Run as a script it is a worker service whose process stays in `stuck_in_here`.
"""

import time


def stuck_in_here(seconds: float) -> None:
    time.sleep(seconds)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/stuck":
        stuck_in_here(float(environ.get("QUERY_STRING") or 30))
    status = "500 Internal Server Error" if path == "/fail" else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


if __name__ == "__main__":
    print("stuck worker up", flush=True)
    while True:
        stuck_in_here(3600)
