"""mnemo.Sync: references to the sync engine, and sync between instances.

Three layers: two instances in this process; this process against the C example peer
(target/c-examples/sync_peer, built by `make -C bindings/c`); and three processes (the C
peer, this process and a Python subprocess running examples/sync_peer.py). Every wait is
bounded: lines from a subprocess are read by a thread into a queue and taken with a
timeout, and callbacks are awaited with an Event.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from conftest import PYTHON_DIR, REPO_DIR

import mnemo

#: How long any one wait may last, in seconds (a line from a peer, a callback, a build).
TIMEOUT = 15
BUILD_TIMEOUT = 600
STORE = "notes"
DB_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
DEVICE_ID = re.compile(r"^ed25519:[A-Za-z0-9_-]{43}$")
C_PEER = REPO_DIR / "target" / "c-examples" / "sync_peer"
PY_PEER = PYTHON_DIR / "examples" / "sync_peer.py"


# --- References to the engine --------------------------------------------------------


def test_sync_reference_lifecycle(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    sync = inst.sync
    assert not sync.closed
    sync.close()
    sync.close()
    assert sync.closed


def test_sync_context_manager(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    with inst.sync as sync:
        assert isinstance(sync, mnemo.Sync)
    assert sync.closed


def test_sync_outlives_instance_and_other_references() -> None:
    inst = mnemo.Instance.open("memory:")
    inst.enable_sync()
    refs = [inst.sync for _ in range(3)]
    refs[0].close()
    inst.close()
    for r in refs[1:]:
        r.close()


def test_sync_reference_after_the_instance_closed_says_so() -> None:
    """A sync reference keeps the engine, not the instance: once the instance is closed and
    its users logged out, what needs the instance raises InvalidArgument, though a
    database handle is still open."""
    inst = mnemo.Instance.open("memory:")
    inst.enable_sync()
    inst.create_user("u")
    user = inst.login("u")
    db = user.create_db("d")
    with inst.sync as sync, db:
        sync.listen()
        sync.share(db.id)  # works while the instance is open
        inst.close()
        sync.share(db.id)  # and while a user session is
        user.logout()
        with pytest.raises(mnemo.InvalidArgument, match="closed"):
            sync.share(db.id)
        assert db.get("_settings", "name") == "d"


def test_sync_after_close_of_instance_raises(inst: mnemo.Instance) -> None:
    inst.close()
    with pytest.raises(mnemo.InvalidArgument):
        _ = inst.sync


def test_enable_sync_is_idempotent(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    inst.enable_sync()
    threads = [threading.Thread(target=inst.enable_sync) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    with inst.sync as a, inst.sync as b:
        # Both references reach the one engine: it serves, and proves, the same identity.
        assert b.connect(a.listen()) == inst.device_id


def test_sync_before_enable_raises_sync_disabled(inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.SyncDisabled) as e:
        _ = inst.sync
    assert e.value.status == mnemo.Status.SYNC_DISABLED


def test_methods_of_a_closed_sync_raise_invalid_argument(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    sync = inst.sync
    sync.close()
    with pytest.raises(mnemo.InvalidArgument):
        sync.listen()
    with pytest.raises(mnemo.InvalidArgument):
        sync.connect("127.0.0.1:1")
    with pytest.raises(mnemo.InvalidArgument):
        sync.flush()


# --- Two instances in this process ---------------------------------------------------


@dataclass
class Pair:
    """Instance A (alice owns database "shared", A listens at `addr`) and instance B
    (bob, not granted yet); both with sync enabled."""

    a: mnemo.Instance
    b: mnemo.Instance
    sync_a: mnemo.Sync
    sync_b: mnemo.Sync
    addr: str
    alice: mnemo.User
    bob: mnemo.User
    db: mnemo.Database

    def grant_bob(self, permission: mnemo.Permission = "write") -> None:
        self.db.grant(default_key(self.bob), permission)


@dataclass
class Server:
    inst: mnemo.Instance
    sync: mnemo.Sync
    addr: str
    alice: mnemo.User


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """Instance A, listening, with alice logged in: shared by the tests of this module
    (each gets its own database), since stopping a listener takes a moment."""
    with mnemo.Instance.open("memory:") as a:
        a.enable_sync()
        a.create_user("alice")
        with a.sync as sync, a.login("alice") as alice:
            yield Server(a, sync, sync.listen(), alice)


@pytest.fixture
def pair(server: Server) -> Iterator[Pair]:
    """A new database on the shared instance A, and a new instance B."""
    with ExitStack() as stack:
        b = stack.enter_context(mnemo.Instance.open("memory:"))
        b.enable_sync()
        sync_b = stack.enter_context(b.sync)
        b.create_user("bob")
        bob = stack.enter_context(b.login("bob"))
        db = stack.enter_context(server.alice.create_db("shared"))
        db.set(STORE, "first", {"by": "alice"})
        yield Pair(server.inst, b, server.sync, sync_b, server.addr, server.alice, bob, db)


def default_key(user: mnemo.User) -> str:
    return next(k.pubkey for k in user.list_keys() if k.is_default)


def closed_port_addr() -> str:
    """An address on loopback where nothing listens (a port bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_listen_returns_loopback_host_and_port(pair: Pair) -> None:
    m = re.match(r"^127\.0\.0\.1:(\d+)$", pair.addr)
    assert m and 0 < int(m.group(1)) < 65536, pair.addr
    second = pair.sync_a.listen("127.0.0.1:0")  # several listeners may run at once
    assert second != pair.addr and second.startswith("127.0.0.1:")
    assert pair.sync_b.connect(second) == pair.a.device_id


def test_unlisten_stops_one_listener_and_frees_its_port(pair: Pair) -> None:
    first = pair.sync_b.listen()
    second = pair.sync_b.listen()
    assert pair.sync_b.stats()["listeners"] == 2
    pair.sync_b.unlisten(first)
    assert pair.sync_b.stats()["listeners"] == 1
    with pytest.raises(mnemo.NetworkError):
        pair.sync_a.connect(first)
    assert pair.sync_a.connect(second) == pair.b.device_id
    with pytest.raises(mnemo.NotFound):
        pair.sync_b.unlisten(first)
    with pytest.raises(mnemo.NotFound):
        pair.sync_b.unlisten(pair.addr)  # another engine's listener
    for bad in ["localhost:1", "127.0.0.1", ""]:
        with pytest.raises(mnemo.InvalidArgument):
            pair.sync_b.unlisten(bad)
    assert pair.sync_b.listen(first) == first  # the port is free again at once
    assert pair.sync_a.connect(first) == pair.b.device_id


def test_connect_returns_the_peers_device_id(pair: Pair) -> None:
    assert pair.sync_b.connect(pair.addr) == pair.a.device_id
    addr_b = pair.sync_b.listen()
    assert pair.sync_a.connect(addr_b) == pair.b.device_id
    assert pair.a.device_id != pair.b.device_id


def test_sync_db_without_grant_is_denied_and_nothing_is_pulled(pair: Pair) -> None:
    with pytest.raises(mnemo.PermissionDenied):
        pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    with pytest.raises(mnemo.NotFound):
        pair.bob.load_db(pair.db.id)


def test_a_session_of_another_instance_is_refused_by_every_user_call(pair: Pair) -> None:
    """A sync engine acts only for users of its own instance: bob's session belongs to b."""
    pair.grant_bob("read")
    ticket = pair.sync_a.share(pair.db)
    calls = [
        lambda: pair.sync_a.sync_db(pair.bob, pair.addr, pair.db.id),
        lambda: pair.sync_a.track(pair.bob, pair.addr, pair.db.id),
        lambda: pair.sync_a.untrack(pair.bob, pair.addr, pair.db.id),
        lambda: pair.sync_a.request_access(pair.bob, ticket, "read"),
        lambda: pair.sync_a.requests(pair.bob),
        lambda: pair.sync_a.approve(pair.bob, "r"),
        lambda: pair.sync_a.reject(pair.bob, "r"),
        lambda: pair.sync_a.auto_approve(pair.bob, pair.db, "read"),
        lambda: pair.sync_a.join(pair.bob, ticket),
        lambda: pair.sync_b.requests(pair.alice),
    ]
    for call in calls:
        with pytest.raises(mnemo.InvalidArgument, match="another instance"):
            call()
    # Nothing reached b's storage through a's engine; b's own engine still works for bob.
    with pytest.raises(mnemo.NotFound):
        pair.bob.load_db(pair.db.id)
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)


