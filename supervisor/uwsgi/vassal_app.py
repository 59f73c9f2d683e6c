"""The WSGI callable every vassal loads: the service's own app, with whole request bodies.

uWSGI 2.0 leaves a chunked request body (`Transfer-Encoding: chunked`, no
Content-Length) out of `wsgi.input`: a plain PEP 3333 app reads 0 bytes and
never knows. Only an app that calls `uwsgi.chunked_read()` itself (glance
does) sees the body. This wrapper imports the real app (named by
WSGI_SUPERVISOR_APP, which the launcher sets: a module, a file or a
paste-deploy URI, so paste apps work under a mount too) and, for such a request,
hands the app a `wsgi.input` that reads the chunks as the app asks for
them: nothing is read unless the app reads, so an app that calls
`uwsgi.chunked_read()` itself still gets every chunk, and a body is never
held whole in memory unless the app asks for all of it at once.

In the uwsgi protocol the front end has already taken the chunks apart
(nginx buffers the body and sends CONTENT_LENGTH): the framing left is
CONTENT_LENGTH, so the stale `Transfer-Encoding: chunked` header is dropped
there, or an app that trusts it would call `uwsgi.chunked_read()` on a body
that is not chunked.

It also names, in uWSGI's log variables, what the request line carries
besides uWSGI's own fields (see REQUEST_LOG_FORMAT in core.py): the request
id the app returned, and whether the daemon's health probe asked.

Loaded by uWSGI through vassal_file.py, its `wsgi-file` (or the file of a
`mount`), so uWSGI's SCRIPT_NAME/PATH_INFO split is untouched. An app that fails to import
raises here, at uWSGI's import of that file: uWSGI logs the traceback and
"unable to load app" as it would for the app itself.

With `preload` (no lazy-apps) uWSGI imports this file in the master: the
app is loaded, warmed up and guarded there (preload.py), and frozen before
uWSGI forks the workers; when the guard refuses, the master execs its own
command line again with --lazy-apps.

Runs in the service's own Python: keep it to the standard library.
"""

import contextlib
import importlib.util
import os

APP_VARIABLE = "WSGI_SUPERVISOR_APP"
PROTOCOL_VARIABLE = "WSGI_SUPERVISOR_PROTOCOL"


# uWSGI log variables of the request line, set per request
REQUEST_ID_VAR = "wsgi_rid"
ORIGIN_VAR = "wsgi_origin"


