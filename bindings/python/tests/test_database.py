"""mnemo.Database: values, keys, stores, errors and closing."""

from __future__ import annotations

import math
import random
import struct
import sys
from collections.abc import Callable
from typing import Any

import pytest

import mnemo

JSON_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    42,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    2**70,
    -(2**63) - 1,
    -(2**100),
    10**40 + 1,
    0.5,
    -2.25,
    0.1,
    1e300,
    5e-324,
    -0.0,
    "",
    "plain",
    'quote " backslash \\ tab \t newline \n nul \0 bell \x07',
    "unicode é 日本 🦀",
    [],
    [1, "two", None, [3.5, {"four": 4}]],
    {},
    {"b": 1, "a": [True, False], "nested": {"x": None, "ü": "ß"}},
]


@pytest.mark.parametrize("value", JSON_VALUES, ids=repr)
def test_every_json_type_round_trips(db: mnemo.Database, value: Any) -> None:
    db.set("values", "k", value)
    back = db.get("values", "k")
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, back) == math.copysign(1.0, value)


def test_tuples_come_back_as_lists(db: mnemo.Database) -> None:
    db.set("s", "k", (1, (2, 3)))
    assert db.get("s", "k") == [1, [2, 3]]


def test_overwrite(db: mnemo.Database) -> None:
    db.set("s", "k", 1)
    db.set("s", "k", "two")
    assert db.get("s", "k") == "two"


def test_stores_and_keys_are_separate(db: mnemo.Database) -> None:
    db.set("a", "k", 1)
    db.set("b", "k", 2)
    db.set("a", "j", 3)
    assert [db.get("a", "k"), db.get("b", "k"), db.get("a", "j")] == [1, 2, 3]


@pytest.mark.parametrize(
    "store,key",
    [
        ("日本語", "clé 🔑"),
        ("s", "é"),
        ("ß" * 127, "x"),
        ("s", "k" * 4096),
        ("s", "a b\tc"),
        ("s", "\x01"),
    ],
)
def test_unicode_and_limit_names_round_trip(db: mnemo.Database, store: str, key: str) -> None:
    db.set(store, key, {"v": key})
    assert db.get(store, key) == {"v": key}


def test_missing_key(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.NotFound) as info:
        db.get("s", "missing")
    assert info.value.status == mnemo.Status.NOT_FOUND
    assert "missing" in info.value.message
    assert isinstance(info.value, LookupError)


def test_reserved_store_write(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        db.set("_x", "k", 1)
    assert info.value.status == 1 and "reserved" in info.value.message


def test_reserved_store_read_is_allowed(db: mnemo.Database) -> None:
    # The header reserves '_' names for writing only; reading one just finds nothing here.
    with pytest.raises(mnemo.NotFound):
        db.get("_x", "k")


@pytest.mark.parametrize("store,key", [("", "k"), ("s" * 256, "k"), ("s", ""), ("s", "k" * 4097)])
def test_bad_store_or_key(db: mnemo.Database, store: str, key: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.set(store, key, 1)
    with pytest.raises(mnemo.InvalidArgument):
        db.get(store, key)


@pytest.mark.parametrize("store,key", [("s\0", "k"), ("s", "k\0"), ("s", "\0")])
def test_nul_in_store_or_key(db: mnemo.Database, store: str, key: str) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        db.set(store, key, 1)
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        db.get(store, key)


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        b"bytes",
        {("tuple", "key"): 1},
        float("nan"),
        float("inf"),
        [float("-inf")],
        "lone \ud800 surrogate",
    ],
    ids=repr,
)
def test_malformed_values(db: mnemo.Database, value: Any) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        db.set("s", "k", value)
    assert info.value.status == 1 and info.value.message
    with pytest.raises(mnemo.NotFound):
        db.get("s", "k")  # nothing was stored


def test_too_deep_value_is_refused_by_the_library(db: mnemo.Database) -> None:
    """The message names the limit (it said "not valid JSON: recursion limit exceeded")."""
    deep: Any = []
    for _ in range(127):
        deep = [deep]
    with pytest.raises(mnemo.InvalidArgument, match="nests at most 127"):
        db.set("s", "k", deep)
    db.set("s", "k", deep[0])
    assert db.get("s", "k") == deep[0]


