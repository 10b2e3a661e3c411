"""Tracking that survives restarts, and changes pushed both ways: bob's instance (a SQLite
file, closed and reopened) tracks alice's database on a listening instance."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
from conftest import wait_until
from proxy import Proxy

import mnemo

TIMEOUT = 15


class Alice:
    """A listening instance whose user alice owns database "tracked", and grants bob."""

    def __init__(self, stack: ExitStack) -> None:
        self.inst = stack.enter_context(mnemo.Instance.open("memory:"))
        self.inst.create_user("alice")
        self.inst.enable_sync()
        self.user = stack.enter_context(self.inst.login("alice"))
        self.sync = stack.enter_context(self.inst.sync)
        self.addr = self.sync.listen()
        self.db = stack.enter_context(self.user.create_db("tracked"))
        self.db.set("s", "first", 1)


@pytest.fixture
def alice() -> Iterator[Alice]:
    with ExitStack() as stack:
        yield Alice(stack)


class Arrivals:
    """Counts the remote changes a subscription sees, and waits for them."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def __call__(self, db_id: str, entry_id: str, remote: bool) -> None:
        if remote:
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, timeout=TIMEOUT)


def bob_instance(path: Path) -> mnemo.Instance:
    inst = mnemo.Instance.open(f"sqlite:{path}")
    if "bob" not in inst.list_users():
        inst.create_user("bob")
    return inst


def bob_key(bob: mnemo.User) -> str:
    return next(k.pubkey for k in bob.list_keys() if k.is_default)


def start_tracking(alice: Alice, path: Path, addr: str | None = None) -> None:
    """Bob's first session: granted write, tracks alice's database at `addr`."""
    with bob_instance(path) as inst, inst.login("bob") as bob:
        alice.db.grant(bob_key(bob), "write")
        inst.enable_sync()
        with inst.sync as sync:
            sync.track(bob, addr or alice.addr, alice.db.id)


@pytest.mark.parametrize("sync_first", [True, False], ids=["sync-then-login", "login-then-sync"])
def test_tracking_resumes_after_a_restart_without_calling_track(
    alice: Alice, tmp_path: Path, sync_first: bool
) -> None:
    path = tmp_path / "bob.db"
    start_tracking(alice, path)
    alice.db.set("s", "while bob was away", 2)
    with bob_instance(path) as inst, ExitStack() as stack:
        if sync_first:
            inst.enable_sync()
            bob = stack.enter_context(inst.login("bob"))
        else:
            bob = stack.enter_context(inst.login("bob"))
            inst.enable_sync()
        sync = stack.enter_context(inst.sync)
        copy = stack.enter_context(bob.load_db(alice.db.id))
        arrivals = Arrivals()
        stack.enter_context(copy.subscribe(arrivals))
        for i in range(3):
            alice.db.set("s", f"after restart {i}", i)
        assert arrivals.wait_for(1)
        deadline_ok = False
        for _ in range(100):
            if copy.get_all("s").get("after restart 2") == 2:
                deadline_ok = True
                break
            threading.Event().wait(0.1)
        assert deadline_ok, copy.get_all("s")
        assert copy.get("s", "while bob was away") == 2
        # Bob's own commits go back by themselves too.
        copy.set("s", "from bob", True)
        sync.flush(timeout_ms=TIMEOUT * 1000)
        assert alice.db.get("s", "from bob") is True


def test_untrack_stops_and_forgets(alice: Alice, tmp_path: Path) -> None:
    path = tmp_path / "bob.db"
    start_tracking(alice, path)
    with bob_instance(path) as inst:
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            sync.untrack(bob, alice.addr, alice.db.id)
            with pytest.raises(mnemo.NotFound):
                sync.untrack(bob, alice.addr, alice.db.id)
            with bob.load_db(alice.db.id) as copy:
                copy.set("s", "not pushed", 1)
            sync.flush(timeout_ms=1000)  # nothing is tracked: nothing to wait for
    with bob_instance(path) as inst:
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            with pytest.raises(mnemo.NotFound):
                sync.untrack(bob, alice.addr, alice.db.id)
            sync.flush(timeout_ms=1000)
    with pytest.raises(mnemo.NotFound):
        alice.db.get("s", "not pushed")


