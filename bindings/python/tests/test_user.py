"""mnemo.User: databases and logging out."""

from __future__ import annotations

import gc
import re
import signal
from collections.abc import Callable

import pytest

import mnemo
from conftest import interrupt_after, wait_until
from mnemo import _handle


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


def test_a_db_name_is_at_most_255_bytes(user: mnemo.User) -> None:
    """Before, a name of any length was taken (1 MiB in an audit), and kept in the root
    entry, the user's list and the instance's catalog."""
    user.create_db("é" * 127 + "n").close()  # 255 bytes
    with pytest.raises(mnemo.InvalidArgument, match="1 to 255 bytes"):
        user.create_db("é" * 128)
    assert [d.name for d in user.list_dbs()] == ["é" * 127 + "n"]


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


# --- Finding, loading and listing databases ------------------------------------------

ZERO_ID = "sha256:" + "0" * 64


def test_list_dbs(user: mnemo.User) -> None:
    assert user.list_dbs() == []
    b = user.create_db("b")
    a = user.create_db("a")
    listed = user.list_dbs()
    assert listed == [mnemo.DatabaseInfo(a.id, "a"), mnemo.DatabaseInfo(b.id, "b")]
    first = listed[0]
    assert isinstance(first, mnemo.DatabaseInfo)
    assert (first.id, first.name) == (a.id, "a")
    db_id, name = first  # a named tuple unpacks
    assert (db_id, name) == (a.id, "a")
    a.close()
    b.close()


def test_list_dbs_sorted_by_name_then_id(user: mnemo.User) -> None:
    ids = [user.create_db(n).id for n in ("z", "same", "same", "a", "same")]
    listed = user.list_dbs()
    assert [d.name for d in listed] == ["a", "same", "same", "same", "z"]
    same = [d.id for d in listed if d.name == "same"]
    assert same == sorted(same) and set(same) == set(ids[1:3] + ids[4:])


def test_find_db(user: mnemo.User) -> None:
    with user.create_db("notes") as created:
        created.set("s", "k", "v")
        with user.find_db("notes") as found:
            assert found.id == created.id
            assert found.get("s", "k") == "v"
            found.set("s", "k", "w")  # the handle writes as the owner
        assert created.get("s", "k") == "w"


def test_find_db_unicode_name(user: mnemo.User) -> None:
    db_id = user.create_db("日本語 ✓").id
    assert user.find_db("日本語 ✓").id == db_id


