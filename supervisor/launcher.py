"""The emperor's wrapper: runs between the emperor's fork and uWSGI.

The daemon installs this file (with a `#!python -IS` line) as the emperor's
`--emperor-wrapper`, so it runs for every vassal start, whoever asked for it:
the daemon, or the emperor bringing back a master that died. It reads the
launch line that heads the vassal file, then

- starts a new session, so that a stop can reach every process of the vassal;
- sends uWSGI's early output (before its logger starts) to the daemon's log
  socket;
- asks the daemon for the service's listening socket and passes it on the
  systemd way (LISTEN_FDS), so the socket outlives any one vassal and
  requests wait in its queue across a restart instead of being refused;
- builds the service's environment (visible to the app from its first
  import, which uWSGI's `env =` cannot do) and execs the service venv's
  pyuwsgi.

Standard library only, and quick: it runs on every vassal start.
"""

import contextlib
import json
import os
import socket
import sys

LAUNCH_PREFIX = "; wsgi-supervisor-launch "
DROP = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID")


def fetch_socket(control, name, instance):
    """The listening socket the daemon holds for `name`, or None.

    None when the daemon cannot be reached (it is restarting): uWSGI then
    binds the path itself, and the daemon takes that socket over later.
    Exits when the daemon says the service must not run.
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(5)
    try:
        conn.connect(control)
        conn.sendall(json.dumps({"cmd": "launch", "service": name, "instance": instance}).encode() + b"\n")
        data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
    except OSError:
        return None
    finally:
        conn.close()
    try:
        reply = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        reply = {}
    if not reply.get("ok"):
        for fd in fds:
            os.close(fd)
        sys.stderr.write("wsgi-supervisor: not starting {}: {}\n".format(name, reply.get("error", "refused")))
        sys.exit(1)
    return fds[0] if fds else None


def main(argv):
    ini = argv[-1]
    try:
        with open(ini, encoding="utf-8") as f:
            first = f.readline()
    except OSError as exc:
        # removed between the emperor's scan and now: the service was stopped
        sys.stderr.write(f"wsgi-supervisor launcher: {ini}: {exc.strerror}\n")
        return 1
    if not first.startswith(LAUNCH_PREFIX):
        sys.stderr.write(f"wsgi-supervisor launcher: {ini} has no launch line\n")
        return 1
    spec = json.loads(first[len(LAUNCH_PREFIX) :])
    name = spec["service"]

    os.setsid()

    # keep only the emperor's channel to this vassal
    emperor_fd = int(os.environ.get("UWSGI_EMPEROR_FD", "-1"))
    if emperor_fd == 3:  # fd 3 is where the listening socket goes
        emperor_fd = os.dup(3)
        os.set_inheritable(emperor_fd, True)
    listen_fd = fetch_socket(spec["control"], name, spec.get("instance", ""))

    try:
        log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        log.connect(spec["log"])
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        log.close()
    except OSError:
        pass

    env = {k: v for k, v in os.environ.items() if k not in DROP}
    if emperor_fd >= 0:
        env["UWSGI_EMPEROR_FD"] = str(emperor_fd)
    env["PATH"] = spec["path"] + ":" + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(spec["env"])
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
    for fd in _open_fds():
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    os.execve(spec["exec"][0], spec["exec"] + argv[1:], env)


def _open_fds():
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