def resume_with_an_impostor_answering(alice: Alice, path: Path, proxy: Proxy) -> None:
    """Bob's next session, with another instance now answering at the tracked address: the
    resumed tracking must not push to it."""
    with mnemo.Instance.open("memory:") as impostor:
        impostor.enable_sync()
        with impostor.sync as fake:
            proxy.retarget(fake.listen())
            with bob_instance(path) as inst:
                inst.enable_sync()
                with inst.login("bob") as bob, inst.sync as sync:
                    with bob.load_db(alice.db.id) as copy:
                        copy.set("s", "for alice only", 1)
                    with pytest.raises(mnemo.NetworkError, match="did not prove"):
                        sync.flush(timeout_ms=3000)


def test_resumed_tracking_accepts_only_the_device_that_answered_first(
    alice: Alice, tmp_path: Path
) -> None:
    path = tmp_path / "bob.db"
    proxy = Proxy(alice.addr)
    try:
        start_tracking(alice, path, proxy.addr)
        resume_with_an_impostor_answering(alice, path, proxy)
    finally:
        proxy.close()


def test_resumed_tracking_of_a_database_already_here_accepts_only_the_first_device(
    alice: Alice, tmp_path: Path
) -> None:
    """Tracking a database that is already here makes no round at once; the first round
    that succeeds pins the device that answered, for this session and after a restart."""
    path = tmp_path / "bob.db"
    proxy = Proxy(alice.addr)
    try:
        with bob_instance(path) as inst, inst.login("bob") as bob:
            alice.db.grant(bob_key(bob), "write")
            inst.enable_sync()
            with inst.sync as sync:
                sync.sync_db(bob, proxy.addr, alice.db.id)  # here before tracking
                sync.track(bob, proxy.addr, alice.db.id)
                with bob.load_db(alice.db.id) as copy:
                    copy.set("s", "pushed by the track", 1)
                sync.flush(timeout_ms=10000)  # a round of the track succeeded
        resume_with_an_impostor_answering(alice, path, proxy)
    finally:
        proxy.close()


def test_untrack_rejects_bad_arguments(alice: Alice) -> None:
    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("bob")
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            with pytest.raises(mnemo.InvalidArgument):
                sync.untrack(bob, "nonsense", alice.db.id)
            with pytest.raises(mnemo.InvalidArgument):
                sync.untrack(bob, alice.addr, "sha256:nope")
            with pytest.raises(mnemo.NotFound):
                sync.untrack(bob, alice.addr, alice.db.id)
            with pytest.raises(TypeError):
                sync.untrack("bob", alice.addr, alice.db.id)  # type: ignore[arg-type]


def test_each_commit_of_the_listener_reaches_the_tracking_peer(alice: Alice) -> None:
    """Fifteen commits on the listening side, each heard by the tracking side's
    subscription (the time it takes is a benchmark's, in BENCHMARKS.md: about 1 ms)."""
    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("bob")
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            alice.db.grant(bob_key(bob), "read")
            sync.track(bob, alice.addr, alice.db.id)
            with bob.load_db(alice.db.id) as copy:
                arrivals = Arrivals()
                with copy.subscribe(arrivals):
                    for i in range(15):
                        alice.db.set("s", "counter", i)
                        assert arrivals.wait_for(i + 1), f"commit {i} did not arrive"
                assert copy.get("s", "counter") == 14


