"""Several processes on one storage (a SQLite file, a PostgreSQL database): each sees what
the others changed; keys of every valid length are stored and scanned on both."""

from __future__ import annotations

import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

import mnemo

from conftest import PYTHON_DIR, wait_until

#: Run in another process: writes one path of a value in the database given.
WRITE_PATH = """
import sys
sys.path.insert(0, sys.argv[1])
import mnemo
url, db_id, pointer, value = sys.argv[2:]
with mnemo.Instance.open(url) as inst, inst.login("alice") as alice:
    with alice.load_db(db_id) as db:
        db.set_path("s", "k", pointer, int(value))
"""


#: Run in another process: alice revokes a key in the database given.
REVOKE = """
import sys
sys.path.insert(0, sys.argv[1])
import mnemo
url, db_id, key = sys.argv[2:]
with mnemo.Instance.open(url) as inst, inst.login("alice") as alice:
    with alice.load_db(db_id) as db:
        db.revoke(key)
"""

#: Run in another process: alice forgets the database given (nobody else keeps it).
FORGET = """
import sys
sys.path.insert(0, sys.argv[1])
import mnemo
url, db_id = sys.argv[2:]
with mnemo.Instance.open(url) as inst, inst.login("alice") as alice:
    alice.forget_db(db_id)
"""


#: Run in another process: bob writes the database given until file `stop` exists (or
#: for 60 s, or until his key loses write), after creating file `ready` once he wrote.
WRITE_UNTIL_STOPPED = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import mnemo
url, db_id, ready, stop = sys.argv[2:]
end = time.monotonic() + 60
with mnemo.Instance.open(url) as inst, inst.login("bob") as bob:
    with bob.load_db(db_id) as db:
        n = 0
        while not os.path.exists(stop) and time.monotonic() < end:
            try:
                db.set("s", f"k{n % 50}", n)
            except mnemo.Busy:
                continue
            except mnemo.PermissionDenied:
                break
            n += 1
            if n == 1:
                open(ready, "w").close()
"""


@contextmanager
def writing_hard(
    url: str, db_id: str, tmp_path: Path, writers: int = 6
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Runs `writers` processes of [WRITE_UNTIL_STOPPED] (yielded) for the length of the
    block, which starts once all of them write at full speed; then stops them, and checks
    that they ended well."""
    stop = tmp_path / "stop"
    ready = [tmp_path / f"ready{i}" for i in range(writers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITE_UNTIL_STOPPED, str(PYTHON_DIR), url, db_id,
             str(r), str(stop)]
        )
        for r in ready
    ]
    try:
        assert wait_until(lambda: all(r.exists() for r in ready), 30)
        time.sleep(0.5)  # all of them at full speed
        yield procs
    finally:
        stop.touch()
        for proc in procs:
            proc.wait(timeout=60)
    assert [proc.returncode for proc in procs] == [0] * writers


def run_elsewhere(script: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-c", script, str(PYTHON_DIR), *args], check=True, timeout=60
    )


def write_path_elsewhere(url: str, db_id: str, pointer: str, value: int) -> None:
    run_elsewhere(WRITE_PATH, url, db_id, pointer, str(value))


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh storage that several processes can open."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("database_url"))


def test_writes_from_another_process_are_merged_with_this_ones(url: str) -> None:
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", "k", {"a": 1})
            # Another process writes a path of the value: the key now has a document.
            write_path_elsewhere(url, db.id, "/b", 2)
            assert db.get("s", "k") == {"a": 1, "b": 2}
            # A whole value set here replaces that path write, which is older...
            db.set("s", "k", {"a": 3})
            db.verify()
            # ...so the other process's next path write lands on this value.
            write_path_elsewhere(url, db.id, "/c", 4)
            assert db.get("s", "k") == {"a": 3, "c": 4}
            db.verify()


def test_the_longest_keys_are_kept_and_scanned_in_order(url: str) -> None:
    rng = random.Random(5)
    longest = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(4096))
    head = "a" * 600
    keys = [head, head + "b", head + "c", "a" * 599 + "b"]
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", longest, {"x": 1})
            db.set_path("s", longest, "/" + longest[:4000], 2)
            assert db.get("s", longest) == {"x": 1, longest[:4000]: 2}
            for key in reversed(keys):
                db.set("t", key, 1)
            assert list(db.keys("t")) == keys
            paged, after = [], None
            while page := db.scan("t", prefix="a", after=after, limit=1):
                after = page[0][0]
                paged.append(after)
            assert paged == keys
            db.verify()


def test_a_revocation_by_another_process_stops_an_open_handles_reads(url: str) -> None:
    """A handle looks at the settings again at least once a second, so another process's
    revocation of its key stops its reads soon, though this process changed nothing."""
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        inst.create_user("bob")
        with inst.login("alice") as alice, inst.login("bob") as bob:
            bob_key = next(k.pubkey for k in bob.list_keys() if k.is_default)
            with alice.create_db("d") as db:
                db.set("s", "k", 1)
                db.grant(bob_key, "read")
                db_id = db.id
            with bob.load_db(db_id) as bobs:
                assert bobs.get("s", "k") == 1
                run_elsewhere(REVOKE, url, db_id, bob_key)
                deadline = time.monotonic() + 10
                with pytest.raises(mnemo.PermissionDenied):
                    while time.monotonic() < deadline:
                        bobs.get("s", "k")
                        time.sleep(0.1)


