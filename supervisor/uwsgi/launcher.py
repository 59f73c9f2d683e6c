"""The vassal's launcher: runs between the emperor's fork and uWSGI.

The daemon keeps a copy of it (`daemon/launch/launcher.py`) and, per
service, a few lines (`daemon/launch/NAME`) whose `#!` line is the
service's own Python and that run the copy from its bytecode; the
emperor's wrapper (a shell line) runs those for every vassal start,
whoever asked for it: the daemon, or the emperor bringing back a master
that died. It reads the launch line that heads the vassal file, then

- starts a new session, so that a stop can reach every process of the vassal;
- joins the service's control group, whose `cgroup.procs` the daemon hands
  over with the socket (it writes "0" into it: every process the vassal
  starts, escaped or not, is then found and ended by its stop);
- sends uWSGI's early output (before its logger starts) to the instance's
  log FIFO (`output`);
- asks the daemon, on its launch socket (`daemon/launch.sock`, root only),
  for the service's listening socket and passes it on the systemd way
  (LISTEN_FDS), so the socket outlives any one vassal and
  requests wait in its queue across a restart instead of being refused;
- for a service with `user`: makes the master's own dir (stats socket,
  master FIFO) that user's, keeps the vassal file open for uWSGI to read
  (`fd://`: the vassals dir is root's alone), and becomes that user (its
  groups, then its gid, then its uid) before any of uWSGI or the app runs:
  no process of the service runs as root, its master included;
- builds the service's environment (visible to the app from its first
  import, which uWSGI's `env =` cannot do) and becomes the service's uWSGI
  master: in this very process when it can (one Python start per vassal,
  not two), else by exec of the venv's pyuwsgi.

It runs on every vassal start and in the service's Python (any version), so
it imports nothing beyond what the interpreter has already loaded (`_socket`
rather than `socket`, a hex-coded launch line rather than JSON).
"""

import _socket
import errno
import os
import sys

LAUNCH_PREFIX = "; wsgi-supervisor-launch "
# when the emperor passes no PATH: config.DEFAULT_PATH, which this file cannot import (a test keeps them equal)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# request_marks.TOKEN_VARIABLE, which this file cannot import (a test keeps them equal)
TOKEN_VARIABLE = "WSGI_SUPERVISOR_PROBE_TOKEN"
# where uWSGI's logger writes (core renders `logger = fd:4`): the instance's log FIFO, opened here as root
LOG_FD = 4
# vassal_app.RELAUNCH_VARIABLE: the master's command line, hex-coded (NUL-joined)
RELAUNCH_VARIABLE = "WSGI_SUPERVISOR_RELAUNCH"
DROP = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")


def parse_launch_line(line):
    """`key=hex key=hex …` -> {key: text}; lists and tables are NUL-joined."""
    fields = {}
    for item in line[len(LAUNCH_PREFIX) :].split():
        key, _, value = item.partition("=")
        fields[key] = bytes.fromhex(value).decode()
    return fields


def launch_socket(spec):
    """The daemon's launch socket; a vassal file of an earlier version names only the control socket."""
    if "launch" in spec:
        return spec["launch"]
    return os.path.join(os.path.dirname(spec["control"]), "daemon", "launch.sock")


def fetch_socket(path, name, instance):
    """The listening socket the daemon holds for `name` (or None) and this master's probe token; joins
    the service's control group on the way.

    None and no token when the daemon cannot be reached (it is restarting):
    uWSGI then binds the path itself, and the daemon takes that socket over
    later (and moves the vassal into its group when it adopts it). Exits
    when the daemon says the service must not run.
    """
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    conn.settimeout(5)
    try:
        conn.connect(path)
        # names are [a-z0-9_-] and instances "" or "b": nothing to escape
        conn.sendall(('{"cmd":"launch","service":"%s","instance":"%s"}\n' % (name, instance)).encode())
        data, ancdata, _flags, _addr = conn.recvmsg(65536, _socket.CMSG_SPACE(16))
    except OSError:
        return None, ""
    finally:
        conn.close()
    fds = []
    for level, kind, cdata in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(cdata[i : i + 4], sys.byteorder) for i in range(0, len(cdata) - 3, 4)]
    reply = data.split(b"\n", 1)[0]
    if not reply.startswith(b'{"ok":true'):
        for fd in fds:
            os.close(fd)
        sys.stderr.write("wsgi-supervisor: not starting %s: %s\n" % (name, reply.decode(errors="replace")))
        sys.exit(1)
    if b'"group":true' in reply:  # the group's cgroup.procs comes last
        group = fds.pop()
        try:
            os.write(group, b"0")
        except OSError as exc:
            sys.stderr.write("wsgi-supervisor: not starting %s: cannot join its group: %s\n" % (name, exc))
            sys.exit(1)
        finally:
            os.close(group)
    return (fds[0] if fds else None), probe_token(reply)


