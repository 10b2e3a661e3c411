"""The :class:`User` class: a logged-in user's session, and the records its listings return."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Callable, Literal, NamedTuple

from . import _native
from ._handle import Handle, own
from ._native import lib
from ._values import from_json
from .database import Database, id_of
from .errors import LoggedOut


class DatabaseInfo(NamedTuple):
    """A database the user tracks, from :meth:`User.list_dbs`."""

    #: The database id, ``"sha256:<64 hex digits>"`` (pass it to :meth:`User.load_db`).
    id: str
    #: Its name (names need not be unique).
    name: str


class KeyInfo(NamedTuple):
    """One of the user's keys, from :meth:`User.list_keys`."""

    #: The public key, ``"ed25519:<base64url>"`` (what :meth:`mnemo.Database.grant` takes).
    pubkey: str
    #: The display name given to :meth:`User.add_private_key` (``"default"`` for the key
    #: made with the account), or None.
    name: str | None
    #: True for the user's default key, the one :meth:`User.create_db` makes admin.
    is_default: bool


#: An account's status in :class:`UserInfo`.
AccountStatus = Literal["active", "disabled"]


class UserInfo(NamedTuple):
    """One account of the instance, from :meth:`User.admin_list_users`."""

    #: The username.
    username: str
    #: ``"active"``, or ``"disabled"`` by :meth:`User.disable_user`.
    status: AccountStatus
    #: True for the instance admin (the first user created).
    is_admin: bool

    @property
    def disabled(self) -> bool:
        """True if an admin disabled the account."""
        return self.status == "disabled"


def _logout(ptr: int) -> None:
    _native.check(lib.mnemo_user_logout(ptr))