def test_a_session_of_another_instance_on_the_same_storage_is_accepted(tmp_path: Path) -> None:
    """Two instances opened on one file are one device (as two processes sharing it are):
    either's sync engine acts for a session of the other."""
    url = f"sqlite:{tmp_path / 'shared.db'}"
    with mnemo.Instance.open(url) as first, mnemo.Instance.open(url) as second:
        first.create_user("ann")
        first.enable_sync()
        with first.sync as sync, second.login("ann") as ann, ann.create_db("d") as db:
            assert sync.requests(ann) == []
            sync.auto_approve(ann, db, "read")


def test_sync_db_after_grant_then_load_db(pair: Pair) -> None:
    pair.grant_bob("read")
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    with pair.bob.load_db(pair.db.id) as copy:
        assert copy.id == pair.db.id
        assert copy.get(STORE, "first") == {"by": "alice"}
        assert copy.get("_settings", "name") == "shared"
        assert copy.tips() == pair.db.tips()
        with pytest.raises(mnemo.PermissionDenied):  # read only
            copy.set(STORE, "bob", 1)
    assert [d.name for d in pair.bob.list_dbs()] == ["shared"]


def test_edits_on_both_sides_converge(pair: Pair) -> None:
    pair.grant_bob()
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    with pair.bob.load_db(pair.db.id) as copy:
        for i in range(5):
            pair.db.set(STORE, f"alice-{i}", i)
            copy.set(STORE, f"bob-{i}", i)
        pair.db.set(STORE, "both", "alice")  # a conflict: the merge picks one everywhere
        copy.set(STORE, "both", "bob")
        copy.delete(STORE, "first")
        assert pair.db.tips() != copy.tips()

        pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)

        state = pair.db.get_all(STORE)
        assert copy.get_all(STORE) == state
        assert copy.tips() == pair.db.tips()
        assert len(copy.tips()) == 2  # two concurrent branches, no merge commit
        assert {f"alice-{i}" for i in range(5)} | {f"bob-{i}" for i in range(5)} < set(state)
        assert state["both"] in ("alice", "bob")
        assert "first" not in state
        # A round with nothing new changes nothing.
        pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
        assert copy.get_all(STORE) == state