def probe_token(reply):
    """The token in the daemon's answer `{"ok":true,"probe_token":"<hex>"}`; "" when there is none."""
    key = b'"probe_token":"'
    start = reply.find(key)
    if start < 0:
        return ""
    start += len(key)
    token = reply[start : reply.find(b'"', start)].decode("ascii", "replace")
    return token if token and all(c in "0123456789abcdef" for c in token) else ""


def output(spec):
    """Where uWSGI's early output goes (before its logger starts): the instance's log FIFO, which the
    daemon reads as this service's and nobody else's.

    uWSGI keeps a copy of this descriptor in the master and in every worker, so it must be one that
    no process of the service can use to speak for another service or for the daemon: never the
    emperor's output (read under the daemon's name), which fds 1 and 2 are until now.
    A vassal file of an earlier version names only the shared log socket ("log"), where the daemon
    checks each sender's pid against the service it claims.
    """
    try:
        if "output" in spec:
            return _open_fifo(spec["output"])
        log = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            log.connect(spec["log"])
            return os.dup(log.fileno())
        finally:
            log.close()
    except (OSError, KeyError):
        return os.open(os.devnull, os.O_WRONLY)


def logger(spec):
    """What uWSGI's logger writes into: the instance's log FIFO opened read-write, as uWSGI's `file:`
    logger opens it (so that lines wait in the FIFO while no daemon reads it: a daemon restarting
    reads them); the early output's descriptor when there is no FIFO."""
    try:
        return os.open(spec["output"], os.O_RDWR)
    except (OSError, KeyError):
        return 1


def _open_fifo(path):
    """Write-only while the daemon reads it; read-write when no daemon does (it is restarting), so that
    the lines wait in the FIFO for the next one instead of failing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        fd = os.open(path, os.O_RDWR)
    os.set_blocking(fd, True)  # output waits for room, as on a terminal or a pipe
    return fd


def master_dir(spec):
    """The master's own dir (stats socket, master FIFO), made the service's user's on every start:
    the master makes its sockets there as that user. Its parent is root's (0711): nobody else
    can put anything in its place."""
    path = spec["rundir"]
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    os.chown(path, int(spec.get("uid", 0)), int(spec.get("gid", 0)))
    os.chmod(path, 0o700)


def become_user(spec):
    """setgroups, setgid, setuid, in that order: the service's account for the rest of this process."""
    os.setgroups([int(g) for g in spec.get("groups", "").split("\0") if g])
    os.setgid(int(spec["gid"]))
    os.setuid(int(spec["uid"]))


