"""The scoreboard of a gunicorn arbiter: what each worker is doing, in a small shared file.

gunicorn keeps no counters a supervisor can read (its control socket tells
pids, not requests; its metrics go to StatsD). So the hooks the daemon
installs write them here, as uWSGI's workers write its scoreboard: the
arbiter creates the file and maps it before it forks, each worker updates
its own slot (busy while a request is served, requests, exceptions, bytes
sent, time spent), and the daemon reads the file to sample. The counters
live with the arbiter, not the daemon: a daemon that is killed and started
again reads on from the same figures.

The daemon makes the file (root's, in its private dir) and hands the
arbiter a descriptor of it; the arbiter maps it and closes the descriptor,
so no process of the service's tree holds one: none can resize the file.
The daemon reads at most what the slot count needs, however large the file.

Loaded by path by `boot.py` in the service's own Python, and imported by
the daemon: keep it to the standard library.
"""

import ctypes
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


SPARE_SLOTS = 4  # room for replacements while the old workers exit
MAX_SLOTS = 1024  # more than any manifest asks for (processes <= 512): a header saying more is not read


def slots_for(processes):
    return processes + SPARE_SLOTS


def size_for(slots):
    return HEADER.size + slots * SLOT.size


def board_size(slots):
    return size_for(slots) + slots * REQUEST_SIZE


def make_file(path, slots):
    """The daemon's side: a new, empty board file at `path` (only its owner may open it); a descriptor of it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, board_size(slots))
    except OSError:
        os.close(fd)
        raise
    return fd


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_fd(fd, slots):
    """The board behind `fd`, mapped shared and writable; the descriptor may be closed at once.

    mmap.mmap would keep a duplicate of the descriptor for as long as the map lives (until
    Python 3.13's trackfd), and every forked worker would inherit it, free to resize the file:
    libc's mmap keeps none.
    """
    size = board_size(slots)
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if address in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return memoryview((ctypes.c_ubyte * size).from_address(address)).cast("B")


def unmap(board):
    address, size = ctypes.addressof(board.obj), board.nbytes
    board.release()
    _libc.munmap(address, size)


def start(board, slots, arbiter_pid):
    """The arbiter signs a fresh board: its pid and slot count."""
    HEADER.pack_into(board, 0, MAGIC, VERSION, arbiter_pid, slots)


def read_file(path):
    """A board's bytes, as many as its slot count needs and no more, whatever the file's size."""
    with open(path, "rb", buffering=0) as f:
        head = os.pread(f.fileno(), HEADER.size, 0)
        if len(head) < HEADER.size:
            raise ValueError("too short for a scoreboard")
        slots = HEADER.unpack_from(head, 0)[3]
        if slots > MAX_SLOTS:
            raise ValueError(f"a scoreboard of {slots} slots")
        return os.pread(f.fileno(), board_size(slots), 0)


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
    if index >= slots or len(board) < board_size(slots):
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
