"""Test app: a compromised API. It runs whatever Python a request sends it, as an attacker would.

POST /run with a body of Python source: the source runs in the worker (with `os`, `socket`, `sys`
imported) and the answer is JSON: {"pid", "uid", "gid", "groups", "result", "error"}. The source sets
`result` to what it wants to report. Anything else answers 200 "ok" (a healthy app).
"""

import json
import os
import socket
import sys
import traceback


def application(environ, start_response):
    if environ.get("PATH_INFO") != "/run":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    source = environ["wsgi.input"].read(length).decode()
    scope = {"os": os, "socket": socket, "sys": sys, "result": None}
    error = None
    try:
        exec(source, scope)  # the attacker's code, in the worker
    except BaseException:  # an attacker's code may raise anything; the answer says what
        error = traceback.format_exc()
    answer = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "result": scope.get("result"),
        "error": error,
    }
    body = json.dumps(answer, default=repr).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
