"""Run one WSGI app in the foreground on the standard library's server (`wsgictl serve`).

Executed by path with the service's own Python (its venv), so it imports
only the standard library. Single-threaded on purpose: a breakpoint() in
the app stops the one request and the terminal is the app's.

    python serve_app.py SPEC_JSON
"""

import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def load(app, paste=None):
    if paste:
        from paste.deploy import loadapp  # in the service's venv, as the vassal needs it

        return loadapp(paste)
    if app.endswith(".py") or "/" in app:
        namespace = runpy.run_path(app, run_name="__wsgi__")
        return namespace["application"]
    module, _, attr = app.partition(":")
    target = importlib.import_module(module)
    for part in (attr or "application").split("."):
        target = getattr(target, part)
    return target


def mounted(app, prefix):
    """SCRIPT_NAME/PATH_INFO as the vassal's `manage-script-name` gives them."""

    def split(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if prefix and prefix != "/" and (path == prefix or path.startswith(prefix + "/")):
            environ["SCRIPT_NAME"] = prefix
            environ["PATH_INFO"] = path[len(prefix) :]
        return app(environ, start_response)

    return split


INTERRUPTED = []


def interrupt(signum, frame):
    INTERRUPTED.append(signum)
    raise KeyboardInterrupt


class Handler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def handle(self):
        super().handle()
        if INTERRUPTED:  # a Ctrl-C while a request finished: wsgiref took it for the app's error and served on
            raise KeyboardInterrupt


def main():
    # Ctrl-C stops it even when whatever started it ignored SIGINT (a background job of a
    # non-interactive shell does, and Python then keeps it ignored)
    signal.signal(signal.SIGINT, interrupt)
    spec = json.loads(sys.argv[1])
    os.environ.update(spec["env"])
    if spec.get("chdir"):
        os.chdir(spec["chdir"])
    sys.argv = [spec["app"] or spec["paste"], *spec["args"]]
    if spec.get("file_dir"):
        sys.path.insert(0, spec["file_dir"])
    app = mounted(load(spec["app"], spec.get("paste")), spec.get("mount"))
    with make_server(spec["host"], spec["port"], app, handler_class=Handler) as server:
        sys.stderr.write(f"serving {spec['name']} on http://{spec['host']}:{server.server_port}/ (Ctrl-C stops)\n")
        sys.stderr.flush()
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()


if __name__ == "__main__":
    main()
