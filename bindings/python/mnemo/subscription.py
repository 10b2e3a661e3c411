"""The :class:`Subscription` class, and the bridge that runs Python callbacks for C.

C calls two module-level trampolines, :func:`_on_change` and :func:`_on_destroy`, which live
as long as the module. C knows each subscription by a small integer key, its ``user_data``,
under which :data:`_callbacks` reaches the subscription's :class:`_Listener` (which holds
the Python callback); the library's destroy callback removes the entry, exactly once, after
the last call of the change callback. (A ctypes callback object made per subscription would
have to be released from inside its own destroy call, which could free the code C is still
running.) While a Subscription is open, only the Subscription holds its listener, the
registry a weak reference to it: a callback that refers back to the object keeping the
Subscription (``self.sub = db.subscribe(self.on_change)``) does not keep that object alive.
A Subscription collected ends with ``mnemo_subscription_cancel``, which drops the changes
still queued for it (the trampoline skips any call under way). Closing it makes the
registry hold the listener, so that the changes queued before the close are delivered.

At interpreter exit an :mod:`atexit` handler ends the subscriptions still open and waits
(at most :data:`EXIT_WAIT` seconds) until the library has destroyed every subscription: a
library thread that calls into a finalizing interpreter is terminated by CPython
(``pthread_exit``), which aborts the whole process when it unwinds through mnemo (SIGABRT,
"FATAL: exception not rethrown"). The handler ends them with ``mnemo_subscription_cancel``,
which drops the changes still queued for them, so that only a callback running at that
moment is waited for; changes still queued for subscriptions closed earlier still reach
the trampoline, which from then on drops them at once (a backlog of those that takes longer
than EXIT_WAIT to go through aborts the process too). From the handler's start, new
subscriptions are refused (InvalidArgument): a thread still subscribing would otherwise
make subscriptions that nothing ends.

A callback still running when EXIT_WAIT has passed is not waited for any longer. If it is
running Python code (CPU-bound), the process aborts as soon as the interpreter begins to
finalize: CPython takes the GIL from the callback's thread within
``sys.getswitchinterval()``, and ends the thread when it asks for the GIL again. A callback
blocked outside the interpreter (sleeping, waiting for a lock or for I/O) aborts the
process only if it returns before the process has ended. So flush
(:meth:`mnemo.Database.flush_notifications`) or close subscriptions before the interpreter
exits, and let callbacks finish (having closed many with much still queued, flush as well).
In a child forked after mnemo was used, the library's threads are gone: nothing is waited
for there.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from ctypes import c_void_p

from . import _native
from . import _handle
from ._handle import HandleOwner, own
from ._native import lib
from .errors import InvalidArgument

#: ``callback(db_id, entry_id, remote)``; its return value is ignored.
ChangeCallback = Callable[[str, str, bool], object]

_log = logging.getLogger("mnemo")


class _Listener:
    """What the registry reaches for one subscription: its callback."""

    __slots__ = ("callback", "__weakref__")

    def __init__(self, callback: ChangeCallback) -> None:
        self.callback = callback

    def __call__(self) -> _Listener:
        """Itself, as a weak reference to it gives it: the registry holds either."""
        return self


#: The live subscriptions' listeners, by the key passed to C as ``user_data``: a weak
#: reference while the Subscription is open, the listener itself once it is closed (both
#: give the listener when called; the weak reference None once it is collected). Entries
#: are added by :func:`subscribe` and removed by :func:`_destroy`; reads are single dict
#: operations (atomic under the GIL), changes hold :data:`_released`.
_callbacks: dict[int, Callable[[], _Listener | None]] = {}
_keys = itertools.count(1)  # 0 would reach the callbacks as None (a NULL pointer)
#: Guards :data:`_callbacks`, :data:`_open` and :data:`_exiting` together; notified
#: whenever :func:`_destroy` removes an entry.
_released = threading.Condition()
#: How long the exit handler waits for the library to destroy the subscriptions.
EXIT_WAIT = 5.0
#: The open Subscription objects, ended at interpreter exit.
_open: weakref.WeakSet[Subscription] = weakref.WeakSet()
#: Set by the exit handler: changes still delivered are dropped, subscribing is refused.
_exiting = False


def _change(user_data: int | None, db_id: bytes, entry_id: bytes, remote: int) -> None:
    """Runs on the library's notification thread. Nothing may propagate into C: an
    exception from the callback is logged to the ``mnemo`` logger, and the next change is
    delivered as usual. Changes for a collected Subscription, and at interpreter exit all
    changes, are dropped here."""
    if _exiting:
        return
    reach = _callbacks.get(user_data or 0)
    listener = None if reach is None else reach()
    if listener is None:
        return
    callback = listener.callback
    try:
        callback(db_id.decode("utf-8"), entry_id.decode("utf-8"), bool(remote))
    except BaseException:  # noqa: BLE001 - nothing may unwind into C
        _log.exception("exception in mnemo subscription callback %r (ignored)", callback)


def _destroy(user_data: int | None) -> None:
    """Called exactly once per subscription, after the last call of its callback: on the
    thread that ends it, or on the library thread after the queued calls; and by
    :class:`Subscription` for a key the library never took."""
    with _released:
        _callbacks.pop(user_data or 0, None)
        _released.notify_all()


#: The C entry points, alive as long as this module.
_on_change = _native.change_cb_t(_change)
_on_destroy = _native.destroy_cb_t(_destroy)


@atexit.register
def _close_all() -> None:
    """Ends every open subscription before the interpreter finalizes, dropping the changes
    queued for them, and waits until the library has destroyed every subscription, so
    that it never calls into the interpreter afterwards (see the module's documentation)."""
    global _exiting
    if _handle.forked_child():
        return
    with _released:
        _exiting = True
        ending = list(_open)
    for sub in ending:
        sub._handle.close(lib.mnemo_subscription_cancel)
    with _released:
        _released.wait_for(lambda: not _callbacks, EXIT_WAIT)


def live_callbacks() -> int:
    """How many subscriptions the library has not destroyed yet (for tests and debugging)."""
    return len(_callbacks)


def _exiting_error() -> InvalidArgument:
    return InvalidArgument(
        "invalid argument: the interpreter is exiting: its exit handler has ended the "
        "subscriptions, and refuses new ones"
    )


def subscribe(db_ptr: int, callback: ChangeCallback) -> Subscription:
    """Internal: subscribes ``callback`` to the database ``db_ptr``. Use
    :meth:`mnemo.Database.subscribe`."""
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    sub = Subscription(db_ptr, callback)
    with _released:
        if not _exiting:
            _open.add(sub)
            return sub
    # The exit handler started while it was made, and took its snapshot of _open without
    # it; it waits for its entry to go.
    sub._handle.close(lib.mnemo_subscription_cancel)
    raise _exiting_error()


class Subscription(HandleOwner):
    """A live change subscription, from :meth:`mnemo.Database.subscribe`.

    The callback runs on a library thread, once per change, in commit order. The
    subscription lasts until :meth:`close` (or the end of a ``with`` block, or garbage
    collection of this object: keep a reference). The library reaches the callback only
    through this object: a callback referring back to the object that keeps the
    subscription does not keep either alive, and the changes still queued when this object
    is collected are dropped. ``close`` never waits for the callback: changes committed after
    it are not delivered, but those committed before and still queued are, on the library
    thread, after ``close`` returns (none is silently dropped);
    :meth:`mnemo.Database.flush_notifications` waits for them. Safe to close from any
    thread, including from inside the callback itself.

    At interpreter exit, open subscriptions are ended, the changes still queued for them
    are not delivered (call ``flush_notifications`` first to have them), and new ones are
    refused (InvalidArgument). A callback running then is waited for, up to
    :data:`EXIT_WAIT` seconds. One still running Python code after that aborts the process
    (SIGABRT) as the interpreter finalizes; one blocked in a wait does if it returns before
    the process has ended (see :mod:`mnemo.subscription`). Flush or close subscriptions, and
    let callbacks finish, before the interpreter exits.
    """

    def __init__(self, db_ptr: int, callback: ChangeCallback) -> None:
        """Internal: subscribes ``callback`` to the database ``db_ptr``. Use
        :meth:`mnemo.Database.subscribe`."""
        self._listener = _Listener(callback)
        self._key = key = next(_keys)
        made = c_void_p()
        try:
            with _released:
                if _exiting:
                    raise _exiting_error()
                _callbacks[key] = weakref.ref(self._listener)
            own(
                self,
                lib.mnemo_db_subscribe,
                db_ptr,
                _on_change,
                key,
                _on_destroy,
                free=lib.mnemo_subscription_free,
                closed_error=lambda: InvalidArgument(
                    "invalid argument: the Subscription is closed"
                ),
                out=made,
            )
        except BaseException:
            # Without a subscription made, the library never took user_data (and never
            # calls destroy); with one, own() or this object frees it, and destroy comes.
            if not made.value:
                _destroy(key)
            raise

    def close(self) -> None:
        """Ends the subscription without waiting (see the class). Idempotent."""
        with _released:
            if self._key in _callbacks:
                _callbacks[self._key] = self._listener  # for the changes already queued
        super().close()

    def __del__(self) -> None:
        # Collected: nothing reaches the callback any more (the registry's reference is
        # dead), so the changes still queued are dropped by the library, not delivered to
        # the trampoline to be skipped there.
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close(lib.mnemo_subscription_cancel)

    def __repr__(self) -> str:
        return f"<mnemo.Subscription {'closed' if self.closed else 'active'}>"
