"""Test app that warns at import as eventlet does in keystone: a message of several lines, a blank one among them."""

import warnings

MESSAGE = "\nThis library is deprecated.\n\nMigrate to another one;\nsee its guide.\n"
warnings.warn(MESSAGE, FutureWarning, stacklevel=1)
print("warns imported", flush=True)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