def test_malformed_json_text_at_the_c_level(db: mnemo.Database) -> None:
    from mnemo import _native

    with db._handle.use() as ptr:
        for text in (b"", b"{", b"[1,]", b"NaN", b"'single'", b"1 2"):
            with pytest.raises(mnemo.InvalidArgument, match="JSON"):
                _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", b' { "b" : 1 , "a" : [ ] } '))
        assert _native.call_string(_native.lib.mnemo_db_get, ptr, b"s", b"k") == '{"a":[],"b":1}'


def test_half_a_surrogate_pair_is_refused_saying_so(db: mnemo.Database) -> None:
    """JSON text may escape a character outside the Basic Multilingual Plane as a surrogate
    pair; half of one alone is no Unicode character. The message said only "unexpected end
    of hex escape"."""
    from mnemo import _native

    with db._handle.use() as ptr:
        for text in (
            rb'"\ud800"',
            rb'"\udc00"',
            rb'"\udc00\ud800"',  # a pair the wrong way round: trailing half first
            rb'{"a":"x\ud83dy"}',
            rb'["\ud83d\u0041"]',
        ):
            with pytest.raises(mnemo.InvalidArgument, match="half of a pair alone") as info:
                _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
            # Not serde_json's "lone leading surrogate" for a trailing half.
            assert "leading" not in str(info.value), info.value
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", rb'"\ud83d\ude00"'))
        assert _native.call_string(_native.lib.mnemo_db_get, ptr, b"s", b"k") == '"\U0001f600"'


def test_wrong_types() -> None:
    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("bob")
        with inst.login("bob") as user, user.create_db("d") as db:
            with pytest.raises(TypeError):
                db.get("s", 1)  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                db.set(None, "k", 1)  # type: ignore[arg-type]


def test_id_is_stable(db: mnemo.Database) -> None:
    first = db.id
    db.set("s", "k", 1)
    assert db.id == first


def test_a_closed_database_still_names_itself_to_forget_db_share_and_auto_approve(
    inst: mnemo.Instance, user: mnemo.User
) -> None:
    """After the usual ``with user.create_db(...) as db:``, the closed Database still
    stands for its id where one is asked for (before: "the Database is closed")."""
    inst.enable_sync()
    with user.create_db("d") as db:
        pass
    with inst.sync as sync:
        sync.listen()
        assert sync.share(db).startswith("mnemo:")
        sync.auto_approve(user, db, "read")
    user.forget_db(db)
    assert user.list_dbs() == []


def test_close_idempotent_and_use_after_close(user: mnemo.User) -> None:
    db = user.create_db("d")
    db.close()
    db.close()
    assert db.closed
    for call in (lambda: db.id, lambda: db.get("s", "k"), lambda: db.set("s", "k", 1)):
        with pytest.raises(mnemo.InvalidArgument, match="closed"):
            call()


def test_context_manager_closes(user: mnemo.User) -> None:
    with user.create_db("d") as db:
        db.set("s", "k", 1)
    assert db.closed


def test_del_frees(user: mnemo.User) -> None:
    for _ in range(20):
        user.create_db("garbage").set("s", "k", 1)  # freed by __del__ right away


def test_full_precision_floats_round_trip(db: mnemo.Database) -> None:
    rng = random.Random(1)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(200)]
    values = [v for v in values if math.isfinite(v)]
    values += [2.550690257394217e206, 0.1 + 0.2, 5e-324, 1.7976931348623157e308]
    db.set("floats", "k", values)
    assert db.get("floats", "k") == values


def test_big_integers_round_trip_in_containers(db: mnemo.Database) -> None:
    value = {"big": [2**70, -(2**70), 10**30], "nested": {"n": 2**64 + 1}}
    db.set("s", "k", value)
    back = db.get("s", "k")
    assert back == value and all(type(n) is int for n in back["big"])


