"""The toy server's process: `serve.py FD MODULE:CALLABLE` serves the app with wsgiref on the
listening unix socket FD (the daemon's), one request at a time, until SIGTERM."""

import importlib
import socket
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer


class UnixServer(WSGIServer):
    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)  # a unix socket's peer has no address: wsgiref wants one


class Handler(WSGIRequestHandler):
    def address_string(self) -> str:
        return "unix"

    def log_message(self, format, *args):
        sys.stderr.write("toy: " + format % args + "\n")


def main() -> None:
    fd, target = int(sys.argv[1]), sys.argv[2]
    module, _, name = target.partition(":")
    app = getattr(importlib.import_module(module), name or "application")
    server = UnixServer(("toy", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=fd)
    server.server_name, server.server_port = "toy", 0
    server.setup_environ()
    server.set_app(app)
    server.serve_forever()


if __name__ == "__main__":
    main()
