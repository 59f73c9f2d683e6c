"""Test app: answers with what the process and the request look like.

/sleep?N holds the worker N seconds; /crash exits the worker; /env shows the
environment; /status?N answers with status N; /rid?ID and /xrid?ID return ID as
X-OpenStack-Request-ID and X-Request-Id; anything else echoes. Import fails when PROBE_FAIL_IMPORT is set,
while the file PROBE_FAIL_IF_EXISTS exists, or until the file PROBE_NEEDS_FILE does;
it takes PROBE_IMPORT_DELAY seconds to import.
"""

import hashlib
import json
import os
import sys
import time

try:
    import uwsgi  # only under uWSGI: a chunked body is read with its chunked_read(), as glance does
except ImportError:  # elsewhere (gunicorn) from wsgi.input
    uwsgi = None

if os.environ.get("PROBE_FAIL_IMPORT"):
    raise RuntimeError("probe app refuses to import: " + os.environ["PROBE_FAIL_IMPORT"])
_needed = os.environ.get("PROBE_NEEDS_FILE")
if _needed and not os.path.exists(_needed):
    raise RuntimeError(f"probe app cannot import without {_needed}")
_flag = os.environ.get("PROBE_FAIL_IF_EXISTS")
if _flag and os.path.exists(_flag):
    raise RuntimeError(f"probe app refuses to import while {_flag} exists")

time.sleep(float(os.environ.get("PROBE_IMPORT_DELAY") or 0))  # an app that is slow to import

IMPORTED_ENV = dict(os.environ)
_HOARD = []
print("probe app imported in pid", os.getpid(), flush=True)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if path == "/sleep":
        time.sleep(float(query or 1))
    if path == "/grow":
        _HOARD.append(b"\x01" * (int(query or 50) * 1024 * 1024))  # touched pages: real RSS
    if path == "/crash":
        os._exit(3)
    if path == "/log":
        print(f"ERROR probe asked to log: {query}", flush=True)
    digest = hashlib.sha256()
    size = 0
    reader = "wsgi.input"
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and uwsgi is not None:
        # under uWSGI, chunked request bodies come through its chunked API (as glance reads them)
        reader = "chunked_read"
        while chunk := uwsgi.chunked_read(30):
            digest.update(chunk)
            size += len(chunk)
    elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        # elsewhere (gunicorn) wsgi.input has the whole body, as glance then reads it
        while chunk := environ["wsgi.input"].read(65536):
            digest.update(chunk)
            size += len(chunk)
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        while length > size:
            chunk = environ["wsgi.input"].read(min(65536, length - size))
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    answer = {
        "pid": os.getpid(),
        "argv": sys.argv,
        "prefix": sys.prefix,  # the venv whose Python runs the app
        "warnoptions": sys.warnoptions,  # from PYTHONWARNINGS, which only a starting interpreter reads
        "env": {k: v for k, v in IMPORTED_ENV.items() if k.startswith(("PROBE_", "OS_", "DEMO_"))},
        "script_name": environ.get("SCRIPT_NAME", ""),
        "path_info": path,
        "query": query,
        "body": size,
        "sha256": digest.hexdigest(),
        "reader": reader,
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "request_uri": environ.get("REQUEST_URI", ""),
        "host": environ.get("HTTP_HOST", ""),
    }
    data = json.dumps(answer).encode()
    status = f"{int(query)} As Asked" if path == "/status" else "200 OK"
    ids = {"/rid": "X-OpenStack-Request-ID", "/xrid": "X-Request-Id"}
    extra = [(ids[path], query)] if path in ids else []
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra])
    return [data]
