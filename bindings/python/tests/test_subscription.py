"""mnemo.Subscription: change callbacks from the library's notification thread.

Every wait below is on a Condition with a timeout; nothing sleeps and hopes. Callbacks of
one instance run on one thread in commit order, so once a later change has been seen,
every earlier delivery (and any destroy that followed it) is over.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import threading
import time
import weakref
from contextlib import ExitStack
from collections.abc import Callable

import pytest

import mnemo
from conftest import PYTHON_DIR
from mnemo import _native, subscription

TIMEOUT = 10.0


class Recorder:
    """A callback that records its calls and lets the test wait for them."""

    def __init__(self, action: Callable[[Recorder], None] | None = None) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.threads: set[int] = set()
        self.cond = threading.Condition()
        self.action = action

    def __call__(self, db_id: str, entry_id: str, remote: bool) -> None:
        # The action runs first: once a call is recorded, its action is over.
        try:
            if self.action is not None:
                self.action(self)
        finally:
            with self.cond:
                self.calls.append((db_id, entry_id, remote))
                self.threads.add(threading.get_ident())
                self.cond.notify_all()

    def wait_for(self, n: int) -> list[tuple[str, str, bool]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, TIMEOUT), self.calls
            return list(self.calls)

    def wait_for_entry(self, entry_id: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: any(c[1] == entry_id for c in self.calls), TIMEOUT)
            assert ok, (entry_id, self.calls)


def commit(db: mnemo.Database, key: str, value: object = 1) -> str:
    with db.transaction() as t:
        t.set("s", key, value)
    assert t.entry_id is not None
    return t.entry_id


def test_fires_once_per_commit_with_the_right_ids(db: mnemo.Database) -> None:
    rec = Recorder()
    live = subscription.live_callbacks()
    with db.subscribe(rec) as sub:
        assert subscription.live_callbacks() == live + 1
        ids = [commit(db, f"k{i}") for i in range(3)]
        db.set("s", "plain", 1)  # every kind of commit notifies
        ids.append(db.tips()[0])
        db.delete("s", "plain")
        ids.append(db.tips()[0])
        ids.append(commit(db, "marker"))
        calls = rec.wait_for(len(ids))
        # The marker was delivered last, so a duplicate of any earlier one would show.
        assert calls == [(db.id, entry_id, False) for entry_id in ids]
        assert rec.threads and threading.get_ident() not in rec.threads
        # The last call recorded may not have returned yet: then the close would leave
        # destroy to the library thread, after it.
        db.flush_notifications()
    assert sub.closed and repr(sub) == "<mnemo.Subscription closed>"
    assert subscription.live_callbacks() == live  # destroy ran, before the close returned


def test_stops_after_close_and_destroy_runs(db: mnemo.Database) -> None:
    first, witness = Recorder(), Recorder()
    sub = db.subscribe(first)
    key = sub._key
    with db.subscribe(witness):
        commit(db, "a")
        first.wait_for(1)
        db.flush_notifications()  # the call has returned: nothing queued or running
        sub.close()
        sub.close()  # idempotent
        assert key not in subscription._callbacks  # so destroyed before close returned
        later = commit(db, "b")
        witness.wait_for_entry(later)
    assert len(first.calls) == 1


def test_several_subscribers_each_see_every_commit(db: mnemo.Database) -> None:
    recs = [Recorder() for _ in range(3)]
    subs = [db.subscribe(r) for r in recs]
    ids = [commit(db, f"k{i}") for i in range(2)]
    for r in recs:
        assert [c[1] for c in r.wait_for(2)] == ids
    for s in subs:
        s.close()


def test_a_raising_callback_does_not_break_later_commits(
    db: mnemo.Database, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(rec: Recorder) -> None:
        if not rec.calls:
            raise ValueError("callback bug")

    rec, witness = Recorder(explode), Recorder()
    with caplog.at_level(logging.ERROR, logger="mnemo"), db.subscribe(rec), db.subscribe(witness):
        first = commit(db, "a")
        second = commit(db, "b")
        assert [c[1] for c in rec.wait_for(2)] == [first, second]
        witness.wait_for_entry(second)
    assert db.get_all("s") == {"a": 1, "b": 1}
    errors = [r for r in caplog.records if r.name == "mnemo"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is ValueError
    assert "subscription callback" in errors[0].getMessage()


def test_callback_may_call_mnemo(db: mnemo.Database) -> None:
    seen: list[object] = []

    def read_back(rec: Recorder) -> None:
        seen.append(db.get("s", "k"))

    rec = Recorder(read_back)
    with db.subscribe(rec):
        commit(db, "k", {"v": 1})
        rec.wait_for(1)
        marker = commit(db, "k", {"v": 2})
        rec.wait_for_entry(marker)
    assert seen == [{"v": 1}, {"v": 2}]


def test_close_from_inside_the_callback(db: mnemo.Database) -> None:
    holder: list[mnemo.Subscription] = []

    def close_self(rec: Recorder) -> None:
        holder[0].close()

    rec, witness = Recorder(close_self), Recorder()
    holder.append(db.subscribe(rec))
    key = holder[0]._key
    with db.subscribe(witness):
        commit(db, "a")
        rec.wait_for(1)
        later = commit(db, "b")
        witness.wait_for_entry(later)  # so the callback has returned and destroy ran
    assert len(rec.calls) == 1 and holder[0].closed
    assert key not in subscription._callbacks


def test_garbage_collected_subscription_ends(db: mnemo.Database) -> None:
    live = subscription.live_callbacks()
    rec = Recorder()
    db.subscribe(rec)  # not kept: ends when collected
    gc.collect()
    assert subscription.live_callbacks() == live
    witness = Recorder()
    with db.subscribe(witness):
        later = commit(db, "a")
        witness.wait_for_entry(later)
    assert rec.calls == []


def test_subscription_outlives_the_database_handle(user: mnemo.User) -> None:
    db = user.create_db("d")
    rec = Recorder()
    sub = db.subscribe(rec)
    t = db.transaction()
    db.close()
    t.set("s", "k", 1)
    entry_id = t.commit()
    assert rec.wait_for(1)[0][1] == entry_id
    sub.close()


def test_callbacks_are_not_called_for_other_databases(user: mnemo.User) -> None:
    with user.create_db("a") as a, user.create_db("b") as b:
        rec_a, rec_b = Recorder(), Recorder()
        with a.subscribe(rec_a), b.subscribe(rec_b):
            in_a = commit(a, "k")
            in_b = commit(b, "k")
            rec_b.wait_for_entry(in_b)
            rec_a.wait_for_entry(in_a)
        assert rec_a.calls == [(a.id, in_a, False)]
        assert rec_b.calls == [(b.id, in_b, False)]


def test_callback_must_be_callable(db: mnemo.Database) -> None:
    live = subscription.live_callbacks()
    with pytest.raises(TypeError):
        db.subscribe("not callable")  # type: ignore[arg-type]
    assert subscription.live_callbacks() == live


def test_a_subscription_outlives_its_handle_past_the_idle_bound(user: mnemo.User) -> None:
    """An instance keeps only so many idle databases in memory (256 by default), reading
    the others from storage again when they are next used; a database with a subscription
    is never one it lets go of, even once its handle is closed."""
    db = user.create_db("watched")
    rec = Recorder()
    with db.subscribe(rec):
        db_id = db.id
        db.close()
        others = []
        for i in range(300):
            other = user.create_db(f"other{i}")
            other.set("s", "k", i)
            others.append(other.id)
            other.close()
        again = user.load_db(db_id)
        rec.wait_for_entry(commit(again, "k"))
        again.close()
    for i, other_id in enumerate(others):
        other = user.load_db(other_id)
        assert other.get("s", "k") == i
        other.close()


def test_commits_wait_for_a_callback_that_falls_behind(db: mnemo.Database) -> None:
    """At most 65,536 notifications wait for an instance's callbacks (mnemo.h,
    mnemo_db_subscribe): past that, a commit to a database with callbacks waits for them
    (up to 10 s) instead of queuing more."""
    bound = 65_536
    gate = threading.Event()
    heard: list[str] = []

    def held(db_id: str, entry_id: str, remote: bool) -> None:
        gate.wait(60)
        heard.append(entry_id)

    made = 0

    def writer() -> None:
        nonlocal made
        for i in range(bound + 2):
            db.set("s", "k", i)
            made += 1

    with db.subscribe(held):
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            # The first change is held at the gate, `bound` more queue behind it, and the
            # commit after those waits.
            deadline = time.monotonic() + 120
            while made < bound and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            assert made == bound
        finally:
            gate.set()
            thread.join(120)
        db.flush_notifications(60)
    assert made == bound + 2 and len(heard) == bound + 2


_SLOW_CALLBACKS_AT_EXIT = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import mnemo
from mnemo import _native, subscription
subscription.EXIT_WAIT = float(sys.argv[2])
inst = mnemo.Instance.open("memory:")
inst.create_user("a")
user = inst.login("a")
db = user.create_db("d")
calls = []
def slow(db_id, entry_id, remote):
    calls.append(entry_id)
    time.sleep(0.5)
sub = db.subscribe(slow)
for i in range(12):
    db.set("s", str(i), i)
if len(sys.argv) > 3:
    child = os.fork()
    if child == 0:
        sys.exit(0)  # ends as a script does: the exit handlers run
    assert os.waitpid(child, 0)[1] == 0
"""