@pytest.mark.skipif(
    not hasattr(sys, "get_int_max_str_digits"), reason="a Python without the digits bound"
)
def test_integers_longer_than_python_reads_raise_invalid_argument(db: mnemo.Database) -> None:
    """Another program (C, a peer) may store an integer longer than Python converts by
    default: reading it raises InvalidArgument, a ValueError and a mnemo.Error (before, a
    bare ValueError), until the process raises its bound."""
    from mnemo import _native

    digits = "7" * 5000
    with db._handle.use() as ptr:
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"big", f"[{digits}]".encode()))
    for read in (lambda: db.get("s", "big"), lambda: db.get_all("s"), lambda: db.scan("s")):
        with pytest.raises(mnemo.InvalidArgument, match="integer too long"):
            read()
    with pytest.raises(mnemo.InvalidArgument):
        db.set("s", "k", int(digits[:4000]) * 10**1000)  # Python's bound on writing it too
    bound = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        assert db.get("s", "big") == [int(digits)]
    finally:
        sys.set_int_max_str_digits(bound)


def test_numbers_are_kept_exactly_as_written(db: mnemo.Database) -> None:
    from mnemo import _native

    text = b"[-1.5e3,1.0,0.10,1E+2,12345678901234567890123456789,2.5e-7]"
    with db._handle.use() as ptr:
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
        raw = _native.call_string(_native.lib.mnemo_db_get, ptr, b"s", b"k")
    assert raw == text.decode()
    assert db.get("s", "k") == [-1500.0, 1.0, 0.1, 100.0, 12345678901234567890123456789, 2.5e-7]


def test_numbers_beyond_a_floats_range_read_as_exact_decimals_and_write_back(
    db: mnemo.Database,
) -> None:
    """Another program may store 1e400 or 1e-400: before, Python read them as inf and 0.0
    (and could not write the inf back)."""
    from decimal import Decimal

    from mnemo import _native

    with db._handle.use() as ptr:
        text = b'{"e":"e","n":[1e400,-1e400,1e-400,0e5,2.5e3]}'
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
    value = db.get("s", "k")
    exact = [Decimal("1e400"), Decimal("-1e400"), Decimal("1e-400"), 0.0, 2500.0]
    assert value == {"e": "e", "n": exact}
    assert [type(n) for n in value["n"]] == [Decimal, Decimal, Decimal, float, float]
    db.set("s", "copy", value)
    assert db.get("s", "copy") == value
    db.set("s", "one", Decimal("-2.5E-999"))
    assert db.get("s", "one") == Decimal("-2.5E-999")
    # Past a float's range without an exponent (a reviewer found these read as inf, 0.0).
    big, tiny = "1" + "0" * 400 + ".5", "0." + "0" * 400 + "1"
    with db._handle.use() as ptr:
        _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"long", f"[{big},{tiny}]".encode()))
    assert db.get("s", "long") == [Decimal(big), Decimal(tiny)]
    db.set("s", "keyed", {1: Decimal("1e400"), None: 2})
    assert db.get("s", "keyed") == {"1": Decimal("1e400"), "null": 2}
    for not_a_number in (Decimal("NaN"), Decimal("Infinity"), [Decimal("-Infinity")]):
        with pytest.raises(mnemo.InvalidArgument):
            db.set("s", "bad", not_a_number)


def test_an_object_led_by_the_number_marker_key_is_refused_never_changed(
    db: mnemo.Database,
) -> None:
    # The JSON library reads an object with this first key as a number: {MARKER: "1"} came
    # back as 1. Such values are refused; the key is an ordinary one anywhere else.
    from mnemo import _native

    marker = "$serde_json::private::Number"
    refused_texts = [
        b'{"$serde_json::private::Number":"1"}',
        b'{"a":[{"$serde_json::private::Number":"42"}]}',
        b'{"\\u0024serde_json::private::Number":"1"}',
        b'{"x":2,"$serde_json::private::Number":"1"}',  # it would sort first
        b'{"$serde_json::private::Number":"1","x":2}',
    ]
    with db._handle.use() as ptr:
        for text in refused_texts:
            with pytest.raises(mnemo.InvalidArgument, match="is reserved"):
                _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
    with pytest.raises(mnemo.InvalidArgument, match="is reserved"):
        db.set_path("s", "k", "/a", {marker: "7"})
    with pytest.raises(mnemo.InvalidArgument, match="is reserved"):
        db.set_path("s", "k", "/" + marker, 1)
    with pytest.raises(mnemo.InvalidArgument, match="is reserved"):
        with db.transaction() as t:
            t.set("s", "k", {"a": {marker: "1"}})
    with pytest.raises(mnemo.NotFound):
        db.get("s", "k")
    kept = {"!": 1, marker: "1", "list": [marker], "text": '{"%s":1}' % marker}
    db.set("s", "k", kept)
    assert db.get("s", "k") == kept
    db.verify()


