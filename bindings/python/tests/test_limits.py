"""Limits read and changed through the ABI: the sync engine's (Sync.limits, set_limits:
mnemo_sync_limits, mnemo_sync_set_limits) and the instance's (Instance.limits, set_limits:
mnemo_instance_limits, mnemo_instance_set_limits)."""

from __future__ import annotations

import ctypes
import json
import re
import socket
import threading
import time
from contextlib import ExitStack
from typing import Iterator

import pytest
from conftest import REPO_DIR

import mnemo
from mnemo._native import lib

#: How long a raw socket waits for the listener, in seconds.
TIMEOUT = 15


@pytest.fixture
def sync() -> Iterator[mnemo.Sync]:
    with mnemo.Instance.open("memory:") as inst:
        inst.enable_sync()
        with inst.sync as engine:
            yield engine


def documented_defaults(function: str) -> dict[str, int]:
    """The defaults the header's doc comment of `function` lists: its first JSON object."""
    header = (REPO_DIR / "include" / "mnemo.h").read_text()
    doc = header[: header.index(f"{function}(")]
    doc = doc[doc.rindex("/**") :]
    text = " ".join(line.lstrip(" *") for line in doc.splitlines())
    match = re.search(r"(\{\".*?\})", text)
    assert match, f"the header no longer lists the defaults of {function}"
    defaults: dict[str, int] = json.loads(match.group(1))
    return defaults


def test_the_defaults_are_the_documented_ones(sync: mnemo.Sync, inst: mnemo.Instance) -> None:
    limits = sync.limits()
    assert limits == documented_defaults("mnemo_sync_limits")
    assert limits["max_connections"] == 256
    assert limits["round_deadline_ms"] == 600_000
    assert limits["max_received_bytes"] == 128 << 20
    assert inst.limits() == documented_defaults("mnemo_instance_limits")
    assert inst.limits() == {
        "idle_databases_kept": 256,
        "queued_notifications": 65_536,
        "waiting_entries_per_database": 100_000,
        "waiting_bytes_per_database": 16 << 20,
        "waiting_bytes": 64 << 20,
        "waiting_time_ms": 600_000,
        "other_processes_poll_ms": 200,
        "watchers": 1024,
    }


def test_set_limits_changes_the_named_and_keeps_the_rest(sync: mnemo.Sync) -> None:
    before = sync.limits()
    sync.set_limits(max_connections=1024, idle_timeout_ms=5000)
    after = sync.limits()
    assert after == {**before, "max_connections": 1024, "idle_timeout_ms": 5000}
    sync.set_limits()
    assert sync.limits() == after


# The fixture owning a limit, the limit, a value just inside its bounds and one just outside.
BOUNDS = [
    ("sync", "max_connections", 1, 0),
    ("sync", "max_connections", 1 << 20, (1 << 20) + 1),
    ("sync", "max_watches_per_address", 1 << 20, 2**64 - 1),
    ("sync", "requests_per_second_per_address", 2**32 - 1, 2**32),
    ("sync", "request_burst_per_address", 1, 0),
    ("sync", "idle_timeout_ms", 1, 0),
    ("sync", "round_deadline_ms", 86_400_000, 86_400_001),
    ("sync", "max_message_bytes", 21 << 20, (21 << 20) - 1),
    ("sync", "max_message_bytes", 32 << 20, (32 << 20) + 1),
    ("sync", "max_buffered_bytes", 32 << 20, (32 << 20) - 1),
    ("sync", "max_buffered_bytes", 1 << 40, (1 << 40) + 1),
    ("sync", "max_received_bytes", 32 << 20, (32 << 20) - 1),
    ("sync", "max_received_bytes", 1 << 40, (1 << 40) + 1),
    ("sync", "max_header_bytes", 8192, 8191),
    ("sync", "max_header_bytes", 1 << 20, (1 << 20) + 1),
    ("sync", "watch_timeout_ms", 29_999, 30_000),
    ("sync", "max_remembered_requests", 1024, 1023),
    ("sync", "max_remembered_requests", 1 << 20, (1 << 20) + 1),
    ("sync", "max_tracks", 1, 0),
    ("inst", "idle_databases_kept", 0, -1),
    ("inst", "idle_databases_kept", 1 << 20, (1 << 20) + 1),
    ("inst", "queued_notifications", 1, 0),
    ("inst", "queued_notifications", 1 << 24, (1 << 24) + 1),
    ("inst", "waiting_entries_per_database", 0, -1),
    ("inst", "waiting_entries_per_database", 1 << 24, (1 << 24) + 1),
    ("inst", "waiting_bytes_per_database", 1 << 40, (1 << 40) + 1),
    ("inst", "waiting_bytes", 0, -1),
    ("inst", "waiting_bytes", 1 << 40, 2**64 - 1),
    ("inst", "waiting_time_ms", 1, 0),
    ("inst", "waiting_time_ms", 86_400_000, 86_400_001),
    ("inst", "other_processes_poll_ms", 10, 9),
    ("inst", "other_processes_poll_ms", 3_600_000, 3_600_001),
    ("inst", "watchers", 0, -1),
    ("inst", "watchers", 1 << 20, (1 << 20) + 1),
]


