"""The :class:`Transaction` class: several writes, across stores, committed as one entry."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from . import _native
from ._native import lib
from ._values import to_json
from .errors import InvalidArgument

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
    Calls from several threads are serialised.
    """

    def __init__(self, ptr: int) -> None:
        """Internal: wraps a ``mnemo_txn *``. Use :meth:`mnemo.Database.transaction`."""
        self._lock = threading.Lock()
        self._ptr: int | None = ptr
        self._state = "open"
        self._operations = 0
        self._entry_id: str | None = None

    def _require_open(self) -> int:
        # Called with self._lock held.
        if self._ptr is None:
            raise InvalidArgument(f"invalid argument: {_ENDED[self._state]}")
        return self._ptr

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
        with self._lock:
            _native.check(lib.mnemo_txn_set(self._require_open(), s, k, v))
            self._operations += 1

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
        with self._lock:
            _native.check(lib.mnemo_txn_set_path(self._require_open(), s, k, p, v))
            self._operations += 1

    def delete(self, store: str, key: str) -> None:
        """Adds "delete ``key`` from ``store``".

        Raises NotFound if the key has no value (in the database, or set earlier in this
        transaction), InvalidArgument as :meth:`set`, StorageError.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        with self._lock:
            _native.check(lib.mnemo_txn_delete(self._require_open(), s, k))
            self._operations += 1

    def commit(self) -> str:
        """Commits every operation as one signed entry and returns its id.

        The transaction ends either way. Raises InvalidArgument if it has no operation or
        its entry would be over 16 MiB with the parents it has (32 bytes for each tip of the
        database), LoggedOut, PermissionDenied, StorageError.
        """
        with self._lock:
            ptr = self._require_open()
            self._ptr = None
            self._state = "failed"
            # mnemo_txn_commit frees the transaction on success and on failure.
            entry_id = _native.call_string(lib.mnemo_txn_commit, ptr)
            self._state = "committed"
            self._entry_id = entry_id
            return entry_id

    def abort(self) -> None:
        """Discards the operations. Does nothing if the transaction has already ended."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
            if ptr is not None:
                self._state = "aborted"
                lib.mnemo_txn_abort(ptr)

    @property
    def entry_id(self) -> str | None:
        """The id of the committed entry, or None if the transaction did not commit one."""
        return self._entry_id

    @property
    def active(self) -> bool:
        """True until the transaction is committed or aborted."""
        return self._ptr is not None

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

    def __del__(self) -> None:
        # Abandoned without commit: discard (getattr: __init__ may not have run).
        if getattr(self, "_ptr", None) is not None:
            self.abort()

    def __repr__(self) -> str:
        return f"<mnemo.Transaction {'open' if self.active else self._state}>"
