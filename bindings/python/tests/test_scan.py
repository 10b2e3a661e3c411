"""Ordered scans and generated keys: Database.scan, Database.iter_scan, Database.insert."""

from __future__ import annotations

import pytest

import mnemo


def set_numbered(db: mnemo.Database, n: int, store: str = "s") -> None:
    """Sets k000..k<n-1> to {"n": i}, in a scrambled order, in one commit."""
    with db.transaction() as t:
        for j in range(n):
            i = (j * 7) % n
            t.set(store, f"k{i:03d}", {"n": i})


def numbered(start: int, stop: int) -> list[tuple[str, object]]:
    return [(f"k{i:03d}", {"n": i}) for i in range(start, stop)]


def test_pages_through_250_keys_in_order_with_after(db: mnemo.Database) -> None:
    set_numbered(db, 250)
    pages, after = [], None
    while True:
        page = db.scan("s", after=after, limit=100)
        if not page:
            break
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [pair for p in pages for pair in p] == numbered(0, 250)
    assert pages[1][0] == ("k100", {"n": 100})
    assert db.scan("s") == numbered(0, 250)
    assert db.scan("s", after="k249") == []


def test_deleted_keys_are_skipped_and_do_not_count(db: mnemo.Database) -> None:
    set_numbered(db, 5)
    db.delete("s", "k001")
    assert db.scan("s", limit=2) == [("k000", {"n": 0}), ("k002", {"n": 2})]


def test_prefix_isolation(db: mnemo.Database) -> None:
    for i, key in enumerate(["users", "user0", "user/b", "user", "user/a", "usea", "user/"]):
        db.set("s", key, i)
    db.set("other", "user/c", 9)
    assert db.scan("s", prefix="user/") == [("user/", 6), ("user/a", 4), ("user/b", 2)]
    assert db.scan("s", prefix="users") == [("users", 0)]
    assert db.scan("s", prefix="user0") == [("user0", 1)]
    assert db.scan("s", prefix="user/", after="user/", limit=1) == [("user/a", 4)]
    assert db.scan("s", prefix="user/", after="user/b") == []
    assert [k for k, _ in db.scan("s")] == [
        "usea", "user", "user/", "user/a", "user/b", "user0", "users"
    ]
    assert db.scan("other", prefix="user") == [("user/c", 9)]
    assert db.scan("none") == []


def test_order_is_bytewise_over_utf8(db: mnemo.Database) -> None:
    keys = ["b", "a\x7f", "aé", "a", "日本", "Z", "\U0010ffff", "a\U0010ffff"]
    for key in keys:
        db.set("s", key, key)
    assert [k for k, _ in db.scan("s")] == sorted(keys, key=lambda k: k.encode("utf-8"))
    assert [k for k, _ in db.scan("s", prefix="a")] == ["a", "a\x7f", "aé", "a\U0010ffff"]


def test_iter_scan_pages_by_itself(db: mnemo.Database) -> None:
    set_numbered(db, 250)
    assert list(db.iter_scan("s", page=7)) == numbered(0, 250)
    assert list(db.iter_scan("s", page=250)) == numbered(0, 250)
    assert list(db.iter_scan("s", after="k239", page=3)) == numbered(240, 250)
    assert list(db.iter_scan("s", prefix="k1", page=4)) == numbered(100, 200)
    assert list(db.iter_scan("empty")) == []


def test_iter_scan_reads_lazily(db: mnemo.Database) -> None:
    set_numbered(db, 10)
    it = db.iter_scan("s", page=4)
    assert next(it) == ("k000", {"n": 0})
    # A key committed beyond the current page is seen when its page is read.
    db.set("s", "k100", "late")
    assert list(it)[-1] == ("k100", "late")


def test_iter_scan_checks_its_arguments_at_once(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.iter_scan("s", page=0)
    with pytest.raises(TypeError):
        db.iter_scan("s", page="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.iter_scan(3)  # type: ignore[arg-type]


def test_bad_and_hostile_arguments(db: mnemo.Database) -> None:
    set_numbered(db, 10)
    assert db.scan("s", limit=2**70) == numbered(0, 10)
    assert db.scan("s", after="\U0010ffff") == []
    assert db.scan("s", prefix="k" * 4096) == []
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", prefix="k" * 5000)
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", after="")
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", after="k" * 4097)
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("")
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", prefix="a\0b")
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", limit=0)
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", limit=-1)
    with pytest.raises(TypeError):
        db.scan("s", limit=True)
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s", prefix="\ud800")
    assert db.scan("_settings", prefix="name") == [("name", "notes")]


def test_fifty_inserts_give_unique_ordered_keys(db: mnemo.Database) -> None:
    keys = [db.insert("log", {"i": i}) for i in range(50)]
    assert all(len(k) == 32 and all(c in "0123456789abcdef" for c in k) for k in keys)
    assert len(set(keys)) == 50
    assert keys == sorted(keys)
    assert all(a < b for a, b in zip(keys, keys[1:]))
    assert db.scan("log") == [(k, {"i": i}) for i, k in enumerate(keys)]
    assert db.get("log", keys[7]) == {"i": 7}


def test_insert_refuses_bad_values_and_stores(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        db.insert("log", float("nan"))
    with pytest.raises(mnemo.InvalidArgument):
        db.insert("_settings", 1)
    with pytest.raises(mnemo.InvalidArgument):
        db.insert("", 1)
    assert db.scan("log") == []


def test_closed_database_refuses_scans(db: mnemo.Database) -> None:
    set_numbered(db, 5)
    it = db.iter_scan("s", page=2)
    assert next(it) == ("k000", {"n": 0})
    db.close()
    with pytest.raises(mnemo.InvalidArgument):
        db.scan("s")
    with pytest.raises(mnemo.InvalidArgument):
        db.insert("s", 1)
    assert next(it) == ("k001", {"n": 1})  # the page already read
    with pytest.raises(mnemo.InvalidArgument):
        next(it)