def test_track_and_flush_push_commits(pair: Pair) -> None:
    pair.grant_bob()
    assert pair.sync_b.stats()["tracks"] == 0
    pair.sync_b.track(pair.bob, pair.addr, pair.db.id)
    pair.sync_b.track(pair.bob, pair.addr, pair.db.id)  # again: changes nothing
    assert pair.sync_b.stats()["tracks"] == 1
    with pair.bob.load_db(pair.db.id) as copy:  # the first round brought it here
        for i in range(10):
            copy.set(STORE, f"bob-{i}", {"n": i})
        with copy.transaction() as t:
            t.set(STORE, "tx", True)
        pair.sync_b.flush(timeout_ms=TIMEOUT * 1000)
        assert pair.db.get(STORE, "tx") is True
        assert pair.db.get_all(STORE) == copy.get_all(STORE)
        assert pair.db.tips() == copy.tips() == [t.entry_id]
    pair.sync_b.flush()  # nothing pending: returns at once
    pair.sync_b.untrack(pair.bob, pair.addr, pair.db.id)
    assert pair.sync_b.stats()["tracks"] == 0


def test_tracked_copy_hears_remote_changes(pair: Pair) -> None:
    pair.grant_bob()
    pair.sync_b.track(pair.bob, pair.addr, pair.db.id)
    heard: list[tuple[str, str, bool]] = []
    done = threading.Event()

    def on_change(db_id: str, entry_id: str, remote: bool) -> None:
        heard.append((db_id, entry_id, remote))
        if remote:
            done.set()

    with pair.bob.load_db(pair.db.id) as copy, copy.subscribe(on_change):
        with pair.db.transaction() as t:
            t.set(STORE, "news", "from alice")
        assert done.wait(TIMEOUT), f"no remote change heard within {TIMEOUT}s: {heard}"
        assert (pair.db.id, t.entry_id, True) in heard
        assert copy.get(STORE, "news") == "from alice"


def _peer_about_to_go(
    stack: ExitStack,
) -> tuple[mnemo.Instance, mnemo.Sync, mnemo.User, str, mnemo.Sync, mnemo.User, str]:
    """Instance a (alice, listening at the returned address, her database "shared" granting
    bob write; the caller closes what is a's) and instance b (bob's, closed by ``stack``)."""
    a = mnemo.Instance.open("memory:")
    b = stack.enter_context(mnemo.Instance.open("memory:"))
    a.enable_sync()
    b.enable_sync()
    a.create_user("alice")
    b.create_user("bob")
    sync_a = a.sync
    sync_b = stack.enter_context(b.sync)
    alice = a.login("alice")
    bob = stack.enter_context(b.login("bob"))
    addr = sync_a.listen()
    with alice.create_db("shared") as db:
        db.grant(default_key(bob), "write")
        db_id = db.id
    return a, sync_a, alice, addr, sync_b, bob, db_id


def test_flush_times_out_with_network_error_when_the_peer_is_gone() -> None:
    with ExitStack() as stack:
        a, sync_a, alice, addr, sync_b, bob, db_id = _peer_about_to_go(stack)
        sync_b.track(bob, addr, db_id)
        # A goes away: its last references close, and with them the listener.
        sync_a.close()
        alice.logout()
        a.close()
        with bob.load_db(db_id) as copy:
            copy.set(STORE, "unsent", 1)
            with pytest.raises(mnemo.NetworkError) as e:
                sync_b.flush(timeout_ms=300)
        assert e.value.status == mnemo.Status.NETWORK and e.value.message
        with pytest.raises(mnemo.NetworkError):
            sync_b.connect(addr)


def test_a_listener_whose_instance_closed_answers_with_a_network_error() -> None:
    # The listener outlives the instance (a sync reference keeps it): before, peers got
    # INVALID_ARGUMENT ("the instance behind this sync engine is closed"), which says their
    # own arguments were bad.
    with ExitStack() as stack:
        a, sync_a, alice, addr, sync_b, bob, db_id = _peer_about_to_go(stack)
        stack.enter_context(sync_a)
        alice.logout()
        a.close()
        with pytest.raises(mnemo.NetworkError, match="listener is closed"):
            sync_b.sync_db(bob, addr, db_id)


def test_closed_port_raises_network_error(pair: Pair) -> None:
    pair.grant_bob()
    addr = closed_port_addr()
    with pytest.raises(mnemo.NetworkError):
        pair.sync_b.connect(addr)
    with pytest.raises(mnemo.NetworkError):
        pair.sync_b.sync_db(pair.bob, addr, pair.db.id)
    with pytest.raises(mnemo.NetworkError):
        pair.sync_b.track(pair.bob, addr, pair.db.id)
    with pytest.raises(mnemo.NotFound):
        pair.bob.load_db(pair.db.id)


