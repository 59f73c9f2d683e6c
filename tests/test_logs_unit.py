"""The pure parts of the log pipeline: entries, levels, the file format."""

import asyncio

from supervisor.logs.pipeline import format_line
from supervisor.logs.records import Records, priority_of, split_entries
from supervisor.state.service import LogLine

TRACEBACK = """2026-11-25 10:00:00.000 1234 ERROR nova.conductor [-] Unexpected exception
Traceback (most recent call last):
  File "/opt/nova/conductor.py", line 10, in run
    do()
ValueError: bad
2026-11-25 10:00:00.001 1234 INFO nova.conductor [-] carrying on
"""


def test_a_traceback_stays_one_entry():
    entries = split_entries(TRACEBACK)
    assert len(entries) == 2
    assert entries[0].startswith("2026-11-25 10:00:00.000 1234 ERROR") and entries[0].endswith("ValueError: bad")
    assert entries[1].endswith("carrying on")


def test_bare_traceback_and_chained_exceptions():
    text = (
        'Traceback (most recent call last):\n  File "x", line 1\nKeyError: 1\n\n'
        "During handling of the above exception, another exception occurred:\n\n"
        'Traceback (most recent call last):\n  File "y", line 2\nRuntimeError: 2\nnext line\n'
    )
    entries = split_entries(text)
    assert entries[0].startswith("Traceback") and "KeyError: 1" in entries[0]
    assert "RuntimeError: 2" in entries[-2] or "RuntimeError: 2" in entries[0]
    assert entries[-1] == "next line"


def test_levels_from_oslo_and_python_lines():
    assert priority_of("2026-11-25 10:00:00.000 1234 ERROR nova.api [req-1] boom") == 3
    assert priority_of("2026-11-25 10:00:00.000 1234 WARNING oslo_db [-] slow") == 4
    assert priority_of("2026-11-25 10:00:00.000 1234 DEBUG x [-] y") == 7
    assert priority_of("ERROR:root:plain python logging") == 3
    assert priority_of("Traceback (most recent call last):") == 3
    assert priority_of("a line with no level, mentioning errors later on") == 6


def test_file_format_keeps_an_entry_on_indented_lines():
    line = format_line(LogLine(0.5, "nova-api", "o", "first\nsecond", 3))
    head, cont, end = line.split("\n")
    assert head.endswith(" nova-api output ERROR first") and cont == "    second" and end == ""


def _line(service, text, ts=0.0):
    return LogLine(ts, service, "o", text, 6)


def test_files_rotate_by_size_and_keep_n(tmp_path):
    from supervisor.logs.pipeline import Drops, FileSink

    drops = Drops()
    sink = FileSink(tmp_path / "logs", drops, max_bytes=1000, keep=3)
    for i in range(200):
        sink(_line("api", f"line {i:04d} " + "x" * 40))
    sink(_line("worker", "another service, another file"))
    sink.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["api.log", "api.log.1", "api.log.2", "api.log.3", "worker.log"]
    assert all(p.stat().st_size <= 1000 for p in (tmp_path / "logs").glob("api.log*"))
    # the newest lines are in NAME.log, the older ones in .1, .2, .3, none lost in between
    kept = []
    for name in ("api.log.3", "api.log.2", "api.log.1", "api.log"):
        kept += [int(line.split()[-2]) for line in (tmp_path / "logs" / name).read_text().splitlines()]
    assert kept == list(range(kept[0], 200))
    assert drops.count == 0


def test_a_failing_write_is_counted_and_harms_no_other_file(tmp_path):
    from supervisor.logs.pipeline import Drops, FileSink

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "api.log").symlink_to("/dev/full")  # every write: ENOSPC
    drops = Drops()
    sink = FileSink(logs, drops, max_bytes=10000, keep=2)
    for i in range(5):
        sink(_line("api", f"lost {i}"))
        sink(_line("worker", f"kept {i}"))
    sink.close()
    assert drops.count == 5
    assert (logs / "worker.log").read_text().count("kept") == 5
    assert (logs / "api.log").is_symlink()  # a device is never rotated away


# what keystone printed at import (eventlet's deprecation warning, through warnings.showwarning)
EVENTLET_WARNING = """/opt/keystone/lib/python3.11/site-packages/oslo_service/service.py:25: \
EventletDeprecationWarning: \n\
Eventlet is deprecated. It is currently being maintained in bugfix mode, and
we strongly recommend against using it for new projects.

If you are already using Eventlet, we recommend migrating to a different
framework.  For more detail see
https://eventlet.readthedocs.io/en/latest/asyncio/migration.html#migration-guide

  import eventlet
2026-12-07 10:00:00.000 1234 INFO keystone.server [-] started
"""


def test_a_warning_with_its_message_and_source_line_is_one_entry_at_warning():
    warning, started = split_entries(EVENTLET_WARNING)
    assert warning.startswith("/opt/keystone/") and warning.endswith("  import eventlet")
    assert "\n\nIf you are already using Eventlet" in warning  # its blank line stays inside it
    assert priority_of(warning) == 4
    assert started.endswith("started") and priority_of(started) == 6


def test_no_entry_is_blank_nor_starts_with_a_blank_line():
    entries = split_entries("one\n\n  indented after a blank line\n\n\ntwo\n")
    assert entries == ["one\n  indented after a blank line", "two"]


def _records(hold=0.05):
    loop = asyncio.new_event_loop()
    got: list[tuple[str, str]] = []
    return loop, Records(loop, lambda service, entry: got.append((service, entry)), hold), got


def test_a_traceback_cut_between_two_reads_is_one_entry():
    loop, records, got = _records()
    head, tail = TRACEBACK[:120], TRACEBACK[120:]
    records.add("nova-conductor", head[: head.rindex("\n") + 1])
    records.add("nova-conductor", head[head.rindex("\n") + 1 :] + tail)
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()
    assert [entry.split("\n")[-1] for _, entry in got] == ["ValueError: bad", got[1][1]]
    assert got[0][1].startswith("2026-11-25 10:00:00.000 1234 ERROR") and got[1][1].endswith("carrying on")


def test_a_record_that_could_go_on_goes_alone_after_the_hold_and_services_do_not_mix():
    loop, records, got = _records()
    records.add("a", "2026-11-25 10:00:00.000 1234 ERROR a [-] failed\n")
    records.add("b", "  an indented line of b's own\n")
    assert got == [("b", "  an indented line of b's own")]  # b's line is b's, and a's error waits
    loop.run_until_complete(asyncio.sleep(0.1))
    loop.close()
    assert got[1] == ("a", "2026-11-25 10:00:00.000 1234 ERROR a [-] failed")
