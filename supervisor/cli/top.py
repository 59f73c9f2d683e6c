"""`wsgictl top`: the curses loop around `top_view` (imported only for this command, with curses)."""

from __future__ import annotations

import argparse
import contextlib
import curses
import socket
import sys
import time
from typing import Any

from supervisor.cli.client import Client, Unreachable
from supervisor.cli.top_view import render, rows_between, title_line
from supervisor.control.protocol import EXIT_FAILED

QUIT_KEYS = (ord("q"), ord("Q"))


class Poller:
    """`status` with fresh figures, once a tick, on one connection (a new one after the daemon went away)."""

    def __init__(self, args: argparse.Namespace):
        self.runtime_dir = args.runtime_dir
        self.client: Client | None = None

    def poll(self) -> list[dict[str, Any]]:
        if self.client is None:
            self.client = Client(self.runtime_dir, timeout=5.0)
        try:
            reply = self.client.request({"cmd": "status", "services": [], "fresh": True})
        except Unreachable:
            self.client = None
            raise
        if not reply.get("ok"):
            raise Unreachable(reply.get("error", "status failed"))
        return reply["services"]


class Screen:
    """What is on the screen, and the poll before, for the rates."""

    def __init__(self, poller: Poller, interval: float):
        self.poller = poller
        self.interval = interval
        self.host = socket.gethostname()
        self.before: list[dict[str, Any]] | None = None
        self.before_at = 0.0
        self.lines: list[str] = []

    def tick(self, height: int, width: int) -> None:
        clock = time.strftime("%H:%M:%S")
        try:
            services = self.poller.poll()
        except Unreachable as exc:
            self.before = None
            self.lines = render([], width, height, title_line(self.host, clock, [], f"daemon unreachable: {exc}"))
            return
        now = time.monotonic()
        rows = rows_between(self.before, services, now - self.before_at)
        self.before, self.before_at = services, now
        self.lines = render(rows, width, height, title_line(self.host, clock, services))

    def draw(self, window: Any) -> None:
        window.erase()
        for y, text in enumerate(self.lines):
            attribute = curses.A_REVERSE if y == 1 else curses.A_NORMAL
            try:
                window.addstr(y, 0, text, attribute)
            except curses.error:  # the terminal shrank meanwhile: the next tick fits it again
                break
        window.refresh()


def run(window: Any, screen: Screen) -> int:
    with contextlib.suppress(curses.error):  # a terminal without a cursor to hide
        curses.curs_set(0)
    next_tick = 0.0
    while True:
        now = time.monotonic()
        if now >= next_tick:
            height, width = window.getmaxyx()
            screen.tick(height, width)
            screen.draw(window)
            next_tick = now + screen.interval
        window.timeout(max(10, int((next_tick - time.monotonic()) * 1000)))
        key = window.getch()
        if key in QUIT_KEYS:
            return 0
        if key == curses.KEY_RESIZE:
            next_tick = 0.0  # draw for the new size at once


def cmd_top(args: argparse.Namespace) -> int:
    poller = Poller(args)
    try:
        poller.poll()  # unreachable at the start: say so on a plain terminal, not in a screen
    except Unreachable as exc:
        print(f"wsgictl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return curses.wrapper(run, Screen(poller, args.interval))
