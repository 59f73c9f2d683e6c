"""The scoreboard of a gunicorn arbiter: what each worker is doing, in a small shared file.

gunicorn keeps no counters a supervisor can read (its control socket tells
pids, not requests; its metrics go to StatsD). So the hooks the daemon
installs write them here, as uWSGI's workers write its scoreboard: the
arbiter creates the file and maps it before it forks, each worker updates
its own slot (busy while a request is served, requests, exceptions, bytes
sent, time spent), and the daemon reads the file to sample. The counters
live with the arbiter, not the daemon: a daemon that is killed and started
again reads on from the same figures.

Loaded by path by `boot.py` in the service's own Python, and imported by
the daemon: keep it to the standard library.
"""

import mmap
import os
import struct

MAGIC = b"WSGB"
VERSION = 1
HEADER = struct.Struct("=4sIqI44x")  # magic, version, arbiter pid, slots
SLOT = struct.Struct("=qIIQQQQQd")  # pid, state, busy, requests, exceptions, timeouts, tx, busy µs, spawned at
assert HEADER.size == 64 and SLOT.size == 64

# a slot's state
FREE, BOOTING, READY, EXITING = 0, 1, 2, 3
STATE_NAMES = {FREE: "free", BOOTING: "loading", READY: "idle", EXITING: "exiting"}

# offsets inside a slot, for the fields a worker updates in place
_BUSY = 12
_COUNTERS = 16  # requests, exceptions, timeouts, tx, busy µs: five Q from here

# after the slots, one field per slot: "METHOD URI" of the request its worker last began while busy
# (NUL-padded UTF-8; empty when idle). A board of an arbiter started before it existed ends at the slots.
REQUEST_SIZE = 256


def size_for(slots):
    return HEADER.size + slots * SLOT.size


def board_size(slots):
    return size_for(slots) + slots * REQUEST_SIZE


def create(path, slots, arbiter_pid):
    """A new, empty board at `path` (only its owner may read it), mapped shared; the map."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, board_size(slots))
        board = mmap.mmap(fd, board_size(slots), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    HEADER.pack_into(board, 0, MAGIC, VERSION, arbiter_pid, slots)
    return board


def slot_offset(index):
    return HEADER.size + index * SLOT.size


def claim(board, index, pid, now):
    """The arbiter gives slot `index` to a new worker (its counters carry on, as uWSGI's do)."""
    fields = list(SLOT.unpack_from(board, slot_offset(index)))
    fields[0], fields[1], fields[2], fields[8] = pid, BOOTING, 0, now
    SLOT.pack_into(board, slot_offset(index), *fields)


def set_state(board, index, state):
    struct.pack_into("=I", board, slot_offset(index) + 8, state)


def set_pid(board, index, pid):
    struct.pack_into("=q", board, slot_offset(index), pid)


def add_busy(board, index, delta):
    """Requests the slot's worker serves, changed by `delta`; the new count."""
    offset = slot_offset(index) + _BUSY
    (busy,) = struct.unpack_from("=I", board, offset)
    busy = max(0, busy + delta)
    struct.pack_into("=I", board, offset, busy)
    return busy


def set_request(board, index, text):
    slots = HEADER.unpack_from(board, 0)[3]
    if len(board) < board_size(slots):
        return
    offset = size_for(slots) + index * REQUEST_SIZE
    data = text.encode("utf-8", "replace")[: REQUEST_SIZE - 1]
    board[offset : offset + REQUEST_SIZE] = data.ljust(REQUEST_SIZE, b"\0")


def read_requests(data, slots):
    """The request field of each slot ("" when idle); "" for all on a board that has none."""
    if len(data) < board_size(slots):
        return [""] * slots
    start = size_for(slots)
    fields = (data[start + i * REQUEST_SIZE : start + (i + 1) * REQUEST_SIZE] for i in range(slots))
    return [field.split(b"\0", 1)[0].decode("utf-8", "replace") for field in fields]


def count(board, index, requests, exceptions, timeouts, tx, busy_us):
    offset = slot_offset(index) + _COUNTERS
    now = struct.unpack_from("=5Q", board, offset)
    struct.pack_into(
        "=5Q",
        board,
        offset,
        now[0] + requests,
        now[1] + exceptions,
        now[2] + timeouts,
        now[3] + tx,
        now[4] + busy_us,
    )


def read(data):
    """(arbiter pid, [slot tuples]) from a board's bytes; ValueError when it is not one."""
    if len(data) < HEADER.size:
        raise ValueError("too short for a scoreboard")
    magic, version, pid, slots = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION or len(data) < size_for(slots):
        raise ValueError("not a scoreboard of this version")
    return pid, [SLOT.unpack_from(data, slot_offset(i)) for i in range(slots)]
