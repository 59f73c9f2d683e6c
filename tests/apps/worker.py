"""Test worker: behaves as the WORKER_* environment variables say."""

import os
import signal
import socket
import sys
import time

env = os.environ.get


def notify(message: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])
    s.close()


print(f"worker {os.getpid()} starting, argv={sys.argv[1:]}", flush=True)

reloads_asked: list[int] = []


def on_hup(*_):
    print("reloading my configuration", flush=True)
    reloads_asked.append(1)


signal.signal(signal.SIGHUP, on_hup)

if env("WORKER_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

if env("WORKER_FORK"):
    pids = []
    child = os.fork()
    if child == 0:  # a plain child
        while True:
            time.sleep(1)
    pids.append(child)
    child = os.fork()
    if child == 0:  # a child in a session of its own
        os.setsid()
        while True:
            time.sleep(1)
    pids.append(child)
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:  # a double-forked daemon, orphaned at once
        os.setsid()
        grandchild = os.fork()
        if grandchild:
            os.write(w, str(grandchild).encode())
            os._exit(0)
        while True:
            time.sleep(1)
    os.waitpid(middle, 0)
    pids.append(int(os.read(r, 32)))
    with open(env("WORKER_FORK"), "w") as f:
        f.write(" ".join(map(str, pids)))

if env("WORKER_BURST"):
    out = sys.stdout
    for i in range(int(env("WORKER_BURST"))):
        out.write(f"burst line {i}\n")
    out.flush()
    print("burst done", flush=True)

if env("WORKER_NOTIFY_AFTER"):
    time.sleep(float(env("WORKER_NOTIFY_AFTER")))
    notify("READY=1\nSTATUS=serving 3 queues")
    print("ERROR: a line at error level", flush=True)

if env("WORKER_EXIT_AFTER"):
    time.sleep(float(env("WORKER_EXIT_AFTER")))
    print("worker giving up", file=sys.stderr, flush=True)
    sys.exit(int(env("WORKER_EXIT_CODE", "2")))

while True:
    time.sleep(0.1)
    if reloads_asked and env("WORKER_RELOAD_PROTOCOL"):
        # systemd's reload protocol: RELOADING=1, then READY=1 once done (after the seconds the
        # file WORKER_RELOAD_PROTOCOL says, or never when it says "never")
        reloads_asked.clear()
        notify("RELOADING=1")
        with open(env("WORKER_RELOAD_PROTOCOL")) as f:
            how = f.read().strip()
        if how != "never":
            time.sleep(float(how))
            notify("READY=1")
            print("reloaded: READY=1 sent", flush=True)