@pytest.mark.parametrize("fixture,name,inside,outside", BOUNDS)
def test_each_bound_is_enforced_and_a_refusal_changes_nothing(
    request: pytest.FixtureRequest, fixture: str, name: str, inside: int, outside: int
) -> None:
    owner: mnemo.Sync | mnemo.Instance = request.getfixturevalue(fixture)
    before = owner.limits()
    with pytest.raises(mnemo.InvalidArgument, match="limit"):
        owner.set_limits(**{name: outside})
    assert owner.limits() == before
    owner.set_limits(**{name: inside})
    assert owner.limits() == {**before, name: inside}


def test_a_change_is_all_or_nothing(sync: mnemo.Sync, inst: mnemo.Instance) -> None:
    before = sync.limits()
    with pytest.raises(mnemo.InvalidArgument, match="times must be from 1 ms"):
        sync.set_limits(max_connections=10, idle_timeout_ms=0)
    with pytest.raises(mnemo.InvalidArgument, match="no sync limit is called"):
        sync.set_limits(max_connections=10, max_conections=10)
    assert sync.limits() == before
    before = inst.limits()
    with pytest.raises(mnemo.InvalidArgument, match="no instance limit is called"):
        inst.set_limits(idle_databases_kept=10, idle_database_kept=10)
    with pytest.raises(mnemo.InvalidArgument, match="queued_notifications: 0 is not from 1"):
        inst.set_limits(idle_databases_kept=10, queued_notifications=0)
    assert inst.limits() == before


# Each owner of limits: a fixture, its functions, and one of its limits.
OWNERS = [
    ("sync", "mnemo_sync_limits", "mnemo_sync_set_limits", "max_connections"),
    ("inst", "mnemo_instance_limits", "mnemo_instance_set_limits", "idle_databases_kept"),
]


@pytest.fixture(params=OWNERS, ids=[owner[0] for owner in OWNERS])
def owner(request: pytest.FixtureRequest) -> tuple[mnemo.Sync | mnemo.Instance, str, str, str]:
    """A sync engine or an instance, with its limit functions' names and a limit's name."""
    fixture, get, set_, name = request.param
    return request.getfixturevalue(fixture), get, set_, name


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "garbage",
        "{",
        '{"NAME": -1}',
        '{"NAME": 1.5}',
        '{"NAME": 1e30}',
        '{"NAME": 18446744073709551616}',
        '{"NAME": "10"}',
        '{"NAME": null}',
        '{"NAME": [1]}',
        '{"NAMEs": 1}',
        '{"NAME": 10} trailing',
        '{"NAME": 10, "NAME": 10}',  # before: taken, one value kept
        '{"NAME": 10, "NAME": 0}',
        '{"' + "x" * 100_000 + '": 1}',
        '{"NAME": "' + "x" * 100_000 + '"}',
    ],
    ids=lambda text: text[:40],
)
def test_what_is_not_an_object_of_known_whole_numbers_is_refused(
    owner: tuple[mnemo.Sync | mnemo.Instance, str, str, str], text: str
) -> None:
    handle_owner, _, set_limits, name = owner
    before = handle_owner.limits()
    with handle_owner._handle.use() as ptr:
        status = getattr(lib, set_limits)(ptr, text.replace("NAME", name).encode())
        message = lib.mnemo_last_error_message()
    assert status == mnemo.Status.INVALID_ARGUMENT
    assert 0 < len(message) < 300  # a long name or value is not repeated whole
    assert handle_owner.limits() == before


