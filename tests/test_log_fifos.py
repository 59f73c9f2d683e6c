"""A server instance's log FIFO: request lines sorted out of its output, nothing left unread when it goes."""

import asyncio
import os

from supervisor.layout import Layout
from supervisor.logs.fifos import LogFifos
from supervisor.request_marks import REQUEST_MARK

MARK = REQUEST_MARK.encode()


def _read(tmp_path, writes: list[bytes], unfollow: bool = False) -> list[tuple[str, str, bytes]]:
    """What the log intake is given for `writes` into nova's FIFO (as one vassal's logger writes them)."""
    layout = Layout(tmp_path)
    layout.fifo_dir.mkdir()
    taken: list[tuple[str, str, bytes]] = []

    async def run():
        logs = LogFifos(asyncio.get_running_loop(), layout.vassal_log, lambda *line: taken.append(line))
        logs.follow("nova", "b")
        writer = os.open(layout.vassal_log("nova", "b"), os.O_WRONLY)
        for data in writes:
            os.write(writer, data)
        if unfollow:
            logs.unfollow("nova", "b")  # at once: what the FIFO holds is read as it goes
        else:
            await asyncio.sleep(0.1)
            logs.close()
        os.close(writer)

    asyncio.run(run())
    return taken


def test_request_lines_are_sorted_out_of_the_output_in_order(tmp_path):
    taken = _read(
        tmp_path,
        [
            b"Traceback (most recent call last):\n  File x\nValueError: no\n",
            MARK + b"GET 200 10 5 - - - /a\n" + MARK + b"GET 500 10 5 - - - /b\n",
            b"*** worker 1 suspended ***\n",
        ],
    )
    joined = [(stream, data) for name, stream, data in taken if name == "nova"]
    assert b"".join(data for stream, data in joined if stream == "r") == (
        b"GET 200 10 5 - - - /a\nGET 500 10 5 - - - /b\n"
    )
    output = b"".join(data for stream, data in joined if stream == "o")
    assert output == b"Traceback (most recent call last):\n  File x\nValueError: no\n*** worker 1 suspended ***\n"
    # the writes are in the FIFO before the daemon reads: one read, three runs, the traceback in one piece
    assert [stream for stream, _ in joined] == ["o", "r", "o"]


def test_what_the_fifo_holds_is_read_when_the_vassal_goes_and_the_fifo_is_removed(tmp_path):
    lines = [MARK + f"GET 200 10 5 - - - /{i}\n".encode() for i in range(500)]
    taken = _read(tmp_path, [*lines, b"last words without a newline"], unfollow=True)
    requests = b"".join(data for _, stream, data in taken if stream == "r")
    assert requests.count(b"\n") == 500
    assert taken[-1] == ("nova", "o", b"last words without a newline")
    assert not Layout(tmp_path).vassal_log("nova", "b").exists()


def test_a_plain_file_where_the_fifo_belongs_is_replaced(tmp_path):
    layout = Layout(tmp_path)
    layout.fifo_dir.mkdir()
    layout.vassal_log("nova").write_text("a logger made this when no FIFO was there\n")

    async def run():
        logs = LogFifos(asyncio.get_running_loop(), layout.vassal_log, lambda *line: None)
        logs.follow("nova", "")
        logs.close()

    asyncio.run(run())
    assert layout.vassal_log("nova").is_fifo()


def test_a_request_line_after_a_piece_of_output_without_its_newline_is_still_a_request(tmp_path):
    """Another worker's print() comes as two writes ("text", then its newline); a request line between them."""
    taken = _read(tmp_path, [b"half a line", MARK + b"GET 200 10 5 - - - /a\n", b"\n"])
    assert [(stream, data) for _, stream, data in taken] == [
        ("o", b"half a line"),
        ("r", b"GET 200 10 5 - - - /a\n"),
        ("o", b"\n"),
    ]
