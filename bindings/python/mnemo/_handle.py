"""Ownership of one C handle: freed exactly once, never while a call is using it."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from types import TracebackType
from typing import Callable, Iterator, TypeVar

from .errors import Error


class Handle:
    """Owns one C handle and the function that releases it.

    :meth:`use` lends the pointer for the duration of one C call; :meth:`close` waits
    until no call is using it, then releases it exactly once. After ``close``, :meth:`use`
    raises the error made by ``closed_error``; ``close`` again does nothing.
    """

    __slots__ = ("_ptr", "_release", "_closed_error", "_cond", "_users")

    def __init__(
        self,
        ptr: int,
        release: Callable[[int], None],
        closed_error: Callable[[], Error],
    ) -> None:
        self._ptr: int | None = ptr
        self._release = release
        self._closed_error = closed_error
        self._cond = threading.Condition(threading.Lock())
        self._users = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started."""
        return self._ptr is None

    @contextmanager
    def use(self) -> Iterator[int]:
        """Lends the live pointer; raises the closed error if the handle is closed."""
        with self._cond:
            ptr = self._ptr
            if ptr is None:
                raise self._closed_error()
            self._users += 1
        try:
            yield ptr
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._cond.notify_all()

    def close(self) -> None:
        """Releases the handle once (idempotent). Exceptions from the release function
        propagate, but the handle counts as released either way."""
        with self._cond:
            ptr = self._ptr
            if ptr is None:
                return
            self._ptr = None
            while self._users:
                self._cond.wait()
        self._release(ptr)


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
