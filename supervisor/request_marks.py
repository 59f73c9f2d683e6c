"""What a request line says besides method, status and time: the app's request id, and whether
the daemon's own health probe made the request.

Standard library only: the uWSGI vassal's app wrapper (uwsgi/vassal_app.py)
and gunicorn's boot.py load this file by its path, in the service's own
Python, and the daemon's health probe imports it.
"""

# the daemon's health probes send this User-Agent; their request lines are marked and dropped
PROBE_AGENT = "wsgi-supervisor-health"
PROBE = "probe"  # the origin field of a probe's request line ("-" for every other request)

# the response headers an app names its request id in, the first found wins (oslo's, then the common one)
REQUEST_ID_HEADERS = ("x-openstack-request-id", "x-request-id")
LONGEST_ID = 128


def request_id(headers):
    """The request id among `headers` (name, value pairs), as one token for the log line; None if none."""
    found = {}
    for name, value in headers:
        key = str(name).lower()
        if key in REQUEST_ID_HEADERS and key not in found:
            found[key] = str(value)
    for key in REQUEST_ID_HEADERS:
        token = "".join(found.get(key, "").split())[:LONGEST_ID]
        if token and token != "-":
            return token
    return None


def origin(environ):
    """The origin field of a request's line: PROBE for the daemon's health probe, else "-"."""
    return PROBE if environ.get("HTTP_USER_AGENT") == PROBE_AGENT else "-"
