"""Ownership of one C handle: freed exactly once, never while a call is using it."""

from __future__ import annotations

import os
import sys
import threading
import weakref
from contextlib import contextmanager
from ctypes import c_void_p
from types import TracebackType
from typing import Any, Callable, Iterator, TypeVar

from .errors import Error, InvalidArgument


class Handle:
    """Owns one C handle and the function that releases it.

    :meth:`acquire` lends the pointer for the duration of one C call, until the matching
    :meth:`release` (the fast path of the most frequent calls, in ``try``/``finally``);
    :meth:`use` does both around a ``with`` block. :meth:`close` waits until no call is
    using the pointer, then releases it exactly once. After ``close``, :meth:`acquire` and
    :meth:`use` raise the error made by ``closed_error``; ``close`` again does nothing.
    """

    __slots__ = (
        "_ptr",
        "arg",
        "_free",
        "_closed_error",
        "_lock",
        "_idle",
        "_loans",
        "__weakref__",
    )

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
        # One item per call using the pointer (see acquire); _idle wakes a close() waiting
        # for the last of them, and _lock makes close() run once. Reentrant, for the
        # builds that take it in acquire() and release() too (see LOCKED_LOANS).
        self._loans: list[None] = []
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        global _used
        _used = True
        _made.add(self)

    def _disown(self) -> None:
        """In a forked child: never use nor free the pointer (the parent's threads that its
        object relies on are gone); every use raises the fork error."""
        self._ptr = None
        self._closed_error = forked_error
        self._loans.clear()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has started."""
        return self._ptr is None

    def acquire(self) -> int:
        """Lends the live pointer until :meth:`release`; raises the closed error if the
        handle is closed (and then must not be released)."""
        # No lock on this path under the GIL (it runs on every call; a lock here and in
        # release() cost about a tenth of a get). The loan is announced first and the
        # pointer read second; close() does the same in the other order (pointer cleared,
        # then loans counted), so either close() sees this loan and waits for it, or this
        # call sees the pointer gone. That needs each step to be atomic and all of them
        # seen in one order by every thread: true under the GIL; without it, LOCKED_LOANS.
        self._loans.append(None)
        ptr = self._ptr
        if ptr is None:
            self.release()
            raise self._closed_error()
        return ptr

    def release(self) -> None:
        """Ends one loan made by :meth:`acquire`."""
        self._loans.pop()
        # _ptr is None only once close() has started: it may be waiting for this loan.
        if self._ptr is None:
            with self._lock:
                self._idle.notify_all()

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
        propagate, but the handle counts as released either way.

        While the interpreter finalizes, a handle still lent is never released, and close()
        does not wait: a daemon thread may be inside a call with it, or an exception (a
        KeyboardInterrupt) may have left a loan behind, which nothing would end; the process
        is ending, and its memory goes with it."""
        with self._lock:
            ptr = self._ptr
            if ptr is None:
                return
            self._ptr = None
            while self._loans:
                if sys.is_finalizing():
                    return
                self._idle.wait(_FINALIZING_CHECK)
        self._free(ptr)


#: How often, in seconds, close() waiting for loans looks whether the interpreter is
#: finalizing (then it stops waiting; see Handle.close).
_FINALIZING_CHECK = 0.1

#: Every handle made in this process and not yet collected: a forked child disowns them.
_made: weakref.WeakSet[Handle] = weakref.WeakSet()
#: Whether this process made a handle (mnemo's threads and locks may then exist).
_used = False
#: True in a child forked after its parent used mnemo: mnemo is then unusable there.
_forked_child = False


def forked_error() -> InvalidArgument:
    """The error for any use of mnemo in a child forked after the parent used it."""
    return InvalidArgument(
        "invalid argument: this process was forked after mnemo was used in it: mnemo's "
        "threads and locks do not survive a fork, so it cannot be used in the child (fork "
        "before using mnemo, or start processes with multiprocessing's 'spawn' or "
        "'forkserver' method)"
    )


def check_not_forked() -> None:
    """Raises :func:`forked_error` in a child forked after the parent used mnemo."""
    if _forked_child:
        raise forked_error()


def _after_fork_in_child() -> None:
    global _forked_child
    if _used:
        _forked_child = True
        for handle in list(_made):
            handle._disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _under_lock(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step``, a method of :class:`Handle`, run holding the handle's lock."""

    def locked(self: Handle) -> Any:
        with self._lock:
            return step(self)

    locked.__doc__ = step.__doc__
    return locked


#: True on a free-threaded Python running without the GIL, where the order of steps that
#: :meth:`Handle.acquire` relies on is not promised: loans then take the handle's lock.
LOCKED_LOANS = not getattr(sys, "_is_gil_enabled", lambda: True)()
if LOCKED_LOANS:  # tests/test_handle.py runs the handle both ways
    Handle.acquire = _under_lock(Handle.acquire)  # type: ignore[method-assign]
    Handle.release = _under_lock(Handle.release)  # type: ignore[method-assign]


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
