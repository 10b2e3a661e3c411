"""mnemo.User: forgetting databases, removing keys, choosing the default key."""

from __future__ import annotations

import os
import sqlite3
from contextlib import ExitStack
from pathlib import Path

import pytest

import mnemo

MARKER = "marker-0b9d4e21-only-here"


def default_key(user: mnemo.User) -> str:
    return next(k.pubkey for k in user.list_keys() if k.is_default)


def rows_with(path: Path, needle: str) -> int:
    """Rows of the SQLite file at `path` whose entry bytes or cell value hold `needle`."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (entries,) = con.execute(
            "SELECT count(*) FROM entries WHERE instr(bytes, ?) > 0", (needle.encode(),)
        ).fetchone()
        (cells,) = con.execute(
            "SELECT count(*) FROM cells WHERE instr(value, ?) > 0", (needle,)
        ).fetchone()
        return int(entries) + int(cells)
    finally:
        con.close()


def meta_keys_naming(path: Path, db_id: str) -> int:
    """Metadata records of the SQLite file at `path` whose key names database `db_id`."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (n,) = con.execute("SELECT count(*) FROM meta WHERE instr(key, ?) > 0", (db_id,)).fetchone()
        return int(n)
    finally:
        con.close()


def file_holds(path: Path, needle: str) -> bool:
    data = path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        data += wal.read_bytes()
    return needle.encode() in data


def test_a_forgotten_database_leaves_the_list_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "life.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice:
            gone = alice.create_db("gone")
            kept = alice.create_db("kept")
            gone.set("s", "k", MARKER)
            kept.set("s", "k", "stays")
            gone_id = gone.id
            assert rows_with(path, MARKER) >= 2
            assert meta_keys_naming(path, gone_id) >= 1  # its version's shape

            alice.forget_db(gone)
            assert [d.name for d in alice.list_dbs()] == ["kept"]
            with pytest.raises(mnemo.NotFound):
                alice.load_db(gone_id)
            with pytest.raises(mnemo.NotFound):
                alice.find_db("gone")
            with pytest.raises(mnemo.NotFound):
                alice.forget_db(gone_id)
            # Nobody else kept it: its rows are gone, and its data is not in the file.
            assert rows_with(path, MARKER) == 0
            assert not file_holds(path, MARKER)
            assert meta_keys_naming(path, gone_id) == 0
            # The handle still open on it fails cleanly.
            with pytest.raises(mnemo.NotFound):
                gone.get("s", "k")
            with pytest.raises(mnemo.NotFound):
                gone.set("s", "k", 1)
            # A transaction's path write reads the key first: that read fails too (before,
            # it took the forgotten database's NOT_FOUND for a key without a value).
            txn = gone.transaction()
            with pytest.raises(mnemo.NotFound, match="forgotten"):
                txn.set_path("s", "k", "/a", 1)
            with pytest.raises(mnemo.NotFound, match="forgotten"):
                txn.delete("s", "k")
            txn.abort()
            gone.close()
            kept.close()
    with mnemo.Instance.open(f"sqlite:{path}") as inst, inst.login("alice") as alice:
        assert [d.name for d in alice.list_dbs()] == ["kept"]
        with alice.find_db("kept") as kept:
            assert kept.get("s", "k") == "stays"


