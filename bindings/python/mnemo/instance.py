"""The :class:`Instance` class: a device's identity, accounts and databases on one backend."""

from __future__ import annotations

import json
from ctypes import c_void_p
from typing import Any, Callable, NamedTuple

from . import _native
from ._handle import HandleOwner, check_not_forked, own
from ._native import lib
from ._values import from_json
from .errors import InvalidArgument
from .sync import Sync
from .user import User

_UINT32_MAX = 2**32 - 1


class Argon2Params(NamedTuple):
    """The Argon2id cost of password operations on an instance, for :meth:`Instance.open`.

    A named tuple, so a plain ``(memory_kib, time_cost, parallelism)`` tuple works too.
    Each value must be at least the library's minimum, which is also the default cost:
    ``(19456, 2, 1)`` (OWASP's recommendation: 19 MiB, 2 passes, 1 lane), and at most its
    maximum: ``(1048576, 64, 16)`` (1 GiB, 64 passes, 16 lanes).
    """

    #: Memory per password operation, in KiB (``m_kib`` in C).
    memory_kib: int
    #: Passes over that memory (``t`` in C).
    time_cost: int
    #: Lanes (``p`` in C).
    parallelism: int


def _argon2_params(value: Argon2Params | tuple[int, int, int]) -> Argon2Params:
    """``value`` as checked :class:`Argon2Params`: TypeError for a value that is not three
    integers, InvalidArgument for one outside ``uint32_t`` (ctypes would wrap it silently)."""
    if not isinstance(value, tuple) or len(value) != 3:
        raise TypeError(
            "argon2 must be a (memory_kib, time_cost, parallelism) tuple or Argon2Params, "
            f"not {value!r}"
        )
    params = Argon2Params(*value)
    for field, v in zip(params._fields, params):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"argon2 {field} must be an int, not {type(v).__name__}")
        if not 0 <= v <= _UINT32_MAX:
            raise InvalidArgument(f"invalid argument: argon2 {field} {v} is not a uint32_t")
    return params


def _consuming(backend: c_void_p, open_on: Callable[..., int], *args: Any) -> int:
    """``open_on(backend, *args)``, for the open functions, which consume the backend on
    success and on failure: ``backend`` is cleared first, so that :meth:`Instance.open`
    frees it only if it never reached them. From Python 3.11 no signal handler runs
    between the two (only after calls, and at the start of Python functions)."""
    ptr, backend.value = backend.value, None
    return open_on(ptr, *args)


