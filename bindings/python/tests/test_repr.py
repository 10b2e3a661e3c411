"""``repr`` names the object (a database's id, an instance's device id, a session's user) and
never raises, open or closed."""

from __future__ import annotations

import re

import mnemo

DB_ID = r"sha256:[0-9a-f]{64}"
DEVICE_ID = r"ed25519:[A-Za-z0-9_-]{43}"


def test_database_repr_has_its_id(user: mnemo.User) -> None:
    db = user.create_db("notes")
    assert repr(db) == f"<mnemo.Database {db.id} open>"
    assert re.fullmatch(rf"<mnemo.Database {DB_ID} open>", repr(db))
    db_id = db.id
    db.close()
    # Closed: the id it had (read when it was made), and no error.
    assert repr(db) == f"<mnemo.Database {db_id} closed>"
    never_shown = user.find_db("notes")
    never_shown.close()
    assert repr(never_shown) == f"<mnemo.Database {db_id} closed>"


def test_instance_repr_has_its_device_id() -> None:
    inst = mnemo.Instance.open("memory:")
    shown = repr(inst)
    assert shown == f"<mnemo.Instance {inst.device_id} open>"
    assert re.fullmatch(rf"<mnemo.Instance {DEVICE_ID} open>", shown)
    inst.close()
    assert repr(inst) == shown.replace(" open>", " closed>")
    other = mnemo.Instance.open("memory:")
    other.close()
    assert repr(other) == "<mnemo.Instance closed>"


def test_user_repr_has_the_username(inst: mnemo.Instance) -> None:
    inst.create_user("alice")
    alice = inst.login("alice")
    assert repr(alice) == "<mnemo.User 'alice' logged in>"
    alice.logout()
    assert repr(alice) == "<mnemo.User 'alice' logged out>"