def test_a_peer_that_accepts_and_never_answers_fails_in_connect_timeout_naming_the_handshake(
    pair: Pair,
) -> None:
    """TCP connects at once; the TLS handshake then hears nothing. The error says which step
    ran out of time (it said "connecting timed out", the outer deadline of both steps)."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    addr = f"127.0.0.1:{silent.getsockname()[1]}"
    try:
        pair.sync_b.set_limits(connect_timeout_ms=300)
        with pytest.raises(mnemo.NetworkError) as e:
            pair.sync_b.connect(addr)
        assert "TLS handshake timed out" in e.value.message, e.value.message
        assert len(held) == 1, "the connection reached the silent server"
    finally:
        for conn in held:
            conn.close()
        silent.close()


BAD_ADDRESSES = [
    "",
    "nonsense",
    "127.0.0.1",
    "127.0.0.1:",
    ":80",
    "127.0.0.1:99999",
    "localhost:abc",
    "host name:1",
    "http://127.0.0.1:80",
    "127.0.0.1:80/path",
    "::1:80",
]


@pytest.mark.parametrize("addr", BAD_ADDRESSES + ["127.0.0.1:0"])
def test_bad_peer_addresses_raise_invalid_argument(pair: Pair, addr: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_b.connect(addr)
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_b.sync_db(pair.bob, addr, pair.db.id)
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_b.track(pair.bob, addr, pair.db.id)


@pytest.mark.parametrize("addr", BAD_ADDRESSES + ["127.0.0.1:0\0"])
def test_bad_listen_addresses_raise_invalid_argument(pair: Pair, addr: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_a.listen(addr)


def test_listen_on_a_port_in_use_raises_network_error(pair: Pair) -> None:
    with pytest.raises(mnemo.NetworkError):
        pair.sync_b.listen(pair.addr)


@pytest.mark.parametrize(
    "db_id",
    [
        "",
        "shared",
        "sha256:",
        "sha256:xyz",
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "SHA256:" + "a" * 64,
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 64 + "\0",
    ],
)
def test_malformed_db_ids_raise_invalid_argument(pair: Pair, db_id: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_b.sync_db(pair.bob, pair.addr, db_id)
    with pytest.raises(mnemo.InvalidArgument):
        pair.sync_b.track(pair.bob, pair.addr, db_id)


def test_a_database_neither_side_holds_is_not_found(pair: Pair) -> None:
    with pytest.raises(mnemo.NotFound):
        pair.sync_b.sync_db(pair.bob, pair.addr, "sha256:" + "0" * 64)


def test_a_listener_refuses_a_database_no_local_user_asked_for(pair: Pair) -> None:
    mine = pair.bob.create_db("bobs own")
    mine.set("s", "k", "v")
    with pytest.raises(mnemo.PermissionDenied):
        pair.sync_b.sync_db(pair.bob, pair.addr, mine.id)


def test_failed_rounds_with_new_devices_keep_nothing(tmp_path: Path) -> None:
    """A round that fails keeps nothing of the device that answered: before, each new device
    key added a record to ``_sync`` for good (a server presenting a fresh key at each
    connection and failing every round grew the file about 290 bytes a round)."""
    path = tmp_path / "bob.db"

    def entries() -> int:
        """The entries in the file (read with no instance open on it)."""
        with closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def failing_rounds(count: int) -> None:
        with mnemo.Instance.open(f"sqlite:{path}") as inst:
            if "bob" not in inst.list_users():
                inst.create_user("bob")
            inst.enable_sync()
            with inst.login("bob") as bob, inst.sync as sync:
                if not bob.list_dbs():
                    with bob.create_db("d") as db:
                        db.set("s", "k", 1)
                [(db_id, _)] = bob.list_dbs()
                for _ in range(count):
                    # Each a device of its own, refusing a database nobody there asked for.
                    with mnemo.Instance.open("memory:") as other:
                        other.enable_sync()
                        with other.sync as theirs, pytest.raises(mnemo.PermissionDenied):
                            sync.sync_db(bob, theirs.listen(), db_id)

    failing_rounds(1)
    before = entries()
    failing_rounds(3)
    assert entries() == before


def test_a_database_the_peer_asked_for_is_shared_by_push(pair: Pair) -> None:
    mine = pair.bob.create_db("bobs own")
    mine.set("s", "k", "v")
    mine.grant(default_key(pair.alice), "read")
    # Alice asks for it (her pull finds B is not listening), then B pushes it to her.
    with pytest.raises(mnemo.NetworkError):
        pair.sync_a.sync_db(pair.alice, closed_port_addr(), mine.id)
    pair.sync_b.sync_db(pair.bob, pair.addr, mine.id)
    # The peer took it: a second round finds nothing to move and no error.
    pair.sync_b.sync_db(pair.bob, pair.addr, mine.id)
    with pair.alice.load_db(mine.id) as theirs:
        assert theirs.get("s", "k") == "v"


def test_a_device_whose_users_may_no_longer_read_is_pushed_nothing(pair: Pair) -> None:
    """A round pushes a device only once a key that may read the database proved that the
    device holds copies for it: once bob's key is revoked, alice's rounds with bob's device
    still pull but push nothing, and say so. Another user of that device granted read (a
    proof made when she logged in) brings the pushes back."""
    bobs_device = pair.sync_b.listen()
    pair.grant_bob("read")
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    pair.db.set(STORE, "seen", 1)
    pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)
    pair.db.revoke(default_key(pair.bob))
    pair.db.set(STORE, "after", 2)
    for _ in range(2):  # the next round refuses as well: nothing was pushed, or skipped
        with pytest.raises(mnemo.PermissionDenied, match="did not prove that it holds") as info:
            pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)
        assert info.value.status == mnemo.Status.PERMISSION_DENIED
    with pair.bob.load_db(pair.db.id) as copy:  # his device heard of nothing since
        assert copy.get(STORE, "seen") == 1
        with pytest.raises(mnemo.NotFound):
            copy.get(STORE, "after")
    pair.b.create_user("carol")
    with pair.b.login("carol") as carol:
        pair.db.grant(default_key(carol), "read")
        pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)
        with carol.load_db(pair.db.id) as copy:
            assert copy.get(STORE, "after") == 2
    with pytest.raises(mnemo.NotFound):  # the revocation arrived with the rest
        pair.bob.load_db(pair.db.id)


def test_a_key_added_proves_its_device_at_once(pair: Pair) -> None:
    """A key bob adds while logged in proves at once that his device holds copies for it:
    once alice's database grants that key alone, her rounds still push to his device."""
    bobs_device = pair.sync_b.listen()
    pair.grant_bob("read")
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    laptop = pair.bob.add_private_key("laptop")
    pair.db.grant(laptop, "read")
    pair.db.revoke(default_key(pair.bob))
    pair.db.set(STORE, "for the laptop", 3)
    pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)
    with pair.bob.load_db(pair.db.id) as copy:
        assert copy.get(STORE, "for the laptop") == 3
    # Removed, the key's proof goes with it, for good: another session of bob's, which
    # still holds the key, does not make it again by syncing.
    with pair.b.login("bob") as other_session:
        pair.bob.remove_key(laptop)
        pair.sync_b.sync_db(other_session, pair.addr, pair.db.id)
    pair.db.set(STORE, "after the laptop", 4)
    with pytest.raises(mnemo.PermissionDenied, match="did not prove that it holds"):
        pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)


