"""Authorization across instances, through the Python package: three instances in this
process (alice owns the database on A; bob writes on B; carol, a reader on C, relays between
the two sides), syncing over loopback. docs/security-model.md states the rules."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Iterator

import pytest

import mnemo


def default_key(user: mnemo.User) -> str:
    return next(k.pubkey for k in user.list_keys() if k.is_default)


class Side:
    """An instance with one user and a listening sync engine."""

    def __init__(self, stack: ExitStack, name: str) -> None:
        self.inst = stack.enter_context(mnemo.Instance.open("memory:"))
        self.inst.create_user(name)
        self.user = stack.enter_context(self.inst.login(name))
        self.inst.enable_sync()
        self.sync = stack.enter_context(self.inst.sync)
        self.addr = self.sync.listen()
        self.key = default_key(self.user)

    def pull(self, other: "Side", db_id: str) -> None:
        """One round with `other`: pull what it has, push what it lacks."""
        self.sync.sync_db(self.user, other.addr, db_id)


@pytest.fixture
def sides() -> Iterator[tuple[Side, Side, Side]]:
    with ExitStack() as stack:
        yield Side(stack, "alice"), Side(stack, "bob"), Side(stack, "carol")


def test_a_revoked_writers_offline_writes_change_nothing_and_all_sides_agree(
    sides: tuple[Side, Side, Side],
) -> None:
    a, b, c = sides
    db = a.user.create_db("shared")
    db.grant(b.key, "write")
    db.grant(c.key, "read")
    db.set("s", "x", "alice's first")
    db.set("s", "y", "alice's y")
    b.pull(a, db.id)
    c.pull(a, db.id)
    # Bob, offline, overwrites x many times (a chain tall enough to win) and deletes y.
    with b.user.load_db(db.id) as bobs:
        for i in range(6):
            bobs.set("s", "x", f"bob {i}")
        bobs.delete("s", "y")
    # Meanwhile alice writes x again and revokes bob.
    db.set("s", "x", "alice's newer")
    db.revoke(b.key)
    # Carol relays: bob's side first, then alice's (carol pushes bob's writes to A too),
    # then back to bob.
    c.pull(b, db.id)
    with c.user.load_db(db.id) as seen:
        assert seen.get("s", "x") == "bob 5"  # before the revocation arrives
    c.pull(a, db.id)
    # Carol now knows bob may not read: she still pulls from his device, but pushes it
    # nothing (it holds copies for bob alone), so it does not hear of the revocation.
    with pytest.raises(mnemo.PermissionDenied, match="did not prove that it holds"):
        c.pull(b, db.id)
    with b.user.load_db(db.id) as bobs:
        assert bobs.get("s", "x") == "bob 5"
    views = []
    for side in (a, c):
        with side.user.find_db("shared") as copy:
            assert copy.get("s", "x") == "alice's newer"
            assert copy.get("s", "y") == "alice's y"
            views.append((copy.tips(), copy.get_all("s")))
    assert views[0] == views[1]
    # A reader granted later on bob's side: carol pushes to that device again, and dave
    # sees what everyone else sees.
    b.inst.create_user("dave")
    with b.inst.login("dave") as dave:
        db.grant(default_key(dave), "read")
        c.pull(a, db.id)
        c.pull(b, db.id)  # bob's side hears of the revocation, and undoes his writes
        with dave.load_db(db.id) as copy, a.user.find_db("shared") as alices:
            assert (copy.tips(), copy.get_all("s")) == (alices.tips(), alices.get_all("s"))
    # Bob's keys may no longer even read: his own copy no longer opens for him.
    with pytest.raises(mnemo.NotFound):
        b.user.load_db(db.id)


def test_a_junior_admin_cannot_revoke_or_demote_the_creator(sides: tuple[Side, Side, Side]) -> None:
    a, b, _ = sides
    db = a.user.create_db("shared")
    db.grant(b.key, "admin")
    b.pull(a, db.id)
    with b.user.load_db(db.id) as bobs:
        for change in (lambda: bobs.revoke(a.key), lambda: bobs.grant(a.key, "read")):
            with pytest.raises(mnemo.PermissionDenied) as info:
                change()
            assert info.value.status == mnemo.Status.PERMISSION_DENIED
        # A junior admin still changes keys junior to it.
        bobs.grant(default_key(sides[2].user), "write")


def test_a_writer_revoking_the_sole_admin_is_told_it_lacks_the_permission(
    sides: tuple[Side, Side, Side],
) -> None:
    a, b, _ = sides
    db = a.user.create_db("shared")
    db.grant(b.key, "write")
    b.pull(a, db.id)
    with b.user.load_db(db.id) as bobs:
        with pytest.raises(mnemo.PermissionDenied, match="admin"):
            bobs.revoke(a.key)


def test_admins_revoking_each_other_apart_leave_the_senior_one_on_every_side(
    sides: tuple[Side, Side, Side],
) -> None:
    a, b, c = sides
    db = a.user.create_db("shared")
    db.grant(b.key, "admin")  # priority 1
    b.pull(a, db.id)
    with b.user.load_db(db.id) as bobs:
        bobs.grant(c.key, "admin")  # priority 2: junior to bob
    c.pull(b, db.id)
    # Apart: bob revokes carol; carol tries to revoke bob and is refused (junior).
    with c.user.load_db(db.id) as carols:
        with pytest.raises(mnemo.PermissionDenied):
            carols.revoke(b.key)
        carols.set("s", "by carol", 1)  # written before she hears of her revocation
    with b.user.load_db(db.id) as bobs:
        bobs.revoke(c.key)
    # Carol, revoked, can no longer ask bob; bob pulls from her but pushes her nothing
    # (her device holds copies for her key alone), so she does not hear of it.
    with pytest.raises(mnemo.PermissionDenied, match="did not prove that it holds"):
        b.pull(c, db.id)
    b.pull(a, db.id)
    with c.user.load_db(db.id) as carols:
        assert carols.get("s", "by carol") == 1
    for side in (a, b):
        with side.user.find_db("shared") as copy:
            settings = copy.get_all("_settings")
            assert settings[f"auth/{a.key}"]["permission"] == "admin"
            assert settings[f"auth/{b.key}"] == {
                "permission": "admin",
                "priority": 1,
                "status": "active",
            }
            assert settings[f"auth/{c.key}"]["status"] == "revoked"
            with pytest.raises(mnemo.NotFound):
                copy.get("s", "by carol")  # discarded by the revocation it had not seen


def test_a_revoked_admins_offline_grant_write_and_attack_on_the_creator_have_no_effect(
    sides: tuple[Side, Side, Side],
) -> None:
    a, b, c = sides
    db = a.user.create_db("shared")
    db.grant(b.key, "admin")  # priority 1
    db.grant(c.key, "read")
    db.set("s", "name", "alice's")
    b.pull(a, db.id)
    c.pull(a, db.id)
    # Bob, offline: grants a key of his own write, overwrites data, and tries to revoke the
    # creator (refused at once: he is junior to her).
    accomplice = b.user.add_private_key("accomplice")
    with b.user.load_db(db.id) as bobs:
        bobs.grant(accomplice, "write")
        for i in range(4):
            bobs.set("s", "name", f"bob's {i}")
        with pytest.raises(mnemo.PermissionDenied):
            bobs.revoke(a.key)
    # Meanwhile alice revokes him. Carol relays both ways.
    db.revoke(b.key)
    c.pull(b, db.id)
    c.pull(a, db.id)
    views = []
    for side in (a, c):
        with side.user.load_db(db.id) as copy:
            assert copy.get("s", "name") == "alice's"
            settings = copy.get_all("_settings")
            assert f"auth/{accomplice}" not in settings  # his grant took no effect
            assert settings[f"auth/{a.key}"]["status"] == "active"
            assert settings[f"auth/{b.key}"]["status"] == "revoked"
            views.append((copy.tips(), copy.get_all("s"), settings))
    assert views[0] == views[1]
