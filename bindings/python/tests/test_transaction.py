"""mnemo.Transaction: all-or-nothing commits across stores."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import mnemo
from conftest import PYTHON_DIR, wait_until
from mnemo import _handle, _native


def test_commit_across_two_stores(db: mnemo.Database) -> None:
    db.set("pending", "transfer-1", {"amount": 10})
    before = db.tips()
    with db.transaction() as t:
        t.set("accounts", "alice", 90)
        t.set("accounts", "bob", 110)
        t.set("log", "1", "alice -> bob: 10")
        t.delete("pending", "transfer-1")
        # Nothing is visible before the commit.
        with pytest.raises(mnemo.NotFound):
            db.get("accounts", "alice")
        assert db.get("pending", "transfer-1") == {"amount": 10}
    assert db.get_all("accounts") == {"alice": 90, "bob": 110}
    assert db.get("log", "1") == "alice -> bob: 10"
    assert db.get_all("pending") == {}
    # One entry for the whole transaction.
    assert t.entry_id is not None and t.entry_id.startswith("sha256:")
    assert db.tips() == [t.entry_id] != before
    assert not t.active and repr(t) == "<mnemo.Transaction committed>"


def test_exception_in_the_block_leaves_nothing(db: mnemo.Database) -> None:
    db.set("accounts", "alice", 100)
    before = db.tips()
    with pytest.raises(RuntimeError, match="boom"), db.transaction() as t:
        t.set("accounts", "alice", 0)
        t.set("audit", "x", True)
        t.delete("accounts", "alice")
        raise RuntimeError("boom")
    assert db.get("accounts", "alice") == 100
    assert db.get_all("audit") == {}
    assert db.tips() == before
    assert not t.active and t.entry_id is None
    assert repr(t) == "<mnemo.Transaction aborted>"


def test_mnemo_error_in_the_block_aborts_and_propagates(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.NotFound), db.transaction() as t:
        t.set("s", "a", 1)
        t.delete("s", "missing")  # NotFound: nothing to delete
    assert db.get_all("s") == {}
    assert not t.active


def test_explicit_commit_returns_the_entry_id(db: mnemo.Database) -> None:
    t = db.transaction()
    assert t.active and repr(t) == "<mnemo.Transaction open>"
    t.set("s", "k", [1, 2])
    entry_id = t.commit()
    assert entry_id == t.entry_id == db.tips()[0]
    assert db.get("s", "k") == [1, 2]


def test_explicit_abort(db: mnemo.Database) -> None:
    t = db.transaction()
    t.set("s", "k", 1)
    t.abort()
    t.abort()  # idempotent
    assert db.get_all("s") == {}


def test_commit_or_abort_inside_the_block(db: mnemo.Database) -> None:
    with db.transaction() as t:
        t.set("s", "a", 1)
        t.commit()
    with db.transaction() as u:
        u.set("s", "b", 2)
        u.abort()
    assert db.get_all("s") == {"a": 1}


def test_empty_commit_raises_invalid_argument(db: mnemo.Database) -> None:
    t = db.transaction()
    with pytest.raises(mnemo.InvalidArgument) as info:
        t.commit()
    assert info.value.status == 1 and "no operations" in info.value.message
    assert not t.active  # the library ends the transaction on a failed commit
    with pytest.raises(mnemo.InvalidArgument, match="commit failed"):
        t.set("s", "k", 1)


def test_empty_block_commits_nothing(db: mnemo.Database) -> None:
    before = db.tips()
    with db.transaction() as t:
        pass
    assert t.entry_id is None and not t.active and db.tips() == before


@pytest.mark.parametrize("end", ["commit", "abort"])
def test_use_after_the_end_raises(db: mnemo.Database, end: str) -> None:
    t = db.transaction()
    t.set("s", "k", 1)
    getattr(t, end)()
    word = "committed" if end == "commit" else "aborted"
    for call in (lambda: t.set("s", "k", 2), lambda: t.delete("s", "k"), t.commit):
        with pytest.raises(mnemo.InvalidArgument, match=f"already {word}"):
            call()
    t.abort()  # still a no-op


def test_bad_operations_leave_the_transaction_usable(db: mnemo.Database) -> None:
    with db.transaction() as t:
        t.set("s", "ok", 1)
        for store, key, value in [
            ("_settings", "name", "x"),
            ("", "k", 1),
            ("s", "", 1),
            ("s", "k", float("nan")),
            ("s", "k", {1, 2}),
            ("s\0", "k", 1),
        ]:
            with pytest.raises(mnemo.InvalidArgument):
                t.set(store, key, value)
        with pytest.raises(mnemo.InvalidArgument):
            t.delete("_settings", "name")
        with pytest.raises(mnemo.NotFound):
            t.delete("s", "missing")
    assert db.get_all("s") == {"ok": 1}
    assert db.get("_settings", "name") == "notes"


def test_an_operation_that_would_make_the_entry_too_big_is_refused(db: mnemo.Database) -> None:
    """A transaction is one entry of at most 16 MiB: the operation that would make it more
    is refused, and the transaction keeps the others. Before, every operation was taken
    (a million sets held 264 MB) and only the commit failed."""
    half = "x" * (8 << 20)
    with db.transaction() as t:
        t.set("s", "a", half)
        with pytest.raises(mnemo.InvalidArgument, match="at most 16777216 bytes"):
            t.set("s", "b", half)
        with pytest.raises(mnemo.InvalidArgument, match="at most 16777216 bytes"):
            t.set_path("s", "c", "/p", half)
        t.set("s", "a", "y" * (8 << 20))  # in place of the earlier value: it fits
        t.set_path("s", "c", "/p", "small")
        for i in range(10):
            t.set_path("s", "d", f"/{i}", "z" * (700 << 10))
        with pytest.raises(mnemo.InvalidArgument, match="at most 16777216 bytes"):
            for i in range(10, 20):
                t.set_path("s", "d", f"/{i}", "z" * (700 << 10))
        t.set_path("s", "d", "", 1)  # the whole value in place of its paths
        t.set("s", "many", list(range(10)))
    assert db.get("s", "a") == "y" * (8 << 20)
    assert (db.get("s", "c"), db.get("s", "d")) == ({"p": "small"}, 1)


def test_later_operation_on_a_key_replaces_earlier(db: mnemo.Database) -> None:
    db.set("s", "old", 1)
    with db.transaction() as t:
        t.set("s", "k", 1)
        t.set("s", "k", 2)
        t.delete("s", "old")
        t.set("s", "old", "back")
        t.set("s", "tmp", 1)
        t.delete("s", "tmp")  # set earlier in this transaction: may be deleted
        t.set_path("s", "part", "/x", 1)  # so is a key a path write made
        t.delete("s", "part")
    assert db.get_all("s") == {"k": 2, "old": "back"}


def test_big_numbers_in_a_transaction(db: mnemo.Database) -> None:
    with db.transaction() as t:
        t.set("n", "big", 2**70)
        t.set("n", "float", 0.1 + 0.2)
    assert db.get_all("n") == {"big": 2**70, "float": 0.1 + 0.2}


def test_transaction_outlives_the_database_handle(user: mnemo.User) -> None:
    db = user.create_db("d")
    t = db.transaction()
    db_id = db.id
    db.close()
    t.set("s", "k", 1)
    entry_id = t.commit()
    assert entry_id.startswith("sha256:") and entry_id != db_id


def test_abandoned_transaction_is_discarded(db: mnemo.Database) -> None:
    t = db.transaction()
    t.set("s", "k", 1)
    del t
    gc.collect()
    assert db.get_all("s") == {}


def test_concurrent_transactions_all_commit(db: mnemo.Database) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(5):
                with db.transaction() as t:
                    t.set("a", f"{n}-{i}", n)
                    t.set("b", f"{n}-{i}", i)
        except BaseException as e:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(db.get_all("a")) == len(db.get_all("b")) == 20
    assert len(db.tips()) == 1


def test_one_transaction_shared_by_threads_is_serialised(db: mnemo.Database) -> None:
    t = db.transaction()

    def work(n: int) -> None:
        for i in range(20):
            t.set("s", f"{n}-{i}", i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    t.commit()
    assert len(db.get_all("s")) == 80


_COPIES = """
import copy, pickle, sys
sys.path.insert(0, sys.argv[1])
import mnemo
inst = mnemo.Instance.open("memory:")
inst.create_user("a")
user = inst.login("a")
db = user.create_db("d")
t = db.transaction()
t.set("s", "k", 1)
for how in (copy.copy, copy.deepcopy, pickle.dumps):
    try:
        how(t)
        print("copied by", how.__name__)
    except TypeError as e:
        print(e)
