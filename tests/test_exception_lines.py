"""Which log lines say why an app failed: real exceptions only, never uWSGI's banner."""

from supervisor.observe.exceptions import ExceptionReader, exception_line
from support import ROOT

# the output of a real pyuwsgi 2.0.30 vassal whose app raised at import (paths shortened)
FIXTURE = ROOT / "tests" / "fixtures" / "uwsgi" / "app-failed-to-load.log"

BANNER = [
    "machine: x86_64",
    "nodename: host",
    "your processes number limit is 1024",
    "detected binary path: /opt/venv/bin/python3",
    "uwsgi socket 0 bound to UNIX address /run/wsgi-supervisor/aodh.sock fd 3",
    "os: Linux-6.1.0 #1 SMP PREEMPT_DYNAMIC",
    "clock source: unix",
    "thunder lock: enabled",
    "lock engine: pthread robust mutexes",
    "current working directory: /",
    "*** WARNING: you are running uWSGI as root !!! (use the --uid flag) ***",
    "*** Operational MODE: preforking ***",
    "spawned uWSGI worker 1 (pid: 4243, cores: 1)",
]

# what oslo.log's sys.excepthook writes for an exception at import (aodh's, as the issue shows it)
OSLO = ROOT / "tests" / "fixtures" / "oslo-log" / "excepthook.log"


def read(lines):
    reader = ExceptionReader()
    found = [reader.feed(line) for line in lines]
    return [f for f in found if f]


def test_no_banner_line_is_an_exception():
    lines = FIXTURE.read_text().splitlines()
    banner = lines[: lines.index("Traceback (most recent call last):")]
    assert "machine: x86_64" in banner and "nodename: vm" in banner
    for line in [*banner, *BANNER]:
        assert exception_line(line) is None, line
    assert read([*banner, *BANNER]) == []


def test_the_traceback_of_the_real_vassal_gives_the_reason():
    assert read(FIXTURE.read_text().splitlines()) == ["RuntimeError: probe app refuses to import: database is down"]


def test_oslo_log_excepthook_lines():
    assert read(OSLO.read_text().splitlines()) == ["TypeError: sequence item 0: expected str instance, bytes found"] * 2
    assert exception_line("2026-11-30 12:00:01.123 4242 ERROR nova.wsgi [-] LookupError: No section 'osapi_compute'")


def test_the_line_that_ends_a_traceback_counts_whatever_its_class():
    lines = [
        "Traceback (most recent call last):",
        '  File "/opt/nova/lib/python3.11/site-packages/keystoneauth1/loading/base.py", line 1, in get_plugin_loader',
        "    raise exceptions.NoMatchingPlugin(name)",
        "    ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
        "keystoneauth1.exceptions.auth_plugins.NoMatchingPlugin: The plugin passwd could not be found",
        "unable to load app 0 (mountpoint='') (callable not found or import error)",
    ]
    assert read(lines) == [lines[4]]
    # outside a traceback only known exception classes count
    assert exception_line(lines[4]) is None
    assert exception_line("KeyError: 'OS_NOVA_CONFIG_FILES'") == "KeyError: 'OS_NOVA_CONFIG_FILES'"
    assert exception_line("oslo_config.cfg.ConfigFilesNotFoundError: Failed to find some config files: x.conf")
    assert exception_line("Exception: boom") == "Exception: boom"
    assert exception_line("2026-11-30 12:00:01.123 4242 INFO aodh [-] machine: x86_64") is None
    assert exception_line("2026-11-30 12:00:01.123 4242 ERROR aodh [-] could not connect: retrying") is None


def test_chained_tracebacks_end_with_the_last_exception():
    lines = [
        "Traceback (most recent call last):",
        '  File "a.py", line 1, in <module>',
        "KeyError: 'x'",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "a.py", line 3, in <module>',
        "RuntimeError: config is incomplete",
    ]
    assert read(lines)[-1] == "RuntimeError: config is incomplete"


def test_real_oslo_log_output():
    """barbican 23.0.0's own output (oslo.log), from an exception in a request: a chained traceback."""
    lines = (ROOT / "tests" / "fixtures" / "oslo-log" / "barbican-unhandled.log").read_text().splitlines()
    found = read(lines)
    assert found[0] == "AttributeError: request_id"  # the CRITICAL "Unhandled error: …" line
    assert "KeyError: 'request_id'" in found and found[-1] == "AttributeError: request_id"
    assert all(":" in f and not f.startswith(("File", "Traceback", "During")) for f in found), found
