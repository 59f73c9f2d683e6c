"""Demo app loaded from a file: echoes what the request and the process look like."""

import json
import os
import sys

GREETING = os.environ.get("DEMO_GREETING", "")


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    answer = {
        "greeting": GREETING,
        "argv": sys.argv,
        "method": environ["REQUEST_METHOD"],
        "script_name": environ.get("SCRIPT_NAME", ""),
        "path_info": environ.get("PATH_INFO", ""),
        "body_bytes": len(body),
        "pid": os.getpid(),
    }
    data = json.dumps(answer).encode() + b"\n"
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