def test_tracks_say_what_a_user_tracks_and_how_each_is_doing(
    alice: Alice, tmp_path: Path
) -> None:
    path = tmp_path / "bob.db"
    with bob_instance(path) as inst:
        inst.create_user("carol")
        inst.enable_sync()
        with inst.login("bob") as bob, inst.login("carol") as carol, inst.sync as sync:
            assert sync.tracks(bob) == []
            alice.db.grant(bob_key(bob), "write")
            started_ms = time.time() * 1000
            sync.track(bob, alice.addr, alice.db.id)
            assert wait_until(lambda: sync.tracks(bob)[0]["last_synced_ms"] is not None)
            [track] = sync.tracks(bob)
            assert track == {
                "db": alice.db.id,
                "peer": alice.addr,
                "device": alice.inst.device_id,
                "running": True,
                "last_synced_ms": track["last_synced_ms"],
                "last_error": None,
            }
            assert started_ms - 1000 <= track["last_synced_ms"] <= time.time() * 1000 + 1000
            assert sync.tracks(carol) == []  # each user sees only its own

            # The peer stops listening: the next round fails, and says why.
            alice.sync.unlisten(alice.addr)
            with bob.load_db(alice.db.id) as copy:
                copy.set("s", "while alice is away", 1)
            assert wait_until(lambda: sync.tracks(bob)[0]["last_error"] is not None)
            [failing] = sync.tracks(bob)
            assert failing["running"] and failing["last_error"]
            assert failing["last_synced_ms"] >= track["last_synced_ms"]
            # It listens again on the same address: the track recovers by itself.
            assert alice.sync.listen(alice.addr) == alice.addr
            assert wait_until(lambda: sync.tracks(bob)[0]["last_error"] is None)
            assert sync.tracks(bob)[0]["last_synced_ms"] > failing["last_synced_ms"]
            assert alice.db.get("s", "while alice is away") == 1
    # After a restart, the recorded track is listed, pinned to the device that answered.
    with bob_instance(path) as inst:
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            [resumed] = sync.tracks(bob)
            assert resumed["device"] == alice.inst.device_id and resumed["running"]
            sync.untrack(bob, alice.addr, alice.db.id)
            assert sync.tracks(bob) == []
            bob.logout()
            with pytest.raises(mnemo.LoggedOut):
                sync.tracks(bob)
            with pytest.raises(TypeError):
                sync.tracks("bob")  # type: ignore[arg-type]


def test_a_peer_that_keeps_failing_is_tried_less_and_less_often(
    alice: Alice, tmp_path: Path
) -> None:
    """While every round fails, the track waits twice as long after each failure, up to
    5 s: before, the wait started over at 100 ms once it reached 1 s, so a peer failing for
    good was tried about 1.5 times a second for as long as it failed."""
    path = tmp_path / "bob.db"
    with bob_instance(path) as inst:
        inst.enable_sync()
        with inst.login("bob") as bob, inst.sync as sync:
            alice.db.grant(bob_key(bob), "write")
            sync.track(bob, alice.addr, alice.db.id)
            assert wait_until(lambda: sync.tracks(bob)[0]["last_synced_ms"] is not None)
            host, port = alice.addr.rsplit(":", 1)
            alice.sync.unlisten(alice.addr)
            # In its place, a server that closes every connection at once.
            connections = []
            with socket.create_server((host, int(port))) as closing:
                closing.settimeout(0.1)
                ends = time.monotonic() + 11
                while time.monotonic() < ends:
                    try:
                        conn, _ = closing.accept()
                    except TimeoutError:
                        continue
                    conn.close()
                    connections.append(time.monotonic())
            assert sync.tracks(bob)[0]["last_error"] is not None
    # Rounds 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5 s apart (at least 0.25 s), and the watch's
    # own tries 0.5, 1, 2, 4, 8 s apart: about 11 in 11 s (before, about 21).
    assert len(connections) <= 15, [round(at - connections[0], 2) for at in connections]


def test_tracks_running_at_once_are_bounded_and_a_login_resumes_that_many(tmp_path: Path) -> None:
    """Each track has a thread: before, 1,000 tracks made 1,000 threads, with no limit."""
    url = f"sqlite:{tmp_path / 'alice.db'}"
    peers = [f"127.0.0.1:{port}" for port in (1, 2, 3)]  # nobody answers: tracked all the same
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        inst.enable_sync()
        with inst.login("alice") as user, inst.sync as sync, user.create_db("d") as db:
            db_id = db.id
            sync.set_limits(max_tracks=2)
            for peer in peers[:2]:
                sync.track(user, peer, db_id)
            sync.track(user, peers[0], db_id)  # again: changes nothing
            with pytest.raises(mnemo.Busy, match="max_tracks"):
                sync.track(user, peers[2], db_id)
            sync.untrack(user, peers[0], db_id)
            sync.track(user, peers[2], db_id)
            sync.set_limits(max_tracks=3)
            sync.track(user, peers[0], db_id)
            assert sum(t["running"] for t in sync.tracks(user)) == 3
    with mnemo.Instance.open(url) as inst:
        inst.enable_sync()
        with inst.sync as sync:
            sync.set_limits(max_tracks=1)
            with inst.login("alice") as user:  # resumes one; the others wait, recorded
                listed = sync.tracks(user)
                assert sorted(t["peer"] for t in listed) == peers
                assert sum(t["running"] for t in listed) == 1
