"""A new manifest applied while running: only the difference moves."""

import signal
import sys

import pytest

from supervisor.cli.client import Client
from support import APPS, uwsgi_request, write_manifest

PROBE = APPS / "probe.py"
WORKER = APPS / "worker.py"


def manifest(greeting="one", extra=""):
    return f"""
[services.steady]
kind = "api"
app = "{PROBE}"
processes = 1

[services.changing]
kind = "api"
app = "{PROBE}"
processes = 1
environment = {{ PROBE_GREETING = "{greeting}" }}

[services.going]
kind = "api"
app = "{PROBE}"
processes = 1

[services.conductor]
kind = "worker"
command = ["{sys.executable}", "{WORKER}"]
ready_after = 0.2
{extra}
"""


def test_reload_config_applies_only_the_difference(daemon):
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    before = daemon.status()
    changing_inode = daemon.socket("changing").stat().st_ino

    text = manifest(greeting="two").replace("[services.going]", "[services.coming]")
    write_manifest(daemon.conf_dir, text)
    out = daemon.ctl("reload-config").stdout
    assert "1 changed, 1 added, 1 removed, 2 untouched" in out

    after = daemon.status()
    assert set(after) == {"steady", "changing", "coming", "conductor"}
    for name in ("steady", "conductor"):
        assert after[name]["pid"] == before[name]["pid"] and after[name]["restarts"] == 0
    assert after["changing"]["pid"] != before["changing"]["pid"]
    assert after["changing"]["state"] == after["coming"]["state"] == "running"
    # the changed API kept its socket (no refused connection) and sees its new environment
    assert daemon.socket("changing").stat().st_ino == changing_inode
    status, _, body = uwsgi_request(daemon.socket("changing"), "/")
    assert status == 200 and b'"PROBE_GREETING": "two"' in body
    assert not daemon.socket("going").exists()


@pytest.mark.parametrize("how", [[], ["--no-block"]], ids=["waiting", "no-block"])
def test_a_manifest_that_does_not_validate_changes_nothing(daemon, how):
    """Refused with every problem, even when wsgictl does not wait for the changes: there are none."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    before = {n: s["pid"] for n, s in daemon.status().items()}
    write_manifest(daemon.conf_dir, manifest(extra="bogus_key = 1"))
    result = daemon.ctl("reload-config", *how, check=False)
    assert result.returncode == 1
    assert not result.stdout
    assert "nothing changed" in result.stderr
    assert "service 'conductor', key 'bogus_key'" in result.stderr
    assert {n: s["pid"] for n, s in daemon.status().items()} == before
    assert "manifest reload refused" in daemon.ctl("logs", "wsgi-supervisor").stdout


# an API that takes SLOW seconds to import: longer than any bound below, so that a wsgictl that waits
# for it to come up does not return within the test's bound
SLOW = 20
SLOW_API = f"""
[services.slow]
kind = "api"
app = "{PROBE}"
processes = 1
environment = {{ PROBE_IMPORT_DELAY = "{SLOW}" }}
"""
BOUND = SLOW - 5  # seconds the test gives wsgictl to return (a hang check, not a measurement)


@pytest.mark.busy
def test_reload_config_gives_up_waiting_at_its_timeout_and_the_change_carries_on(daemon):
    """An added service that is slow to start: wsgictl returns at its --timeout with one line that
    says what is not done and that the daemon carries on; the service comes up afterwards."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    write_manifest(daemon.conf_dir, manifest() + SLOW_API)
    result = daemon.ctl("reload-config", "--timeout", "1", check=False, timeout=BOUND)
    assert result.returncode == 1, result.stdout + result.stderr
    said = result.stderr.splitlines()
    assert len(said) == 1, result.stderr
    assert said[0].startswith("wsgictl: waited 1s: the manifest is applied, but not every change is done: "), said
    assert "slow is still starting" in said[0], said
    assert "the daemon carries on" in said[0] and "`wsgictl status`" in said[0], said
    # not cancelled: the daemon starts it all the same, and touched nothing else
    daemon.wait_state("slow", "running", timeout=SLOW + 60)
    status, _, _ = uwsgi_request(daemon.socket("slow"), "/")
    assert status == 200
    assert all(s["state"] == "running" and s["restarts"] == 0 for s in daemon.status().values())


