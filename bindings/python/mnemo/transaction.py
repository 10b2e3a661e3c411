"""The :class:`Transaction` class: several writes, across stores, committed as one entry."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Callable, NoReturn

from . import _native
from ._handle import Handle, check_not_forked, own
from ._native import lib
from ._values import to_json
from .errors import InternalError, InvalidArgument

_ENDED = {
    "committed": "the Transaction was already committed",
    "aborted": "the Transaction was already aborted",
    "failed": "the Transaction has ended: its commit failed",
}


class Transaction:
    """Operations collected for one commit, from :meth:`mnemo.Database.transaction`.

    Nothing is visible before :meth:`commit`, then everything is, across all the stores the
    transaction touches. As a context manager it commits when the block ends normally and
    aborts when it raises (the exception propagates); a block that added no operation
    commits nothing. ::

        with db.transaction() as t:
            t.set("accounts", "alice", 90)
            t.set("accounts", "bob", 110)
            t.delete("pending", "transfer-1")
        print(t.entry_id)

    Once committed or aborted (or after a failed commit) every method raises
    :class:`mnemo.InvalidArgument`, except :meth:`abort`, which then does nothing.
    Calls from several threads are serialised. A transaction is one pending commit:
    :func:`copy.copy`, :func:`copy.deepcopy` and :mod:`pickle` refuse it (TypeError).
    """

    _handle: Handle

    def __init__(self, make: Callable[..., int], *args: Any) -> None:
        """Internal: owns the ``mnemo_txn *`` that ``make(*args, &out)`` makes. Use
        :meth:`mnemo.Database.transaction`."""
        self._lock = threading.Lock()
        self._state = "open"
        self._operations = 0
        self._entry_id: str | None = None
        # Every call through the handle holds self._lock and checks _state first: this
        # closed error is never raised (in a forked child, the fork's is).
        own(
            self,
            make,
            *args,
            free=lib.mnemo_txn_abort,
            closed_error=lambda: InvalidArgument("invalid argument: the Transaction has ended"),
        )

    def _require_open(self) -> None:
        # Called with self._lock held.
        if self._state != "open":
            raise InvalidArgument(f"invalid argument: {_ENDED[self._state]}")
        check_not_forked()

    def _add(self, fn: Callable[..., int], *args: bytes) -> None:
        """Adds one operation with ``fn(txn, *args)``."""
        with self._lock:
            self._require_open()
            handle = self._handle
            ptr = handle.acquire()
            try:
                _native.check(fn(ptr, *args))
            finally:
                handle.release()
            self._operations += 1

    def set(self, store: str, key: str, value: Any) -> None:
        """Adds "set ``key`` in ``store`` to ``value``"; a later operation on the same key
        replaces this one.

        Raises InvalidArgument for a bad or reserved store name, a bad key, a value JSON
        cannot represent, or when the transaction, one entry, would take more than 16 MiB
        with it; the transaction is then unchanged and stays usable.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        v = _native.encode(to_json(value), "value")
        self._add(lib.mnemo_txn_set, s, k, v)

    def set_path(self, store: str, key: str, pointer: str, value: Any) -> None:
        """Adds "set the part of ``key``'s value at JSON Pointer ``pointer`` to ``value``"
        (see :meth:`mnemo.Database.set_path`), after the transaction's earlier operations:
        on a value set earlier in this transaction it edits that value; it replaces earlier
        writes of the same path and paths under it; a path into an array writes that array
        as the database and this transaction leave it (the key's value is read at its first
        path write here, so this may also raise what :meth:`mnemo.Database.get` does, and a
        commit made since by this device to that array is overwritten by this one).

        Raises InvalidArgument as :meth:`set`, or for a bad pointer, a token into an array that
        neither indexes nor appends to it, or a write nested too deep; the transaction is then
        unchanged and stays usable.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        p = _native.encode(pointer, "pointer")
        v = _native.encode(to_json(value), "value")
        self._add(lib.mnemo_txn_set_path, s, k, p, v)

    def delete(self, store: str, key: str) -> None:
        """Adds "delete ``key`` from ``store``".

        Raises NotFound if the key has no value (in the database, or set earlier in this
        transaction), InvalidArgument as :meth:`set`, StorageError.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        self._add(lib.mnemo_txn_delete, s, k)

    def commit(self) -> str:
        """Commits every operation as one signed entry and returns its id.

        The transaction ends either way. Raises InvalidArgument if it has no operation or
        its entry would be over 16 MiB with the parents it has (32 bytes for each tip of the
        database), LoggedOut, PermissionDenied, StorageError.
        """
        with self._lock:
            self._require_open()
            self._state = "failed"
            # mnemo_txn_commit frees the transaction on success and on failure: it ends the
            # handle in place of mnemo_txn_abort.
            entry_id: str | None = self._handle.close(_commit)
            if entry_id is None:
                # A loan nothing ends (left by an interrupted call, on Python 3.9 and 3.10)
                # held the handle: Handle.close left it to its thread, which aborts it
                # should that loan ever end.
                raise InternalError(
                    "internal error: an interrupted call still holds the Transaction: it was "
                    "not committed"
                )
            self._state = "committed"
            self._entry_id = entry_id
            return entry_id

    def abort(self) -> None:
        """Discards the operations. Does nothing if the transaction has already ended."""
        with self._lock:
            if self._state == "open":
                self._state = "aborted"
            self._handle.close()

    @property
    def entry_id(self) -> str | None:
        """The id of the committed entry, or None if the transaction did not commit one."""
        return self._entry_id

    @property
    def active(self) -> bool:
        """True until the transaction is committed or aborted."""
        return not self._handle.closed

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._operations:
            self.abort()
        elif self.active:
            self.commit()

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        # What copy.copy, copy.deepcopy and pickle call: a copy would be a second owner of
        # the one transaction, with state of its own.
        raise TypeError("a mnemo.Transaction cannot be copied or pickled")

    def __del__(self) -> None:
        # Abandoned without commit: discard (getattr: __init__ may not have got that far).
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    def __repr__(self) -> str:
        return f"<mnemo.Transaction {'open' if self.active else self._state}>"


def _commit(ptr: int) -> str:
    """Commits the ``mnemo_txn *`` ``ptr``, which that frees; returns the entry id."""
    return _native.call_string(lib.mnemo_txn_commit, ptr)

