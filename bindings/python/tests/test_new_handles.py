"""New handles are never left without an owner: an exception landing right after the C
call that made one (Python runs a Ctrl-C's handler right after a call into C returns),
before the Python object holds it, frees it, once."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import mnemo
from mnemo import _native, subscription

lib = _native.lib


class Objects:
    """An instance with sync enabled, a passwordless user logged in and a database."""

    def __init__(self, inst: mnemo.Instance, user: mnemo.User, db: mnemo.Database) -> None:
        self.inst, self.user, self.db = inst, user, db


@pytest.fixture
def objects(inst: mnemo.Instance, user: mnemo.User, db: mnemo.Database) -> Iterator[Objects]:
    inst.enable_sync()
    yield Objects(inst, user, db)


#: Each call that makes a handle: what makes it, the C function that makes it, and the C
#: function that frees it.
SITES: dict[str, tuple[Callable[[Objects], object], str, str]] = {
    "open, the backend": (
        lambda o: mnemo.Instance.open("memory:"),
        "mnemo_backend_open",
        "mnemo_backend_free",
    ),
    "open": (
        lambda o: mnemo.Instance.open("memory:"), "mnemo_instance_open", "mnemo_instance_free"
    ),
    "open with argon2": (
        lambda o: mnemo.Instance.open("memory:", argon2=(19456, 2, 1)),
        "mnemo_instance_open_with_argon2",
        "mnemo_instance_free",
    ),
    "login": (lambda o: o.inst.login("alice"), "mnemo_instance_login", "mnemo_user_logout"),
    "sync": (lambda o: o.inst.sync, "mnemo_instance_sync", "mnemo_sync_free"),
    "create_db": (lambda o: o.user.create_db("new"), "mnemo_user_create_db", "mnemo_db_free"),
    "load_db": (lambda o: o.user.load_db(o.db.id), "mnemo_user_load_db", "mnemo_db_free"),
    "find_db": (lambda o: o.user.find_db("notes"), "mnemo_user_find_db", "mnemo_db_free"),
    "transaction": (lambda o: o.db.transaction(), "mnemo_db_begin", "mnemo_txn_abort"),
    "subscribe": (lambda o: o.db.subscribe(print), "mnemo_db_subscribe", "mnemo_subscription_free"),
    "watch": (lambda o: o.db.watch(), "mnemo_db_watch", "mnemo_events_free"),
}


def _recorded(monkeypatch: pytest.MonkeyPatch, name: str, calls: list[int]) -> None:
    """Records in ``calls`` the handle each call of ``lib.<name>`` frees."""
    real = getattr(lib, name)

    def free(handle: Any) -> Any:
        ptr = getattr(handle, "value", handle)  # Instance.open frees its c_void_p
        if ptr:
            calls.append(ptr)
        return real(handle)

    monkeypatch.setattr(lib, name, free)


def _interrupted(
    monkeypatch: pytest.MonkeyPatch, name: str, made: list[int], interrupt: bool = True
) -> None:
    """Makes ``lib.<name>`` raise KeyboardInterrupt right after it returns, as Ctrl-C's
    handler does (unless not ``interrupt``), recording in ``made`` the handle it made."""
    real = getattr(lib, name)

    def make(*args: Any) -> int:
        status: int = real(*args)
        made.append(args[-1]._obj.value)  # the out-parameter, passed by reference
        if interrupt:
            raise KeyboardInterrupt
        return status

    monkeypatch.setattr(lib, name, make)


@pytest.mark.parametrize("site", list(SITES))
def test_a_handle_made_right_before_an_interrupt_is_freed(
    objects: Objects, monkeypatch: pytest.MonkeyPatch, site: str
) -> None:
    # Before, the handle was leaked: a session never logged out (its keys kept in
    # memory), storage kept open after the instance was closed, a subscription the
    # registry had forgotten...
    make, made_by, freed_by = SITES[site]
    live = subscription.live_callbacks()
    made: list[int] = []
    freed: list[int] = []
    _recorded(monkeypatch, freed_by, freed)
    _interrupted(monkeypatch, made_by, made)
    with pytest.raises(KeyboardInterrupt):
        make(objects)
    gc.collect()
    assert made and made[0] and freed == made
    assert subscription.live_callbacks() == live  # a subscription made is destroyed


def test_an_interrupt_once_the_object_holds_the_handle_frees_it_once(
    objects: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Database reads its id once it holds its handle: an interrupt there leaves the
    # freeing to the Database, collected, and not to both.
    made: list[int] = []
    freed: list[int] = []
    _recorded(monkeypatch, "mnemo_db_free", freed)
    _interrupted(monkeypatch, "mnemo_user_create_db", made, interrupt=False)
    db_id = lib.mnemo_db_id

    def interrupted_id(*args: Any) -> int:
        db_id(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(lib, "mnemo_db_id", interrupted_id)
    with pytest.raises(KeyboardInterrupt):
        objects.user.create_db("new")
    gc.collect()
    assert made and made[0] and freed == made