def test_find_db_empty_name_is_invalid(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        user.find_db("")


@pytest.mark.parametrize("name", ["missing", "Notes", "notes "])
def test_find_db_missing(user: mnemo.User, name: str) -> None:
    user.create_db("notes").close()
    with pytest.raises(mnemo.NotFound) as info:
        user.find_db(name)
    assert info.value.status == mnemo.Status.NOT_FOUND and info.value.message
    assert isinstance(info.value, LookupError)


def test_find_db_same_name_opens_the_first_tracked(user: mnemo.User) -> None:
    # Create pairs until the first has the larger id, so "first tracked" and "smallest id"
    # disagree (each pair does with probability 1/2).
    for attempt in range(64):
        name = f"same {attempt}"
        first = user.create_db(name).id
        second = user.create_db(name).id
        assert user.find_db(name).id == first
        if first > second:
            break
    else:
        pytest.fail("64 pairs of ids all in creation order")
    # list_dbs and load_db reach the other one.
    others = [d.id for d in user.list_dbs() if d.name == name and d.id != first]
    assert others == [second]
    assert user.load_db(second).id == second


def test_find_db_nul(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.find_db("a\0b")


def test_find_db_does_not_see_other_users_dbs(inst: mnemo.Instance, user: mnemo.User) -> None:
    user.create_db("notes").close()
    inst.create_user("bob")
    with inst.login("bob") as bob, pytest.raises(mnemo.NotFound):
        bob.find_db("notes")


def test_load_db(user: mnemo.User) -> None:
    with user.create_db("notes") as created:
        created.set("s", "k", [1, 2])
        with user.load_db(created.id) as loaded:
            assert loaded.id == created.id
            assert loaded.get_all("s") == {"k": [1, 2]}
            loaded.set("s", "k", [3])
        assert created.get("s", "k") == [3]
    assert len(user.list_dbs()) == 1  # loading an already tracked database adds nothing


@pytest.mark.parametrize(
    "db_id",
    [
        "",
        "garbage",
        "sha256:",
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "g" * 64,
        "sha256:" + "A" * 64,  # ids are lowercase hex
        "sha512:" + "0" * 64,
        "0" * 64,
        " sha256:" + "0" * 64,
    ],
)
def test_load_db_malformed_id(user: mnemo.User, db_id: str) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        user.load_db(db_id)
    assert info.value.status == mnemo.Status.INVALID_ARGUMENT and info.value.message


def test_load_db_unknown_id(user: mnemo.User) -> None:
    with pytest.raises(mnemo.NotFound) as info:
        user.load_db(ZERO_ID)
    assert info.value.status == mnemo.Status.NOT_FOUND and info.value.message
    assert user.list_dbs() == []  # a failed load tracks nothing


def test_load_db_nul(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.load_db(ZERO_ID + "\0")


def test_load_db_must_be_str(user: mnemo.User) -> None:
    with pytest.raises(TypeError):
        user.load_db(ZERO_ID.encode())  # type: ignore[arg-type]


# --- Keys ----------------------------------------------------------------------------

PUBKEY = re.compile(r"ed25519:[A-Za-z0-9_-]{43}")


def test_list_keys_of_a_new_user(user: mnemo.User) -> None:
    keys = user.list_keys()
    assert len(keys) == 1
    key = keys[0]
    assert isinstance(key, mnemo.KeyInfo)
    assert PUBKEY.fullmatch(key.pubkey)
    assert key.name == "default" and key.is_default is True


def test_add_private_key(user: mnemo.User) -> None:
    (default,) = user.list_keys()
    laptop = user.add_private_key("laptop")
    anonymous = user.add_private_key()
    empty = user.add_private_key("")
    long_name = user.add_private_key("é" * 127)  # 254 bytes
    for key in (laptop, anonymous, empty, long_name):
        assert PUBKEY.fullmatch(key)
    assert len({default.pubkey, laptop, anonymous, empty, long_name}) == 5
    keys = user.list_keys()
    assert [k.pubkey for k in keys] == sorted(k.pubkey for k in keys)
    assert {(k.pubkey, k.name, k.is_default) for k in keys} == {
        default,
        (laptop, "laptop", False),
        (anonymous, None, False),
        (empty, "", False),
        (long_name, "é" * 127, False),
    }


def test_add_private_key_name_too_long(user: mnemo.User) -> None:
    user.add_private_key("x" * 255)
    with pytest.raises(mnemo.InvalidArgument) as info:
        user.add_private_key("x" * 256)
    assert "255" in info.value.message
    assert len(user.list_keys()) == 2


def test_add_private_key_nul(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.add_private_key("a\0b")


def test_keys_are_per_user(inst: mnemo.Instance, user: mnemo.User) -> None:
    inst.create_user("bob")
    with inst.login("bob") as bob:
        bob.add_private_key("phone")
        assert len(bob.list_keys()) == 2
        assert len(user.list_keys()) == 1
        assert not {k.pubkey for k in bob.list_keys()} & {k.pubkey for k in user.list_keys()}


def test_keys_survive_logout(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    with inst.login("bob") as bob:
        key = bob.add_private_key("phone")
    with inst.login("bob") as bob:
        assert key in {k.pubkey for k in bob.list_keys()}


def test_signing_key_of_own_db_is_the_default_key(user: mnemo.User) -> None:
    (default,) = user.list_keys()
    user.add_private_key("laptop")
    with user.create_db("notes") as db:
        assert user.signing_key(db.id) == default.pubkey


def test_signing_key_unknown_db(user: mnemo.User) -> None:
    with pytest.raises(mnemo.NotFound):
        user.signing_key(ZERO_ID)


@pytest.mark.parametrize("db_id", ["", "garbage", "sha256:" + "0" * 63])
def test_signing_key_malformed_id(user: mnemo.User, db_id: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        user.signing_key(db_id)


# --- Every method after logout -------------------------------------------------------


def test_new_methods_after_logout_raise_logged_out(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    db_id = user.create_db("notes").id
    user.logout()
    calls: list[Callable[[], object]] = [
        lambda: user.load_db(db_id),
        lambda: user.find_db("notes"),
        user.list_dbs,
        user.add_private_key,
        user.list_keys,
        lambda: user.signing_key(db_id),
        lambda: user.change_password(None, None),
        user.admin_list_users,
        lambda: user.disable_user("x"),
        lambda: user.enable_user("x"),
        lambda: user.delete_user("x"),
    ]
    for call in calls:
        with pytest.raises(mnemo.LoggedOut) as info:
            call()
        assert info.value.status == mnemo.Status.LOGGED_OUT


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs interval timers")
def test_a_logout_interrupted_while_it_waits_still_ends_the_session(
    user: mnemo.User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C while logout() waited for a call of another thread: the session was never
    # ended (its keys never wiped) and its databases went on writing.
    monkeypatch.setattr(_handle, "CLOSE_WAIT", 60.0)
    db = user.create_db("d")
    user._handle.acquire()  # a call under way in another thread
    with interrupt_after(0.1), pytest.raises(KeyboardInterrupt):
        user.logout()
    assert user.logged_out
    db.set("s", "k", 1)  # still the session's: that call may need it
    user._handle.release()

    def ended() -> bool:
        try:
            db.set("s", "k", 2)
        except mnemo.LoggedOut:
            return True
        return False

    assert wait_until(ended, 10)
    db.close()
