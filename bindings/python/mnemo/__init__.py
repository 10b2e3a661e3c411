"""Python bindings for mnemo, an embedded, multi-user, signed and syncable database.

Example::

    import mnemo

    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("alice", password="s3cret")
        with inst.login("alice", password="s3cret") as alice:
            with alice.create_db("notes") as db:
                db.set("todo", "milk", {"done": False})
                print(db.get("todo", "milk"))
                with db.transaction() as t:  # one commit, all or nothing
                    t.set("todo", "bread", {"done": False})
                    t.delete("todo", "milk")
                print(dict(db.store("todo")))

Users share a database by key: its admin grants the other user's public key (from
``User.list_keys()``), who then opens it by id with ``User.load_db(db_id)``. The first user
created is the instance admin (``User.admin_list_users()``, ``disable_user``,
``enable_user``, ``delete_user``).

Instances on different devices sync over TLS 1.3: ``Instance.enable_sync()``, then
``Instance.sync`` gives a :class:`mnemo.Sync`: the owner's side ``listen()``s; another
instance, once its user's key is granted, pulls and pushes with ``sync_db(user, addr, db_id)``
(one round) or ``track(user, addr, db_id)`` (in the background; ``flush()`` waits for the
pushes). ``examples/sync_peer.py`` shows the flow between two processes.

Errors are raised as subclasses of :class:`mnemo.Error`, one per status code of the C
library, each with ``.status`` (a :class:`mnemo.Status`) and ``.message``. Strings containing a NUL character raise
:class:`mnemo.InvalidArgument`; so does using an Instance, Database or Sync after
``close()`` (InvalidArgument is also a ``ValueError``). A User after ``logout()`` raises
:class:`mnemo.LoggedOut`.

The shared library is found through ``MNEMO_LIB``, then next to this package, then in the
build tree (the more recently built of ``target/debug`` and ``target/release``).
"""

from __future__ import annotations

from . import _native
from .database import Database, Permission
from .errors import (
    AlreadyExists,
    AuthFailed,
    BufferTooSmall,
    Busy,
    Corrupt,
    Error,
    InternalError,
    InvalidArgument,
    LoggedOut,
    NetworkError,
    NotFound,
    PermissionDenied,
    Status,
    StorageError,
    SyncDisabled,
)
from .events import Events
from .instance import Argon2Params, Instance
from .store import Store
from .subscription import Subscription
from .sync import Sync
from .transaction import Transaction
from .user import AccountStatus, DatabaseInfo, KeyInfo, User, UserInfo

__all__ = [
    "version",
    "version_number",
    "status_name",
    "Instance",
    "Argon2Params",
    "User",
    "DatabaseInfo",
    "KeyInfo",
    "UserInfo",
    "AccountStatus",
    "Database",
    "Permission",
    "Store",
    "Events",
    "Transaction",
    "Subscription",
    "Sync",
    "Status",
    "Error",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "AuthFailed",
    "PermissionDenied",
    "LoggedOut",
    "SyncDisabled",
    "NetworkError",
    "StorageError",
    "Corrupt",
    "InternalError",
    "Busy",
    "BufferTooSmall",
]


def version() -> str:
    """The loaded library's version, e.g. ``"0.1.0"``."""
    return str(_native.lib.mnemo_version().decode("ascii"))


def version_number() -> int:
    """The loaded library's version as MAJOR*1000000 + MINOR*1000 + PATCH."""
    return int(_native.lib.mnemo_version_number())


def status_name(status: int) -> str:
    """The C name of a status code, e.g. ``"MNEMO_STATUS_NOT_FOUND"``
    (``"MNEMO_STATUS_UNKNOWN"`` for an unknown code); TypeError for what is not an int."""
    return _native.status_name(status)
