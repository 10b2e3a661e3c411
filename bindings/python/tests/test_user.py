"""mnemo.User: databases and logging out."""

from __future__ import annotations

import gc

import pytest

import mnemo


def test_create_db(user: mnemo.User) -> None:
    with user.create_db("notes") as db:
        assert isinstance(db, mnemo.Database)
        assert db.id.startswith("sha256:") and len(db.id) == 7 + 64


def test_db_names_need_not_be_unique(user: mnemo.User) -> None:
    a = user.create_db("same")
    b = user.create_db("same")
    assert a.id != b.id
    a.close()
    b.close()


def test_unicode_db_name(user: mnemo.User) -> None:
    user.create_db("日本語 ✓").close()


def test_empty_db_name(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        user.create_db("")
    assert info.value.message


def test_nul_in_db_name(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.create_db("a\0b")


def test_logout_idempotent(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    user.logout()
    user.logout()
    assert user.logged_out


def test_calls_after_logout_raise_logged_out(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    user.logout()
    with pytest.raises(mnemo.LoggedOut) as info:
        user.create_db("late")
    assert info.value.status == mnemo.Status.LOGGED_OUT and info.value.message


def test_context_manager_logs_out(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    with inst.login("bob") as user:
        pass
    assert user.logged_out
    with pytest.raises(mnemo.LoggedOut):
        user.create_db("late")


def test_context_manager_logs_out_on_exception(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    with pytest.raises(RuntimeError):
        with inst.login("bob") as user:
            raise RuntimeError("boom")
    assert user.logged_out


def test_database_after_logout(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    db = user.create_db("notes")
    db.set("s", "k", {"v": 1})
    user.logout()
    assert db.get("s", "k") == {"v": 1}
    assert db.id.startswith("sha256:")
    with pytest.raises(mnemo.LoggedOut) as info:
        db.set("s", "k", {"v": 2})
    assert info.value.status == 6 and info.value.message
    assert db.get("s", "k") == {"v": 1}  # nothing stored on failure
    with pytest.raises(mnemo.NotFound):
        db.get("s", "other")
    db.close()


def test_sessions_are_independent(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    first = inst.login("bob")
    second = inst.login("bob")
    db = second.create_db("notes")
    first.logout()
    db.set("s", "k", True)  # the second session is still logged in
    second.logout()
    with pytest.raises(mnemo.LoggedOut):
        db.set("s", "k", False)
    db.close()


def test_garbage_collection_logs_out(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    db = user.create_db("notes")
    del user
    gc.collect()
    with pytest.raises(mnemo.LoggedOut):
        db.set("s", "k", 1)
    db.close()


def test_every_write_after_logout_raises_logged_out(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    db = user.create_db("notes")
    other = inst.device_id  # a valid public key to grant
    db.set("s", "k", 1)
    db.grant(other, "write")
    pending = db.transaction()
    pending.set("s", "k", 2)
    tips = db.tips()
    user.logout()
    writes = [
        lambda: db.set("s", "k", 3),
        lambda: db.delete("s", "k"),
        lambda: db.grant(other, "read"),
        lambda: db.revoke(other),
        pending.commit,  # begun before the logout
    ]
    for write in writes:
        with pytest.raises(mnemo.LoggedOut) as info:
            write()
        assert info.value.status == mnemo.Status.LOGGED_OUT
    with pytest.raises(mnemo.LoggedOut), db.transaction() as t:
        t.set("s", "k", 4)  # collecting works; the commit at the end is refused
    store = db.store("s")
    with pytest.raises(mnemo.LoggedOut):
        store["k"] = 5
    # Reads still work, and nothing changed.
    assert db.get_all("s") == {"k": 1} == dict(store)
    assert db.tips() == tips
    db.close()