def test_a_database_another_process_forgot_is_not_found_here(url: str) -> None:
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", "k", 1)
            run_elsewhere(FORGET, url, db.id)
            with pytest.raises(mnemo.NotFound, match="forgotten"):
                db.set("s", "k", 2)
            with pytest.raises(mnemo.NotFound, match="forgotten"):
                db.set_path("s", "k", "/a", 2)
            with pytest.raises(mnemo.NotFound):
                alice.load_db(db.id)


def test_subscribers_and_watchers_hear_what_another_process_commits(url: str) -> None:
    with mnemo.Instance.open(url) as inst:
        inst.set_limits(other_processes_poll_ms=20)
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            heard: list[tuple[str, bool]] = []
            changed = threading.Condition()

            def on_change(db_id: str, entry_id: str, remote: bool) -> None:
                with changed:
                    heard.append((entry_id, remote))
                    changed.notify_all()

            assert inst.stats()["databases_polled"] == 0
            assert inst.stats()["storage_connections"] >= 1  # a file or a server
            with db.subscribe(on_change), db.watch() as events:
                assert inst.stats()["databases_polled"] == 1
                db.set("s", "k", {"a": 1})
                write_path_elsewhere(url, db.id, "/b", 2)
                write_path_elsewhere(url, db.id, "/c", 3)
                with changed:
                    assert changed.wait_for(lambda: len(heard) >= 3, timeout=15), heard
                assert [remote for _, remote in heard] == [False, True, True]
                assert heard[2][0] in db.tips()
                watched = [events.next(timeout=15) for _ in heard]
                assert [(e["entry"], e["remote"]) for e in watched if e] == heard
                origins = [e["origin"] for e in watched if e]
                assert origins == ["local", "other_process", "other_process"]
                # Each change is heard once, as made here or there.
                assert events.next(timeout=0.3) is None
                assert len(heard) == 3
            assert db.get("s", "k") == {"a": 1, "b": 2, "c": 3}
            # Once nobody listens, the next poll stops polling the database.
            deadline = time.monotonic() + 15
            while inst.stats()["databases_polled"] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert inst.stats()["databases_polled"] == 0


def test_settings_change_while_other_processes_write_hard(url: str, tmp_path: Path) -> None:
    """A settings change reads every tip, so any write overtakes it; after two tries it is
    worked out holding the database's lock in storage, so six processes writing as fast as
    they can neither make grants give up busy nor keep a revocation of their key out."""
    with mnemo.Instance.open(url) as inst:
        for name in ("alice", "bob", "carol", "dave"):
            inst.create_user(name)
        keys = {}
        for name in ("bob", "carol", "dave"):
            with inst.login(name) as user:
                keys[name] = next(k.pubkey for k in user.list_keys() if k.is_default)
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", "x", 1)
            db.grant(keys["bob"], "write")
            with writing_hard(url, db.id, tmp_path):
                for _ in range(2):
                    db.grant(keys["carol"], "read")
                    db.grant(keys["dave"], "read")
                    db.revoke(keys["carol"])
                    db.revoke(keys["dave"])
                db.revoke(keys["bob"])
            db.verify()
            db_id = db.id
        with inst.login("bob") as bob, pytest.raises(mnemo.NotFound):
            bob.load_db(db_id)  # he loaded it in the writers, before his key was revoked


def test_a_revocation_arriving_by_sync_gets_in_while_the_revoked_key_writes_hard(
    url: str, tmp_path: Path
) -> None:
    """A settings change received by sync reads every tip too: the revocation of a key
    that six processes of the receiving storage write with as fast as they can is stored
    at the first pull (after two overtaken tries, holding the database's lock), and the
    writers then find their key revoked."""
    with mnemo.Instance.open("memory:") as a, mnemo.Instance.open(url) as b:
        a.enable_sync()
        b.enable_sync()
        a.create_user("alice")
        b.create_user("bob")
        b.create_user("carol")
        with ExitStack() as stack:
            sync_a = stack.enter_context(a.sync)
            sync_b = stack.enter_context(b.sync)
            alice = stack.enter_context(a.login("alice"))
            bob = stack.enter_context(b.login("bob"))
            carol = stack.enter_context(b.login("carol"))
            addr = sync_a.listen()
            bob_key, carol_key = (
                next(k.pubkey for k in u.list_keys() if k.is_default) for u in (bob, carol)
            )
            db = stack.enter_context(alice.create_db("d"))
            db.set("s", "x", 1)
            db.grant(bob_key, "write")
            db.grant(carol_key, "read")
            sync_b.sync_db(bob, addr, db.id)
            sync_b.sync_db(carol, addr, db.id)
            with writing_hard(url, db.id, tmp_path) as procs:
                db.revoke(bob_key)
                sync_b.sync_db(carol, addr, db.id)
                assert wait_until(lambda: all(p.poll() is not None for p in procs), 30)
