"""A gunicorn arbiter for one service, as the daemon starts it: `python3 boot.py SPEC.json`.

Runs in the service's own Python (its venv has gunicorn), where
wsgi-supervisor is not importable: keep it to the standard library and
gunicorn. A service with `user` has it run as that user from the start
(the daemon's kernel-side drop, gunicorn/spawn.py): it opens nothing of the
daemon's, but is handed descriptors (WSGI_SUPERVISOR_*_FD): the socket,
its spec, its log FIFO, its board. It does what uWSGI's options do for a
vassal:

- the socket: the daemon's listening socket, inherited as fd 3 through
  gunicorn's socket activation (LISTEN_FDS), so gunicorn neither binds nor
  unlinks it and every instance serves the same queue;
- the output: fds 1 and 2 of the arbiter and its workers go into a pipe
  that a thread of the arbiter forwards into the instance's log FIFO, which
  the daemon made and reads, and which keeps a MiB of lines while no daemon
  runs (logs/fifos.py); only the arbiter holds the FIFO (its relay thread):
  a worker closes it as it starts;
- one request line per request (the daemon's request format), written by
  the worker from gunicorn's `post_request` hook into a pipe the same thread
  forwards, marked, into the same FIFO;
- the scoreboard (`board.py`): readiness, busy workers, counters; mapped,
  and its descriptor closed, before any worker is forked;
- `max_rss_mb`: a worker whose own memory (USS) is past it ends after its request, and is replaced;
- `mount`: SCRIPT_NAME/PATH_INFO split at the mount, as uWSGI's
  manage-script-name does;
- `preload`: the app loaded, warmed up and guarded here before the relay
  and the board exist (preload.py), frozen before every fork; a refused
  start is this arbiter started again by exec, each worker loading the app.
"""

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import select
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LISTEN_FD = 3  # SD_LISTEN_FDS_START
MAX_REQUEST_LINE = select.PIPE_BUF - 1  # one atomic write into the pipe, and into the FIFO with its mark