def _exit_run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", _SLOW_CALLBACKS_AT_EXIT, str(PYTHON_DIR), *args],
        timeout=120,
        capture_output=True,
    )


def test_exit_with_slow_callbacks_queued_does_not_abort_the_process() -> None:
    # Twelve changes queued for a callback that takes 0.5 s each: before, the exit handler
    # gave up waiting after 5 s while the library kept calling into the finalizing
    # interpreter, and the process aborted (SIGABRT, "FATAL: exception not rethrown").
    done = _exit_run("5")
    assert done.returncode == 0, done.stderr


def test_a_forked_child_does_not_wait_at_exit_for_the_parents_subscriptions() -> None:
    # The child has none of the library's threads: nothing would ever destroy the
    # subscriptions it inherited, and its exit handler waited EXIT_WAIT for it (here an
    # hour: the run's timeout fails the test).
    done = _exit_run("3600", "fork")
    assert done.returncode == 0, done.stderr


def test_a_callback_commits_to_another_instance_without_waiting_for_its_callbacks() -> None:
    # Instance b's only callback is held (its queue of one is full) while a's callback
    # commits to b's database: before, that commit waited 10 s for b's callbacks.
    with ExitStack() as stack:
        dbs = []
        for name in ("a", "b"):
            inst = stack.enter_context(mnemo.Instance.open("memory:"))
            inst.set_limits(queued_notifications=1)
            inst.create_user(name)
            user = stack.enter_context(inst.login(name))
            dbs.append(stack.enter_context(user.create_db(name)))
        db_a, db_b = dbs
        release = threading.Event()
        stack.callback(release.set)
        held_at = Recorder(lambda _: release.wait(TIMEOUT))
        stack.enter_context(db_b.subscribe(held_at))
        db_b.set("s", "held", 1)
        committed = threading.Event()

        def commit_to_b(db_id: str, entry_id: str, remote: bool) -> None:
            db_b.set("s", "from a", 1)
            committed.set()

        stack.enter_context(db_a.subscribe(commit_to_b))
        db_a.set("s", "go", 1)
        assert committed.wait(TIMEOUT / 2), "the commit waited for b's callbacks"
        release.set()
        db_b.flush_notifications(TIMEOUT)
        assert len(held_at.calls) == 2


