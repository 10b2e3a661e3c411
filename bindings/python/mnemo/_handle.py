"""Ownership of one C handle: freed exactly once, never while a call is using it, and never
left without an owner (see :func:`own`)."""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from ctypes import c_void_p
from functools import partial
from types import TracebackType
from typing import Any, Callable, Iterator, TypeVar

from . import _native
from .errors import Error, InvalidArgument


class Handle:
    """Owns one C handle and the function that frees it.

    :meth:`acquire` lends the pointer for the duration of one C call, until the matching
    :meth:`release` (the fast path of the most frequent calls, in ``try``/``finally``);
    :meth:`use` does both around a ``with`` block. :meth:`close` frees the pointer exactly
    once, when no call is using it (see there). After ``close``, :meth:`acquire` and
    :meth:`use` raise the error made by ``closed_error``; ``close`` again does nothing.
    """

    __slots__ = (
        "_ptr",
        "arg",
        "release",
        "_free",
        "_closed_error",
        "_lock",
        "_loans",
        "__weakref__",
    )

    #: Whether loans take the handle's lock (see LOCKED_LOANS; the tests make both kinds).
    _locked_loans = False

    def __init__(
        self,
        ptr: int,
        free: Callable[[int], object],
        closed_error: Callable[[], Error],
    ) -> None:
        self._ptr: int | None = ptr
        #: The pointer as a ``c_void_p``, for the hot paths that call functions without
        #: ``argtypes`` (see :func:`mnemo._native.get_value`); valid only while lent by
        #: :meth:`acquire`.
        self.arg = c_void_p(ptr)
        self._free = free
        self._closed_error = closed_error
        # One item per call using the pointer (see acquire); _lock makes close() start once,
        # and guards the loans where LOCKED_LOANS (reentrant: the locked acquire() may
        # release() inside it).
        self._loans: list[None] = []
        self._lock = threading.RLock()
        #: Ends one loan made by :meth:`acquire`. Where the GIL orders the steps, this is
        #: the loan list's own ``pop``, a C function: no Python code runs between the end
        #: of a call's ``try`` and the end of its loan, so no exception (a signal handler's
        #: KeyboardInterrupt) can land between them and leave the loan behind.
        self.release: Callable[[], object] = (
            partial(_release_locked, self) if self._locked_loans else self._loans.pop
        )
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
        # The loan is made by ``+=`` rather than a call of ``append``: from Python 3.11 the
        # interpreter runs signal handlers after calls (not after returning from one, nor
        # after ``+=``), so none runs between the loan and the caller's ``try`` (with
        # append(), 3% of Ctrl-Cs in a loop of gets left their loan behind). Python 3.9 and
        # 3.10 look for them after more steps: there a loan can still be left, and close()
        # does not wait for ever for it (see close).
        loans = self._loans
        loans += _ONE_LOAN
        ptr = self._ptr
        if ptr is None:
            self.release()
            raise self._closed_error()
        return ptr

    @contextmanager
    def use(self) -> Iterator[int]:
        """Lends the live pointer for the ``with`` block; raises the closed error if the
        handle is closed."""
        ptr = self.acquire()
        try:
            yield ptr
        finally:
            self.release()

    def close(self, free: Callable[[int], Any] | None = None) -> Any:
        """Frees the handle once (idempotent); new loans are refused from the start.
        Returns what the free function returned when it ran in this call, else None.

        Calls using the handle in other threads are waited for, up to :data:`CLOSE_WAIT`
        seconds; if some still are then, or if an exception (a KeyboardInterrupt) ends the
        wait, the handle is left to a thread of its own, which frees it once they have
        ended, and close() returns (or the exception propagates). A loan nothing will end
        (an exception that landed between a call's loan and its ``try``, in the ``with``
        blocks that :meth:`use` serves) then leaves the handle unfreed rather than close()
        waiting for ever. Exceptions from the free function propagate (from that thread:
        printed), but the handle counts as freed either way.

        ``free``, if given, is called in place of the handle's own function when the handle
        is freed in this call (a function that consumes it, as a commit does, or ends it
        another way); that thread frees it with its own.

        While the interpreter finalizes, a handle still lent is never freed, and close()
        does not wait: a daemon thread may be inside a call with it; the process is ending,
        and its memory goes with it."""
        taken = None
        try:
            with self._lock:
                ptr = self._ptr
                if ptr is None:
                    return None
                self._ptr = None
                # Set after the pointer is cleared: an exception landing between the two
                # leaves the handle unfreed, never freed while still lendable.
                taken = ptr
            # Waited for without the lock, which the loans take where LOCKED_LOANS.
            idle = _ended_within(self._loans, CLOSE_WAIT)
        except BaseException:
            if taken is not None:
                self._free_later(taken)
            raise
        if idle:
            return (self._free if free is None else free)(taken)
        self._free_later(taken)
        return None

    def _free_later(self, ptr: int) -> None:
        """Leaves ``ptr`` to a thread of its own, which frees it once the last loan has
        ended (never, if the interpreter finalizes first)."""
        if not sys.is_finalizing():
            threading.Thread(
                target=self._free_once_idle, args=(ptr,), name="mnemo-close", daemon=True
            ).start()

    def _free_once_idle(self, ptr: int) -> None:
        """Frees ``ptr`` once the last loan has ended (never, if the interpreter finalizes
        first)."""
        while not _ended_within(self._loans, _LATE_CHECK):
            if sys.is_finalizing():
                return
        self._free(ptr)