def test_a_database_another_user_keeps_stays(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
        inst.create_user("bob")
        with inst.login("alice") as alice, inst.login("bob") as bob:
            db = alice.create_db("shared")
            db.grant(default_key(bob), "write")
            db.set("s", "k", MARKER)
            bobs = bob.load_db(db.id)
            alice.forget_db(db.id)
            assert alice.list_dbs() == []
            assert rows_with(path, MARKER) >= 2
            assert bobs.get("s", "k") == MARKER
            bob.forget_db(bobs)
            assert rows_with(path, MARKER) == 0
            db.close()
            bobs.close()


def test_forget_bad_arguments(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        user.forget_db("sha256:nothex")
    with pytest.raises(mnemo.NotFound):
        user.forget_db("sha256:" + "ab" * 32)
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.forget_db("a\0b")


def test_forgetting_stops_tracking_for_good() -> None:
    with ExitStack() as stack:
        a = stack.enter_context(mnemo.Instance.open("memory:"))
        b = stack.enter_context(mnemo.Instance.open("memory:"))
        a.enable_sync()
        b.enable_sync()
        sync_a = stack.enter_context(a.sync)
        sync_b = stack.enter_context(b.sync)
        addr = sync_a.listen()
        a.create_user("alice")
        b.create_user("bob")
        alice = stack.enter_context(a.login("alice"))
        bob = stack.enter_context(b.login("bob"))
        db = stack.enter_context(alice.create_db("tracked"))
        db.grant(default_key(bob), "write")
        sync_b.track(bob, addr, db.id)
        with bob.load_db(db.id) as copy:
            copy.set("s", "k", 1)
        sync_b.flush()
        bob.forget_db(db.id)
        # Nothing tracks it any more: untrack finds nothing to stop.
        with pytest.raises(mnemo.NotFound):
            sync_b.untrack(bob, addr, db.id)
        with pytest.raises(mnemo.NotFound):
            bob.load_db(db.id)


def test_forgetting_a_synced_database_drops_its_sync_records_and_only_its(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bob.db"
    with ExitStack() as stack:
        a = stack.enter_context(mnemo.Instance.open("memory:"))
        b = stack.enter_context(mnemo.Instance.open(f"sqlite:{path}"))
        a.enable_sync()
        b.enable_sync()
        addr = stack.enter_context(a.sync).listen()
        sync_b = stack.enter_context(b.sync)
        a.create_user("alice")
        b.create_user("bob")
        alice = stack.enter_context(a.login("alice"))
        bob = stack.enter_context(b.login("bob"))
        ids = []
        for name in ("gone", "kept"):
            db = stack.enter_context(alice.create_db(name))
            db.grant(default_key(bob), "write")
            sync_b.sync_db(bob, addr, db.id)
            with bob.load_db(db.id) as copy:
                copy.set("s", "k", name)
            sync_b.sync_db(bob, addr, db.id)  # pulled and pushed: cursors both ways
            ids.append(db.id)
        gone, kept = ids
        assert meta_keys_naming(path, gone) >= 2
        assert meta_keys_naming(path, kept) >= 2
        bob.forget_db(gone)
        assert meta_keys_naming(path, gone) == 0
        assert meta_keys_naming(path, kept) >= 2


def test_remove_key_refuses_the_default_and_unknown_keys(user: mnemo.User) -> None:
    with pytest.raises(mnemo.InvalidArgument, match="default"):
        user.remove_key(default_key(user))
    stranger = "ed25519:" + "A" * 43
    with pytest.raises(mnemo.NotFound):
        user.remove_key(stranger)
    with pytest.raises(mnemo.NotFound):
        user.set_default_key(stranger)
    for bad in ("ed25519:nope", "rsa:AAAA", ""):
        with pytest.raises(mnemo.InvalidArgument):
            user.remove_key(bad)
        with pytest.raises(mnemo.InvalidArgument):
            user.set_default_key(bad)


def test_removal_and_default_change_persist_across_reopening(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'keys.db'}"
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice:
            first = default_key(alice)
            second = alice.add_private_key("second")
            alice.set_default_key(second)
            assert default_key(alice) == second
            with alice.create_db("new") as db:
                assert alice.signing_key(db.id) == second
            alice.remove_key(first)
            assert [k.pubkey for k in alice.list_keys()] == [second]
    with mnemo.Instance.open(url) as inst, inst.login("alice") as alice:
        keys = alice.list_keys()
        assert [(k.pubkey, k.is_default) for k in keys] == [(second, True)]
        with pytest.raises(mnemo.NotFound):
            alice.remove_key(first)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_after_mnemo_was_used_is_told_it_cannot_use_it(db: mnemo.Database) -> None:
    """mnemo's threads and locks do not survive a fork: in the child, objects made before
    and new instances raise InvalidArgument saying why (before: a pre-fork object could
    hang or stay silent), and closing them does nothing."""
    db.set("s", "k", 1)
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what each call did, then leave at once
        outcomes = []
        for call in (lambda: db.get("s", "k"), lambda: mnemo.Instance.open("memory:"), db.close):
            try:
                call()
                outcomes.append("ok")
            except mnemo.InvalidArgument as e:
                outcomes.append("forked" if "was forked after mnemo was used" in str(e) else str(e))
        os.write(writing, ",".join(outcomes).encode())
        os._exit(0)
    os.close(writing)
    _, status = os.waitpid(pid, 0)
    told = os.read(reading, 4096).decode()
    os.close(reading)
    assert status == 0 and told == "forked,forked,ok", told
    assert db.get("s", "k") == 1  # the parent is unaffected
