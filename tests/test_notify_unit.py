"""The notify sockets' rules without a daemon: who speaks for a worker, and how often a refusal is said."""

import os

from supervisor.workers.notify import REFUSED_SAY_EVERY, NotifySockets, Owner, _Refusals, refusal


class Clock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now


def test_only_the_main_process_or_its_descendants_as_the_services_user_speak():
    me = os.getpid()
    mine = Owner(os.getuid(), os.getgid(), lambda: os.getppid())  # this process is a descendant of its parent
    assert refusal(mine, (me, os.getuid())) is None
    assert refusal(mine, (os.getppid(), os.getuid())) is None
    assert "not the service's user" in refusal(mine, (me, os.getuid() + 1))
    assert "nor one of its descendants" in refusal(Owner(os.getuid(), 0, lambda: me), (os.getppid(), os.getuid()))
    assert "no main process" in refusal(Owner(os.getuid(), 0, lambda: None), (me, os.getuid()))
    assert refusal(mine, None) == "no sender credentials"


def test_a_refusal_is_said_at_most_once_a_minute_with_how_many_were_dropped_meanwhile():
    said = []
    clock = Clock()
    sockets = NotifySockets(clock, deliver=lambda *_: None, say=lambda name, text, prio: said.append(text))
    refusals = _Refusals()
    for _ in range(5):
        sockets._refused("w", refusals, "from pid 1")
    assert said == ["dropped a notification from pid 1"]
    clock.now = REFUSED_SAY_EVERY + 1
    sockets._refused("w", refusals, "from pid 2")
    assert said[1] == "dropped a notification from pid 2 (4 more dropped since the last message)"
