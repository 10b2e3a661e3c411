"""Ownership of one C handle: freed exactly once, never while a call is using it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from ctypes import c_void_p
from types import TracebackType
from typing import Callable, Iterator, TypeVar

from .errors import Error


class Handle:
    """Owns one C handle and the function that releases it.

    :meth:`acquire` lends the pointer for the duration of one C call, until the matching
    :meth:`release` (the fast path of the most frequent calls, in ``try``/``finally``);
    :meth:`use` does both around a ``with`` block. :meth:`close` waits until no call is
    using the pointer, then releases it exactly once. After ``close``, :meth:`acquire` and
    :meth:`use` raise the error made by ``closed_error``; ``close`` again does nothing.
    """

    __slots__ = ("_ptr", "arg", "_free", "_closed_error", "_lock", "_idle", "_users")

    def __init__(
        self,
        ptr: int,
        release: Callable[[int], None],
        closed_error: Callable[[], Error],
    ) -> None:
        self._ptr: int | None = ptr
        #: The pointer as a ``c_void_p``, for the hot paths that call functions without
        #: ``argtypes`` (see :func:`mnemo._native.get_value`); valid only while lent by
        #: :meth:`acquire`.
        self.arg = c_void_p(ptr)
        self._free = release
        self._closed_error = closed_error
        # A plain lock guards _ptr and _users; _idle (on the same lock) wakes a close()
        # waiting for the last user.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._users = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started."""
        return self._ptr is None

    def acquire(self) -> int:
        """Lends the live pointer until :meth:`release`; raises the closed error if the
        handle is closed (and then must not be released)."""
        # acquire()/release() calls rather than `with`: measurably cheaper per call.
        lock = self._lock
        lock.acquire()
        try:
            ptr = self._ptr
            if ptr is None:
                raise self._closed_error()
            self._users += 1
            return ptr
        finally:
            lock.release()

    def release(self) -> None:
        """Ends one loan made by :meth:`acquire`."""
        lock = self._lock
        lock.acquire()
        try:
            self._users -= 1
            # _ptr is None only once close() has started: it waits for the last user.
            if self._users == 0 and self._ptr is None:
                self._idle.notify_all()
        finally:
            lock.release()

    @contextmanager
    def use(self) -> Iterator[int]:
        """Lends the live pointer for the ``with`` block; raises the closed error if the
        handle is closed."""
        ptr = self.acquire()
        try:
            yield ptr
        finally:
            self.release()

    def close(self) -> None:
        """Releases the handle once (idempotent). Exceptions from the release function
        propagate, but the handle counts as released either way."""
        with self._lock:
            ptr = self._ptr
            if ptr is None:
                return
            self._ptr = None
            while self._users:
                self._idle.wait()
        self._free(ptr)


_Owner = TypeVar("_Owner", bound="HandleOwner")


class HandleOwner:
    """Base of the classes that own one C handle: ``close()`` (idempotent), ``closed``, use
    as a context manager (closes on exit), and release when garbage-collected. Subclasses
    set ``self._handle`` and may extend :meth:`close`'s meaning in their docstring."""

    _handle: Handle

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._handle.closed

    def close(self) -> None:
        """Releases this object's C handle (what it refers to stays stored). Idempotent."""
        self._handle.close()

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()
