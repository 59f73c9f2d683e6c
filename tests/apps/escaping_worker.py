"""Test worker: a compromised worker service that leaves a process behind, out of reach of its tree.

It double-forks a child that starts a session of its own, drops the environment it was given (so no tag
the daemon set can find it), ignores SIGTERM and SIGHUP, and runs for as long as nobody SIGKILLs it. The
escapee's pid goes to the file named by ESCAPEE_FILE; then the worker idles until it is asked to stop.
"""

import os
import sys
import time

ESCAPEE = "import signal, time\nsignal.signal(15, signal.SIG_IGN)\nsignal.signal(1, signal.SIG_IGN)\ntime.sleep(300)\n"

r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    escapee = os.fork()
    if escapee:
        os.write(w, str(escapee).encode())
        os._exit(0)
    os.execve(sys.executable, [sys.executable, "-c", ESCAPEE], {})
os.wait()
with open(os.environ["ESCAPEE_FILE"], "w") as f:
    f.write(os.read(r, 32).decode())
print("escaped", flush=True)
while True:
    time.sleep(1)