t.commit()
del t
print(db.get("s", "k"))
"""


def test_a_transaction_cannot_be_copied_or_pickled() -> None:
    # copy.copy made a second Transaction on the same C pointer: committing one and
    # dropping the other freed it twice (SIGSEGV, or glibc's "double free" abort).
    done = subprocess.run(
        [sys.executable, "-c", _COPIES, str(PYTHON_DIR)], timeout=60, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    refused = "a mnemo.Transaction cannot be copied or pickled"
    assert done.stdout.splitlines() == [refused] * 3 + ["1"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_transaction_made_before_a_fork_is_refused_in_the_child(db: mnemo.Database) -> None:
    # The transaction was not a Handle, so a forked child went on calling the library
    # through it (and hung when another thread held a lock of the library at the fork).
    t = db.transaction()
    t.set("s", "parent", 1)
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what each call did, then leave at once
        outcomes = []
        for call in (lambda: t.set("s", "child", 1), t.commit, t.abort):
            try:
                call()
                outcomes.append("ok")
            except mnemo.InvalidArgument as e:
                outcomes.append("forked" if "was forked after mnemo was used" in str(e) else str(e))
        outcomes.append("active" if t.active else "inactive")
        os.write(writing, ",".join(outcomes).encode())
        os._exit(0)
    os.close(writing)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the child hung")
        time.sleep(0.02)
    told = os.read(reading, 4096).decode()
    os.close(reading)
    assert told == "forked,forked,ok,inactive", told
    t.set("s", "after", 2)  # the parent's transaction is unaffected
    t.commit()
    assert db.get_all("s") == {"after": 2, "parent": 1}


def test_a_commit_is_refused_while_a_loan_nothing_ends_holds_the_transaction(
    db: mnemo.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an exception between a loan and its try leaves one (Python 3.9 and 3.10): the
    # commit is not made, and the transaction is aborted if the loan ever ends.
    monkeypatch.setattr(_handle, "CLOSE_WAIT", 0.1)
    aborted: list[int] = []
    abort = _native.lib.mnemo_txn_abort
    monkeypatch.setattr(
        _native.lib, "mnemo_txn_abort", lambda ptr: (aborted.append(ptr), abort(ptr))
    )
    t = db.transaction()
    t.set("s", "k", 1)
    ptr = t._handle.acquire()
    with pytest.raises(mnemo.InternalError, match="not committed"):
        t.commit()
    assert not t.active and aborted == []
    t._handle.release()
    assert wait_until(lambda: aborted == [ptr])
    assert db.get_all("s") == {}
