"""The arbiter's log relay: its tree's output and request lines into the instance's log FIFO.

Runs in the service's own Python, loaded by path from boot.py: standard library only.

Nothing is lost while a daemon runs: a full FIFO (a daemon slow to read, on a busy
host) makes the relay wait, and so the writers, as a full pipe slows a uWSGI worker.
Lines are dropped only while no daemon runs on the runtime dir (none would ever read
them once the FIFO's MiB is full); they are counted, and the count goes to the next
daemon as one marked line (`LOST_MARK` and the number), which it adds to the
service's `wsgi_log_lines_dropped_total` and says in the service's log.

Whether a daemon runs is told by its lock: a daemon holds an exclusive flock on its
pidfile for as long as it runs (main.py), and /proc/locks shows it to anyone, the
service's user included, without taking it (taking it, even shared, could make a
starting daemon believe another one runs).
"""

import contextlib
import os
import select
import sys
import threading
import time

READ_SIZE = 64 * 1024
RECHECK = 1.0  # how often a relay kept waiting by a full FIFO asks again whether a daemon runs


def daemon_runs(lock_path):
    """True while a daemon holds its lock on `lock_path`, False when none does, None when unknown."""
    if not lock_path:
        return None
    try:
        st = os.stat(lock_path)
    except FileNotFoundError:
        return False  # the runtime dir is gone, and its daemon with it
    except OSError:
        return None
    try:
        with open("/proc/locks", "rb") as locks:
            table = locks.read().split(b"\n")
    except OSError:
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}".encode()
    for line in table:
        fields = line.split()
        if len(fields) > 5 and fields[1] == b"FLOCK" and fields[5] == inode:
            return True
    return False


class LogRelay:
    """The arbiter's thread that passes its tree's output and request lines on to the daemon.

    fds 1 and 2 (of the arbiter, and of every worker it forks) go into one pipe,
    request lines into another; the thread writes what comes out of each into the
    instance's log FIFO (logs/fifos.py), each request line marked. Writes of at most
    PIPE_BUF are whole or not at all, so no line is cut. The FIFO is the daemon's
    descriptor (`fifo`, read-write, so it keeps a MiB while no daemon reads it),
    handed to the arbiter; a worker closes it as it starts, and gets no end of it.
    """

    def __init__(self, fifo, marks, daemon_lock=None):
        self.fifo = fifo
        self.request_mark = marks.REQUEST_MARK.encode()  # a request line among the output
        self.lost_mark = marks.LOST_MARK.encode()  # "this many lines were dropped while no daemon ran"
        self.daemon_lock = daemon_lock
        if fifo is None:
            print("no log FIFO was handed to the arbiter: its lines are lost", file=sys.stderr)
        else:
            os.set_blocking(fifo, False)
        output, write_fd = os.pipe2(os.O_CLOEXEC)
        for fd in (1, 2):
            os.dup2(write_fd, fd)  # the daemon's pipe of the first lines is closed here
        os.close(write_fd)
        requests, self.request_fd = os.pipe2(os.O_CLOEXEC)
        self.arbiter = os.getpid()
        self.lost = 0  # lines dropped while no daemon ran, not yet told to one
        self.orphaned_at = None  # when the relay last found no daemon running (monotonic)
        self.marked = {output: False, requests: True}
        self.pending = {output: b"", requests: b""}
        self.thread = threading.Thread(target=self._forward, name="log-relay", daemon=True)

    def start(self):
        self.thread.start()

    def close_in_worker(self):
        """A forked worker writes into the pipes; only the arbiter's thread reads them, and writes the FIFO."""
        for fd in self.marked:
            os.close(fd)
        if self.fifo is not None:
            os.close(self.fifo)
            self.fifo = None

    def finish(self):
        """At the arbiter's exit: what its workers wrote last goes on before the process ends, for as
        long as a daemon reads it (its stop bounds this: it kills a tree that outstays stop_timeout)."""
        if os.getpid() != self.arbiter:
            return  # a worker's exit
        for fd in (1, 2, self.request_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        while self.thread.is_alive():
            self.thread.join(RECHECK)
            if self.thread.is_alive() and not daemon_runs(self.daemon_lock):
                return  # no daemon will read what is left

    def _forward(self):
        while self.marked:
            readable, _, _ = select.select(list(self.marked), [], [])
            for fd in readable:
                chunk = os.read(fd, READ_SIZE)
                if not chunk:  # every writer has gone: a last line without its newline goes too
                    self.write(self.pending.pop(fd), self.marked.pop(fd))
                    continue
                pending = self.pending[fd] + chunk
                cut = pending.rfind(b"\n")
                if cut < 0 and len(pending) < READ_SIZE:
                    self.pending[fd] = pending
                    continue
                whole, self.pending[fd] = (pending[: cut + 1], pending[cut + 1 :]) if cut >= 0 else (pending, b"")
                self.write(whole, self.marked[fd])

    def write(self, data, marked):
        if self.fifo is None or not data:
            return
        if marked:
            data = b"".join(self.request_mark + line for line in data.splitlines(keepends=True))
        for piece in pieces(data):
            if self.lost and not self._put(self.lost_mark + b"%d\n" % self.lost):
                self.lost += piece.count(b"\n") or 1
                continue
            self.lost = 0
            if not self._put(piece):
                self.lost += piece.count(b"\n") or 1

    def _put(self, piece):
        """Write `piece` whole; wait while the FIFO is full and a daemon runs. False: dropped (no daemon)."""
        while True:
            try:
                os.write(self.fifo, piece)
                self.orphaned_at = None
                return True
            except BlockingIOError:  # full: the daemon is slow to read, or there is none
                pass
            except OSError:
                return False
            if self.orphaned_at is not None:
                # no daemon a moment ago: dropped at once, so a missing daemon slows nobody down;
                # whether one runs again is asked at most once every RECHECK (a cheap read of /proc/locks)
                now = time.monotonic()
                if now - self.orphaned_at < RECHECK:
                    return False
                if daemon_runs(self.daemon_lock) is False:
                    self.orphaned_at = now
                    return False
                self.orphaned_at = None  # a daemon runs again: it reads, and the relay waits for it
            _, writable, _ = select.select([], [self.fifo], [], RECHECK)
            if writable:
                continue
            if daemon_runs(self.daemon_lock) is False:
                self.orphaned_at = time.monotonic()
                return False
            # a daemon runs and reads (or could not be told: waiting is what loses nothing)


def pieces(data, size=select.PIPE_BUF):
    """`data` in writes of at most `size` (which a pipe takes whole or not at all), cut after a newline where one is."""
    while len(data) > size:
        cut = data.rfind(b"\n", 0, size) + 1 or size
        yield data[:cut]
        data = data[cut:]
    if data:
        yield data