def test_a_deleted_users_device_is_pushed_nothing_for_that_user(pair: Pair) -> None:
    """Deleting a user drops the proofs of its keys: a device kept for that user's
    database alone is pushed nothing more."""
    bobs_device = pair.sync_b.listen()
    pair.b.create_user("carol")
    with pair.b.login("carol") as carol:
        pair.db.grant(default_key(carol), "read")
        pair.sync_b.sync_db(carol, pair.addr, pair.db.id)
    pair.db.set(STORE, "for carol", 5)
    pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)
    pair.bob.delete_user("carol")  # bob, the instance's first user, is its admin
    pair.db.set(STORE, "after carol", 6)
    with pytest.raises(mnemo.PermissionDenied, match="did not prove that it holds"):
        pair.sync_a.sync_db(pair.alice, bobs_device, pair.db.id)


def test_any_granted_key_pulls_a_database_not_here_yet(pair: Pair) -> None:
    laptop = pair.bob.add_private_key("laptop")
    pair.db.grant(laptop, "read")  # not the default key
    pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    with pair.bob.load_db(pair.db.id) as copy:
        assert copy.get(STORE, "first") == {"by": "alice"}
    assert pair.bob.signing_key(pair.db.id) == laptop


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
def test_a_server_that_forgets_a_database_and_pulls_it_again_still_serves_old_cursors(
    tmp_path: Path, storage: str
) -> None:
    """A server forgets a database and pulls it again from another device: its new copy
    holds entries a client lacks early in its storage order. They get new positions, after
    the client's cursor on the old copy: one round brings them all, by the cursor alone
    (before, the server's positions started over and the client's cursor skipped them,
    every round answering OK; since, a pull leaving the server's tips missing starts again
    from the beginning, which this does not need)."""
    url = "memory:" if storage == "memory" else f"sqlite:{tmp_path / 'server.db'}"
    carl_file = tmp_path / "carl.db"

    def instance(stack: ExitStack, url: str, name: str) -> tuple[mnemo.Sync, mnemo.User]:
        inst = stack.enter_context(mnemo.Instance.open(url))
        inst.enable_sync()
        inst.create_user(name)
        return stack.enter_context(inst.sync), stack.enter_context(inst.login(name))

    with ExitStack() as stack:
        (server, sam), (xs, xena), (cs, carl) = (
            instance(stack, u, name)
            for u, name in ((url, "sam"), ("memory:", "xena"), (f"sqlite:{carl_file}", "carl"))
        )
        server_addr, x_addr = server.listen(), xs.listen()
        with sam.create_db("shared") as db:
            db_id = db.id
            db.grant(default_key(xena), "admin")
            db.grant(default_key(carl), "read")
            xs.sync_db(xena, server_addr, db_id)
            on_x = stack.enter_context(xena.load_db(db_id))
            for i in range(30):
                on_x.set(STORE, f"x{i}", i)  # early in Xena's order, not on the server
            for i in range(50):
                db.set(STORE, f"s{i}", i)
            cs.sync_db(carl, server_addr, db_id)  # Carl's cursor: past the whole first copy
            xs.sync_db(xena, server_addr, db_id)
        sam.forget_db(db_id)
        server.sync_db(sam, x_addr, db_id)
        again = stack.enter_context(sam.load_db(db_id))
        on_c = stack.enter_context(carl.load_db(db_id))
        assert len(on_c.get_all(STORE)) == 50
        cs.sync_db(carl, server_addr, db_id)
        assert on_c.get_all(STORE) == again.get_all(STORE)
        assert len(on_c.get_all(STORE)) == 80
        assert sorted(on_c.tips()) == sorted(again.tips())
    with closing(sqlite3.connect(carl_file)) as conn:
        restarts = "SELECT count(*) FROM meta WHERE key LIKE 'sync-restart/%'"
        assert conn.execute(restarts).fetchone()[0] == 0


