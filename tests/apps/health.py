"""Test app with a health check of its own, as oslo.middleware's healthcheck serves one.

/healthcheck: 200, or 503 while the file HEALTH_FLAG exists (oslo's disable_by_file);
/slowhealth answers after 5 s; /moved redirects; /nope is 404; anything else: 200 "hello".
"""

import os
import time


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    flag = os.environ.get("HEALTH_FLAG", "")
    if path == "/healthcheck":
        if flag and os.path.exists(flag):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"DISABLED BY FILE\n"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK\n"]
    if path == "/slowhealth":
        time.sleep(5)
    if path == "/moved":
        start_response("302 Found", [("Location", "/healthcheck")])
        return [b""]
    if path == "/nope":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not here\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]
