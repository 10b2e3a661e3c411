"""mnemo.Events (Database.watch): changes read without callbacks, by next(), iteration, or
waiting on fileno() with selectors or asyncio; and Database.flush_notifications.

Every wait is bounded (TIMEOUT); nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import threading
import time
from contextlib import ExitStack

import pytest

import mnemo
from mnemo import events as events_module
from mnemo import subscription

TIMEOUT = 10.0


def commit(db: mnemo.Database, value: object = 1) -> str:
    with db.transaction() as t:
        t.set("s", "k", value)
    assert t.entry_id is not None
    return t.entry_id


def change(db: mnemo.Database, entry_id: str, origin: str = "local") -> dict[str, object]:
    return {"db": db.id, "entry": entry_id, "remote": origin != "local", "origin": origin}


def readable(ev: mnemo.Events, timeout: float = 0) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(ev.fileno(), selectors.EVENT_READ)
        return bool(sel.select(timeout))


def test_next_returns_changes_in_order_and_none_on_timeout(db: mnemo.Database) -> None:
    commit(db, 0)  # before the watch: not seen
    with db.watch() as ev:
        assert isinstance(ev, mnemo.Events) and repr(ev) == "<mnemo.Events open>"
        assert ev.next(timeout=0) is None
        start = time.monotonic()
        assert ev.next(timeout=0.1) is None
        assert 0.09 <= time.monotonic() - start < TIMEOUT
        ids = [commit(db, i) for i in range(3)]
        assert [ev.next(timeout=0) for _ in ids] == [change(db, i) for i in ids]
        assert ev.next(timeout=0) is None
    assert ev.closed and repr(ev) == "<mnemo.Events closed>"
    with pytest.raises(mnemo.InvalidArgument):
        ev.next(timeout=0)
    with pytest.raises(mnemo.InvalidArgument):
        ev.fileno()
    ev.close()  # idempotent


def test_negative_timeouts_are_refused(db: mnemo.Database) -> None:
    with db.watch() as ev:
        with pytest.raises(ValueError):
            ev.next(timeout=-1)
    with pytest.raises(ValueError):
        db.flush_notifications(timeout=-1)


@pytest.mark.parametrize(
    "timeout", [math.nan, -math.inf, -1e-9, -(2**2000)], ids=["nan", "-inf", "-1e-9", "-2**2000"]
)
def test_nan_and_negative_timeouts_raise_value_error(db: mnemo.Database, timeout: float) -> None:
    with db.watch() as ev:
        with pytest.raises(ValueError, match="timeout must be"):
            ev.next(timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be"):
        db.flush_notifications(timeout=timeout)


@pytest.mark.parametrize("timeout", [math.inf, 1e308, 2**2000], ids=["inf", "1e308", "2**2000"])
def test_next_with_an_infinite_or_huge_timeout_waits_without_limit(
    db: mnemo.Database, timeout: float
) -> None:
    with db.watch() as ev:
        pending = commit(db, 1)
        assert ev.next(timeout=timeout) == change(db, pending)
        # Nothing pending: waits until a change comes, here from another thread.
        later: list[str] = []
        timer = threading.Timer(0.1, lambda: later.append(commit(db, 2)))
        timer.start()
        try:
            event = ev.next(timeout=timeout)
        finally:
            timer.join(TIMEOUT)
        assert event == change(db, later[0])
        # close() from another thread ends the wait, as for timeout=None.
        closer = threading.Timer(0.1, ev.close)
        closer.start()
        with pytest.raises(mnemo.InvalidArgument):
            ev.next(timeout=timeout)
        closer.join(TIMEOUT)


@pytest.mark.parametrize(
    "timeout,expected_ms",
    [
        (0, 0),
        (0.0001, 1),  # rounded up: a wait is never cut short
        (1.5, 1500),
        (0xFFFF_FFFF / 1000, 0xFFFF_FFFF),
        (0xFFFF_FFFF / 1000 + 0.001, 0xFFFF_FFFF),
        (1e308, 0xFFFF_FFFF),
        pytest.param(2**2000, 0xFFFF_FFFF, id="2**2000"),
        (math.inf, 0xFFFF_FFFF),
    ],
)
def test_flush_notifications_clamps_long_timeouts_to_the_longest_c_wait(
    db: mnemo.Database, monkeypatch: pytest.MonkeyPatch, timeout: float, expected_ms: int
) -> None:
    db.flush_notifications(timeout=timeout)  # nothing pending: returns at once
    passed: list[int] = []
    real = mnemo.database.lib.mnemo_db_flush_notifications

    def spy(ptr: object, timeout_ms: int) -> object:
        passed.append(timeout_ms)
        return real(ptr, timeout_ms)

    monkeypatch.setattr(mnemo.database.lib, "mnemo_db_flush_notifications", spy)
    db.flush_notifications(timeout=timeout)
    assert passed == [expected_ms]


def test_fileno_is_readable_exactly_while_events_are_pending(db: mnemo.Database) -> None:
    with db.watch() as ev:
        fd = ev.fileno()
        assert fd >= 0 and ev.fileno() == fd
        assert not readable(ev)
        first = commit(db)
        assert readable(ev)
        assert ev.next(timeout=0) == change(db, first)
        assert not readable(ev)
        # A commit from another thread wakes a selector waiting on the descriptor.
        writer = threading.Timer(0.05, commit, args=(db, 2))
        writer.start()
        assert readable(ev, TIMEOUT)
        writer.join()
        event = ev.next(timeout=0)
        assert event is not None and event["remote"] is False


def test_asyncio_reader_on_fileno(db: mnemo.Database) -> None:
    async def main(ev: mnemo.Events) -> tuple[list[object], list[str]]:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[object] = asyncio.Queue()

        def on_readable() -> None:
            event = ev.next(timeout=0)
            while event is not None:
                got.put_nowait(event)
                event = ev.next(timeout=0)

        loop.add_reader(ev.fileno(), on_readable)
        try:
            # Commit from a worker thread, while the loop waits on the descriptor.
            ids = await asyncio.to_thread(lambda: [commit(db, i) for i in range(3)])
            seen = [await asyncio.wait_for(got.get(), TIMEOUT) for _ in ids]
            assert got.empty()
            return seen, ids
        finally:
            loop.remove_reader(ev.fileno())

    with db.watch() as ev:
        seen, ids = asyncio.run(main(ev))
        assert seen == [change(db, i) for i in ids]


def test_overflow_is_reported_and_the_watch_goes_on(db: mnemo.Database) -> None:
    assert events_module.CAPACITY == 1024
    with db.watch() as ev:
        ids = [commit(db, i) for i in range(events_module.CAPACITY + 2)]
        got = [ev.next(timeout=0) for _ in range(events_module.CAPACITY)]
        assert got == [change(db, i) for i in ids[: events_module.CAPACITY]]
        assert ev.next(timeout=0) == {"overflow": 2}
        assert ev.next(timeout=0) is None
        later = commit(db, "later")
        assert ev.next(timeout=0) == change(db, later)


def test_iteration_blocks_and_stops_when_closed(db: mnemo.Database) -> None:
    ev = db.watch()
    seen: list[object] = []
    finished = threading.Event()

    def reader() -> None:
        for event in ev:
            seen.append(event)
        finished.set()

    thread = threading.Thread(target=reader)
    thread.start()
    ids = [commit(db, i) for i in range(2)]
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [change(db, i) for i in ids]
    ev.close()  # from another thread: the loop ends within one wait slice
    assert finished.wait(TIMEOUT)
    thread.join(TIMEOUT)


def test_close_with_pending_events_and_after_the_database(user: mnemo.User) -> None:
    db = user.create_db("d")
    db_id = db.id
    first, second = db.watch(), db.watch()
    entry = commit(db)
    first.close()  # its pending event goes with it
    db.close()  # the watcher outlives the database handle
    local = {"db": db_id, "entry": entry, "remote": False, "origin": "local"}
    assert second.next(timeout=0) == local
    second.close()


def test_remote_changes_through_sync() -> None:
    with ExitStack() as stack:
        a = stack.enter_context(mnemo.Instance.open("memory:"))
        b = stack.enter_context(mnemo.Instance.open("memory:"))
        for inst, name in ((a, "alice"), (b, "bob")):
            inst.enable_sync()
            inst.create_user(name)
        sync_a, sync_b = stack.enter_context(a.sync), stack.enter_context(b.sync)
        alice, bob = stack.enter_context(a.login("alice")), stack.enter_context(b.login("bob"))
        addr = sync_a.listen()
        db = stack.enter_context(alice.create_db("shared"))
        bob_key = next(k.pubkey for k in bob.list_keys() if k.is_default)
        db.grant(bob_key, "read")
        sync_b.sync_db(bob, addr, db.id)
        copy = stack.enter_context(bob.load_db(db.id))
        ev = stack.enter_context(copy.watch())
        entry = commit(db, "from alice")
        sync_b.sync_db(bob, addr, db.id)
        assert ev.next(timeout=TIMEOUT) == change(db, entry, origin="sync")
        assert ev.next(timeout=0) is None


def test_flush_waits_for_callbacks_and_close_never_waits(db: mnemo.Database) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def blocking(db_id: str, entry_id: str, remote: bool) -> None:
        calls.append(entry_id)
        entered.set()
        release.wait(TIMEOUT)

    live = subscription.live_callbacks()
    sub = db.subscribe(blocking)
    first, queued = commit(db, 1), commit(db, 2)
    assert entered.wait(TIMEOUT)
    start = time.monotonic()
    sub.close()  # the callback is blocked on the library thread: close returns anyway
    assert time.monotonic() - start < TIMEOUT / 2
    assert subscription.live_callbacks() == live + 1  # not destroyed yet
    with pytest.raises(mnemo.Busy):
        db.flush_notifications(timeout=0.05)
    commit(db, 3)  # after close: never delivered
    release.set()
    db.flush_notifications(timeout=TIMEOUT)
    assert calls == [first, queued]  # the queued call was delivered, not dropped
    assert subscription.live_callbacks() == live  # destroyed after the last call


def test_flush_inside_a_callback_raises_busy(db: mnemo.Database) -> None:
    results: list[BaseException | None] = []

    def flushing(db_id: str, entry_id: str, remote: bool) -> None:
        try:
            db.flush_notifications(timeout=TIMEOUT)
            results.append(None)
        except mnemo.Error as e:
            results.append(e)

    with db.subscribe(flushing):
        commit(db)
        db.flush_notifications(timeout=TIMEOUT)
    assert len(results) == 1 and isinstance(results[0], mnemo.Busy)
