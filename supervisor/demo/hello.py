"""A hello-world WSGI app, importable as `supervisor.demo.hello:application`."""

import os


def application(environ, start_response):
    body = f"hello from {os.environ.get('DEMO_NAME', 'wsgi-supervisor')}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