class RestorableServer:
    """A server on a SQLite file whose files can be copied and put back (a backup
    restored); ``serve`` opens it (sam's account created the first time) and listens."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "server.db"

    def serve(self, stack: ExitStack) -> tuple[str, mnemo.User]:
        inst = stack.enter_context(mnemo.Instance.open(f"sqlite:{self.path}"))
        inst.enable_sync()
        if "sam" not in inst.list_users():
            inst.create_user("sam")
        sync = stack.enter_context(inst.sync)
        return sync.listen(), stack.enter_context(inst.login("sam"))

    def backup(self) -> dict[str, bytes]:
        return {f.name: f.read_bytes() for f in self.directory.glob("server.db*")}

    def restore(self, backup: dict[str, bytes]) -> None:
        for f in self.directory.glob("server.db*"):
            f.unlink()
        for name, content in backup.items():
            path = self.directory / name
            path.touch(mode=0o600)  # mnemo refuses a file other users may read
            path.write_bytes(content)


def carl_client(stack: ExitStack) -> tuple[mnemo.Sync, mnemo.User]:
    inst = stack.enter_context(mnemo.Instance.open("memory:"))
    inst.enable_sync()
    inst.create_user("carl")
    return stack.enter_context(inst.sync), stack.enter_context(inst.login("carl"))


def shared_and_pulled(
    server: RestorableServer, cs: mnemo.Sync, carl: mnemo.User, notes: int
) -> str:
    """Sam's database "shared" on ``server``, with ``notes`` notes, which carl may write and
    has pulled; the server is then closed. Returns the database's id."""
    with ExitStack() as first:
        addr, sam = server.serve(first)
        db = first.enter_context(sam.create_db("shared"))
        db.grant(default_key(carl), "write")
        for i in range(notes):
            db.set(STORE, f"before{i}", i)
        cs.sync_db(carl, addr, db.id)
        return db.id


@pytest.mark.parametrize("written_after", [40, 2200])
def test_a_server_restored_from_a_backup_and_its_client_converge_again(
    tmp_path: Path, written_after: int
) -> None:
    """A server's SQLite file restored from a backup hands out again the storage positions
    it handed out since: once pulled, the client still lacks the server's tips and pulls
    again from the beginning; with nothing left to push, its tips are not on the server and
    it pushes again from the beginning: it gets the server's new entries and pushes back
    what the server lost (before, it skipped the first and never pushed the second). With
    2,200 written after the restore, more of them past the client's cursor wait for parents
    than a round leaves waiting (1,024): the pull starts again at once (before, each round
    raised Busy, a page further on)."""
    server = RestorableServer(tmp_path)
    with ExitStack() as stack:
        cs, carl = carl_client(stack)
        db_id = shared_and_pulled(server, cs, carl, 20)
        backup = server.backup()

        on_c = stack.enter_context(carl.load_db(db_id))
        with ExitStack() as second:
            addr, sam = server.serve(second)
            with sam.load_db(db_id) as db:
                for i in range(30):
                    db.set(STORE, f"lost{i}", i)
            for i in range(10):
                on_c.set(STORE, f"carl{i}", i)
            cs.sync_db(carl, addr, db_id)
            cs.sync_db(carl, addr, db_id)  # his cursor now past his own entries there

        server.restore(backup)
        with ExitStack() as third:
            addr, sam = server.serve(third)
            restored = third.enter_context(sam.load_db(db_id))
            assert len(restored.get_all(STORE)) == 20
            for i in range(written_after):
                restored.set(STORE, f"after{i}", i)
            cs.sync_db(carl, addr, db_id)
            assert len(on_c.get_all(STORE)) == 60 + written_after
            assert on_c.get_all(STORE) == restored.get_all(STORE)
            assert sorted(on_c.tips()) == sorted(restored.tips())


def test_entries_pushed_to_a_server_later_restored_from_a_backup_are_pushed_again(
    tmp_path: Path,
) -> None:
    """The backup was taken after the client's last pull, so the server lists all it did;
    the entries the client pushed since are gone, and the next round pushes them again
    (before, never: the server kept lacking them, and later entries their parents)."""
    server = RestorableServer(tmp_path)
    with ExitStack() as stack:
        cs, carl = carl_client(stack)
        db_id = shared_and_pulled(server, cs, carl, 1)
        backup = server.backup()
        on_c = stack.enter_context(carl.load_db(db_id))
        with ExitStack() as second:
            addr, _ = server.serve(second)
            for i in range(10):
                on_c.set(STORE, f"carl{i}", i)
            cs.sync_db(carl, addr, db_id)
        server.restore(backup)
        with ExitStack() as third:
            addr, sam = server.serve(third)
            cs.sync_db(carl, addr, db_id)
            restored = third.enter_context(sam.load_db(db_id))
            assert len(restored.get_all(STORE)) == 11
            assert sorted(on_c.tips()) == sorted(restored.tips())


