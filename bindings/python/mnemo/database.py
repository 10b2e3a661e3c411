"""The :class:`Database` class: one database, acting for the session that opened it."""

from __future__ import annotations

from collections.abc import Iterator
from ctypes import c_size_t
from typing import Any, Callable, Literal

from . import _native, subscription
from .events import Events, _check_timeout, _timeout_ms
from ._handle import HandleOwner, own
from ._native import lib
from ._values import from_json, to_json
from .errors import InvalidArgument
from .store import Store
from .subscription import ChangeCallback, Subscription
from .transaction import Transaction

#: A permission on a database: ``"admin"`` (write and change who may do what),
#: ``"write"`` (read and write its stores) or ``"read"``.
Permission = Literal["admin", "write", "read"]

# The hot path's helpers, looked up once.
_store_names = _native.store_names
_get_value = _native.get_value

#: The largest ``limit`` the C call takes; larger limits mean the same (no more keys exist).
_MAX_LIMIT = c_size_t(-1).value


class Database(HandleOwner):
    """A handle on one database, obtained from :meth:`mnemo.User.create_db`.

    Values are any JSON-serialisable Python value; they are stored in canonical JSON form
    (so dict key order is not kept, tuples come back as lists and dict keys as strings: a
    dict whose keys collide as strings, such as ``1`` and ``"1"``, raises
    :class:`mnemo.InvalidArgument`).
    Numbers are kept exactly: integers of any size and floats at full precision round-trip
    (integers longer than ``sys.get_int_max_str_digits()`` digits, 4300 by default, raise
    :class:`mnemo.InvalidArgument` when written or read: Python's own bound).
    The key ``"$serde_json::private::Number"`` is reserved: a dict whose first key, sorted,
    it would be raises :class:`mnemo.InvalidArgument`.
    Reads keep working after the user who opened the database logged out; writes then
    raise :class:`mnemo.LoggedOut`. Once the session's keys lose read access, reads raise
    :class:`mnemo.PermissionDenied` (within a second when another process sharing the
    storage revoked them).

    Each of :meth:`set`, :meth:`delete`, :meth:`grant` and :meth:`revoke` is one signed
    commit; :meth:`transaction` groups several writes into one. :meth:`store` gives a
    mapping view of one store.

    Use it as a context manager, or call :meth:`close`; after closing, every method raises
    :class:`mnemo.InvalidArgument` (a ``ValueError``), as Python files do. Transactions and
    subscriptions made through it stay valid after it is closed.
    Safe to use from several threads at once.
    """

    def __init__(self, make: Callable[..., int], *args: Any) -> None:
        """Internal: owns the ``mnemo_database *`` that ``make(*args, &out)`` makes. Use
        :meth:`mnemo.User.create_db`."""
        ptr = own(
            self,
            make,
            *args,
            free=lib.mnemo_db_free,
            closed_error=lambda: InvalidArgument("invalid argument: the Database is closed"),
        )
        #: The id, read once: it never changes, and calls that take a Database or an id
        #: (``forget_db``, ``share``, ``auto_approve``) take a closed one too.
        self._id: str = _native.call_string(lib.mnemo_db_id, ptr)

    @property
    def id(self) -> str:
        """The database's id, ``"sha256:<64 hex digits>"``. Raises InvalidArgument once
        the Database is closed."""
        with self._handle.use():
            return self._id

    def get(self, store: str, key: str) -> Any:
        """The value of ``key`` in ``store``, decoded from JSON (a number beyond a float's
        range, stored by another program, as a :class:`decimal.Decimal` of its exact text;
        :meth:`set` writes a finite Decimal back as its text).

        Raises NotFound if the key was never set or was deleted, InvalidArgument for a bad
        store name or key (empty, too long, containing NUL), StorageError.
        """
        try:
            s = _store_names[store]
        except (KeyError, TypeError):
            s = _native.encode_store(store)
        k = _native.encode(key, "key")
        handle = self._handle
        handle.acquire()
        try:
            text = _get_value(handle.arg, s, k)
        finally:
            handle.release()
        return from_json(text)

    def set(self, store: str, key: str, value: Any) -> None:
        """Sets ``key`` in ``store`` to ``value`` (any JSON-serialisable value), as one
        signed commit.

        Raises InvalidArgument for a bad or reserved (``_``-prefixed) store name, a bad key,
        or a value JSON cannot represent (see :class:`Database`); LoggedOut once the session
        that opened the database has ended; PermissionDenied; StorageError.
        """
        try:
            s = _store_names[store]
        except (KeyError, TypeError):
            s = _native.encode_store(store)
        k = _native.encode(key, "key")
        v = _native.encode(to_json(value), "value")
        handle = self._handle
        ptr = handle.acquire()
        try:
            status = lib.mnemo_db_set(ptr, s, k, v)
            if status:
                _native.check(status)
        finally:
            handle.release()

    def set_path(self, store: str, key: str, pointer: str, value: Any) -> None:
        """Sets the part of ``key``'s value at the JSON Pointer ``pointer`` (RFC 6901, e.g.
        ``"/address/city"``; ``""`` is the whole value) to ``value``, as one signed commit.
        Missing objects on the way are created. Concurrent writes of different paths of one
        value (on other devices) both survive the merge; of one path, the last writer wins;
        a whole-value :meth:`set` replaces every path write older than it. Arrays merge
        whole: a path into an array (an index, or ``"-"``) writes that whole array as it is
        here, so of two concurrent appends to one array, one wins. Each write reads and
        stores the key's merged value whole, so it costs time in proportion to the value's
        size: keep a large collection (thousands of fields) in separate keys.

        A scalar on the way is replaced by an object; array elements are addressed by index
        (the length, or ``"-"``, appends) and any other token into an array is refused.

        Raises InvalidArgument for a bad store name, key or pointer, a token into an array
        that neither indexes nor appends to it, a value JSON cannot represent, or a write
        nested more than 100 levels; LoggedOut; PermissionDenied; StorageError.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        p = _native.encode(pointer, "pointer")
        v = _native.encode(to_json(value), "value")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_set_path(ptr, s, k, p, v))

    def get_path(self, store: str, key: str, pointer: str) -> Any:
        """The part of ``key``'s value at the JSON Pointer ``pointer``, decoded.

        Raises NotFound if the key has no value or nothing is at ``pointer``,
        InvalidArgument for a bad store name, key or pointer, StorageError.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        p = _native.encode(pointer, "pointer")
        with self._handle.use() as ptr:
            return from_json(_native.call_string(lib.mnemo_db_get_path, ptr, s, k, p))

    def history(self, store: str, key: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Every change of ``key`` in ``store``, newest first (at most ``limit``, the
        newest; all when ``limit`` is None or 0): dicts with ``"entry"``, ``"key"`` (the
        signing public key), ``"height"`` and ``"value"`` (a whole value set),
        ``"deleted": True``, or ``"patch"`` (path → value). Changes that lost a merge are
        listed too. ``[]`` for a key never written. A ``limit`` larger than the C call takes
        (a ``size_t``) means the same as its largest: all (no key has more changes).

        Raises InvalidArgument for a bad store name or key or a ``limit`` that is not an
        int (a bool is not one) or is negative, PermissionDenied if read was revoked,
        StorageError.
        """
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 0
        ):
            raise InvalidArgument(
                f"invalid argument: limit must be a non-negative int or None, not {limit!r}"
            )
        # Clamped as scan's: ctypes would keep only the low bits (2**64 + 1 would read as 1).
        n = min(limit or 0, _MAX_LIMIT)
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        with self._handle.use() as ptr:
            text = _native.call_string(lib.mnemo_db_history, ptr, s, k, n)
            changes: list[dict[str, Any]] = from_json(text)
            return changes

    def insert(self, store: str, value: Any) -> str:
        """Sets a new generated key of ``store`` to ``value``, as one signed commit, and
        returns the key: 32 lower-case hex digits, the first 12 the time in milliseconds,
        the rest random (UUIDv7-like). Keys are unique, and those made by one process sort
        in the order they were made (so :meth:`scan` returns inserts oldest first).

        Raises InvalidArgument for a bad or reserved store name or a value JSON cannot
        represent, LoggedOut, PermissionDenied, StorageError.
        """
        s = _native.encode(store, "store")
        v = _native.encode(to_json(value), "value")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_db_insert, ptr, s, v)

    def delete(self, store: str, key: str) -> None:
        """Deletes ``key`` from ``store``, as one signed commit.

        Raises NotFound if the key has no value, InvalidArgument for a bad or reserved
        store name or a bad key, LoggedOut, PermissionDenied, StorageError.
        """
        s = _native.encode(store, "store")
        k = _native.encode(key, "key")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_delete(ptr, s, k))

    def get_all(self, store: str) -> dict[str, Any]:
        """Every live key of ``store`` with its value, sorted by key (``{}`` for an empty or
        unknown store). Reserved stores may be read, e.g. ``"_settings"``.

        Raises InvalidArgument for a bad store name, StorageError.
        """
        s = _native.encode(store, "store")
        with self._handle.use() as ptr:
            values: dict[str, Any] = from_json(_native.call_string(lib.mnemo_db_get_all, ptr, s))
            return values

    def scan(
        self, store: str, prefix: str = "", after: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """One page of the live ``(key, value)`` pairs of ``store``, in bytewise key order
        (by UTF-8 bytes, which is code point order): the keys starting with ``prefix`` (all
        when ``""``) that sort after ``after`` (from the first when None), at most ``limit``
        of them (all when None). Pass the last key of a page as ``after`` to get the next;
        :meth:`iter_scan` does that for you. A page costs what it returns, not the store's
        size. Reserved stores may be read.

        Raises TypeError for a ``limit`` that is not an int, InvalidArgument for a bad store
        name, a prefix over 4096 bytes, a bad ``after`` key or a ``limit`` below 1,
        PermissionDenied if read was revoked, Corrupt, StorageError.
        """
        s = _native.encode(store, "store")
        p = _native.encode(prefix, "prefix")
        a = _native.encode_optional(after, "after")
        n = 0 if limit is None else min(_check_count(limit, "limit"), _MAX_LIMIT)
        with self._handle.use() as ptr:
            pairs = from_json(_native.call_string(lib.mnemo_db_scan, ptr, s, p, a, n))
        return [(key, value) for key, value in pairs]

    def iter_scan(
        self, store: str, prefix: str = "", after: str | None = None, page: int = 256
    ) -> Iterator[tuple[str, Any]]:
        """The live ``(key, value)`` pairs of ``store`` as :meth:`scan` orders and filters
        them, read ``page`` pairs at a time: each page is fetched when the previous one is
        used up, after the last key returned, so the iterator never holds more than one page
        and sees keys committed meanwhile further on.

        The arguments are checked here (TypeError, InvalidArgument for a ``page`` below 1 and
        as :meth:`scan`); each page read may raise as :meth:`scan` does, including
        InvalidArgument once the Database is closed.
        """
        _native.encode(store, "store")
        _native.encode(prefix, "prefix")
        _native.encode_optional(after, "after")
        size = _check_count(page, "page")
        return self._pages(store, prefix, after, size)

    def _pages(
        self, store: str, prefix: str, after: str | None, size: int
    ) -> Iterator[tuple[str, Any]]:
        while True:
            pairs = self.scan(store, prefix, after, size)
            yield from pairs
            if len(pairs) < size:
                return
            after = pairs[-1][0]

    def items(self, store: str) -> Iterator[tuple[str, Any]]:
        """The ``(key, value)`` pairs of ``store``, sorted by key, read at once (a snapshot:
        writes during the iteration do not show)."""
        return iter(self.get_all(store).items())

    def keys(self, store: str) -> Iterator[str]:
        """The live keys of ``store``, sorted, read at once (a snapshot)."""
        return iter(self.get_all(store))

    def store(self, name: str) -> Store:
        """A mutable mapping view of the store ``name`` (see :class:`mnemo.Store`).

        The name is checked when the view is used, not here.
        """
        if not isinstance(name, str):
            raise TypeError(f"store must be a str, not {type(name).__name__}")
        return Store(self, name)

    def transaction(self) -> Transaction:
        """Starts a transaction: its writes commit together as one entry, or not at all.

        Best used as a context manager (commits at the end of the block, aborts if it
        raises); see :class:`mnemo.Transaction`.
        """
        with self._handle.use() as ptr:
            return Transaction(lib.mnemo_db_begin, ptr)

    def grant(self, pubkey: str, permission: Permission) -> None:
        """Gives the public key ``pubkey`` (``"ed25519:<base64url>"``) a ``permission``:
        ``"admin"``, ``"write"`` or ``"read"``. Granting again replaces the permission (and
        re-activates a revoked key). Needs an admin more senior than ``pubkey``: the creator
        is the most senior, an admin grant is one step junior to the admin making it, and no
        admin changes its own grant (so the creator always stays admin).

        Raises InvalidArgument for a malformed key or permission, PermissionDenied (not an
        admin senior to ``pubkey``, or its own key), LoggedOut, StorageError.
        """
        k = _native.encode(pubkey, "pubkey")
        p = _native.encode(permission, "permission")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_grant(ptr, k, p))

    def revoke(self, pubkey: str) -> None:
        """Revokes ``pubkey``: entries it signs on top of this change are rejected
        everywhere, and those it signed without having seen this change (concurrently, e.g.
        offline) are discarded wherever the change arrives. Needs an admin senior to
        ``pubkey`` (the creator cannot be revoked).

        Raises PermissionDenied (checked first), NotFound if the key holds no active grant,
        InvalidArgument for a malformed key, LoggedOut, StorageError.
        """
        k = _native.encode(pubkey, "pubkey")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_revoke(ptr, k))

    def verify(self) -> None:
        """Checks everything stored of the database against its entries: ids, signatures,
        and the whole state (every store, the tips, the entries discarded by revocations),
        each key found by a read of its whole store and when looked up by itself (as
        ``get`` does). Reads every entry, so its cost grows with the history.

        Raises Corrupt if anything differs (rows missing, altered or added; the message
        says what), PermissionDenied if read was revoked, Busy if commits kept changing the
        database meanwhile, StorageError.
        """
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_verify(ptr))

    def tips(self) -> list[str]:
        """The ids of the current tips (entries without children), sorted. A database
        written only here has exactly one: its last commit. At most 1,024: sync refuses
        (Busy) an entry that would add one more until a writer's commit merges them."""
        with self._handle.use() as ptr:
            tips: list[str] = from_json(_native.call_string(lib.mnemo_db_tips, ptr))
            return tips

    def subscribe(self, callback: ChangeCallback) -> Subscription:
        """Calls ``callback(db_id, entry_id, remote)`` after every change to this database:
        each local commit (``remote`` False), and each entry applied from sync or stored by
        another process in the same SQLite file or PostgreSQL database (True; those are
        heard within ``other_processes_poll_ms`` of :meth:`mnemo.Instance.limits`, 200 ms
        by default).

        The callback runs on a library thread, in commit order, and may call mnemo. While
        65,536 notifications wait for callbacks (:meth:`mnemo.Instance.set_limits` changes
        that number), changes to databases with callbacks wait for them first, up to 10 s
        each, and then go on. Closing the last handle of the instance (the instance, or a
        database, cursor or transaction closed after it) waits for the callbacks of the
        changes already queued: never close it while holding a lock a callback waits for.
        The subscription goes on hearing changes (their ids) after read is revoked from
        this session's keys: close it when you revoke. An exception
        the callback raises is logged to the
        ``mnemo`` logger and otherwise ignored. The subscription lasts until closed (or
        garbage-collected), also once this handle is closed: use it as a context manager or
        keep a reference (the callback alone does not keep it: see
        :class:`mnemo.Subscription`, also for what happens at interpreter exit). To read
        changes on a thread of your own instead, see :meth:`watch`. Raises TypeError if
        ``callback`` is not callable, InvalidArgument once the interpreter is exiting,
        InternalError if the notification thread cannot start.
        """
        with self._handle.use() as ptr:
            return subscription.subscribe(ptr, callback)

    def watch(self) -> Events:
        """Starts queuing every change to this database from now on, local and remote (as
        :meth:`subscribe` hears them), for reading without a callback: ``next(timeout)``,
        iteration, or waiting on ``fileno()`` (see :class:`mnemo.Events`), in the order they
        were made, also when several threads commit at once. Each change says where it came
        from: ``"origin"`` is ``"local"``, ``"sync"`` or ``"other_process"``. As a
        subscription, it goes on hearing changes after read is revoked from this session's
        keys: close it when you revoke. Raises PermissionDenied once read was revoked, Busy
        when the instance has as many open as its ``watchers`` limit allows (1024 by
        default, see :meth:`mnemo.Instance.set_limits`; close those you no longer read),
        StorageError, InternalError (no thread or descriptor)."""
        with self._handle.use() as ptr:
            return Events(lib.mnemo_db_watch, ptr)

    def flush_notifications(self, timeout: float = 10.0) -> None:
        """Waits until every subscription callback for the changes committed so far (to any
        database of this instance) has run, including those still queued for subscriptions
        closed meanwhile. Raises Busy if ``timeout`` seconds pass first, or when called from
        inside a callback (it would wait for itself); ValueError for a negative or NaN
        timeout.

        ``timeout`` is rounded up to whole milliseconds (0 only checks). The library waits
        at most 2**32 - 1 ms (about 49.7 days), never without limit: a longer timeout,
        ``math.inf`` included, waits that long. The wait is one call into the library, so
        Ctrl-C is handled when it ends: give a timeout you are willing to wait."""
        _check_timeout(timeout, "a number of seconds >= 0")
        timeout_ms = _timeout_ms(timeout)
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_db_flush_notifications(ptr, timeout_ms))

    def close(self) -> None:
        """Frees the handle (the database stays stored); new calls are refused at once.
        Calls already running in other threads are waited for, up to a second; the handle
        is then freed as soon as the last of them ends (so a subscription callback closing a
        Database that another thread is flushing returns after that second, the flush
        waiting for that very callback). Idempotent."""
        super().close()

    def __repr__(self) -> str:
        # The id read when the Database was made, so a closed one still shows it; repr
        # never raises.
        db_id = getattr(self, "_id", None)
        state = "closed" if self.closed else "open"
        return f"<mnemo.Database {db_id} {state}>" if db_id else f"<mnemo.Database {state}>"


def id_of(db: Database | str) -> str:
    """The id of ``db``, a :class:`Database` (open or closed) or an id already."""
    return db._id if isinstance(db, Database) else db


def _check_count(value: int, what: str) -> int:
    """A count of at least 1: TypeError if not an int, InvalidArgument if below 1."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidArgument(f"invalid argument: {what} must be at least 1 (got {value})")
    return value