def _by_path(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


board = _by_path("wsgi_supervisor_board", HERE / "board.py")
app_loader = _by_path("wsgi_supervisor_app_loader", HERE.parent / "app_loader.py")
marks = _by_path("wsgi_supervisor_request_marks", HERE.parent / "request_marks.py")
relays = _by_path("wsgi_supervisor_relay", HERE / "relay.py")
preload = _by_path("wsgi_supervisor_preload", HERE.parent / "preload.py")


class Requests:
    """One worker's side of the scoreboard and of the request log."""

    def __init__(self, spec, board_map, request_fd):
        self.spec = spec
        self.board = board_map
        self.slot = None
        self.lock = threading.Lock()
        self.log = request_fd if spec["request_log"] else None
        self.local = threading.local()
        self.max_rss = (spec["max_rss_mb"] or 0) * 1024 * 1024

    def started_worker(self, slot):
        self.slot = slot

    def begin(self, req):
        self.local.started = time.monotonic()
        self.local.exception = False
        with self.lock:
            board.add_busy(self.board, self.slot, 1)
            board.set_request(self.board, self.slot, f"{req.method} {req.uri or req.path}")

    def failed(self):
        self.local.exception = True

    def end(self, worker, req, environ, resp):
        micros = int((time.monotonic() - getattr(self.local, "started", time.monotonic())) * 1e6)
        sent = int(getattr(resp, "sent", 0) or 0)
        exception = 1 if getattr(self.local, "exception", False) else 0
        with self.lock:
            if board.add_busy(self.board, self.slot, -1) == 0:
                board.set_request(self.board, self.slot, "")
            board.count(self.board, self.slot, 1, exception, 0, sent, micros)
        if self.log is not None:
            status = getattr(resp, "status_code", None) or 500
            uri = req.uri if req.uri else req.path
            rid = marks.request_id(getattr(resp, "headers", None) or ()) or "-"
            addr = environ.get("REMOTE_ADDR") or "-"
            origin = marks.origin(environ, self.spec.get("probe_token"))
            line = f"{req.method} {status} {micros} {sent} {addr} {rid} {origin} {uri}"
            try:
                os.write(self.log, line.encode(errors="replace")[: MAX_REQUEST_LINE - 1] + b"\n")
            except OSError:
                pass
        if self.max_rss:
            own = _own_memory()
            if own > self.max_rss:
                worker.log.info(
                    "worker %d: its own memory (USS) %d MB is past max_rss_mb (%d): it is replaced after this request",
                    os.getpid(),
                    own // (1024 * 1024),
                    self.spec["max_rss_mb"],
                )
                worker.alive = False


def _own_memory():
    """The worker's USS in bytes: the pages that are its alone (smaps_rollup's Private_Clean and
    Private_Dirty). Not RSS: a worker sharing the app its arbiter loaded, or a file others map too,
    has those pages in its RSS, and replacing it would free none of them."""
    own = 0
    with open("/proc/self/smaps_rollup", "rb") as rollup:
        for line in rollup:
            if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                own += int(line.split()[1]) * 1024
    return own


def counted(app, requests):
    """The app, with an exception it raises (calling it or iterating its body) counted in the board."""

    def application(environ, start_response):
        try:
            body = app(environ, start_response)
        except BaseException:
            requests.failed()
            raise
        return _Counted(body, requests)

    return application


class _Counted:
    def __init__(self, body, requests):
        self.body = body
        self.requests = requests
        if hasattr(body, "fileno"):
            self.fileno = body.fileno  # gunicorn's sendfile path

    def __iter__(self):
        try:
            yield from self.body
        except BaseException:
            self.requests.failed()
            raise

    def close(self):
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def length_framed(app):
    """The app behind a uwsgi-protocol front end, which took a chunked body apart (nginx spools it and
    sends CONTENT_LENGTH): the stale `Transfer-Encoding: chunked` is dropped, as uWSGI's vassals drop it."""

    def application(environ, start_response):
        if environ.get("CONTENT_LENGTH") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            del environ["HTTP_TRANSFER_ENCODING"]
        return app(environ, start_response)

    return application


# the uwsgi vars of the request a thread serves (set by pre_request), and the ones gunicorn keeps its own of
SENT = threading.local()
OWN = frozenset({"SCRIPT_NAME", "REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH"})


def as_sent(app):
    """The app with the environ uWSGI gives it: behind a uwsgi-protocol front end, the variables it sent.

    uWSGI's environ is what the front end sent; gunicorn keeps the headers and the request line only, so
    REMOTE_ADDR (the client), REMOTE_PORT, REMOTE_USER, REQUEST_URI, SERVER_NAME, HTTPS… were lost, and it
    decoded the PATH_INFO the front end had decoded already (`%2525` reached the app as `%`, not `%25`).
    Over HTTP, REQUEST_URI is the request line's target, as uWSGI's http-socket sets it.
    """

    def application(environ, start_response):
        sent = getattr(SENT, "vars", None)
        if sent:
            environ.update((k, v) for k, v in sent.items() if k not in OWN and not k.startswith("HTTP_"))
        elif "RAW_URI" in environ:
            environ.setdefault("REQUEST_URI", environ["RAW_URI"])
        return app(environ, start_response)

    return application


def mounted(app, mount):
    """The app under its URL prefix: a path under `mount` is split into SCRIPT_NAME and PATH_INFO."""

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not environ.get("SCRIPT_NAME") and (path == mount or path.startswith(mount + "/")):
            environ["SCRIPT_NAME"] = mount
            environ["PATH_INFO"] = path[len(mount) :]
        return app(environ, start_response)

    return application


class HungUp(logging.Filter):
    """A client that hangs up before a whole uwsgi header came is no error, as uWSGI logs none.

    A probe that only connects does, and Apache when it refuses a chunked body (411) after connecting;
    gunicorn logs a traceback at ERROR for each ("Error handling request (no URI read)").
    """

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not (type(exc).__name__ == "InvalidUWSGIHeader" and str(exc).endswith("incomplete header"))


def settings(spec, hooks):
    """Everything the arbiter is told: the daemon's settings, the service's extra ones, the hooks."""
    chosen = {
        "workers": spec["processes"],
        "threads": spec["threads"],
        "worker_class": "gthread" if spec["threads"] > 1 else "sync",
        "timeout": spec["harakiri"] or 0,  # 0: no limit, as uWSGI without harakiri
        # a little longer than the daemon's own bound: the daemon's SIGKILL comes first, and counts
        "graceful_timeout": spec["stop_timeout"] + 2,
        "backlog": spec["backlog"],
        "protocol": spec["protocol"],
        "errorlog": "-",
        "accesslog": None,
        "loglevel": "info",
        "control_socket_disable": True,
        "proc_name": spec["service"],
        "preload_app": False,
        # one request per connection, as uWSGI's vassals answer (Connection: close): the uwsgi
        # protocol has no framing for a second request, and nginx's uwsgi_pass reads until the
        # connection closes, so a kept-alive one would stall every response (a `keepalive`
        # in the service's gunicorn table still applies)
        "keepalive": 0,
    }
    if spec["chdir"]:
        chosen["chdir"] = spec["chdir"]
    # no user, no group: the arbiter runs as the service's user already (gunicorn would only switch
    # its workers, after it had run as root itself)
    chosen.update(spec["settings"])
    chosen.update(hooks)
    return chosen


def take_handed():
    """The descriptors the daemon handed over, by name; the socket already where socket activation puts it."""
    fds = {}
    for name in ("FD", "SPEC_FD", "LOG_FD", "BOARD_FD"):
        value = os.environ.pop(f"WSGI_SUPERVISOR_{name}", None)
        fds[name] = int(value) if value is not None else None
    for name, fd in fds.items():
        if name != "FD" and fd == LISTEN_FD:  # make room for the socket
            fds[name] = os.dup(fd)
            os.close(fd)
    if fds["FD"] != LISTEN_FD:
        os.dup2(fds["FD"], LISTEN_FD, inheritable=True)
        os.close(fds["FD"])
    return fds


def read_spec(fd):
    with os.fdopen(fd, "rb") as spec:
        return json.loads(spec.read())


def no_dumps():
    """Not dumpable (as a setuid program is): a worker of the same user may then neither ptrace this
    arbiter nor take a descriptor of it (/proc/PID/fd, pidfd_getfd): the log FIFO stays the arbiter's.
    Forked workers inherit it; the daemon (root, CAP_SYS_PTRACE) still reads every process."""
    import ctypes

    pr_set_dumpable = 4
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def enter_service(spec):
    """The process as the app expects to find it: gunicorn's socket activation, its argv, its chdir."""
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    sys.argv = [spec["argv0"], *spec["args"]]
    if spec["chdir"]:
        # gunicorn's own command line does this (Application.chdir); BaseApplication does not
        os.chdir(spec["chdir"])
        sys.path.insert(0, spec["chdir"])


def preloaded(spec, handed, command):
    """The service's app, loaded here in the arbiter and warmed up, when the fork-safety guard
    lets it be forked (preload.py); else this arbiter starts again (`command`, an exec: the same
    pid), to load the app in each worker. None without preload, or when this is that new start."""
    if not spec.get("preload") or os.environ.pop(preload.REFUSED_VARIABLE, ""):
        return None
    before = preload.Holdings.now()
    app = app_loader.load(spec["app"])
    reasons = preload.settle(app, before, spec.get("warmup") or [], _say)
    if not reasons:
        return app
    _say(preload.refused_line(reasons))
    relaunch(spec, handed, command)


def _say(text):
    print(text, file=sys.stderr, flush=True)


def relaunch(spec, handed, command):
    """exec `command` again with what the daemon handed over (the spec in a memfd: its descriptor
    was read), and nothing the app opened."""
    spec_fd = os.memfd_create("spec")
    os.write(spec_fd, json.dumps(spec).encode())
    os.lseek(spec_fd, 0, os.SEEK_SET)
    fds = {"FD": LISTEN_FD, "SPEC_FD": spec_fd, "LOG_FD": handed["LOG_FD"], "BOARD_FD": handed["BOARD_FD"]}
    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_FDS", "LISTEN_PID")}
    env.update((f"WSGI_SUPERVISOR_{name}", str(fd)) for name, fd in fds.items() if fd is not None)
    env[preload.REFUSED_VARIABLE] = "1"
    keep = {0, 1, 2, *(fd for fd in fds.values() if fd is not None)}
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            with contextlib.suppress(OSError):
                os.close(int(name))
    for fd in keep:
        os.set_inheritable(fd, True)
    os.execve(command[0], command, env)


def start_relay(spec, handed):
    relay = relays.LogRelay(handed["LOG_FD"], marks, spec.get("daemon_lock"))
    relay.start()
    atexit.register(relay.finish)
    return relay


def open_board(spec, handed):
    """The scoreboard, mapped; its descriptor closed, so that no process of the tree can resize the file."""
    board_map = board.map_fd(handed["BOARD_FD"], spec["slots"])
    os.close(handed["BOARD_FD"])
    board.start(board_map, spec["slots"], os.getpid())
    return board_map


def server_hooks(spec, relay, board_map, requests, shared):
    """gunicorn's hooks: each worker's slot on the board, its request lines, its counts; with a
    `shared` (preloaded) app, gc.freeze() before every fork."""
    slots = spec["slots"]
    frozen_once = []

    def pre_fork(server, worker):
        used = {getattr(w, "wsgi_supervisor_slot", None) for w in server.WORKERS.values()}
        worker.wsgi_supervisor_slot = next((i for i in range(slots) if i not in used), None)
        if shared:
            # objects the arbiter made since the last fork are frozen too (a collection of those only)
            frozen = preload.freeze()
            if not frozen_once:
                frozen_once.append(frozen)
                _say(preload.shared_line(frozen))  # a line of its own: the daemon reads the verdict from it

    def post_fork(server, worker):
        relay.close_in_worker()
        slot = worker.wsgi_supervisor_slot
        if slot is not None:
            board.claim(board_map, slot, os.getpid(), time.time())
            requests.started_worker(slot)

    def post_worker_init(worker):
        if requests.slot is not None:
            board.set_state(board_map, requests.slot, board.READY)
        worker.log.info("worker %d loaded the app", os.getpid())

    def pre_request(worker, req):
        SENT.vars = getattr(req, "uwsgi_vars", None)
        if requests.slot is not None:
            requests.begin(req)

    def post_request(worker, req, environ, resp):
        if requests.slot is not None:
            requests.end(worker, req, environ, resp)

    def worker_abort(worker):  # gunicorn's timeout (harakiri) ends it with SIGABRT
        if requests.slot is not None:
            board.count(board_map, requests.slot, 0, 0, 1, 0, 0)

    def worker_exit(server, worker):
        if requests.slot is not None:
            board.set_state(board_map, requests.slot, board.EXITING)

    def child_exit(server, worker):
        slot = getattr(worker, "wsgi_supervisor_slot", None)
        if slot is not None:
            board.set_state(board_map, slot, board.FREE)

    return {
        "pre_fork": pre_fork,
        "post_fork": post_fork,
        "post_worker_init": post_worker_init,
        "pre_request": pre_request,
        "post_request": post_request,
        "worker_abort": worker_abort,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
    }


def wrapped(app, spec, requests):
    """The app as the workers serve it: counted on the board, framed, mounted, with uWSGI's environ."""
    app = counted(app, requests)
    if spec["protocol"] == "uwsgi":
        app = length_framed(app)
    mount = spec["mount"]
    return as_sent(mounted(app, mount) if mount and mount != "/" else app)


def serve(spec, hooks, requests, app):
    """Run the arbiter until it ends; `app` is the preloaded one (None: each worker loads its own)."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    chosen = settings(spec, hooks)
    chosen["preload_app"] = app is not None

    class Service(BaseApplication):
        def load_config(self):
            for key, value in chosen.items():
                self.cfg.set(key, value)

        def load(self):
            return wrapped(app if app is not None else app_loader.load(spec["app"]), spec, requests)

    logging.getLogger("gunicorn.error").addFilter(HungUp())
    Arbiter(Service()).run()


def main(spec_path):
    command = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    # first, before anything opens a file: the socket goes where socket activation puts it
    handed = take_handed()
    spec = read_spec(handed["SPEC_FD"])  # spec_path names it for `ps` and for a next daemon's adoption
    if spec["user"]:
        no_dumps()
    enter_service(spec)
    app = preloaded(spec, handed, command)
    relay = start_relay(spec, handed)
    board_map = open_board(spec, handed)
    requests = Requests(spec, board_map, relay.request_fd)
    serve(spec, server_hooks(spec, relay, board_map, requests, shared=app is not None), requests, app)


if __name__ == "__main__":
    main(sys.argv[1])
