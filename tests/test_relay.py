"""gunicorn's log relay: nothing lost while a daemon runs, however slowly it reads; while none runs,
what is dropped is counted and told to the next daemon (wsgi_log_lines_dropped_total)."""

import os
import signal
import threading
import time
import urllib.request

from support import APPS, Daemon, free_port, uwsgi_request, write_manifest

COMPROMISED = APPS / "compromised.py"
PRINTS = "for i in range({n}):\n    print('relay line', i)\nsys.stdout.flush()\nresult = 'printed'\n"


def _print_lines(sock, n, timeout=120.0):
    body = PRINTS.format(n=n).encode()
    status, _, data = uwsgi_request(sock, "/run", method="POST", body=body, timeout=timeout)
    assert status == 200 and b"printed" in data, data[:500]


def _numbers(path):
    return [int(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines() if "relay line" in line]


def test_a_daemon_that_reads_slowly_loses_no_line(tmp_path):
    """The daemon stopped for 3 s (a host so busy it is not scheduled) while an app prints 200,000 lines:
    the relay waits for it, as a full pipe makes a uWSGI worker wait, and every line arrives."""
    logs = tmp_path / "logs"
    d = Daemon(
        tmp_path, extra_args=["--log-dir", str(logs), "--quiet", "--journal", "no", "--log-max-bytes", "1000000000"]
    )
    write_manifest(
        d.conf_dir, f'[services.chatty]\nkind = "api"\nserver = "gunicorn"\napp = "{COMPROMISED}"\nprocesses = 1\n'
    )
    d.start()
    try:
        d.ctl("start", "chatty")
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()

            printing = threading.Thread(target=_print_lines, args=(d.socket("chatty"), 200_000))
            printing.start()
            time.sleep(3)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        printing.join(120)
        assert not printing.is_alive()
        assert time.monotonic() - started >= 3  # it did wait for the daemon
        d.wait_for(lambda s: 199_999 in _numbers(logs / "chatty.log")[-5:], timeout=60, what="the last line")
    finally:
        d.stop()
    assert _numbers(logs / "chatty.log") == list(range(200_000))


def test_lines_dropped_while_no_daemon_runs_are_counted_and_told(tmp_path):
    port = free_port()
    args = ["--quiet", "--journal", "no", "--metrics-listen", f"127.0.0.1:{port}"]
    d = Daemon(tmp_path, extra_args=args)
    write_manifest(
        d.conf_dir, f'[services.chatty]\nkind = "api"\nserver = "gunicorn"\napp = "{COMPROMISED}"\nprocesses = 1\n'
    )
    d.start()
    try:
        d.ctl("start", "chatty")
        d.remember_processes()
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        # far more than the FIFO keeps (a MiB): with no daemon, the relay drops what does not fit, and the
        # app is not held up (the request's own bound says it finished)
        _print_lines(d.socket("chatty"), 200_000)
        d.start()
        d.ctl("start", "chatty")
        _print_lines(d.socket("chatty"), 1)  # a line after: the relay tells the new daemon what it dropped

        def dropped():
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            lines = [x for x in text.splitlines() if x.startswith('wsgi_log_lines_dropped_total{service="chatty"}')]
            return float(lines[0].split()[-1]) if lines else 0.0

        d.wait_for(lambda s: dropped() > 0, timeout=30, what="the dropped lines counted")
        assert 0 < dropped() < 200_000
        said = d.ctl("logs", "chatty", "-n", "500").stdout
        assert "lines of its output were lost while no daemon read its log" in said
    finally:
        d.stop()