def _release_locked(handle: Handle) -> None:
    """:meth:`Handle.release` where LOCKED_LOANS."""
    with handle._lock:
        handle._loans.pop()


def _ended_within(loans: list[None], seconds: float) -> bool:
    """Whether ``loans`` is empty within ``seconds`` (looked at more rarely as time goes,
    from every millisecond); False at once if the interpreter is finalizing."""
    deadline = time.monotonic() + seconds
    pause = 0.001
    while loans:
        left = deadline - time.monotonic()
        if left <= 0 or sys.is_finalizing():
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, _LATE_CHECK)
    return True


#: A loan, as acquire() adds it.
_ONE_LOAN = (None,)
#: How long, in seconds, :meth:`Handle.close` waits for calls still using the handle before
#: it leaves the freeing to a thread of its own.
CLOSE_WAIT = 1.0
#: How often, in seconds at most, a close() still waiting looks whether the last loan has
#: ended (and whether the interpreter is finalizing).
_LATE_CHECK = 0.1

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


def forked_child() -> bool:
    """Whether this is a child forked after its parent used mnemo."""
    return _forked_child


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
    Handle._locked_loans = True


def own(
    owner: object,
    make: Callable[..., int],
    *args: Any,
    free: Callable[[int], object],
    closed_error: Callable[[], Error],
    out: c_void_p | None = None,
) -> int:
    """Calls ``make(*args, mnemo_x **out)``, which makes a handle, and gives it to
    ``owner`` as ``owner._handle``, a :class:`Handle` freed by ``free``; returns the
    pointer. Raises what ``make`` fails with (see :func:`mnemo._native.call_handle`).

    A new handle is never left without an owner: Python runs signal handlers (Ctrl-C's
    KeyboardInterrupt) right after a call into C returns, so an exception can land after
    ``make`` made the handle and before ``owner`` holds it; the handle is then freed here,
    before the exception propagates. Once ``owner._handle`` is set, the owner's release
    (``close``, or its ``__del__`` when collected, also from an ``__init__`` that fails
    later) frees it instead, never both. ``out``, for a caller that must tell whether a
    handle was made: receives it, NULL unless ``make`` succeeded."""
    if out is None:
        out = c_void_p()
    try:
        ptr = _native.call_handle(make, *args, out=out)
        owner._handle = Handle(ptr, free, closed_error)  # type: ignore[attr-defined]
        return ptr
    except BaseException:
        if out.value and getattr(owner, "_handle", None) is None:
            free(out.value)
        raise


_Owner = TypeVar("_Owner", bound="HandleOwner")


class HandleOwner:
    """Base of the classes that own one C handle: ``close()`` (idempotent), ``closed``, use
    as a context manager (closes on exit), and release when garbage-collected. Subclasses
    get ``self._handle`` from :func:`own` and may extend :meth:`close`'s meaning in their
    docstring."""

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