class Watcher:
    """An object that subscribes its own method and keeps the Subscription: a cycle
    (watcher -> subscription -> bound method -> watcher) that only the registry could keep
    alive."""

    def __init__(self, db: mnemo.Database) -> None:
        self.seen: list[str] = []
        self.sub = db.subscribe(self.on_change)

    def on_change(self, db_id: str, entry_id: str, remote: bool) -> None:
        self.seen.append(entry_id)


def test_a_callback_referring_to_its_subscriptions_owner_does_not_keep_it_alive(
    db: mnemo.Database,
) -> None:
    # Before, the registry held every callback strongly: the watcher, its subscription
    # and the library's subscription lived for ever, and went on hearing every change.
    live = subscription.live_callbacks()
    watcher = Watcher(db)
    first = commit(db, "a")
    db.flush_notifications()
    assert watcher.seen == [first]
    gone = weakref.ref(watcher)
    del watcher
    gc.collect()
    assert gone() is None
    assert subscription.live_callbacks() == live  # collected, closed, destroyed


def _gated(db: mnemo.Database, stack: ExitStack) -> threading.Event:
    """Holds the library thread inside a callback until the event returned is set (by the
    caller, or when ``stack`` closes), so that later changes stay queued."""
    release = threading.Event()
    stack.callback(release.set)
    held = threading.Event()

    def gate(db_id: str, entry_id: str, remote: bool) -> None:
        held.set()
        release.wait(TIMEOUT)

    stack.enter_context(db.subscribe(gate))
    commit(db, "gate")
    assert held.wait(TIMEOUT)
    return release


