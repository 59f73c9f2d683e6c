"""The pure parts of the log pipeline: entries, levels, the file format."""

from supervisor.logs import format_line, priority_of, split_entries
from supervisor.service import LogLine

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
