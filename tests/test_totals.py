"""Totals that never go down, whatever uWSGI does with its own counters."""

from supervisor.observe.sampler import Totals
from supervisor.uwsgi.core import WorkerStats


def w(slot, pid, requests):
    return WorkerStats(slot, pid, True, "idle", requests, 0, 0, 0, 0, 0, 0, 1, 0)


def test_counts_survive_respawns_reloads_and_new_masters():
    t = Totals()
    t.update(100, (w(1, 11, 3), w(2, 12, 2)))
    assert t.value("requests") == 5
    t.update(100, (w(1, 13, 3), w(2, 12, 4)))  # slot 1 respawned, its counter carried on
    assert t.value("requests") == 7 and t.respawns == 1
    t.update(100, (w(1, 14, 0), w(2, 12, 4)))  # slot 1 respawned and started from zero
    assert t.value("requests") == 7 and t.respawns == 2
    t.update(200, (w(1, 21, 0), w(2, 22, 1)))  # a new master: everything from zero
    assert t.value("requests") == 8
    values = [t.value("requests")]
    for n in range(5):
        t.update(200, (w(1, 21, n), w(2, 22, 1)))
        values.append(t.value("requests"))
    assert values == sorted(values)
