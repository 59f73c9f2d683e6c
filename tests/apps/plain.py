"""Test app: a plain PEP 3333 app that knows nothing of uWSGI.

It reads `wsgi.input` until EOF, in pieces (never the whole body at once),
and answers with the size and sha256 of what it read, plus the environ keys a
user would check. `?readline` reads it line by line instead, `?skip` reads
nothing.
"""

import hashlib
import json
import os


def application(environ, start_response):
    stream = environ["wsgi.input"]
    query = environ.get("QUERY_STRING", "")
    digest = hashlib.sha256()
    size = 0
    if query == "readline":
        for line in stream:
            digest.update(line)
            size += len(line)
    elif query != "skip":
        while chunk := stream.read(65536):
            digest.update(chunk)
            size += len(chunk)
    answer = {
        "body": size,
        "sha256": digest.hexdigest(),
        "content_length": environ.get("CONTENT_LENGTH", ""),
        "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING", ""),
        "input_terminated": environ.get("wsgi.input_terminated", False),
        "script_name": environ.get("SCRIPT_NAME", ""),
        "path_info": environ.get("PATH_INFO", ""),
        "supervisor_env": sorted(k for k in os.environ if k.startswith("WSGI_SUPERVISOR")),
    }
    data = json.dumps(answer).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
