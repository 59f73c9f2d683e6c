"""`wsgictl top` in a real terminal: tmux runs it 80x24, the test types and reads the screen."""

import os
import shutil
import subprocess
import time
import uuid

import pytest

from support import APPS, WSGICTL, Daemon, Load, write_manifest

MANIFEST = f"""
[services.alpha]
kind = "api"
app = "{APPS / "stuck.py"}"
processes = 2

[services.beta]
kind = "api"
server = "gunicorn"
app = "{APPS / "stuck.py"}"
processes = 1
"""

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (make setup-test)")


class Tmux:
    """A tmux server of the test's own (its own socket name), killed at the end."""

    def __init__(self):
        self.name = f"wsgi-top-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.name, *args], capture_output=True, text=True, check=check, timeout=10)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top").stdout

    def wait_screen(self, predicate, what, timeout=30.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"the screen never showed {what}:\n{text}")

    def kill(self):
        self("kill-server", check=False)


def row(text: str, name: str) -> list[str] | None:
    return next((line.split() for line in text.splitlines() if line.startswith(name + " ")), None)


def test_top_shows_every_service_and_its_rates_and_quits_on_q(tmp_path):
    d = Daemon(tmp_path, extra_args=["--sample-interval", "30"])
    write_manifest(d.conf_dir, MANIFEST)
    tmux = Tmux()
    done = tmp_path / "top-exit"
    try:
        d.start()
        d.ctl("start", "--all")
        command = f"{WSGICTL} --runtime-dir {d.runtime_dir} top; echo $? > {done}"
        tmux("new-session", "-d", "-s", "top", "-x", "80", "-y", "24", command)
        text = tmux.wait_screen(lambda t: row(t, "alpha") and row(t, "beta"), "both services")
        header = next(line for line in text.splitlines() if line.startswith("NAME"))
        assert header.split() == ["NAME", "STATE", "RDY", "REQ/S", "P50", "P99", "5XX%", "BUSY", "QUEUE", "PSS", "RST"]
        assert row(text, "alpha")[1:3] == ["running", "yes"]
        assert all(len(line) < 80 for line in text.splitlines())
        with Load(d.socket("alpha"), threads=2):
            busy = tmux.wait_screen(lambda t: row(t, "alpha")[3] not in ("-", "0.0"), "requests per second for alpha")
        assert float(row(busy, "alpha")[3]) > 0
        # the latency of the second between two polls, from the request-duration histograms
        assert row(busy, "alpha")[4].endswith(("ms", "s")) and row(busy, "alpha")[5].endswith(("ms", "s")), busy
        assert row(busy, "alpha")[6] == "0.0"  # no 5xx among its responses
        assert row(busy, "alpha")[7].endswith("/2")  # busy of two workers
        assert row(busy, "alpha")[9].endswith("M")  # the PSS of its processes, some MiB
        tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "0"
    finally:
        tmux.kill()
        d.stop()