def test_reload_config_no_block_returns_once_the_manifest_is_taken(daemon):
    """--no-block answers with what the manifest changes, before the slow service is up; it comes up."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    write_manifest(daemon.conf_dir, manifest(greeting="two") + SLOW_API)
    result = daemon.ctl("reload-config", "--no-block", timeout=BOUND)
    assert result.stdout.startswith("taken: 1 changed, 1 added, 0 removed, 3 untouched;"), result.stdout
    assert "  added: slow" in result.stdout and "  changed: changing" in result.stdout
    daemon.wait_state("slow", "running", timeout=SLOW + 60)
    status, _, body = uwsgi_request(daemon.socket("changing"), "/")
    assert status == 200 and b'"PROBE_GREETING": "two"' in body


def test_a_request_without_a_timeout_is_answered_once_the_changes_are_done(daemon):
    """What a wsgictl from before --timeout sends: it is answered as it was, once every change is
    done (here, the slow service running), however long that takes."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    write_manifest(daemon.conf_dir, manifest() + SLOW_API.replace(f'"{SLOW}"', '"3"'))
    reply = Client(daemon.runtime_dir, timeout=SLOW + 60).request({"cmd": "reload-config"})
    assert reply["ok"] and reply["added"] == ["slow"] and not reply.get("applying"), reply
    assert daemon.status()["slow"]["state"] == "running"


def test_sighup_reloads_the_manifest(daemon):
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    write_manifest(daemon.conf_dir, manifest() + '\n[services.late]\nkind = "api"\napp = "' + str(PROBE) + '"\n')
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_state("late", "running")


def reload_a_release_that_fails_to_import(daemon, start_limit: int):
    """Every service running, then reload-config with `changing` unable to import its app."""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    broken = manifest().replace(
        'environment = { PROBE_GREETING = "one" }',
        f'environment = {{ PROBE_FAIL_IMPORT = "a bad release" }}\nstart_limit = {start_limit}',
    )
    write_manifest(daemon.conf_dir, broken)
    return daemon.ctl("reload-config", check=False, timeout=60)


def test_a_change_that_does_not_come_up_is_named_by_reload_config(daemon):
    result = reload_a_release_that_fails_to_import(daemon, start_limit=1)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("wsgictl: the manifest is applied, but not every change succeeded: "), result.stderr
    assert "changing" in result.stderr and "None" not in result.stderr
    assert daemon.status()["changing"]["state"] == "failed"
    assert daemon.status()["steady"]["state"] == "running"


def test_a_change_left_in_backoff_is_answered_without_waiting_for_it(daemon):
    """start_limit 0 retries for ever: reload-config says so at the first failed start, and does not hang."""
    result = reload_a_release_that_fails_to_import(daemon, start_limit=0)
    assert result.returncode == 1, result.stdout
    assert "changing: in backoff, the daemon keeps trying: " in result.stderr, result.stderr
    assert daemon.status()["changing"]["state"] in ("backoff", "starting")


def test_a_change_waiting_for_a_service_in_backoff_is_answered_without_waiting_for_it(daemon):
    """An added service whose `after` names a service that never comes up stays `starting` (it waits):
    reload-config answers for it once what it waits for is in backoff, then or already (it used to
    wait for ever; seen with nova-compute after a flapping nova-conductor)."""
    flapping = f"""
[services.flapping]
kind = "worker"
command = ["{sys.executable}", "-c", "import sys; sys.exit(3)"]
ready_after = 0.5
start_limit = 0
"""
    write_manifest(daemon.conf_dir, manifest())
    daemon.start()
    daemon.ctl("start", "--all")
    waiting = '\n[services.{name}]\nkind = "worker"\ncommand = ["{python}", "{worker}"]\nafter = ["{after}"]\n'
    first = waiting.format(name="dependent", python=sys.executable, worker=WORKER, after="flapping")
    write_manifest(daemon.conf_dir, manifest(extra=flapping + first))
    result = daemon.ctl("reload-config", check=False, timeout=60)  # the timeout is only a hang check
    assert result.returncode == 1, result.stdout
    assert "flapping: in backoff, the daemon keeps trying" in result.stderr, result.stderr
    assert "dependent: waits for flapping, which is backoff" in result.stderr, result.stderr

    # one more, through the first, added while flapping is in backoff already
    second = waiting.format(name="second", python=sys.executable, worker=WORKER, after="dependent")
    write_manifest(daemon.conf_dir, manifest(extra=flapping + first + second))
    result = daemon.ctl("reload-config", check=False, timeout=60)
    assert result.returncode == 1, result.stdout
    assert "second: waits for flapping, which is backoff" in result.stderr, result.stderr
    assert daemon.status()["steady"]["state"] == "running"
