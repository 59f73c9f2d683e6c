"""An app loaded once in its server's master and forked into the workers (`preload = true`).

Shared by both servers' boot code (uWSGI's vassal_app.py, gunicorn's boot.py), which load this
file by its path in the service's own Python: standard library only, and modules imported only
where a step needs them. The daemon imports it too, for `verdict` (what a master said of it).

The steps, in the master, in this order:

1. `Holdings.now()` before the app is imported: what the server itself holds (its descriptors,
   its threads); nothing of it is the app's.
2. the app is imported; `refusals(before, "at import")` then names what the app added: a thread,
   a socket (by its peer: `connected to 127.0.0.1:11211`), a pipe, a file. Forked workers would
   share each of those: a socket's stream interleaves, a thread is gone in every worker.
3. `warm_up`: requests through the WSGI callable, never over a socket, so lazy imports and caches
   are done once; one that raises or answers 5xx is logged, and the start goes on. Then the
   guard looks again (`during warm-up`).
   Before each look, `close_pools` closes the idle connections of the SQLAlchemy engines the app
   made (`Engine.dispose()`, which SQLAlchemy documents for a process about to fork): oslo.db
   would discard them in each worker anyway, after their shared socket had served no one. A
   connection the app keeps checked out stays open, and is refused as any socket is.
4. nothing held: `freeze()` (`gc.collect()`, then `gc.freeze()`) right before the fork, so no
   worker's collector writes into the objects it inherited and their pages stay shared.
   Something held: the server starts again, in the same process (exec), loading the app in each
   worker instead, and `REFUSED` says why in the service's log.
"""

import contextlib
import gc
import os
import sys

# the lines a master writes into its log, and that the daemon reads back (`verdict`)
REFUSED = "preload refused: "
LAZY_AFTER = " (each worker loads the app instead)"
SHARED = "preload: the app is loaded once and shared by the workers"
# the warm-up paths the server's boot code is given, NUL-free: one per line
WARMUP_VARIABLE = "WSGI_SUPERVISOR_WARMUP"
# set on the relaunched (lazy) server: the guard refused this start's preload
REFUSED_VARIABLE = "WSGI_SUPERVISOR_PRELOAD_REFUSED"
WARMUP_AGENT = "wsgi-supervisor-warmup"


class Holdings:
    """What a process holds at one moment: open descriptors (number -> what it points to) and threads (ids)."""

    def __init__(self, fds, threads):
        self.fds = fds
        self.threads = threads

    @classmethod
    def now(cls):
        fds = {}
        for name in _listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the descriptor listdir itself used is gone already
                fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        return cls(fds, set(_listdir("/proc/self/task")))


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def refusals(before, when):
    """Why this process must not be forked with the app in it: what it holds now that it did not
    hold `before` (a Holdings), each said as a person reads it. Empty: it may be."""
    now = Holdings.now()
    reasons = [f"the app started a thread ({_thread_name(tid)}) {when}" for tid in sorted(now.threads - before.threads)]
    for fd, target in sorted(now.fds.items()):
        if before.fds.get(fd) != target:
            reasons.append(f"the app {_descriptor(fd, target)} {when}")
    return reasons


def _thread_name(tid):
    threading = sys.modules.get("threading")
    if threading is not None:
        for thread in threading.enumerate():
            if str(getattr(thread, "native_id", "")) == tid:
                return thread.name
    try:
        with open(f"/proc/self/task/{tid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return f"thread {tid}"


def _descriptor(fd, target):
    """What the app did to hold `fd`: 'connected to 127.0.0.1:11211', 'opened /var/log/x.log'…"""
    if target.startswith("socket:"):
        return _socket_text(fd)
    if target.startswith("pipe:"):
        return f"holds a pipe (fd {fd})"
    if target.startswith("anon_inode:"):
        return f"holds an {target[len('anon_inode:') :].strip('[]')} (fd {fd})"
    return f"opened {target} (fd {fd})"


def _socket_text(fd):
    import socket

    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return f"holds a socket (fd {fd})"
    try:
        try:
            peer = sock.getpeername()
        except OSError:
            peer = None
        if peer:
            return f"connected to {_address(sock.family, peer)}"
        try:
            own = sock.getsockname()
        except OSError:
            own = None
        if own and sock.family != socket.AF_UNIX:
            return f"holds a socket bound to {_address(sock.family, own)}"
        if own:
            return f"holds a unix socket bound to {own!r}"
        return f"holds a socket (fd {fd})"
    finally:
        sock.close()


def _address(family, address):
    import socket

    if family == socket.AF_INET:
        return f"{address[0]}:{address[1]}"
    if family == socket.AF_INET6:
        return f"[{address[0]}]:{address[1]}"
    return repr(address)


def close_pools(log):
    """Close the idle connections of every SQLAlchemy engine in the process (`Engine.dispose()`);
    the engines stay usable, each worker connects anew. The number of engines."""
    base = sys.modules.get("sqlalchemy.engine.base")
    engine_type = getattr(base, "Engine", None)
    if engine_type is None:
        return 0
    engines = [obj for obj in gc.get_objects() if isinstance(obj, engine_type)]
    for engine in engines:
        try:
            engine.dispose()
        except Exception as exc:
            log(f"preload: closing the connections of {engine!r} failed: {type(exc).__name__}: {exc}")
    return len(engines)


def warmup_paths(text):
    """The paths WARMUP_VARIABLE holds, one per line."""
    return [line for line in (text or "").split("\n") if line]


def warm_up(app, paths, log):
    """GET each path through the WSGI callable `app`, in this process. A request that raises or
    answers 5xx is logged; none stops the start."""
    import io

    for path in paths:
        path_info, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "SCRIPT_NAME": "",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_URI": path,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "localhost",
            "HTTP_USER_AGENT": WARMUP_AGENT,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
        }
        answered = []

        def start_response(status, headers, exc_info=None, answered=answered):
            answered[:] = [status]
            return lambda data: None

        try:
            body = app(environ, start_response)
            try:
                for _ in body:
                    pass
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        except Exception as exc:
            log(f"preload: warm-up GET {path} raised {type(exc).__name__}: {exc} (the start goes on)")
            continue
        status = answered[0] if answered else "no status"
        if not status[:1].isdigit() or status[0] == "5":
            log(f"preload: warm-up GET {path} answered {status} (the start goes on)")


def settle(app, before, paths, log):
    """Steps 2 and 3 of the module docstring, for the app just loaded: the reasons to refuse
    (empty: the master may fork it, after `freeze()`)."""
    close_pools(log)
    reasons = refusals(before, "at import")
    if reasons or not paths:
        return reasons
    warm_up(app, paths, log)
    close_pools(log)
    return refusals(before, "during warm-up")


def freeze():
    """Collect, then move every object left out of the collector's reach: the number frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def refused_line(reasons):
    return REFUSED + "; ".join(reasons) + LAZY_AFTER


def shared_line(frozen):
    return f"{SHARED} ({frozen} objects frozen before the fork)"


def verdict(line):
    """What a master's log line says of preload, for status: 'shared', 'refused: …', or None (nothing)."""
    if line.startswith(SHARED):
        return "shared"
    if line.startswith(REFUSED):
        reason = line[len(REFUSED) :]
        if reason.endswith(LAZY_AFTER):
            reason = reason[: -len(LAZY_AFTER)]
        return "refused: " + reason
    return None