def test_changes_queued_for_a_collected_subscription_are_skipped(db: mnemo.Database) -> None:
    live = subscription.live_callbacks()
    with ExitStack() as stack:
        release = _gated(db, stack)
        watcher = Watcher(db)
        commit(db, "queued")  # waits behind the gate
        seen = watcher.seen
        del watcher
        gc.collect()
        release.set()
        db.flush_notifications(TIMEOUT)
    assert seen == []
    assert subscription.live_callbacks() == live


def test_changes_queued_before_close_are_delivered_once_the_subscription_is_dropped(
    db: mnemo.Database,
) -> None:
    # close() lets the queued changes through (documented), even when nothing else keeps
    # the subscription or its callback.
    with ExitStack() as stack:
        release = _gated(db, stack)
        watcher = Watcher(db)
        queued = commit(db, "queued")
        seen = watcher.seen
        watcher.sub.close()
        del watcher
        gc.collect()
        release.set()
        db.flush_notifications(TIMEOUT)
    assert seen == [queued]


def test_a_failed_subscribe_leaves_no_entry(
    user: mnemo.User, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = user.create_db("forgotten")
    live = subscription.live_callbacks()

    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt  # as a Ctrl-C landing before the call

    with monkeypatch.context() as patched:
        patched.setattr(_native.lib, "mnemo_db_subscribe", interrupted)
        with pytest.raises(KeyboardInterrupt):
            db.subscribe(Recorder())
    assert subscription.live_callbacks() == live
    user.forget_db(db)
    with pytest.raises(mnemo.NotFound):
        db.subscribe(Recorder())
    assert subscription.live_callbacks() == live
    db.close()


def _run_to_exit(code: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Runs ``code`` in a new interpreter, the package's directory as its first argument:
    what it printed and how long it took, exit included."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, str(PYTHON_DIR), *args],
        timeout=120,
        capture_output=True,
        text=True,
    )
    return done, time.monotonic() - started


_SUBSCRIBING_AT_EXIT = """
import atexit, sys, threading, time
outcomes = []
def report():  # registered before mnemo's exit handler: runs after it
    outcomes.append(attempt())  # a subscription asked for after the handler ran
    worker.join(20)
    print(outcomes)
atexit.register(report)
sys.path.insert(0, sys.argv[1])
import mnemo
from mnemo import _native, subscription
subscription.EXIT_WAIT = 20.0
inst = mnemo.Instance.open("memory:")
inst.create_user("a")
user = inst.login("a")
db = user.create_db("d")
def attempt():
    try:
        db.subscribe(lambda *change: None)
        return "subscribed"
    except mnemo.InvalidArgument as e:
        return "refused" if "exiting" in str(e) else str(e)
# A subscription under way when the handler starts: held in the C call until then.
subscribe = _native.lib.mnemo_db_subscribe
in_call = threading.Event()
def held(*args):
    in_call.set()
    while not subscription._exiting:
        time.sleep(0.01)
    return subscribe(*args)
_native.lib.mnemo_db_subscribe = held
worker = threading.Thread(target=lambda: outcomes.append(attempt()), daemon=True)
worker.start()
assert in_call.wait(20)
"""


def test_subscriptions_are_refused_once_the_interpreter_exits() -> None:
    # A daemon thread subscribing in a loop made subscriptions after the exit handler had
    # closed the open ones: nothing ended them, and the library called into the
    # finalizing interpreter (SIGABRT). The one under way when the handler started was
    # missed too: the handler waited EXIT_WAIT (here 20 s) for it, then left it.
    done, took = _run_to_exit(_SUBSCRIBING_AT_EXIT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['refused', 'refused']", done.stdout
    assert took < 10


_BACKLOG_AT_EXIT = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import mnemo
from mnemo import _native, subscription
subscription.EXIT_WAIT = 1.0
inst = mnemo.Instance.open("memory:")
inst.create_user("a")
user = inst.login("a")
db = user.create_db("d")
release = threading.Event()
gate = db.subscribe(lambda *change: release.wait(20))
subs = [db.subscribe(lambda *change: None) for _ in range(300)]
for i in range(1000):
    db.set("s", "k", i)  # 300,000 calls queued behind the gate
if sys.argv[2] == "dropped":
    del subs
release.set()
"""


@pytest.mark.parametrize("left", ["open", "dropped"])
def test_exit_drops_the_changes_queued_for_subscriptions_not_closed(left: str) -> None:
    # The exit handler closed open subscriptions as close() does, and garbage collection
    # dropped ones the same way, which still delivers every queued change (to the
    # trampoline, which then returns at once): over EXIT_WAIT for this backlog, after
    # which the library called into the finalizing interpreter (SIGABRT).
    done, took = _run_to_exit(_BACKLOG_AT_EXIT, left)
    assert done.returncode == 0, done.stderr
    assert took < 10


def test_an_interrupted_subscribe_keeps_its_entry_until_the_library_destroys_it(
    db: mnemo.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An exception landing right after the C call made the subscription (Ctrl-C) frees
    # it; a change already queued for it delays its destroy. Before, subscribe removed
    # the entry at once: the library then called back with a key that was gone, and the
    # exit handler would not have waited for that call.
    live = subscription.live_callbacks()
    subscribe = _native.lib.mnemo_db_subscribe

    def interrupted(*args: object) -> int:
        assert subscribe(*args) == 0
        db.set("s", "queued", 1)  # behind the gate, for the new subscription too
        raise KeyboardInterrupt

    with ExitStack() as stack:
        release = _gated(db, stack)
        monkeypatch.setattr(_native.lib, "mnemo_db_subscribe", interrupted)
        rec = Recorder()
        with pytest.raises(KeyboardInterrupt):
            db.subscribe(rec)
        assert subscription.live_callbacks() == live + 2  # the gate's, and the freed one's
        release.set()
        db.flush_notifications(TIMEOUT)
    assert subscription.live_callbacks() == live and rec.calls == []