def test_null_arguments_are_refused(
    owner: tuple[mnemo.Sync | mnemo.Instance, str, str, str]
) -> None:
    handle_owner, get_limits, set_limits, _ = owner
    with handle_owner._handle.use() as ptr:
        assert getattr(lib, set_limits)(ptr, None) == mnemo.Status.INVALID_ARGUMENT
        assert getattr(lib, set_limits)(None, b"{}") == mnemo.Status.INVALID_ARGUMENT
        out = ctypes.POINTER(ctypes.c_char)()
        assert getattr(lib, get_limits)(None, ctypes.byref(out)) == mnemo.Status.INVALID_ARGUMENT
        assert not out
        assert getattr(lib, get_limits)(ptr, None) == mnemo.Status.INVALID_ARGUMENT


@pytest.mark.parametrize("value", ["10", 1.0, True, None])
def test_values_that_are_not_ints_raise_type_error(
    owner: tuple[mnemo.Sync | mnemo.Instance, str, str, str], value: object
) -> None:
    handle_owner, _, _, name = owner
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        handle_owner.set_limits(**{name: value})


def test_a_closed_owner_raises_invalid_argument(
    owner: tuple[mnemo.Sync | mnemo.Instance, str, str, str]
) -> None:
    handle_owner, _, _, name = owner
    handle_owner.close()
    with pytest.raises(mnemo.InvalidArgument, match="closed"):
        handle_owner.limits()
    with pytest.raises(mnemo.InvalidArgument, match="closed"):
        handle_owner.set_limits(**{name: 1})


def test_commits_wait_for_callbacks_at_the_queue_bound_set_and_go_on_when_it_is_raised(
    inst: mnemo.Instance, db: mnemo.Database
) -> None:
    """With 3 notifications allowed to wait, a commit past them waits for a held callback;
    raising the bound lets it, and the ones after it up to the new bound, go on at once."""
    inst.set_limits(queued_notifications=3)
    gate = threading.Event()
    made = 0

    def held(db_id: str, entry_id: str, remote: bool) -> None:
        gate.wait(60)

    def writer() -> None:
        nonlocal made
        for i in range(12):
            db.set("s", "k", i)
            made += 1

    def settles_at(count: int) -> None:
        # Less than the 10 s a commit waits at most: only the raised bound lets it go.
        deadline = time.monotonic() + 5
        while made < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert made == count

    with db.subscribe(held):
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            # Three changes are queued, the first held at the gate; the fourth waits.
            settles_at(3)
            assert inst.stats()["notifications_queued"] == 3
            inst.set_limits(queued_notifications=10)
            settles_at(10)
            assert inst.stats()["notifications_queued"] == 10
        finally:
            gate.set()
            thread.join(60)
        db.flush_notifications(60)
    assert made == 12
    assert inst.stats()["notifications_queued"] == 0


def test_idle_databases_past_the_bound_set_leave_memory(
    inst: mnemo.Instance, user: mnemo.User
) -> None:
    def create_closed(prefix: str, count: int) -> None:
        for i in range(count):
            with user.create_db(f"{prefix}{i}") as db:
                db.set("s", "k", i)

    inst.set_limits(idle_databases_kept=2)
    before = inst.stats()["databases_in_memory"]
    create_closed("few", 10)
    assert inst.stats()["databases_in_memory"] <= before + 3
    inst.set_limits(idle_databases_kept=256)
    before = inst.stats()["databases_in_memory"]
    create_closed("many", 10)
    assert inst.stats()["databases_in_memory"] == before + 10


def test_watchers_past_the_bound_set_are_refused_until_one_is_closed(
    inst: mnemo.Instance, user: mnemo.User
) -> None:
    """The bound counts every database's watchers; lowering it keeps those open."""
    assert inst.limits()["watchers"] == 1024
    inst.set_limits(watchers=2)
    with user.create_db("a") as a, user.create_db("b") as b:
        first, second = a.watch(), b.watch()
        assert inst.stats()["watchers"] == 2
        with pytest.raises(mnemo.Busy, match=r"limit watchers \(2\)"):
            a.watch()
        assert inst.stats()["watchers"] == 2
        first.close()
        assert inst.stats()["watchers"] == 1
        third = a.watch()
        assert inst.stats()["watchers"] == 2

        inst.set_limits(watchers=1)
        with pytest.raises(mnemo.Busy, match=r"limit watchers \(1\)"):
            b.watch()
        a.set("s", "k", 1)
        assert third.next(timeout=5) == dict(  # kept, and hearing
            db=a.id, entry=a.tips()[0], remote=False, origin="local"
        )
        second.close()
        with pytest.raises(mnemo.Busy, match="watchers"):
            b.watch()
        third.close()
        with b.watch():
            assert inst.stats()["watchers"] == 1
        assert inst.stats()["watchers"] == 0

        inst.set_limits(watchers=0)
        with pytest.raises(mnemo.Busy, match=r"limit watchers \(0\)"):
            a.watch()
    assert inst.stats()["watchers"] == 0


