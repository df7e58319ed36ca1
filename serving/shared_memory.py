"""State that every worker of ``serve.py --workers N`` shares: one memory-mapped file and its lock.

Why: a budget (:mod:`serving.budget`) and a conversation's model (:mod:`serving.sessions`) belong
to the service, not to one of its processes; the kernel spreads connections over the workers, so
the feedback of a decision, or the next turn of a conversation, often reaches another worker.
The workers map one file of fixed size from the supervisor's state folder
(:mod:`serving.workers`) and update it under an exclusive ``flock``; one process maps anonymous
memory instead and takes a thread lock. Reads of single aligned 8-byte values need no lock.

The file is laid out as fixed-size regions, each claimed once, in order, by the code that uses it
(:meth:`SharedMemory.region`), so every worker finds every region at the same offset: the workers
run the same code on the same settings. A region is zero until a worker initializes it; the
first 8 bytes of each region are its "initialized" flag (:meth:`Region.initialize_once`),
so a worker restarted by the supervisor finds the state of the others instead of resetting it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Size of one cell of a region: every value is an 8-byte integer or float.
CELL_BYTES = 8

#: One entry of a :class:`KeyedTable`: a key (0: empty), an integer tag and a float value.
ENTRY = struct.Struct("<qqd")
_FLAG = struct.Struct("<q")
#: Entries a key of a :class:`KeyedTable` may live in (its window), read in one piece.
PROBES = 8
_WINDOW_KEYS = struct.Struct("<" + "q16x" * PROBES)  # the keys of a window, skipping tags and values


class SharedMemory:
    """A zero-filled memory map of ``size_bytes``, private to this process or shared through ``path``."""

    def __init__(self, size_bytes: int, path: Path | None = None) -> None:
        """Map ``size_bytes`` of anonymous memory, or of ``path`` (created, or joined if another
        worker created it first: both sizes are the same)."""
        self.path = path
        self._offset = 0
        self._size = size_bytes
        self._thread_lock = threading.Lock()
        if path is None:
            self._fd = -1
            self.buffer = mmap.mmap(-1, size_bytes)
        else:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with self._file_lock():
                if os.fstat(self._fd).st_size < size_bytes:
                    os.ftruncate(self._fd, size_bytes)  # zero-filled
            self.buffer = mmap.mmap(self._fd, size_bytes)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def lock(self) -> AbstractContextManager[object]:
        """Exclusive access across threads and, for a shared file, across the workers (a plain
        thread lock for private memory: this is taken on every routed query)."""
        return self._thread_lock if self._fd < 0 else _BothLocks(self._thread_lock, self._fd)

    def region(self, cells: int) -> Region:
        """Claim the next ``cells`` 8-byte cells (and a flag cell before them) as a :class:`Region`.

        Raises:
            ValueError: the map is too small for the regions claimed.
        """
        end = self._offset + (1 + cells) * CELL_BYTES
        if end > self._size:
            raise ValueError(f"shared memory of {self._size} bytes is too small for {end} bytes of regions")
        region = Region(self, self._offset + CELL_BYTES, cells)
        self._offset = end
        return region

    def close(self) -> None:
        """Unmap (the file stays for the other workers; the supervisor removes its folder)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -2  # closed: never a lock again


class _BothLocks:
    """The thread lock, then an exclusive ``flock`` on the shared file (released in reverse)."""

    __slots__ = ("fd", "thread_lock")

    def __init__(self, thread_lock: threading.Lock, fd: int) -> None:
        self.thread_lock = thread_lock
        self.fd = fd

    def __enter__(self) -> None:
        self.thread_lock.acquire()
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.thread_lock.release()


@dataclass(frozen=True)
class Region:
    """``cells`` 8-byte cells of a :class:`SharedMemory` from byte ``offset``, claimed by one user,
    after their "initialized" flag. Values are read and written with :mod:`struct` (a few hundred
    nanoseconds each, far less than numpy's scalar access)."""

    memory: SharedMemory
    offset: int
    cells: int

    def initialize_once(self, initialize: Callable[[], None]) -> None:
        """Call ``initialize`` (under the lock) unless a process already did for this region."""
        flag = self.offset - CELL_BYTES
        with self.memory.lock():
            if _FLAG.unpack_from(self.memory.buffer, flag)[0] == 0:
                initialize()
                _FLAG.pack_into(self.memory.buffer, flag, 1)


def key_of(text: str) -> int:
    """A non-zero 63-bit key for ``text``, so that 0 can mean an empty entry: the first 15 hex
    digits of a query id the service made (32 random hex digits, :func:`uuid.uuid4`), else 63 bits
    of its blake2b digest (any other id a client sends, a session name, a model name)."""
    if len(text) == 32:
        try:
            return int(text[:15], 16) or 1
        except ValueError:
            pass
    digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return (digest >> 1) or 1


class KeyedTable:
    """A table of ``capacity`` entries ``key -> (tag, value)`` in shared memory, for many short-lived keys.

    A key lives in one of the :data:`PROBES` entries from ``key mod capacity`` on (linear probing
    in a bounded window, read in one ``struct`` call): :meth:`put` takes the key's own entry,
    else the first empty one, else the window's first (its older key is forgotten, as a cache
    forgets; the callers count what that costs them). Lookups scan the whole window and compare
    the whole key, so a collision is never mistaken for a hit, and an emptied entry needs no
    tombstone. Writes take the shared lock.
    """

    def __init__(self, memory: SharedMemory, capacity: int) -> None:
        """Claim ``capacity`` entries of ``memory`` (and :data:`PROBES` − 1 more, so that no window wraps)."""
        self.offset = memory.region((capacity + PROBES - 1) * ENTRY.size // CELL_BYTES).offset
        self.memory = memory
        self.capacity = capacity

    def _scan(self, key: int) -> tuple[int, int | None, int | None]:
        """``(window start, offset of key's entry or None, offset of the first empty entry or None)``,
        from one read of the window's keys; the caller holds the lock."""
        start = self.offset + (key % self.capacity) * ENTRY.size
        keys = _WINDOW_KEYS.unpack_from(self.memory.buffer, start)
        own = start + keys.index(key) * ENTRY.size if key in keys else None
        empty = start + keys.index(0) * ENTRY.size if 0 in keys else None
        return start, own, empty

    def put(self, key: int, tag: int, value: float) -> None:
        """Store ``(tag, value)`` for ``key`` (see the class docstring for where)."""
        with self.memory.lock():
            self.write(key, tag, value)

    def write(self, key: int, tag: int, value: float) -> None:
        """:meth:`put` for a caller that holds the memory's lock already."""
        start, own, empty = self._scan(key)
        target = own if own is not None else empty if empty is not None else start
        ENTRY.pack_into(self.memory.buffer, target, key, tag, value)

    def _take(self, key: int, remove: bool) -> tuple[int, float] | None:
        with self.memory.lock():
            own = self._scan(key)[1]
            if own is None:
                return None
            _, tag, value = ENTRY.unpack_from(self.memory.buffer, own)
            if remove:
                ENTRY.pack_into(self.memory.buffer, own, 0, 0, 0.0)
        return tag, value

    def get(self, key: int) -> tuple[int, float] | None:
        """``(tag, value)`` stored for ``key``, or None (never stored, or overwritten)."""
        return self._take(key, remove=False)

    def pop(self, key: int) -> tuple[int, float] | None:
        """Like :meth:`get`, and empty the entry."""
        return self._take(key, remove=True)
