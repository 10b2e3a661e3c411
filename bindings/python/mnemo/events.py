"""The :class:`Events` class: a database's changes, queued for the caller to read.

A pull-based alternative to :meth:`mnemo.Database.subscribe`: no callback runs on a
library thread. Read with :meth:`Events.next` or by iterating, on any thread, or wait for
:meth:`Events.fileno` to become readable with :mod:`selectors`, :mod:`select` or
:meth:`asyncio.loop.add_reader <asyncio.loop.add_reader>`.
"""

from __future__ import annotations

import ctypes
import math
import time
from collections.abc import Iterator
from typing import Any, Callable, Union

from . import _native
from ._handle import HandleOwner, own
from ._native import lib
from ._values import from_json
from .errors import InvalidArgument

#: One event: ``{"db": str, "entry": str, "remote": bool, "origin": str}`` for a change
#: (``origin``: ``"local"`` for a commit through this instance, ``"sync"`` for an entry sync
#: brought, ``"other_process"`` for one another process stored in the same storage;
#: ``remote`` is False only for ``"local"``), or ``{"overflow": int}`` when that many
#: changes were dropped because the queue was full.
Event = dict[str, Union[str, bool, int]]

#: How many changes the library queues before it counts the next ones as dropped.
CAPACITY = 1024

#: The longest single wait inside the library, in milliseconds: a longer wait is made of
#: such slices, so that Ctrl-C and :meth:`Events.close` from another thread are noticed.
_SLICE_MS = 500

#: The longest wait the C calls take, in milliseconds (a ``uint32_t``: about 49.7 days).
_MAX_TIMEOUT_MS = 0xFFFF_FFFF


def _check_timeout(timeout: float, what: str) -> None:
    """ValueError if ``timeout`` is NaN or below 0, naming what it may be (``what``)."""
    try:
        nan = math.isnan(timeout)
    except OverflowError:
        nan = False  # an int beyond a float's range: compared exactly below
    if nan or timeout < 0:
        raise ValueError(f"timeout must be {what}, not {timeout!r}")


def _timeout_ms(timeout: float) -> int:
    """A checked ``timeout`` in seconds as whole milliseconds for the C calls: rounded up,
    so a wait is never cut short, and at most :data:`_MAX_TIMEOUT_MS` (longer timeouts,
    ``math.inf`` included, wait that long). Compared before rounding: ``math.ceil`` of an
    infinite product raises OverflowError."""
    ms = timeout * 1000
    return _MAX_TIMEOUT_MS if ms >= _MAX_TIMEOUT_MS else math.ceil(ms)


class Events(HandleOwner):
    """The changes of one database from :meth:`mnemo.Database.watch` on, local and remote,
    in order.

    The library queues up to :data:`CAPACITY` changes. If the reader falls further behind,
    the changes beyond are dropped and counted, and the reader gets
    ``{"overflow": n}`` in their place: a loss is always reported.

    An instance keeps at most so many open at once, across its databases (its ``watchers``
    limit, 1024 by default: see :meth:`mnemo.Instance.set_limits`); past it,
    :meth:`mnemo.Database.watch` raises Busy. Closing one gives its place back.

    Use it as a context manager or call :meth:`close`. Safe to use from several threads:
    each event goes to exactly one reader; :meth:`close` from another thread ends a
    blocking :meth:`next` (which then raises InvalidArgument) or iteration (which stops)
    within half a second.
    """

    def __init__(self, make: Callable[..., int], *args: Any) -> None:
        """Internal: owns the ``mnemo_events *`` that ``make(*args, &out)`` makes. Use
        :meth:`mnemo.Database.watch`."""
        own(
            self,
            make,
            *args,
            free=lib.mnemo_events_free,
            closed_error=lambda: InvalidArgument("invalid argument: the Events are closed"),
        )

    def next(self, timeout: float | None = None) -> Event | None:
        """The oldest pending event, waiting up to ``timeout`` seconds for one (None or
        ``math.inf``: without limit, as long as it takes; 0: do not wait). Returns None when
        none came in time.

        Raises ValueError for a negative or NaN timeout, InvalidArgument once closed.
        """
        deadline = None
        if timeout is not None:
            _check_timeout(timeout, "None or a number of seconds >= 0")
            # An infinite deadline is never reached: the wait is made of slices, as for None.
            try:
                deadline = time.monotonic() + timeout
            except OverflowError:
                deadline = math.inf  # an int beyond a float's range
        while True:
            if deadline is None:
                wait_ms = _SLICE_MS
            else:
                # Compared before rounding: math.ceil of an infinite product raises.
                left_ms = (deadline - time.monotonic()) * 1000
                wait_ms = _SLICE_MS if left_ms >= _SLICE_MS else max(0, math.ceil(left_ms))
            event = self._take(wait_ms)
            if event is not None:
                return event
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _take(self, wait_ms: int) -> Event | None:
        out = _native.owned_str_t()
        with self._handle.use() as ptr:
            try:
                _native.check(lib.mnemo_events_next(ptr, wait_ms, ctypes.byref(out)))
                if not out:
                    return None  # timed out
                event: Any = from_json(ctypes.string_at(out).decode("utf-8"))
                return dict(event)
            finally:
                lib.mnemo_string_free(out)

    def fileno(self) -> int:
        """A file descriptor that is readable exactly while events are pending (a socket):
        wait on it, then call :meth:`next`; never read from or close it. Valid until
        :meth:`close`. Raises InvalidArgument once closed."""
        fd = ctypes.c_int()
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_events_fd(ptr, ctypes.byref(fd)))
        return fd.value

    def __iter__(self) -> Iterator[Event]:
        """Yields events as they come, blocking between them; stops once :meth:`close` was
        called (from another thread, or from the loop's body)."""
        while True:
            try:
                event = self.next()
            except InvalidArgument:
                if self.closed:
                    return
                raise
            assert event is not None  # next() without a timeout never returns None
            yield event

    def close(self) -> None:
        """Stops watching and frees the queue, with any events still pending; the file
        descriptor is closed. Idempotent."""
        super().close()

    def __repr__(self) -> str:
        return f"<mnemo.Events {'closed' if self.closed else 'open'}>"
