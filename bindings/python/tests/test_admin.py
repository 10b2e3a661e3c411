"""Instance administration through the admin's session: the first user created is the
admin; list, disable, enable and delete other accounts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import PASSWORD

import mnemo


def test_first_user_is_admin(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    inst.create_user("aaron")
    users = user.admin_list_users()
    assert users == [
        mnemo.UserInfo("aaron", "active", False),
        mnemo.UserInfo("alice", "active", True),
        mnemo.UserInfo("bob", "active", False),
    ]
    assert all(isinstance(u, mnemo.UserInfo) and not u.disabled for u in users)
    assert [u.username for u in users] == inst.list_users()


def test_other_users_are_not_admin(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    inst.create_user("carol")
    with inst.login("bob") as bob:
        calls: list[Callable[[], object]] = [
            bob.admin_list_users,
            lambda: bob.disable_user("carol"),
            lambda: bob.enable_user("carol"),
            lambda: bob.delete_user("carol"),
            lambda: bob.disable_user("alice"),
            lambda: bob.delete_user("nobody"),  # permission is checked first
        ]
        for call in calls:
            with pytest.raises(mnemo.PermissionDenied) as info:
                call()
            assert info.value.status == mnemo.Status.PERMISSION_DENIED and info.value.message
    inst.login("carol").logout()  # nothing changed


def test_disable_and_enable(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob", PASSWORD)
    with inst.login("bob", PASSWORD) as session:
        user.disable_user("bob")
        assert user.admin_list_users()[1] == ("bob", "disabled", False)
        assert user.admin_list_users()[1].disabled
        # The right password is refused as disabled; a wrong one still as wrong.
        with pytest.raises(mnemo.PermissionDenied) as info:
            inst.login("bob", PASSWORD)
        assert info.value.status == mnemo.Status.PERMISSION_DENIED and info.value.message
        with pytest.raises(mnemo.AuthFailed):
            inst.login("bob", "wrong")
        # A session opened before goes on until logout.
        session.create_db("still open").set("s", "k", 1)
        user.disable_user("bob")  # again: no change
        user.enable_user("bob")
    assert user.admin_list_users()[1] == ("bob", "active", False)
    with inst.login("bob", PASSWORD) as bob:
        assert bob.find_db("still open").get("s", "k") == 1
    user.enable_user("bob")  # already active: no change


def test_disabled_passwordless_user(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    user.disable_user("bob")
    with pytest.raises(mnemo.PermissionDenied):
        inst.login("bob")
    assert inst.list_users() == ["alice", "bob"]  # still listed
    user.enable_user("bob")
    inst.login("bob").logout()


def test_delete(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    with inst.login("bob") as bob:
        old_key = bob.list_keys()[0].pubkey
        with bob.create_db("bob's") as db:
            db_id = db.id
            db.set("s", "k", "kept")
    user.delete_user("bob")
    assert inst.list_users() == ["alice"]
    assert [u.username for u in user.admin_list_users()] == ["alice"]
    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob")
    with pytest.raises(mnemo.NotFound):
        user.delete_user("bob")  # already gone
    # The databases stay, open only to keys granted on them (bob's keys went with him).
    with pytest.raises(mnemo.NotFound):
        user.load_db(db_id)
    # The name can be taken again, by a new account.
    inst.create_user("bob")
    with inst.login("bob") as bob:
        assert bob.list_dbs() == []
        assert [k.pubkey for k in bob.list_keys()] != [old_key]
    assert user.admin_list_users()[1] == ("bob", "active", False)


def test_a_session_of_a_deleted_user_is_told_so(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    bob = inst.login("bob")
    with bob.create_db("bob's") as db:
        db_id = db.id
    user.delete_user("bob")
    # Reads of the account's lists (erased with it) and changes to it say why they fail.
    for action in [
        bob.list_dbs,
        bob.list_keys,
        lambda: bob.load_db(db_id),
        lambda: bob.find_db("bob's"),
        lambda: bob.create_db("more"),
        lambda: bob.add_private_key("more"),
    ]:
        with pytest.raises(mnemo.PermissionDenied, match="the account 'bob' was deleted"):
            action()
    bob.logout()


def test_delete_disabled_user(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    user.disable_user("bob")
    user.delete_user("bob")
    inst.create_user("bob")
    inst.login("bob").logout()  # the new account is active


@pytest.mark.parametrize("action", ["disable_user", "delete_user"])
def test_admin_cannot_disable_or_delete_itself(user: mnemo.User, action: str) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        getattr(user, action)("alice")
    assert info.value.status == mnemo.Status.INVALID_ARGUMENT and info.value.message
    assert user.admin_list_users() == [("alice", "active", True)]


def test_admin_enabling_itself_changes_nothing(user: mnemo.User) -> None:
    user.enable_user("alice")
    assert user.admin_list_users() == [("alice", "active", True)]


@pytest.mark.parametrize("action", ["disable_user", "enable_user", "delete_user"])
def test_empty_username_is_invalid(user: mnemo.User, action: str) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        getattr(user, action)("")
    assert "username" in info.value.message


@pytest.mark.parametrize("action", ["disable_user", "enable_user", "delete_user"])
def test_unknown_user(user: mnemo.User, action: str) -> None:
    for name in ("nobody", "Alice", "alice "):
        with pytest.raises(mnemo.NotFound) as info:
            getattr(user, action)(name)
        assert info.value.status == mnemo.Status.NOT_FOUND and info.value.message


@pytest.mark.parametrize("action", ["disable_user", "enable_user", "delete_user"])
def test_bad_username(user: mnemo.User, action: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        getattr(user, action)("")
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        getattr(user, action)("a\0b")
    with pytest.raises(TypeError):
        getattr(user, action)(None)