class Instance(HandleOwner):
    """An open mnemo instance. Create one with :meth:`Instance.open`.

    Use it as a context manager, or call :meth:`close`. Users, databases and sync
    references obtained through it stay valid after it is closed (they keep its storage
    open, except sync references: once the instance is closed and its users logged out or
    closed, sync methods that need the instance raise :class:`mnemo.InvalidArgument`, even
    while databases are still open).
    After closing, its own methods raise :class:`mnemo.InvalidArgument` (a ``ValueError``).
    Safe to use from several threads at once.
    """

    def __init__(self, make: Callable[..., int], *args: Any) -> None:
        """Internal: owns the ``mnemo_instance *`` that ``make(*args, &out)`` makes. Use
        :meth:`Instance.open`."""
        own(
            self,
            make,
            *args,
            free=lib.mnemo_instance_free,
            closed_error=lambda: InvalidArgument("invalid argument: the Instance is closed"),
        )

    @classmethod
    def open(
        cls, url: str, *, argon2: Argon2Params | tuple[int, int, int] | None = None
    ) -> Instance:
        """Opens the backend named by ``url`` and an instance on it, creating the device
        identity on first open.

        Supported URLs, the three backends:

        - ``"sqlite:PATH"``: the embedded default, one file (created with mode 0600,
          following a symbolic link; PATH is a plain path, never an SQLite ``file:`` URI).
          It holds the device's secret key: StorageError if other users may read or write
          it or another user owns it (or its ``-wal``, ``-shm`` or ``-journal`` file), if
          it has a second name (a hard link), or if it is not a regular file. While it is
          open, do not open the same file with Python's ``sqlite3`` module in
          this process: closing that connection drops this process's locks on the file
          (POSIX locks belong to the process), and other processes' writes may then
          corrupt it. Inspect it from another process;
        - ``"postgres://user:password@host:port/db?options"`` (or ``postgresql://``): a
          PostgreSQL server shared by many processes, with TLS as libpq's ``sslmode`` and
          ``sslrootcert`` say (e.g. ``"?sslmode=verify-full&sslrootcert=/etc/ca.pem"``; see
          the README);
        - ``"memory:"`` (exactly that): in this process only, nothing survives it; for tests.

        ``argon2``: the Argon2id cost of passwords, as :class:`Argon2Params` or a
        ``(memory_kib, time_cost, parallelism)`` tuple; None for the default, which is the
        minimum: ``(19456, 2, 1)``. Each value must be from the minimum, so passwords are
        never weaker by accident, to the maximum ``(1048576, 64, 16)`` (1 GiB, 64 passes,
        16 lanes). Every password operation (create_user, login, change_password) uses that
        much memory and time, so keep the values modest. The cost is recorded when the
        instance is created; opening an existing instance with a different one fails rather
        than change it.

        Raises InvalidArgument in a child process forked after its parent used mnemo
        (mnemo's threads and locks do not survive a fork: use multiprocessing's "spawn" or
        "forkserver" method, or fork first; objects made before the fork raise it too), for
        an unknown or malformed URL (an unknown ``sslmode``; ``verify-ca`` or
        ``verify-full`` without a readable ``sslrootcert``), or Argon2id parameters below the
        minimum, above the maximum, rejected by Argon2, or different from the recorded ones;
        TypeError if ``argon2`` is not three integers; StorageError or Corrupt if the backend
        fails (for PostgreSQL: unreachable, TLS refused, or a certificate refused).
        """
        check_not_forked()
        u = _native.encode(url, "url")
        if argon2 is None:
            open_on: Callable[..., int] = lib.mnemo_instance_open
            params: tuple[int, ...] = ()
        else:
            open_on, params = lib.mnemo_instance_open_with_argon2, _argon2_params(argon2)
        backend = c_void_p()
        try:
            _native.call_handle(lib.mnemo_backend_open, u, out=backend)
            return cls(_consuming, backend, open_on, *params)
        finally:
            lib.mnemo_backend_free(backend)  # NULL, a no-op, once an open function has it

    @property
    def device_id(self) -> str:
        """The device's public identity, ``"ed25519:<base64url>"``, stable for the
        instance's life."""
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_instance_device_id, ptr)

    def limits(self) -> dict[str, int]:
        """The limits on what this instance holds in memory for its databases:
        ``{"idle_databases_kept": 256, "queued_notifications": 65536,
        "waiting_entries_per_database": 100000, "waiting_bytes_per_database": 16777216,
        "waiting_bytes": 67108864, "waiting_time_ms": 600000, "other_processes_poll_ms":
        200, "watchers": 1024}`` by default.

        ``idle_databases_kept``: databases nothing refers to (no :class:`mnemo.Database`,
        subscription, event queue, sync track or watch) kept in memory for reuse; past it,
        the least recently used are dropped and read from storage again when next used.
        ``queued_notifications``: change notifications waiting for subscription callbacks
        past which a commit or received entry of a database with callbacks waits for them
        (up to 10 s each time, never from inside a callback).
        The ``waiting_`` limits bound entries received from peers before their parents,
        which wait, invisible, in memory: at most so many entries and bytes per database,
        so many bytes in all, so long each; past them, entries are refused (Busy) and a
        later sync round brings them again. ``other_processes_poll_ms``: how often each
        database with a subscription or watch is checked for entries other processes stored
        in the same SQLite file or PostgreSQL database, which its subscribers then hear.
        ``watchers``: :class:`mnemo.Events` open at once across the instance's databases
        (each holds two descriptors and up to 1024 changes, about 72 KiB); past it,
        :meth:`mnemo.Database.watch` raises Busy until one is closed."""
        with self._handle.use() as ptr:
            limits: dict[str, int] = json.loads(
                _native.call_string(lib.mnemo_instance_limits, ptr)
            )
            return limits

    def stats(self) -> dict[str, int]:
        """What this instance holds now, against its :meth:`limits`: ``databases_in_memory``
        (the system databases, those in use and the idle ones kept),
        ``notifications_queued`` (not yet delivered to every subscription callback),
        ``waiting_entry_bytes`` (entries from peers waiting, invisible, for their parents),
        ``databases_polled`` (checked for entries other processes store: those with a
        subscription or watch, on a SQLite file or PostgreSQL), ``storage_connections``
        (open to the SQLite file or the PostgreSQL server; 0 for ``memory:``),
        ``password_derivations`` (Argon2id derivations computing now in this process, for
        every instance: at most one per core, 16 at most; others wait up to 60 s, then raise
        Busy), ``scrubs_pending`` (on a SQLite file, steps of a forget's or a removed
        secret's scrub not finished yet, 0 to 2: removed values or keys may still be in the
        file or its WAL; the next open, forget or change of keys tries again) and
        ``watchers`` (:class:`mnemo.Events` not yet closed, across the databases). For
        monitoring: the counts may change as soon as they are read. Raises StorageError,
        Corrupt or Busy (another process held the SQLite file locked for 10 s) if reading
        ``scrubs_pending`` fails."""
        with self._handle.use() as ptr:
            stats: dict[str, int] = json.loads(_native.call_string(lib.mnemo_instance_stats, ptr))
            return stats

    def set_limits(self, **limits: int) -> None:
        """Changes the limits named (as :meth:`limits` names them), keeping the others, all
        or nothing, from now on: ``inst.set_limits(idle_databases_kept=4096)``. Idle
        databases past a lowered bound are dropped when the next database is opened.

        Entries already waiting past a lowered ``waiting_`` bound stay until their
        parents come or their time is up; watchers past a lowered ``watchers`` stay open,
        and new ones are refused until fewer are open.

        Raises InvalidArgument for an unknown name or a value out of its bounds
        (``idle_databases_kept`` 0 to 1048576, ``queued_notifications`` 1 to 16777216,
        ``waiting_entries_per_database`` 0 to 16777216, ``waiting_bytes_per_database`` and
        ``waiting_bytes`` 0 to 2**40, ``waiting_time_ms`` 1 to 86400000,
        ``other_processes_poll_ms`` 10 to 3600000, ``watchers`` 0 to 1048576, 0 refusing
        every watch); nothing is changed then. TypeError if a
        value is not an int.
        """
        text = _native.encode_limits(limits)
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_instance_set_limits(ptr, text))

    def create_user(self, name: str, password: str | None = None) -> None:
        """Creates a user account.

        ``name``: 1 to 64 bytes of UTF-8 without control characters. ``password``: None for
        a passwordless user (keys stored unsealed), else 1 to 1024 bytes.
        Raises InvalidArgument, AlreadyExists (the name is taken), StorageError, Busy (the
        call took over an hour, as in a process suspended part-way, and an open of the
        storage meanwhile discarded it: create the user again). If the process dies
        part-way (or the call fails), the name is either free again or belongs to the
        complete account, which then logs in; what a creation that died before claiming the
        name stored is discarded by the first open an hour or more later.
        """
        n = _native.encode(name, "username")
        p = _native.encode_optional(password, "password")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_instance_create_user(ptr, n, p))

    def login(self, name: str, password: str | None = None) -> User:
        """Logs a user in and returns the session (a context manager that logs out).

        ``password`` is None for a passwordless user. Raises AuthFailed for an unknown
        user, a wrong password, or a password missing or given where none is set;
        InvalidArgument; StorageError; Corrupt.
        """
        n = _native.encode(name, "username")
        p = _native.encode_optional(password, "password")
        with self._handle.use() as ptr:
            return User(lib.mnemo_instance_login, ptr, n, p, username=name)

    def list_users(self) -> list[str]:
        """Every username, sorted."""
        with self._handle.use() as ptr:
            users: list[str] = from_json(_native.call_string(lib.mnemo_instance_list_users, ptr))
            return users

    def enable_sync(self) -> None:
        """Enables sync on this instance. Idempotent. What the users logged in now track
        resumes in the background; if resuming fails, sync stays enabled, the error is raised
        and the next call resumes again.

        Raises StorageError, or what resuming failed with (Busy, Corrupt, ...).
        """
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_instance_enable_sync(ptr))

    @property
    def sync(self) -> Sync:
        """A new reference to the sync engine (close it when done).

        Raises SyncDisabled before :meth:`enable_sync`.
        """
        with self._handle.use() as ptr:
            return Sync(lib.mnemo_instance_sync, ptr)

    def close(self) -> None:
        """Closes the instance handle. Idempotent."""
        super().close()

    def __repr__(self) -> str:
        # The device id, read once while the handle is open and kept; repr never raises.
        device = getattr(self, "_repr_id", None)
        if device is None and not self.closed:
            try:
                device = self._repr_id = self.device_id
            except Exception:
                pass
        state = "closed" if self.closed else "open"
        return f"<mnemo.Instance {device} {state}>" if device else f"<mnemo.Instance {state}>"
