"""`wsgictl top`'s screen as text: rows from two polls of status, the worst first, fitted to the terminal."""

from supervisor.cli.top_view import Row, quantile, render, rows_between

LE = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]


def latency(per_bucket):
    """A contract `latency` object from counts per bucket (not cumulative), +Inf last."""
    counts, total = [], 0
    for n in per_bucket:
        total += n
        counts.append(total)
    return {"le": LE, "counts": counts, "sum": 0.0}


def api(name, requests, per_bucket=None, responses=None, state="running", ready=True, **extra):
    info = {
        "name": name,
        "state": state,
        "ready": ready,
        "restarts": 0,
        "requests": requests,
        "workers": [{"pid": 1, "status": "busy"}, {"pid": 2, "status": "idle"}],
        "listen_queue": 0,
        "rss_bytes": 50 << 20,
        **extra,
    }
    if per_bucket is not None:
        info["latency"] = latency(per_bucket)
    if responses is not None:
        info["responses"] = responses
    return info


def test_percentiles_and_error_share_come_from_the_difference_of_two_polls():
    before = [api("nova", 100, [100] + [0] * 12, {"2xx": 100, "3xx": 0, "4xx": 0, "5xx": 0})]
    # in the second: 10 more requests, 9 under 5 ms and 1 between 0.5 and 1 s, 1 of them a 5xx
    now = [api("nova", 110, [109, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], {"2xx": 109, "3xx": 0, "4xx": 0, "5xx": 1})]
    (row,) = rows_between(before, now, 2.0)
    assert row.req_s == 5.0
    assert row.p50 is not None and row.p50 <= 0.005
    assert row.p99 is not None and 0.5 < row.p99 <= 1.0
    assert row.errors == 0.1
    assert (row.busy, row.workers) == (1, 2)


def test_the_first_requests_of_a_service_have_percentiles_at_once():
    """Before its first request a service has no `latency` or `responses`: the next poll counts from zero."""
    before = [api("placement", 0)]
    now = [api("placement", 4, [4] + [0] * 12, {"2xx": 3, "3xx": 0, "4xx": 0, "5xx": 1})]
    (row,) = rows_between(before, now, 1.0)
    assert row.p50 is not None and row.p50 <= 0.005 and row.errors == 0.25


def test_figures_that_cannot_be_had_are_dashes():
    worker = {"name": "conductor", "state": "running", "ready": True, "restarts": 2, "rss_bytes": 1 << 20}
    quiet = api("keystone", 7, [7] + [0] * 12, {"2xx": 7, "3xx": 0, "4xx": 0, "5xx": 0})
    old = api("glance", 3)  # a daemon without latency: p50/p99 are not guessed
    rows = {r.name: r for r in rows_between([worker, quiet, old], [worker, quiet, api("glance", 4)], 1.0)}
    assert rows["conductor"].req_s is None and rows["conductor"].workers is None
    assert rows["keystone"].req_s == 0 and rows["keystone"].p99 is None and rows["keystone"].errors is None
    assert rows["glance"].req_s == 1.0 and rows["glance"].p50 is None
    # the first poll has no rates at all
    assert rows_between(None, [quiet], 1.0)[0].req_s is None
    text = "\n".join(render(list(rows.values()), 80, 24, "title"))
    conductor = next(line for line in text.splitlines() if line.startswith("conductor"))
    assert conductor.split()[3:9] == ["-", "-", "-", "-", "-", "-"]


def test_worst_rows_first():
    before = [
        api("fine", 0, [0] * 13, {"2xx": 0, "5xx": 0}),
        api("slow", 0, [0] * 13, {"2xx": 0, "5xx": 0}),
        api("erring", 0, [0] * 13, {"2xx": 0, "5xx": 0}),
    ]
    now = [
        api("fine", 10, [10] + [0] * 12, {"2xx": 10, "5xx": 0}),
        api("slow", 10, [0] * 9 + [10, 0, 0, 0], {"2xx": 10, "5xx": 0}),
        api("erring", 10, [10] + [0] * 12, {"2xx": 5, "5xx": 5}),
        api("starting", 0, state="starting", ready=False),
        api("unready", 0, ready=False),
        api("crashing", 0, state="backoff", ready=False),
        api("broken", 0, state="failed", ready=False),
    ]
    order = [r.name for r in rows_between(before, now, 1.0)]
    assert order == ["broken", "crashing", "starting", "unready", "erring", "slow", "fine"]


def test_quantile_interpolates_inside_a_bucket_and_stops_at_the_last_bound():
    assert quantile(0.5, [1.0, 2.0], [0, 10, 10]) == 1.5
    assert quantile(0.99, [1.0, 2.0], [0, 0, 4]) == 2.0  # all past the last bound
    assert quantile(0.5, [1.0, 2.0], [0, 0, 0]) is None


def test_an_80x24_terminal_gets_every_column_and_long_names_cut():
    rows = [Row(name=f"service-with-a-very-long-name-{i:02d}", state="running", ready=True) for i in range(40)]
    lines = render(rows, 80, 24, "wsgictl top  host")
    assert len(lines) == 24 and all(len(line) < 80 for line in lines)
    header = lines[1].split()
    assert header == ["NAME", "STATE", "RDY", "REQ/S", "P50", "P99", "5XX%", "BUSY", "QUEUE", "PSS", "RST"]
    assert lines[2].startswith("service-with-a-~ running")
    assert lines[-1] == "... and 19 more"  # 21 rows under the title and the header


def test_a_narrow_terminal_drops_the_least_needed_columns_first():
    rows = [Row(name="placement", state="running", ready=True, req_s=12.0)]
    header = render(rows, 50, 10, "t")[1].split()
    assert header[:4] == ["NAME", "STATE", "RDY", "REQ/S"]
    assert "PSS" not in header and "QUEUE" not in header
    assert all(len(line) < 50 for line in render(rows, 50, 10, "t"))
    assert len(render(rows, 20, 3, "a very long title that is cut")[0]) < 20


def test_control_characters_in_a_row_are_shown_as_text():
    rows = [Row(name="w\x1b[2J", state="running", ready=True)]
    lines = render(rows, 80, 24, "title \x1b]0;x\x07")
    assert not any(c in "".join(lines) for c in "\x1b\x07")
    assert lines[0].startswith("title \\x1b]0;x\\x07") and lines[2].startswith("w\\x1b[2J")
