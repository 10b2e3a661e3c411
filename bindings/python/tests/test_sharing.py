"""Two users of one instance sharing a database: load_db, signing keys and grants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mnemo


@pytest.fixture
def bob(inst: mnemo.Instance, user: mnemo.User) -> Iterator[mnemo.User]:
    """A second passwordless user, logged in (the `user` fixture, alice, is the first)."""
    inst.create_user("bob")
    with inst.login("bob") as b:
        yield b


def _default_key(u: mnemo.User) -> str:
    (key,) = [k.pubkey for k in u.list_keys() if k.is_default]
    return key


def test_sharing_flow(user: mnemo.User, bob: mnemo.User) -> None:
    alice = user
    with alice.create_db("shared") as db:
        db_id = db.id
        db.set("notes", "from alice", "hi")
        # Before the grant bob has no key on the database: signing_key has nothing to say,
        # so the key to hand to alice comes from list_keys.
        with pytest.raises(mnemo.NotFound) as info:
            bob.signing_key(db.id)
        assert info.value.status == mnemo.Status.NOT_FOUND and info.value.message
        bob_key = _default_key(bob)

        db.grant(bob_key, "write")
        assert bob.signing_key(db.id) == bob_key

        with bob.load_db(db.id) as mine:
            assert mine.get("notes", "from alice") == "hi"
            mine.set("notes", "from bob", "hello")
        assert db.get_all("notes") == {"from alice": "hi", "from bob": "hello"}
    # bob now tracks the database under its name.
    assert [(d.name, d.id) for d in bob.list_dbs()] == [("shared", db_id)]
    assert bob.find_db("shared").get("notes", "from bob") == "hello"


def test_a_database_without_permission_does_not_open(user: mnemo.User, bob: mnemo.User) -> None:
    with user.create_db("private") as db:
        db.set("s", "k", 1)
        # The same answer as for a database this instance does not hold.
        for db_id in (db.id, "sha256:" + "0" * 64):
            with pytest.raises(mnemo.NotFound):
                bob.load_db(db_id)
            with pytest.raises(mnemo.NotFound):
                bob.signing_key(db_id)
        assert bob.list_dbs() == []


def test_read_revoked_stops_an_open_handle_and_hides_the_database(
    user: mnemo.User, bob: mnemo.User
) -> None:
    with user.create_db("shared") as db:
        key = _default_key(bob)
        db.grant(key, "read")
        db.set("s", "k", 1)
        with bob.load_db(db.id) as theirs:
            assert theirs.get("s", "k") == 1
            assert [d.name for d in bob.list_dbs()] == ["shared"]
            db.revoke(key)
            db.set("s", "k", 2)
            for read in (lambda: theirs.get("s", "k"), lambda: theirs.get_all("s"), theirs.tips):
                with pytest.raises(mnemo.PermissionDenied):
                    read()
        assert bob.list_dbs() == []
        with pytest.raises(mnemo.NotFound):
            bob.find_db("shared")
        with pytest.raises(mnemo.NotFound):
            bob.load_db(db.id)


def test_read_grant(user: mnemo.User, bob: mnemo.User) -> None:
    with user.create_db("shared") as db:
        key = _default_key(bob)
        db.grant(key, "read")
        assert bob.signing_key(db.id) == key  # any permission counts
        with bob.load_db(db.id) as theirs, pytest.raises(mnemo.PermissionDenied):
            theirs.set("s", "k", 1)


def test_grant_to_an_added_key(user: mnemo.User, bob: mnemo.User) -> None:
    with user.create_db("shared") as db:
        db.grant(_default_key(bob), "read")
        before = bob.load_db(db.id)  # signs with bob's default key, which may only read
        laptop = bob.add_private_key("laptop")
        db.grant(laptop, "write")
        assert bob.signing_key(db.id) == laptop
        with pytest.raises(mnemo.PermissionDenied):
            before.set("s", "k", 1)  # a handle keeps the key it was opened with
        before.close()
        with bob.load_db(db.id) as after:
            after.set("s", "k", 2)  # a new handle signs with the granted key
        assert db.get("s", "k") == 2


def test_signing_key_is_the_highest_permission(user: mnemo.User, bob: mnemo.User) -> None:
    default = _default_key(bob)
    laptop = bob.add_private_key("laptop")
    with user.create_db("shared") as db:
        db.grant(default, "read")
        db.grant(laptop, "write")
        assert bob.signing_key(db.id) == laptop
        db.grant(default, "write")  # equals: the default key first
        assert bob.signing_key(db.id) == default
        db.grant(laptop, "admin")
        assert bob.signing_key(db.id) == laptop
        db.revoke(laptop)
        db.revoke(default)
        with pytest.raises(mnemo.NotFound):
            bob.signing_key(db.id)


def test_find_db_prefers_the_database_tracked_first(user: mnemo.User, bob: mnemo.User) -> None:
    with user.create_db("notes") as theirs:
        theirs.grant(_default_key(bob), "read")
        bob.load_db(theirs.id).close()
        own = bob.create_db("notes").id
        assert bob.find_db("notes").id == theirs.id
        assert {d.id for d in bob.list_dbs()} == {theirs.id, own}


def test_system_and_other_users_databases_never_open_through_a_user(tmp_path) -> None:
    import json
    import sqlite3

    path = tmp_path / "isolation.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
        inst.create_user("bob")
        # The ids an attacker could take from the file: the system databases, and the
        # private user databases recorded in _users.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        ids = [bytes(v).decode() for (k, v) in conn.execute("SELECT key, value FROM meta") if k.startswith("system/")]
        ids += [json.loads(v)["db"] for (v,) in conn.execute("SELECT value FROM cells WHERE store = 'users'")]
        conn.close()
        assert len(ids) == 5  # _instance, _users, _databases, and two user databases
        with inst.login("bob") as bob:
            for db_id in ids:
                with pytest.raises(mnemo.NotFound):
                    bob.load_db(db_id)
            assert bob.list_dbs() == []