def test_sync_in_both_directions_needs_no_room_for_entries_waiting() -> None:
    """Peers send entries parents first, so two instances that let no entry wait for its
    parents still pull and push a database with concurrent edits on both sides."""
    with ExitStack() as stack:
        insts = [stack.enter_context(mnemo.Instance.open("memory:")) for _ in range(2)]
        for inst, name in zip(insts, ["alice", "bob"]):
            inst.set_limits(waiting_entries_per_database=0, waiting_bytes=0)
            inst.create_user(name)
            inst.enable_sync()
        syncs = [stack.enter_context(inst.sync) for inst in insts]
        alice, bob = (stack.enter_context(i.login(n)) for i, n in zip(insts, ["alice", "bob"]))
        addr = syncs[0].listen()
        db = stack.enter_context(alice.create_db("shared"))
        bob_key = next(k.pubkey for k in bob.list_keys() if k.is_default)
        db.grant(bob_key, "write")
        for i in range(50):
            db.set("s", f"a{i}", i)
        syncs[1].sync_db(bob, addr, db.id)
        copy = stack.enter_context(bob.load_db(db.id))
        for i in range(50):
            db.set("s", f"a{i}", -i)
            copy.set("s", f"b{i}", i)
        syncs[1].sync_db(bob, addr, db.id)
        assert copy.tips() == db.tips()
        assert copy.get_all("s") == db.get_all("s")
        assert len(db.get_all("s")) == 100
        assert all(i.stats()["waiting_entry_bytes"] == 0 for i in insts)