def test_an_object_with_a_key_twice_is_refused_never_stored_with_a_value_lost(
    db: mnemo.Database,
) -> None:
    from mnemo import _native

    with db._handle.use() as ptr:
        for text in (b'{"a":1,"a":2}', b'[{"k":{"x":1,"y":2,"x":3}}]', b'{"\\u0061":1,"a":2}'):
            with pytest.raises(mnemo.InvalidArgument, match="more than once"):
                _native.check(_native.lib.mnemo_db_set(ptr, b"s", b"k", text))
    # Python dict keys that are not strings become strings: colliding ones are refused.
    colliding = ({1: "int one", "1": "str one"}, {"n": {True: 1, "true": 2}}, {None: 1, "null": 2})
    for value in colliding:
        with pytest.raises(mnemo.InvalidArgument, match="more than once"):
            db.set("s", "k", value)
        with pytest.raises(mnemo.InvalidArgument, match="more than once"):
            db.set_path("s", "k", "/p", value)
    with pytest.raises(mnemo.NotFound):
        db.get("s", "k")
    db.set("s", "k", {1: "one", 2: "two"})
    assert db.get("s", "k") == {"1": "one", "2": "two"}


# --- delete, get_all, iteration ----------------------------------------------------------


def test_delete(db: mnemo.Database) -> None:
    db.set("s", "k", 1)
    db.set("s", "other", 2)
    db.delete("s", "k")
    with pytest.raises(mnemo.NotFound):
        db.get("s", "k")
    assert db.get("s", "other") == 2
    db.set("s", "k", 3)  # a deleted key can be set again
    assert db.get("s", "k") == 3


def test_delete_missing_key_raises_not_found(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.NotFound) as info:
        db.delete("s", "never")
    assert info.value.status == mnemo.Status.NOT_FOUND and "never" in info.value.message
    db.set("s", "k", 1)
    db.delete("s", "k")
    with pytest.raises(mnemo.NotFound):
        db.delete("s", "k")  # already deleted