def test_wrong_argument_types(pair: Pair) -> None:
    with pytest.raises(TypeError):
        pair.sync_b.sync_db("bob", pair.addr, pair.db.id)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pair.sync_b.connect(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pair.sync_b.flush(1.5)  # type: ignore[arg-type]
    for bad in (-1, 2**32):
        with pytest.raises(mnemo.InvalidArgument):
            pair.sync_b.flush(bad)


def test_sync_db_after_logout_raises_logged_out(pair: Pair) -> None:
    pair.grant_bob()
    pair.bob.logout()  # the fixture's logout is then a no-op
    with pytest.raises(mnemo.LoggedOut):
        pair.sync_b.sync_db(pair.bob, pair.addr, pair.db.id)
    with pytest.raises(mnemo.LoggedOut):
        pair.sync_b.track(pair.bob, pair.addr, pair.db.id)


# --- Other processes ------------------------------------------------------------------


class LineProcess:
    """A subprocess spoken to by lines: stdout is read by a thread into a queue, so that
    every wait for a line has a timeout."""

    def __init__(self, args: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> str:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no line within {TIMEOUT}s") from None
        if line is None:
            self.proc.wait(TIMEOUT)
            raise AssertionError(
                f"{self.name} ended (status {self.proc.returncode}): {''.join(self._stderr)}"
            )
        return line

    def expect(self, prefix: str) -> str:
        """The rest of the next line that starts with `prefix` + " " (others skipped)."""
        while True:
            line = self.read()
            if line.startswith(prefix + " ") or line == prefix:
                return line[len(prefix) + 1 :]

    def finish(self, last_line: str | None = None) -> int:
        """Sends `last_line` (if any), closes stdin and waits for the exit status."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                if last_line is not None:
                    self.send(last_line)
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


class CPeer(LineProcess):
    """target/c-examples/sync_peer: alice owns "shared" and listens at `addr`."""

    def __init__(self, binary: Path) -> None:
        super().__init__([str(binary), "memory:"], "C sync_peer")
        self.addr = self.expect("ADDR")
        self.db_id = self.expect("DB")
        assert re.match(r"^127\.0\.0\.1:\d+$", self.addr), self.addr
        assert DB_ID.match(self.db_id), self.db_id

    def cmd(self, line: str) -> str:
        """Sends one command and returns its one-line reply."""
        self.send(line)
        reply = self.read()
        assert not reply.startswith("ERR "), f"{line!r} -> {reply}"
        return reply

    def all(self, store: str = STORE) -> dict[str, Any]:
        values: dict[str, Any] = json.loads(self.cmd(f"ALL {store}"))
        return values

    def tips(self) -> list[str]:
        tips: list[str] = json.loads(self.cmd("TIPS"))
        return tips


class PyPeer(LineProcess):
    """examples/sync_peer.py as user `user`, against the C peer."""

    def __init__(self, c: CPeer, user: str, count: int) -> None:
        super().__init__(
            [
                sys.executable,
                str(PY_PEER),
                c.addr,
                c.db_id,
                "memory:",
                "--user",
                user,
                "--store",
                STORE,
                "--count",
                str(count),
            ],
            f"sync_peer.py ({user})",
        )
        self.key = self.expect("KEY")
        assert DEVICE_ID.match(self.key), self.key

    def state(self) -> tuple[dict[str, Any], list[str]]:
        """The next STATE and TIPS lines."""
        state = json.loads(self.expect("STATE"))
        tips = json.loads(self.expect("TIPS"))
        return state, tips


@pytest.fixture(scope="session")
def c_peer_binary() -> Path:
    """Builds target/c-examples/sync_peer with bindings/c/Makefile, or skips."""
    if shutil.which("make") is None:
        pytest.skip("cannot build the C sync peer: `make` is not installed")
    command = ["make", "-s", "-C", str(REPO_DIR / "bindings" / "c"), "sync-peer"]
    try:
        proc = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(
            f"cannot build the C sync peer: `make -C bindings/c` took over {BUILD_TIMEOUT}s"
        )
    if proc.returncode != 0 or not C_PEER.is_file():
        pytest.skip(
            f"cannot build the C sync peer (`make -C bindings/c sync-peer` exited "
            f"{proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}"
        )
    return C_PEER


@pytest.fixture
def c_peer(c_peer_binary: Path) -> Iterator[CPeer]:
    peer = CPeer(c_peer_binary)
    try:
        yield peer
        assert peer.finish("QUIT") == 0
    finally:
        peer.kill()


@pytest.fixture
def local() -> Iterator[tuple[mnemo.Instance, mnemo.Sync, mnemo.User]]:
    """This process's instance, with sync enabled and user "carol" logged in."""
    with mnemo.Instance.open("memory:") as inst:
        inst.enable_sync()
        inst.create_user("carol")
        with inst.sync as sync, inst.login("carol") as carol:
            yield inst, sync, carol


def c_writes(c: CPeer, prefix: str, count: int) -> threading.Thread:
    """Starts a thread that sets `prefix`-0.. on the C peer (and the conflicting key
    "both"); join it, then check `errors` is empty."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for i in range(count):
                assert c.cmd(f'SET {STORE} {prefix}-{i} {{"by": "c", "n": {i}}}') == "OK"
            assert c.cmd(f'SET {STORE} both "c"') == "OK"
        except BaseException as e:  # noqa: BLE001 - reported by the joining test
            errors.append(e)

    t = threading.Thread(target=run)
    t.errors = errors  # type: ignore[attr-defined]
    t.start()
    return t


def join(t: threading.Thread) -> None:
    t.join(TIMEOUT)
    assert not t.is_alive(), "the writer thread did not finish in time"
    errors: list[BaseException] = t.errors  # type: ignore[attr-defined]
    if errors:
        raise errors[0]


def test_c_peer_commands(c_peer: CPeer) -> None:
    assert c_peer.cmd('SET notes k {"a": [1, 2]}') == "OK"
    assert c_peer.cmd("GET notes k") == '{"a":[1,2]}'
    assert c_peer.cmd("GET notes missing") == "NOTFOUND"
    assert c_peer.all() == {"k": {"a": [1, 2]}}
    assert c_peer.all("empty") == {}
    assert len(c_peer.tips()) == 1
    c_peer.send("GRANT ed25519:not-a-key write")
    assert c_peer.read().startswith("ERR MNEMO_STATUS_INVALID_ARGUMENT ")
    c_peer.send("SET notes k not json")
    assert c_peer.read().startswith("ERR MNEMO_STATUS_INVALID_ARGUMENT ")
    c_peer.send("BOGUS")
    assert c_peer.read().startswith("ERR ")


def test_c_and_python_converge(
    c_peer: CPeer, local: tuple[mnemo.Instance, mnemo.Sync, mnemo.User]
) -> None:
    _, sync, carol = local
    assert DEVICE_ID.match(sync.connect(c_peer.addr))
    with pytest.raises(mnemo.PermissionDenied):
        sync.sync_db(carol, c_peer.addr, c_peer.db_id)
    assert c_peer.cmd(f"GRANT {default_key(carol)} write") == "OK"
    assert c_peer.cmd(f'SET {STORE} before "c"') == "OK"

    sync.track(carol, c_peer.addr, c_peer.db_id)
    with carol.load_db(c_peer.db_id) as db:
        assert db.get(STORE, "before") == "c"
        writer = c_writes(c_peer, "c", 20)  # concurrent edits: C through stdin, Python here
        for i in range(20):
            db.set(STORE, f"py-{i}", {"by": "py", "n": i})
        db.set(STORE, "both", "py")
        join(writer)
        sync.flush(timeout_ms=TIMEOUT * 1000)
        sync.sync_db(carol, c_peer.addr, c_peer.db_id)

        state = db.get_all(STORE)
        assert c_peer.all() == state
        assert c_peer.tips() == db.tips()
        expected = (
            {"before", "both"} | {f"c-{i}" for i in range(20)} | {f"py-{i}" for i in range(20)}
        )
        assert set(state) == expected
        assert state["both"] in ("c", "py")
        assert c_peer.cmd(f"GET {STORE} py-7") == '{"by":"py","n":7}'


def test_python_example_against_the_c_peer(c_peer: CPeer) -> None:
    py = PyPeer(c_peer, "bob", 3)
    try:
        assert c_peer.cmd(f"GRANT {py.key} write") == "OK"
        assert c_peer.cmd(f'SET {STORE} from-alice {{"by": "alice"}}') == "OK"
        py.send("")  # granted: go on
        assert py.expect("TRACKING") == c_peer.db_id
        py.expect("FLUSHED")
        state, tips = py.state()
        assert set(state) == {"from-alice", "bob-1", "bob-2", "bob-3"}
        assert state["bob-2"] == {"by": "bob", "n": 2}
        assert c_peer.all() == state  # flushed: the owner holds bob's writes
        assert c_peer.tips() == tips

        assert c_peer.cmd(f"SET {STORE} later 42") == "OK"
        py.send("")  # one more round
        state, tips = py.state()
        assert state["later"] == 42
        assert c_peer.all() == state and c_peer.tips() == tips
        assert py.finish() == 0
    finally:
        py.kill()


def test_three_processes_converge(
    c_peer: CPeer, local: tuple[mnemo.Instance, mnemo.Sync, mnemo.User]
) -> None:
    _, sync, carol = local
    py = PyPeer(c_peer, "bob", 20)
    try:
        assert c_peer.cmd(f"GRANT {py.key} write") == "OK"
        assert c_peer.cmd(f"GRANT {default_key(carol)} write") == "OK"
        sync.track(carol, c_peer.addr, c_peer.db_id)
        with carol.load_db(c_peer.db_id) as db:
            # All three edit at once: the subprocess (bob-1..20), the C peer (c-0..19 and
            # "both") and this process (carol-0..19 and "both").
            py.send("")
            writer = c_writes(c_peer, "c", 20)
            for i in range(20):
                db.set(STORE, f"carol-{i}", i)
            db.set(STORE, "both", "carol")
            join(writer)
            sync.flush(timeout_ms=TIMEOUT * 1000)
            py.expect("FLUSHED")  # bob's writes are at the owner
            py.state()

            # The owner now holds everything: one round here, one round there.
            sync.sync_db(carol, c_peer.addr, c_peer.db_id)
            py.send("")
            py_state, py_tips = py.state()

            state = db.get_all(STORE)
            expected = (
                {"both"}
                | {f"bob-{i}" for i in range(1, 21)}
                | {f"c-{i}" for i in range(20)}
                | {f"carol-{i}" for i in range(20)}
            )
            assert set(state) == expected
            assert py_state == state
            assert c_peer.all() == state
            assert py_tips == db.tips() == c_peer.tips()
            assert state["both"] in ("c", "carol")
        assert py.finish() == 0
    finally:
        py.kill()