def _load_sibling(name):
    """supervisor/NAME.py, by its path: this file runs where wsgi-supervisor is not importable."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"wsgi_supervisor_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


load = _load_sibling("app_loader").load
marks = _load_sibling("request_marks")
preload = _load_sibling("preload")

# launcher.RELAUNCH_VARIABLE and launcher.LOG_FD (a test keeps them equal)
RELAUNCH_VARIABLE = "WSGI_SUPERVISOR_RELAUNCH"
LOG_FD = 4


class ChunkedInput:
    """A read-only file over `uwsgi.chunked_read()`: a chunk is read only when the app needs more.

    read(n) returns n bytes unless the body ends first; read() and
    readlines() return the rest of the body; b"" at the end. Holds at most
    what the app asked for plus one chunk (uWSGI's chunked-input-limit).
    """

    def __init__(self, chunked_read):
        self._chunked_read = chunked_read
        self._buffer = bytearray()
        self._done = False

    def _more(self):
        """Append the next chunk to the buffer; False once the body has ended."""
        if self._done:
            return False
        # uWSGI's socket-timeout bounds the wait, as it does for a Content-Length body
        chunk = self._chunked_read()
        if not chunk:
            self._done = True
            return False
        self._buffer += chunk
        return True

    def _take(self, size):
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            while self._more():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._more():
            pass
        return self._take(size)

    def readline(self, size=-1):
        if size is None:
            size = -1
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= size <= len(self._buffer):
                end = size
                break
            start = len(self._buffer)
            if not self._more():
                end = len(self._buffer)
                break
        if size >= 0:
            end = min(end, size)
        return self._take(end)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self):
        return True

    def close(self):
        pass


def wrap(app, chunked_read, framed_by_length, set_logvar=None, probe_token=""):
    """`app` with every request body in wsgi.input.

    `chunked_read` is uWSGI's; `framed_by_length`: the socket speaks the
    uwsgi protocol, where a body is always framed by CONTENT_LENGTH;
    `set_logvar` is uWSGI's, to put the request id and the origin in the
    request line (an unset variable is logged as "-"); `probe_token` is what
    the daemon's health probe sends.
    """

    def application(environ, start_response):
        if set_logvar is not None:
            start_response = _noting_request_id(start_response, set_logvar)
            origin = marks.origin(environ, probe_token)
            if origin != "-":
                set_logvar(ORIGIN_VAR, origin)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and environ.get("CONTENT_LENGTH"):
            if framed_by_length:
                del environ["HTTP_TRANSFER_ENCODING"]
        elif chunked:
            environ["wsgi.input"] = ChunkedInput(chunked_read)
        # uWSGI's own input ends at CONTENT_LENGTH (no body: at once), and ours at the last chunk
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return application


def _noting_request_id(start_response, set_logvar):
    def noting(status, headers, exc_info=None):
        found = marks.request_id(headers)
        if found is not None:
            set_logvar(REQUEST_ID_VAR, found)
        return start_response(status, headers, exc_info) if exc_info is not None else start_response(status, headers)

    return noting


def _main(uwsgi):
    # popped: the app and what it starts see the environment the manifest gave them
    popped = {
        name: os.environ.pop(name, "")
        for name in (
            APP_VARIABLE,
            PROTOCOL_VARIABLE,
            marks.TOKEN_VARIABLE,
            preload.WARMUP_VARIABLE,
            preload.BEFORE_FORK_VARIABLE,
            RELAUNCH_VARIABLE,
        )
    }
    target = popped[APP_VARIABLE]
    if not target:
        raise RuntimeError(f"{APP_VARIABLE} is not set: the vassal has no app to load")
    in_master = uwsgi.worker_id() == 0  # no lazy-apps: preload = true (core.py renders it so)
    app = _preloaded(target, popped) if in_master else load(target)
    protocol = popped[PROTOCOL_VARIABLE] or "uwsgi"
    application = wrap(app, uwsgi.chunked_read, protocol != "http", uwsgi.set_logvar, popped[marks.TOKEN_VARIABLE])
    if in_master:
        # right before uWSGI forks the workers (and, later, every worker it respawns)
        _say(preload.shared_line(preload.freeze()))
    return application


def _preloaded(target, popped):
    """The app, loaded in the master and warmed up, if the fork-safety guard lets it be forked;
    else this master starts again, loading the app in each worker (preload.py)."""
    before = preload.Holdings.now()
    app = load(target)
    paths, hooks = (preload.lines(popped[name]) for name in (preload.WARMUP_VARIABLE, preload.BEFORE_FORK_VARIABLE))
    reasons = preload.settle(app, before, paths, _say, hooks)
    if reasons:
        _say(preload.refused_line(reasons))
        _relaunch_lazily(popped)
    return app


def _say(text):
    """A line straight into the instance's log FIFO: uWSGI's logger would not pass it on before an exec."""
    with contextlib.suppress(OSError):
        os.write(LOG_FD, text.encode(errors="replace")[:4000] + b"\n")


def _relaunch_lazily(popped):
    """exec this master's own command line again, with --lazy-apps: the same pid for the emperor
    and the daemon, the same socket (LISTEN_FDS), log FIFO and emperor channel; nothing the app opened."""
    relaunch = popped[RELAUNCH_VARIABLE]
    if not relaunch:
        raise RuntimeError("preload refused, and this master cannot start again (no command line from the launcher)")
    argv = bytes.fromhex(relaunch).decode().split("\0")
    env = dict(os.environ)
    preloading = (preload.WARMUP_VARIABLE, preload.BEFORE_FORK_VARIABLE)
    env.update((name, value) for name, value in popped.items() if value and name not in preloading)
    keep = {0, 1, 2, LOG_FD}
    if env.get("LISTEN_FDS"):
        keep.add(3)
        env["LISTEN_PID"] = str(os.getpid())
    if env.get("UWSGI_EMPEROR_FD", "").isdigit():
        keep.add(int(env["UWSGI_EMPEROR_FD"]))
    for arg in argv:
        if arg.startswith("fd://") and arg[5:].isdigit():  # the vassal file, which uWSGI read to its end
            keep.add(int(arg[5:]))
            os.lseek(int(arg[5:]), 0, os.SEEK_SET)
    os.dup2(LOG_FD, 1)  # uWSGI's log pipe ends with this process's logger
    os.dup2(LOG_FD, 2)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd in keep:
        os.set_inheritable(fd, True)
    os.execve(argv[0], [*argv, "--lazy-apps"], env)


try:
    import uwsgi as _uwsgi
except ImportError:  # imported outside uWSGI (the daemon's own tests)
    _uwsgi = None
if _uwsgi is not None:
    application = _main(_uwsgi)