def test_stats_count_what_is_held_now(sync: mnemo.Sync, inst: mnemo.Instance) -> None:
    assert inst.stats() == {
        "databases_in_memory": inst.stats()["databases_in_memory"],
        "notifications_queued": 0,
        "waiting_entry_bytes": 0,
        "databases_polled": 0,
        "storage_connections": 0,
        "password_derivations": 0,
        "scrubs_pending": 0,
        "watchers": 0,
    }
    idle = {
        "listeners": 0,
        "open_connections": 0,
        "requests_in_flight": 0,
        "watches": 0,
        "tracks": 0,
        "requests_refused_busy": 0,
        "connections_refused": 0,
    }
    assert sync.stats() == idle
    addr = sync.listen()
    held = hold_a_connection(addr)
    try:
        deadline = time.monotonic() + TIMEOUT
        while sync.stats()["open_connections"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sync.stats() == {**idle, "listeners": 1, "open_connections": 1}
    finally:
        held.close()
    sync.unlisten(addr)
    assert sync.stats()["listeners"] == 0


def listener_and_reader(
    stack: ExitStack,
) -> tuple[mnemo.Sync, mnemo.Sync, mnemo.User, mnemo.Database]:
    """Alice's sync engine and database "d", and bob's engine and session on another
    instance, his key granted read on it."""
    a, b = (stack.enter_context(mnemo.Instance.open("memory:")) for _ in range(2))
    for inst, name in ((a, "alice"), (b, "bob")):
        inst.create_user(name)
        inst.enable_sync()
    sync_a, sync_b = stack.enter_context(a.sync), stack.enter_context(b.sync)
    alice, bob = stack.enter_context(a.login("alice")), stack.enter_context(b.login("bob"))
    db = stack.enter_context(alice.create_db("d"))
    db.grant(next(k.pubkey for k in bob.list_keys() if k.is_default), "read")
    return sync_a, sync_b, bob, db


def test_stats_count_watches_held_and_what_the_listeners_refused() -> None:
    """A tracking peer holds a watch on the listener; a connection over the listener's
    limit and a request over the replay memory are counted as refused, and the counts
    outlive the listener that refused them."""
    with ExitStack() as stack:
        sync, client, bob, db = listener_and_reader(stack)
        addr = sync.listen()
        client.track(bob, addr, db.id)  # it holds a watch for the listener's next change
        deadline = time.monotonic() + TIMEOUT
        while sync.stats()["watches"] < 1:
            assert time.monotonic() < deadline, f"no watch held: {sync.stats()}"
            time.sleep(0.01)
        client.untrack(bob, addr, db.id)

        # The held connection is never closed to make room for the next (see below).
        sync.set_limits(
            max_connections=1, max_remembered_requests=1024, evict_idle_after_ms=3_600_000
        )
        tight = sync.listen()
        held = hold_a_connection(tight)
        try:
            with pytest.raises(mnemo.NetworkError):
                client.connect(tight)
        finally:
            held.close()
        assert sync.stats()["connections_refused"] >= 1
        assert sync.stats()["requests_refused_busy"] == 0
        with pytest.raises(mnemo.Busy):
            for _ in range(64):
                client.sync_db(bob, addr, db.id)
        sync.unlisten(tight)
        sync.unlisten(addr)
        stats = sync.stats()
        assert stats["requests_refused_busy"] >= 1
        assert (stats["listeners"], stats["requests_in_flight"], stats["watches"]) == (0, 0, 0)


def test_listeners_started_afterwards_enforce_the_new_limits(sync: mnemo.Sync) -> None:
    """With one connection allowed, a connection held open (a raw socket, accepted before
    any TLS; never closed to make room here) makes the listener close the next; a listener
    started before the change keeps the default of 256."""
    before = sync.listen()
    sync.set_limits(max_connections=1, evict_idle_after_ms=3_600_000)
    after = sync.listen()
    with mnemo.Instance.open("memory:") as other:
        other.enable_sync()
        with other.sync as client:
            held = [hold_a_connection(before), hold_a_connection(after)]
            try:
                client.connect(before)
                with pytest.raises(mnemo.NetworkError, match="closed the connection during"):
                    client.connect(after)
            finally:
                for s in held:
                    s.close()


def test_a_full_listener_makes_room_by_closing_the_connection_idle_longest() -> None:
    """Every connection a listener may hold, taken by another host's sockets that send
    nothing (or a request now and then), does not keep a peer out: once they have been idle
    for "evict_idle_after_ms", the one idle longest is closed to make room for the peer's,
    whose round succeeds. Before, the peer was refused until the idle timeout (20 s), and
    for as long as the sockets kept sending."""
    with ExitStack() as stack:
        sync, client, bob, db = listener_and_reader(stack)
        sync.set_limits(max_connections=4, evict_idle_after_ms=200)
        addr = sync.listen()
        host, port = addr.rsplit(":", 1)
        held = []
        for _ in range(4):  # from another address of this host, as a stranger would
            s = socket.create_connection(
                (host, int(port)), timeout=TIMEOUT, source_address=("127.0.0.2", 0)
            )
            stack.callback(s.close)
            held.append(s)
        deadline = time.monotonic() + TIMEOUT
        while sync.stats()["open_connections"] < 4:
            assert time.monotonic() < deadline, f"not all held: {sync.stats()}"
            time.sleep(0.01)
        time.sleep(0.3)
        client.sync_db(bob, addr, db.id)
        assert stack.enter_context(bob.load_db(db.id)).id == db.id
        assert sync.stats()["open_connections"] <= 4
        # The one idle longest, the first opened, was closed: it reads the end.
        held[0].settimeout(TIMEOUT)
        assert held[0].recv(1) == b""


def hold_a_connection(addr: str) -> socket.socket:
    """A TCP connection to `addr` that sends nothing (the listener counts it at accept)."""
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def test_the_replay_memory_bounds_each_key_at_once_on_a_running_listener() -> None:
    """With 1,024 requests remembered, one signing key may make 64 in 5 minutes: a client
    syncing the same database again and again is soon refused (Busy); the default takes
    it back at once, on the same listener."""
    with ExitStack() as stack:
        sync_a, sync_b, bob, db = listener_and_reader(stack)
        addr = sync_a.listen()
        sync_a.set_limits(max_remembered_requests=1024)
        rounds = 0
        with pytest.raises(mnemo.Busy, match="too many recent requests"):
            while rounds < 64:
                sync_b.sync_db(bob, addr, db.id)
                rounds += 1
        assert 1 <= rounds < 64
        sync_a.set_limits(max_remembered_requests=262_144)
        for _ in range(rounds + 1):
            sync_b.sync_db(bob, addr, db.id)
