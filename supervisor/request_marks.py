"""What a request line says besides method, status and time: the app's request id, and whether
the daemon's own health probe made the request.

A probe names itself with a token: each server instance gets its own when it
starts (state/probe_tokens.py), and a probe sends those of the service's live
instances. A client through the front end does not know it, and a
compromised service knows only its own instance's: neither can keep its
requests out of another service's log and counts.

Standard library only: the uWSGI vassal's app wrapper (uwsgi/vassal_app.py)
and gunicorn's boot.py load this file by its path, in the service's own
Python, and the daemon's health probe imports it.
"""

PROBE_AGENT = "wsgi-supervisor-health"  # the User-Agent of the daemon's health probes, for people
PROBE_HEADER = "X-Wsgi-Supervisor-Probe"  # carries the token
PROBE_ENVIRON = "HTTP_X_WSGI_SUPERVISOR_PROBE"
TOKEN_VARIABLE = "WSGI_SUPERVISOR_PROBE_TOKEN"  # how a vassal gets its token (its wrapper pops it)
PROBE = "probe"  # the origin field of a probe's request line ("-" for every other request)
# what starts a request line where it travels among a server's other output (its log FIFO,
# logs/fifos.py): a control character (ASCII's record separator) that no line of a person's holds
REQUEST_MARK = "\x1e"
# what starts a line by which a server says how many of its lines it dropped while no daemon ran
# (gunicorn/relay.py), followed by the number: ASCII's group separator
LOST_MARK = "\x1d"

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


def origin(environ, token):
    """The origin field of a request's line: PROBE when the request sent `token` (among the tokens it
    sent, space-separated: the probe sends every live instance's), else "-"."""
    sent = str(environ.get(PROBE_ENVIRON) or "").split()[:4]
    if not (token and sent):
        return "-"
    import hmac  # only for a request that sends a token: its hashlib and OpenSSL cost a vassal's start ~1 ms

    return PROBE if any(hmac.compare_digest(each.encode(errors="replace"), token.encode()) for each in sent) else "-"