@pytest.mark.parametrize("store,key", [("_settings", "name"), ("", "k"), ("s", ""), ("s\0", "k")])
def test_delete_bad_store_or_key(db: mnemo.Database, store: str, key: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.delete(store, key)
    assert db.get("_settings", "name") == "notes"


def test_get_all(db: mnemo.Database) -> None:
    assert db.get_all("s") == {}  # unknown store
    db.set("s", "b", {"x": [1, 2]})
    db.set("s", "a", 2**70)
    db.set("s", "gone", True)
    db.set("other", "c", None)
    db.delete("s", "gone")
    everything = db.get_all("s")
    assert everything == {"a": 2**70, "b": {"x": [1, 2]}}
    assert list(everything) == ["a", "b"]  # sorted by key
    assert db.get_all("other") == {"c": None}


def test_get_all_reads_reserved_stores(db: mnemo.Database) -> None:
    settings = db.get_all("_settings")
    assert settings["name"] == "notes"
    grants = {k: v for k, v in settings.items() if k.startswith("auth/")}
    # The creator: admin of priority 0, the most senior.
    assert list(grants.values()) == [{"permission": "admin", "priority": 0, "status": "active"}]


@pytest.mark.parametrize("store", ["", "s" * 256, "s\0"])
def test_get_all_bad_store(db: mnemo.Database, store: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.get_all(store)


def test_items_and_keys(db: mnemo.Database) -> None:
    for key in ("b", "c", "a"):
        db.set("s", key, key.upper())
    items = db.items("s")
    db.set("s", "d", "D")  # a snapshot: not seen by the iterator already made
    assert list(items) == [("a", "A"), ("b", "B"), ("c", "C")]
    assert list(db.keys("s")) == ["a", "b", "c", "d"]
    assert list(db.keys("empty")) == []


# --- the Store view ----------------------------------------------------------------------


def test_store_view_reads_and_writes(db: mnemo.Database) -> None:
    todo = db.store("todo")
    assert todo.name == "todo" and len(todo) == 0 and list(todo) == []
    todo["milk"] = {"done": False}
    todo["bread"] = 2**70
    assert db.get("todo", "milk") == {"done": False}  # writes go to the database
    assert todo["bread"] == 2**70
    assert "milk" in todo and "tea" not in todo
    assert 42 not in todo  # type: ignore[comparison-overlap]
    assert len(todo) == 2 and list(todo) == ["bread", "milk"]
    assert dict(todo.items()) == {"bread": 2**70, "milk": {"done": False}}
    assert list(todo.keys()) == ["bread", "milk"]
    assert list(todo.values()) == [2**70, {"done": False}]
    assert todo.get("tea", "none") == "none"
    assert todo == {"bread": 2**70, "milk": {"done": False}}
    del todo["milk"]
    assert "milk" not in todo
    with pytest.raises(mnemo.NotFound):
        db.get("todo", "milk")
    assert repr(todo) == "<mnemo.Store 'todo'>"


def test_store_view_missing_keys_raise_key_error(db: mnemo.Database) -> None:
    todo = db.store("todo")
    with pytest.raises(KeyError) as info:
        todo["nope"]
    assert isinstance(info.value.__cause__, mnemo.NotFound)
    with pytest.raises(KeyError):
        del todo["nope"]
    assert todo.pop("nope", None) is None


def test_store_view_mapping_methods(db: mnemo.Database) -> None:
    s = db.store("s")
    s.update({"a": 1, "b": 2})
    assert s.setdefault("a", 99) == 1
    assert s.pop("a") == 1
    s.clear()
    assert len(s) == 0 and db.get_all("s") == {}


def test_store_view_passes_other_errors_through(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.store("_settings")["name"] = "renamed"
    with pytest.raises(mnemo.InvalidArgument):
        len(db.store(""))
    with pytest.raises(TypeError):
        db.store(1)  # type: ignore[arg-type]
    assert db.store("_settings")["name"] == "notes"


# --- tips, grant, revoke -----------------------------------------------------------------


def test_tips_follow_a_linear_history(db: mnemo.Database) -> None:
    assert db.tips() == [db.id]  # only the root entry so far
    seen = {db.id}
    for i in range(3):
        db.set("s", "k", i)
        tips = db.tips()
        assert len(tips) == 1 and tips[0].startswith("sha256:") and tips[0] not in seen
        seen.add(tips[0])
    with db.transaction() as t:
        t.set("s", "k", "last")
    assert db.tips() == [t.entry_id]


def test_grant_and_revoke(db: mnemo.Database) -> None:
    with mnemo.Instance.open("memory:") as other:
        key = other.device_id  # any valid Ed25519 public key
    db.grant(key, "write")
    assert db.get("_settings", f"auth/{key}") == {"permission": "write", "status": "active"}
    db.grant(key, "read")  # granting again replaces the permission
    assert db.get("_settings", f"auth/{key}")["permission"] == "read"
    db.revoke(key)
    assert db.get("_settings", f"auth/{key}") == {"permission": "read", "status": "revoked"}
    with pytest.raises(mnemo.NotFound):
        db.revoke(key)  # no active grant any more
    db.grant(key, "admin")  # re-activates, junior to the granting admin (priority 0)
    assert db.get("_settings", f"auth/{key}") == {
        "permission": "admin",
        "priority": 1,
        "status": "active",
    }


@pytest.mark.parametrize(
    "key,permission",
    [
        ("ed25519:not-base64!", "read"),
        ("ed25519:AAAA", "read"),
        ("rsa:AAAA", "read"),
        ("", "read"),
        (None, "write"),
        ("VALID", "Admin"),
        ("VALID", "owner"),
        ("VALID", ""),
    ],
)
def test_grant_malformed_key_or_permission(
    db: mnemo.Database, inst: mnemo.Instance, key: str | None, permission: str
) -> None:
    key = inst.device_id if key == "VALID" else key
    error = TypeError if key is None else mnemo.InvalidArgument
    with pytest.raises(error):
        db.grant(key, permission)  # type: ignore[arg-type]
    tips = db.tips()
    assert tips == [db.id]  # nothing committed


def test_revoke_without_grant_raises_not_found(db: mnemo.Database, inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.NotFound) as info:
        db.revoke(inst.device_id)
    assert info.value.status == 2 and inst.device_id in info.value.message


def test_revoke_malformed_key(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.revoke("ed25519:short")


def test_no_admin_changes_its_own_grant_so_the_creator_stays(db: mnemo.Database) -> None:
    with mnemo.Instance.open("memory:") as other:
        other_key = other.device_id  # any valid Ed25519 public key
    (me,) = [k.removeprefix("auth/") for k in db.keys("_settings") if k.startswith("auth/")]
    db.set("s", "k", 1)
    db.grant(other_key, "admin")
    # Not even with another admin present: the creator (priority 0) is never demoted or
    # revoked, so the database always keeps an admin.
    for change in (lambda: db.grant(me, "read"), lambda: db.revoke(me)):
        with pytest.raises(mnemo.PermissionDenied) as info:
            change()
        assert info.value.status == mnemo.Status.PERMISSION_DENIED
    db.set("s", "k", 2)
    assert db.get("s", "k") == 2


def test_new_methods_after_close(user: mnemo.User) -> None:
    db = user.create_db("d")
    db.close()
    calls: list[Callable[[], object]] = [
        lambda: db.delete("s", "k"),
        lambda: db.get_all("s"),
        lambda: db.items("s"),
        lambda: db.tips(),
        lambda: db.grant("ed25519:x", "read"),
        lambda: db.revoke("ed25519:x"),
        lambda: db.transaction(),
        lambda: db.subscribe(print),
        lambda: db.store("s")["k"],
    ]
    for call in calls:
        with pytest.raises(mnemo.InvalidArgument, match="closed"):
            call()


def test_verify_finds_rows_removed_behind_the_librarys_back(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "verify.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("ann")
        with inst.login("ann") as user, user.create_db("notes") as db:
            for i in range(5):
                db.set("todo", f"k{i}", i)
            db.verify()
    conn = sqlite3.connect(path)
    with conn:
        assert conn.execute("DELETE FROM cells WHERE store = 'todo' AND key = 'k3'").rowcount == 1
    conn.close()
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
        with user.find_db("notes") as db:
            assert db.get("todo", "k1") == 1  # what is still stored answers
            with pytest.raises(mnemo.Corrupt):
                db.get_all("todo")  # a whole-store read never silently misses a row
            with pytest.raises(mnemo.Corrupt, match="todo"):
                db.verify()


def test_a_store_read_out_of_order_from_a_damaged_file_is_corrupt(tmp_path) -> None:
    """Two children of a B-tree page swapped on disk (two bytes): SQLite returns every row
    of the store once, out of key order, each passing its check and the recorded count
    right. Before, get_all answered them so."""
    path = tmp_path / "swapped.db"
    original = written_todo_file(path)
    for first, second in adjacent_children(original, cells_root(path)):
        damaged = bytearray(original)
        damaged[first[0] : first[0] + 4] = second[1].to_bytes(4, "big")
        damaged[second[0] : second[0] + 4] = first[1].to_bytes(4, "big")
        path.write_bytes(bytes(damaged))
        found = todo_keys(path)
        if sorted(found) == TODO_KEYS and found != TODO_KEYS:
            break
    else:
        pytest.fail("no swap put the store's rows out of order")
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
        with user.find_db("notes") as db:
            with pytest.raises(mnemo.Corrupt, match="out of order"):
                db.get_all("todo")


def test_verify_finds_a_key_a_damaged_divider_hides_from_get(tmp_path) -> None:
    """One byte of a B-tree page's divider flipped (found by trying each in turn) so that
    get goes past a key that get_all still finds. Before, verify answered OK."""
    path = tmp_path / "divider.db"
    original = written_todo_file(path)
    size = page_size(original)
    lowest_cell: dict = {}  # interior page -> where its lowest cell starts
    for (at, _), _ in adjacent_children(original, cells_root(path)):
        lowest_cell[at // size] = min(at, lowest_cell.get(at // size, at))

    def get_all_whole() -> bool:
        try:
            with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
                with user.find_db("notes") as db:
                    return db.get_all("todo") == {key: key for key in TODO_KEYS}
        except mnemo.Error:
            return False  # damage elsewhere too

    cells = (at for page, start in lowest_cell.items() for at in range(start, (page + 1) * size))
    for at in cells:
        damaged = bytearray(original)
        damaged[at] ^= 1
        path.write_bytes(bytes(damaged))
        if todo_keys(path) != TODO_KEYS:
            continue  # the full read is damaged too
        missed = sorted(set(TODO_KEYS) - set(todo_keys(path, one_by_one=True)))
        if missed and get_all_whole():
            break
    else:
        pytest.fail("no flipped divider byte hid a key from get only")
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
        with user.find_db("notes") as db:
            with pytest.raises(mnemo.NotFound):
                db.get("todo", missed[0])
            with pytest.raises(mnemo.Corrupt, match="one key at a time"):
                db.verify()


def test_verify_ends_while_another_thread_commits(db: mnemo.Database) -> None:
    """verify checks the entries stored when it starts and answers OK or Busy. It read on to
    the end of the log, which a writer faster than the check kept moving: it never ended."""
    import threading

    for i in range(100):
        db.set("s", f"k{i}", 0)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            db.set("s", f"w{i % 1000}", i)
            i += 1

    outcome: list = []

    def check() -> None:
        try:
            db.verify()
            outcome.append("ok")
        except mnemo.Busy:
            outcome.append("busy")

    writer = threading.Thread(target=write)
    checker = threading.Thread(target=check, daemon=True)  # left behind if it never ends
    writer.start()
    checker.start()
    checker.join(timeout=120)
    stop.set()
    writer.join()
    assert outcome in (["ok"], ["busy"]), "verify did not end while another thread committed"


# The damaged-file tests: a SQLite file whose store "todo" holds TODO_KEYS (each its own
# value), damaged a byte or two at a time where its B-tree pages name one another.
TODO_KEYS = [f"k{i:03}" for i in range(300)]


def written_todo_file(path) -> bytes:
    """Writes ann's database "notes" with TODO_KEYS in store "todo" at `path`; its bytes."""
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("ann")
        with inst.login("ann") as user, user.create_db("notes") as db:
            for key in TODO_KEYS:
                db.set("todo", key, key)
    return path.read_bytes()


def cells_root(path) -> int:
    """The root page of the cells table of the SQLite file at `path`."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'cells'").fetchone()[0]
    finally:
        conn.close()


def todo_keys(path, one_by_one: bool = False) -> list:
    """The keys of store "todo" as SQLite reads them along the primary key (mnemo's order),
    or, `one_by_one`, those of TODO_KEYS each found when looked up by itself; [] for a file
    damaged beyond reading."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        (db_id,) = conn.execute("SELECT db FROM cells WHERE store = 'todo'").fetchone()
        query = "SELECT key FROM cells WHERE db = ? AND store = 'todo'"
        if one_by_one:
            one = query + " AND key = ?"
            return [k for k in TODO_KEYS if conn.execute(one, (db_id, k)).fetchone()]
        return [k for (k,) in conn.execute(query + " ORDER BY key", (db_id,))]
    except sqlite3.DatabaseError:
        return []
    finally:
        conn.close()


def page_size(file: bytes) -> int:
    """The page size of a SQLite file, from its header."""
    size = int.from_bytes(file[16:18], "big")
    return 65536 if size == 1 else size


def adjacent_children(file: bytes, root: int):
    """Each pair of child pointers next to each other under an interior page of the SQLite
    B-tree rooted at page `root` (an index B-tree, as mnemo's tables are): for each, where
    its 4 bytes are in the file and the page they name."""
    size = page_size(file)
    pages = [root]
    while pages:
        page = pages.pop()
        start = (page - 1) * size
        header = start + (100 if page == 1 else 0)
        if file[header] != 0x02:
            continue
        count = int.from_bytes(file[header + 3 : header + 5], "big")
        slots = [
            start + int.from_bytes(file[header + 12 + 2 * i : header + 14 + 2 * i], "big")
            for i in range(count)
        ] + [header + 8]
        children = [(at, int.from_bytes(file[at : at + 4], "big")) for at in slots]
        pages.extend(child for _, child in children)
        yield from zip(children, children[1:])


def test_a_write_over_a_log_read_short_is_corrupt_not_lost(tmp_path) -> None:
    """The newest rows of a database's log gone (as a damaged B-tree can hide them): a
    commit reads an older row as the newest, builds on its tips, and its write would lose
    to the newer value stored. Before, it answered OK and reads kept the old value."""
    import sqlite3

    path = tmp_path / "short.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("ann")
        with inst.login("ann") as user, user.create_db("notes") as db:
            for i in range(5):
                db.set("todo", "k", i)
            db_id = db.id
    conn = sqlite3.connect(path)
    with conn:
        (raw,) = conn.execute(
            "SELECT db FROM cells WHERE store = 'todo' AND key = 'k'"
        ).fetchone()
        (last,) = conn.execute("SELECT max(seq) FROM log WHERE db = ?", (raw,)).fetchone()
        deleted = conn.execute("DELETE FROM log WHERE db = ? AND seq > ?", (raw, last - 2))
        assert deleted.rowcount == 2
    conn.close()
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
        with user.load_db(db_id) as db:
            with pytest.raises(mnemo.Corrupt, match="newer than the database's newest log row"):
                db.set("todo", "k", 99)
            assert db.get("todo", "k") == 4  # the failed commit stored nothing


def test_a_device_key_deleted_behind_the_librarys_back_is_corrupt(tmp_path) -> None:
    """Before, the open made a new device identity, stored it, and then failed
    PERMISSION_DENIED on the system databases the old one signed."""
    import sqlite3

    path = tmp_path / "keyless.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("ann")
    conn = sqlite3.connect(path)
    with conn:
        assert conn.execute("DELETE FROM meta WHERE key = 'device_key'").rowcount == 1
    conn.close()
    with pytest.raises(mnemo.Corrupt, match="device key is missing"):
        mnemo.Instance.open(f"sqlite:{path}")
    conn = sqlite3.connect(path)
    with conn:  # the failed open stored nothing
        assert conn.execute("SELECT count(*) FROM meta WHERE key = 'device_key'").fetchone() == (0,)
    conn.close()


def test_sql_added_to_a_file_never_decides_what_becomes_of_its_writes(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "handed-over.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("ann")
        with inst.login("ann") as user, user.create_db("notes") as db:
            db.set("todo", "k0", 0)
            # Added while the file is open: the trigger never runs.
            conn = sqlite3.connect(path)
            with conn:
                conn.execute(
                    "CREATE TRIGGER lose AFTER INSERT ON cells "
                    "BEGIN DELETE FROM cells WHERE db = NEW.db AND key = NEW.key; END"
                )
            conn.close()
            db.set("todo", "k1", 1)
            assert db.get("todo", "k1") == 1
    # Found at the next open: the file is refused, nothing in it changed.
    with pytest.raises(mnemo.Corrupt, match="changed outside mnemo .*trigger 'lose'"):
        mnemo.Instance.open(f"sqlite:{path}")
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DROP TRIGGER lose")
    conn.close()
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("ann") as user:
        with user.find_db("notes") as db:
            assert (db.get("todo", "k0"), db.get("todo", "k1")) == (0, 1)
            db.verify()


def test_cyclic_values_are_refused(db: mnemo.Database) -> None:
    cyclic_list: list[Any] = []
    cyclic_list.append(cyclic_list)
    cyclic_dict: dict[str, Any] = {}
    cyclic_dict["self"] = cyclic_dict
    for value in (cyclic_list, cyclic_dict):
        with pytest.raises(mnemo.InvalidArgument, match="not JSON-serialisable"):
            db.set("s", "k", value)
    db.set("s", "k", [1])  # the encoder is still fine
    assert db.get("s", "k") == [1]


def test_a_value_refused_once_can_be_set_when_fixed(db: mnemo.Database) -> None:
    # The shared JSON encoder keeps no circular-reference markers between calls (a failed
    # encoding would leave its containers marked, and a later encoding of them would be
    # refused as circular; threads would also see each other's marks).
    value: list[Any] = [{"n": 1}, float("nan")]
    with pytest.raises(mnemo.InvalidArgument, match="not JSON-serialisable"):
        db.set("s", "k", value)
    value[1] = 2
    db.set("s", "k", value)
    assert db.get("s", "k") == [{"n": 1}, 2]
