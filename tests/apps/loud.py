"""Test app that prints LOUD_LINES lines while it is imported."""

import os
import sys

for i in range(int(os.environ.get("LOUD_LINES", "100000"))):
    sys.stdout.write(f"loud line {i}\n")
sys.stdout.flush()
print("loud done", flush=True)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"loud\n"]