class User:
    """A logged-in session, from :meth:`mnemo.Instance.login`, holding the user's
    decrypted keys until :meth:`logout`.

    As a context manager it logs out on exit. After :meth:`logout` every method raises
    :class:`mnemo.LoggedOut` without calling the library. Databases opened through the
    session stay readable after logout, but their writes raise LoggedOut. Garbage
    collection of the User logs it out too: keep a reference while you use what it opened
    (``user = inst.login(name)`` then ``user.create_db(...)``, not
    ``inst.login(name).create_db(...)``, whose database cannot write once the line ends), and
    while a sync track runs for it (:meth:`mnemo.Sync.track` pauses at logout).
    """

    _handle: Handle

    def __init__(
        self, make: Callable[..., int], *args: Any, username: str | None = None
    ) -> None:
        """Internal: owns the ``mnemo_user *`` that ``make(*args, &out)`` makes. Use
        :meth:`mnemo.Instance.login`."""
        self._username = username  # the name logged in with, for repr
        own(
            self,
            make,
            *args,
            free=_logout,
            closed_error=lambda: LoggedOut("the user session behind this handle has logged out"),
        )

    def create_db(self, name: str) -> Database:
        """Creates a database with this user's default key as its admin.

        ``name`` is 1 to 255 bytes of UTF-8; names need not be unique. Raises
        InvalidArgument, PermissionDenied (the account was deleted), LoggedOut,
        StorageError.
        """
        n = _native.encode(name, "name")
        with self._handle.use() as ptr:
            return Database(lib.mnemo_user_create_db, ptr, n)

    def load_db(self, db_id: str) -> Database:
        """Opens a database stored on this instance by its id, and tracks it (it then shows
        in :meth:`list_dbs` and :meth:`find_db`).

        The handle signs with the user's key of highest permission on the database (see
        :meth:`signing_key`); if no key has any, it can read but writes raise
        PermissionDenied. Raises InvalidArgument for a malformed id (not
        ``"sha256:<64 hex digits>"``), NotFound if the database is not on this instance
        (sync it first), LoggedOut, StorageError.
        """
        i = _native.encode(db_id, "db_id")
        with self._handle.use() as ptr:
            return Database(lib.mnemo_user_load_db, ptr, i)

    def find_db(self, name: str) -> Database:
        """Opens the tracked (created or loaded) database named ``name``.

        When several share the name, the one tracked first is opened; use :meth:`list_dbs`
        and :meth:`load_db` to choose another. Raises NotFound (also a ``LookupError``) if
        no tracked database has that name, InvalidArgument, LoggedOut, StorageError.
        """
        n = _native.encode(name, "name")
        with self._handle.use() as ptr:
            return Database(lib.mnemo_user_find_db, ptr, n)

    def list_dbs(self) -> list[DatabaseInfo]:
        """The databases the user tracks, sorted by name then id.

        Raises LoggedOut, StorageError.
        """
        with self._handle.use() as ptr:
            rows: list[dict[str, Any]] = from_json(
                _native.call_string(lib.mnemo_user_list_dbs, ptr)
            )
        return [DatabaseInfo(id=r["id"], name=r["name"]) for r in rows]

    def forget_db(self, db: Database | str) -> None:
        """Removes a database (a :class:`mnemo.Database` or its id) from the user's list: it
        no longer shows in :meth:`list_dbs` or opens through :meth:`find_db`, and what this
        user tracks of it with sync stops for good.

        When no user of the instance keeps it any more, its storage is reclaimed: every row
        of it is deleted (SQLite zeroes them and rewrites the file, so no copy stays: time in
        proportion to the file's size; PostgreSQL keeps old row versions until vacuumed, and
        a row of the database's id and version), and database handles still open on it raise
        NotFound. Forgetting is local: grants in the database's settings stay,
        also on other replicas; while another user of the instance keeps it,
        :meth:`load_db` adds it to the list again; once reclaimed, syncing it from a peer
        brings it back, at storage positions after any it had here (so peers that pulled it
        from here before get all of the new copy). Raises NotFound (not in the user's list),
        PermissionDenied (a system database of the instance), InvalidArgument (a malformed
        id), LoggedOut, StorageError.
        """
        i = _native.encode(id_of(db), "db_id")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_user_forget_db(ptr, i))

    def add_private_key(self, display_name: str | None = None) -> str:
        """Generates a new Ed25519 key for the user and returns its public key,
        ``"ed25519:<base64url>"``.

        The key is stored like the others: sealed under the password, or unsealed for a
        passwordless user; the private key never leaves mnemo. A crash during the call may
        leave the new key stored but never listed (granted nothing; erased with the account).
        With sync enabled, the device also makes the key's holder proof (see
        :meth:`mnemo.Sync.sync_db`), so that peers push it what the key may read.
        ``display_name`` is optional, at most 255 bytes. Raises InvalidArgument (name too
        long), PermissionDenied (the account was deleted), LoggedOut, StorageError.
        """
        n = _native.encode_optional(display_name, "display_name")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_user_add_private_key, ptr, n)

    def list_keys(self) -> list[KeyInfo]:
        """The user's keys, sorted by public key.

        Raises LoggedOut, StorageError.
        """
        with self._handle.use() as ptr:
            rows: list[dict[str, Any]] = from_json(
                _native.call_string(lib.mnemo_user_list_keys, ptr)
            )
        return [KeyInfo(r["pubkey"], r["name"], r["default"]) for r in rows]

    def remove_key(self, pubkey: str) -> None:
        """Removes one of the user's keys, ``"ed25519:<base64url>"``: its record goes and
        its sealed private key is erased from storage. This session stops signing with it at
        once (other sessions of the user hold it until they log out); grants it holds in
        databases stay. The device's holder proof by the key is marked gone (see
        :meth:`mnemo.Sync.sync_db`): peers stop pushing to this device what only that key
        may read (revoke the key's read to cut off a device that kept a copy of the proof).

        Raises InvalidArgument for the default key (make another the default first with
        :meth:`set_default_key`) or a malformed key, NotFound if the user has no such key,
        LoggedOut, StorageError.
        """
        k = _native.encode(pubkey, "pubkey")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_user_remove_key(ptr, k))

    def set_default_key(self, pubkey: str) -> None:
        """Makes one of the user's keys the default: it signs the databases
        :meth:`create_db` makes from now on and comes first among equals in
        :meth:`signing_key`. Stored: it holds at the next login.

        Raises NotFound if the user has no such key (or another session added it since this
        one logged in: log in again), InvalidArgument for a malformed key, LoggedOut,
        StorageError.
        """
        k = _native.encode(pubkey, "pubkey")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_user_set_default_key(ptr, k))

    def signing_key(self, db_id: str) -> str:
        """The public key this user signs database ``db_id`` with: the key with the highest
        permission on it (the default key first among equals).

        Raises NotFound if the database is not on this instance or none of the user's keys
        has a permission on it: to be granted access, give a database admin a key from
        :meth:`list_keys` instead. Raises InvalidArgument for a malformed id, LoggedOut,
        StorageError.
        """
        i = _native.encode(db_id, "db_id")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_user_get_signing_key, ptr, i)

    def change_password(self, old: str | None, new: str | None) -> None:
        """Changes the user's password; ``old`` stops working at once. The sealed secret it
        locked is overwritten in place, so the file keeps no copy that ``old`` (or no
        password) opens; on PostgreSQL old row versions stay until vacuumed.

        ``old`` is None for a passwordless user; ``new`` None makes the user passwordless
        (its keys then as good as unsealed to anyone holding the file), else 1 to 1024
        bytes. Raises AuthFailed if ``old`` is
        wrong, InvalidArgument for a ``new`` out of bounds, LoggedOut, StorageError.
        """
        o = _native.encode_optional(old, "old password")
        n = _native.encode_optional(new, "new password")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_user_change_password(ptr, o, n))

    # --- Administration: the instance admin only (the first user created) -----------------

    def admin_list_users(self) -> list[UserInfo]:
        """Admin only: every account of the instance with its status and role, sorted by
        name (:meth:`mnemo.Instance.list_users` gives only the names, to anyone).

        Raises PermissionDenied unless this user is the instance admin, LoggedOut,
        StorageError.
        """
        with self._handle.use() as ptr:
            rows: list[dict[str, Any]] = from_json(
                _native.call_string(lib.mnemo_user_admin_list_users, ptr)
            )
        return [UserInfo(r["username"], r["status"], r["admin"]) for r in rows]

    def disable_user(self, username: str) -> None:
        """Admin only: disables another account. It can no longer log in (the right
        password then raises PermissionDenied); sessions already open go on until logout.
        Disabling a disabled account changes nothing.

        Raises PermissionDenied unless this user is the instance admin, NotFound (no such
        user), InvalidArgument (the admin's own name), LoggedOut, StorageError.
        """
        self._admin(lib.mnemo_user_admin_disable, username)

    def enable_user(self, username: str) -> None:
        """Admin only: re-enables an account disabled by :meth:`disable_user`. Enabling an
        active account changes nothing. Raises as :meth:`disable_user`.
        """
        self._admin(lib.mnemo_user_admin_enable, username)

    def delete_user(self, username: str) -> None:
        """Admin only: deletes another account. It can no longer log in (AuthFailed, as for
        any unknown user) and its name can be created again, as a new account; its sealed
        keys and private records are erased, and the device's holder proofs by its keys are
        marked gone (see :meth:`mnemo.Sync.sync_db`), while its databases stay. Raises as
        :meth:`disable_user`, or Busy if a session of that user changed its account
        meanwhile (delete it again). A deletion stopped part-way (an error, a crash) leaves
        the user either there or gone, never in between.
        """
        self._admin(lib.mnemo_user_admin_delete, username)

    def _admin(self, fn: Callable[..., int], username: str) -> None:
        n = _native.encode(username, "username")
        with self._handle.use() as ptr:
            _native.check(fn(ptr, n))

    @property
    def logged_out(self) -> bool:
        """True once :meth:`logout` was called."""
        return self._handle.closed

    def logout(self) -> None:
        """Ends the session: wipes the decrypted keys and frees the handle. New calls are
        refused at once; calls already running in other threads are waited for, up to a
        second, and the keys are then wiped as soon as the last of them ends (so too when
        Ctrl-C interrupts the wait). Idempotent."""
        self._handle.close()

    def __enter__(self) -> User:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.logout()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            try:
                handle.close()
            except Exception:
                pass  # nothing useful to do about a failed logout during collection

    def __repr__(self) -> str:
        state = "logged out" if self.logged_out else "logged in"
        name = getattr(self, "_username", None)
        return f"<mnemo.User {name!r} {state}>" if name is not None else f"<mnemo.User {state}>"