def main(argv):
    # one straight script on purpose (about 70 lines): it runs at every vassal start, in the
    # service's own Python, and reads top to bottom as the steps the module docstring lists
    ini = argv[-1]
    try:
        ini_fd = os.open(ini, os.O_RDONLY)
        first = os.read(ini_fd, 65536).split(b"\n", 1)[0].decode("utf-8", "replace") + "\n"
        os.lseek(ini_fd, 0, os.SEEK_SET)
    except OSError as exc:
        # removed between the emperor's scan and now: the service was stopped
        sys.stderr.write("wsgi-supervisor launcher: %s: %s\n" % (ini, exc.strerror))
        return 1
    if not first.startswith(LAUNCH_PREFIX):
        sys.stderr.write("wsgi-supervisor launcher: %s has no launch line\n" % ini)
        return 1
    spec = parse_launch_line(first.strip())
    name = spec["service"]

    os.setsid()

    # keep only the emperor's channel to this vassal, and the vassal file
    emperor_fd = int(os.environ.get("UWSGI_EMPEROR_FD", "-1"))
    if emperor_fd in (3, LOG_FD):  # fd 3 is where the listening socket goes
        emperor_fd = _move_away(emperor_fd)
    if ini_fd in (3, LOG_FD):
        ini_fd = _move_away(ini_fd)
    listen_fd, token = fetch_socket(launch_socket(spec), name, spec.get("instance", ""))
    if "rundir" in spec:
        master_dir(spec)

    out = output(spec)
    os.dup2(out, 1)
    os.dup2(out, 2)
    if out > 2:
        os.close(out)

    env = {k: v for k, v in os.environ.items() if k not in DROP}
    if emperor_fd >= 0:
        env["UWSGI_EMPEROR_FD"] = str(emperor_fd)
    env["PATH"] = spec["path"] + ":" + (env.get("PATH") or DEFAULT_PATH)
    for item in filter(None, spec.get("env", "").split("\0")):
        key, _, value = item.partition("=")
        env[key] = value
    env.pop(TOKEN_VARIABLE, None)
    if token:
        env[TOKEN_VARIABLE] = token  # vassal_app.py takes it out of the environment before the app loads
    keep = {0, 1, 2}
    if emperor_fd >= 0:
        keep.add(emperor_fd)
    if listen_fd is not None:
        if listen_fd != 3:
            os.dup2(listen_fd, 3)
            os.close(listen_fd)
        os.set_inheritable(3, True)
        keep.add(3)
        env["LISTEN_FDS"] = "1"
        env["LISTEN_PID"] = str(os.getpid())
    os.dup2(logger(spec), LOG_FD)
    keep.add(LOG_FD)
    args = argv[1:]
    if "uid" in spec:
        # the user may not reach the vassal file: uWSGI reads it from the descriptor opened here
        os.set_inheritable(ini_fd, True)
        keep.add(ini_fd)
        args = [*argv[1:-1], "fd://%d" % ini_fd]
    for fd in _open_fds():
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    if "uid" in spec:
        become_user(spec)
    argv0 = spec["exec"].split("\0")
    # how vassal_app.py starts this master again, loading the app in each worker, when the
    # fork-safety guard refuses to fork the app it loaded (preload.py)
    # (by then uWSGI has gone into the service's chdir: the vassal file by its absolute path)
    again = args if args[-1].startswith("fd://") else [*args[:-1], os.path.abspath(args[-1])]
    env[RELAUNCH_VARIABLE] = "\0".join(argv0 + again).encode().hex()
    if runs_here(argv0, env):
        run_here(argv0 + args, env)
    os.execve(argv0[0], argv0 + args, env)


def _move_away(fd):
    """`fd` on a number above those this launcher gives a meaning to (3: the socket, LOG_FD: the log)."""
    taken = set(_open_fds())
    target = next(n for n in range(LOG_FD + 1, 1 << 20) if n not in taken)
    os.dup2(fd, target)
    os.close(fd)
    return target


def runs_here(argv0, env):
    """Whether the service's pyuwsgi can run in this process rather than in a new interpreter.

    It can on the service's own Python (the same path: every venv's python
    resolves to the same binary), when nothing that an interpreter reads
    only as it starts (PYTHONPATH, PYTHONWARNINGS…) differs from what this
    one started with.
    """
    if len(argv0) != 2 or argv0[0] != sys.executable:
        return False
    keys = [k for k in env if k.startswith("PYTHON")] + [k for k in os.environ if k.startswith("PYTHON")]
    return all(env.get(k) == os.environ.get(k) for k in keys)


def run_here(argv, env):
    """Become the vassal's uWSGI master as the venv's `uwsgi` script would; returns only if pyuwsgi is missing."""
    try:
        import pyuwsgi
    except ImportError:
        return
    os.environ.clear()
    os.environ.update(env)  # putenv too: uWSGI reads UWSGI_EMPEROR_FD and LISTEN_FDS with getenv
    sys.argv = argv[1:]
    sys.path[0] = os.path.dirname(argv[1])
    sys.exit(pyuwsgi.run())


def _open_fds():
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
