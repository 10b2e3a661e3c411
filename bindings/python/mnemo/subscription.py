"""The :class:`Subscription` class, and the bridge that runs Python callbacks for C.

C calls two module-level trampolines, :func:`_on_change` and :func:`_on_destroy`, which live
as long as the module. The Python callback of each subscription is kept in
:data:`_callbacks` under a small integer key that C holds as ``user_data``; the library's
destroy callback removes it, exactly once, after the last call of the change callback.
(A ctypes callback object made per subscription would have to be released from inside its
own destroy call, which could free the code C is still running.)

Subscriptions still open when the interpreter exits are closed by an :mod:`atexit` handler,
which then waits (at most :data:`EXIT_WAIT` seconds) for the library to destroy them: a
library thread that calls into a finalizing interpreter is terminated by CPython
(``pthread_exit``), which aborts the whole process when it unwinds through mnemo. Closing
does not wait for callbacks (the library delivers the ones already queued afterwards), so
the handler waits for the destroy calls instead; from then on, changes still queued reach
the trampoline but no longer the Python callbacks, so that only a callback running at exit
is waited for. In a child forked after mnemo was used, the library's threads are gone:
nothing is waited for there.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import weakref
from collections.abc import Callable

from . import _native
from . import _handle
from ._handle import Handle, HandleOwner
from ._native import lib
from .errors import InvalidArgument

#: ``callback(db_id, entry_id, remote)``; its return value is ignored.
ChangeCallback = Callable[[str, str, bool], object]

_log = logging.getLogger("mnemo")

#: The live subscriptions' callbacks, by the key passed to C as ``user_data``. Entries are
#: added by :func:`subscribe` and removed by :func:`_on_destroy` (single dict operations,
#: atomic under the GIL).
_callbacks: dict[int, ChangeCallback] = {}
_keys = itertools.count(1)  # 0 would reach the callbacks as None (a NULL pointer)
#: Notified whenever :func:`_destroy` removes a callback.
_released = threading.Condition()
#: How long the exit handler waits for the library to destroy the closed subscriptions.
EXIT_WAIT = 5.0
#: The open Subscription objects, closed at interpreter exit.
_open: weakref.WeakSet[Subscription] = weakref.WeakSet()
#: Set by the exit handler: changes still queued then are not given to the callbacks.
_exiting = False


def _change(user_data: int | None, db_id: bytes, entry_id: bytes, remote: int) -> None:
    """Runs on the library's notification thread. Nothing may propagate into C: an
    exception from the callback is logged to the ``mnemo`` logger, and the next change is
    delivered as usual. At interpreter exit, queued changes are dropped here."""
    if _exiting:
        return
    callback = _callbacks.get(user_data or 0)
    if callback is None:  # cannot happen while the library keeps its contract
        return
    try:
        callback(db_id.decode("utf-8"), entry_id.decode("utf-8"), bool(remote))
    except BaseException:  # noqa: BLE001 - nothing may unwind into C
        _log.exception("exception in mnemo subscription callback %r (ignored)", callback)


def _destroy(user_data: int | None) -> None:
    """Called exactly once per subscription, after the last call of its callback: on the
    thread that closes it, or on the library thread after the queued calls."""
    with _released:
        _callbacks.pop(user_data or 0, None)
        _released.notify_all()


#: The C entry points, alive as long as this module.
_on_change = _native.change_cb_t(_change)
_on_destroy = _native.destroy_cb_t(_destroy)


@atexit.register
def _close_all() -> None:
    """Ends every open subscription before the interpreter finalizes, and waits until the
    library has destroyed them, so that it never calls into the interpreter afterwards (see
    the module's documentation)."""
    global _exiting
    if _handle.forked_child():
        return
    _exiting = True
    for sub in list(_open):
        sub.close()
    with _released:
        _released.wait_for(lambda: not _callbacks, EXIT_WAIT)


def live_callbacks() -> int:
    """How many subscriptions the library has not destroyed yet (for tests and debugging)."""
    return len(_callbacks)


def subscribe(db_ptr: int, callback: ChangeCallback) -> Subscription:
    """Internal: subscribes ``callback`` to the database ``db_ptr``. Use
    :meth:`mnemo.Database.subscribe`."""
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    key = next(_keys)
    _callbacks[key] = callback
    try:
        ptr = _native.call_handle(lib.mnemo_db_subscribe, db_ptr, _on_change, key, _on_destroy)
    except BaseException:
        # On any failure the library never took user_data (and never calls destroy).
        _callbacks.pop(key, None)
        raise
    return Subscription(ptr, key)


class Subscription(HandleOwner):
    """A live change subscription, from :meth:`mnemo.Database.subscribe`.

    The callback runs on a library thread, once per change, in commit order. The
    subscription lasts until :meth:`close` (or the end of a ``with`` block, or garbage
    collection of this object: keep a reference). ``close`` never waits for the callback:
    changes committed after it are not delivered, but those committed before and still
    queued are, on the library thread, after ``close`` returns (none is silently dropped);
    :meth:`mnemo.Database.flush_notifications` waits for them. Safe to close from any
    thread, including from inside the callback itself. At interpreter exit, open
    subscriptions are closed and changes still queued are not delivered (call
    ``flush_notifications`` first to have them); a callback running then is waited for, up
    to :data:`EXIT_WAIT` seconds.
    """

    def __init__(self, ptr: int, key: int) -> None:
        """Internal: wraps a ``mnemo_subscription *``."""
        self._key = key
        self._handle = Handle(
            ptr,
            lib.mnemo_subscription_free,
            lambda: InvalidArgument("invalid argument: the Subscription is closed"),
        )
        _open.add(self)

    def close(self) -> None:
        """Ends the subscription without waiting (see the class). Idempotent."""
        super().close()

    def __repr__(self) -> str:
        return f"<mnemo.Subscription {'closed' if self.closed else 'active'}>"
