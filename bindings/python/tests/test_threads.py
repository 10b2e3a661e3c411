"""Handles shared between threads: calls run concurrently, close waits for them."""

from __future__ import annotations

import threading

import mnemo


def test_concurrent_reads_and_writes(db: mnemo.Database) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                db.set("t", f"{n}-{i}", [n, i])
                assert db.get("t", f"{n}-{i}") == [n, i]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_close_while_other_threads_use_the_handle(user: mnemo.User) -> None:
    db = user.create_db("shared")
    db.set("t", "k", "v")
    outcomes: list[str] = []
    start = threading.Barrier(5)

    def reader() -> None:
        start.wait()
        for _ in range(200):
            try:
                assert db.get("t", "k") == "v"
            except mnemo.InvalidArgument:
                outcomes.append("closed")
                return
        outcomes.append("done")

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait()
    db.close()
    for t in threads:
        t.join()
    assert len(outcomes) == 4 and set(outcomes) <= {"closed", "done"}


def test_error_messages_are_per_thread(inst: mnemo.Instance) -> None:
    inst.create_user("dup")
    messages: list[str] = []

    def fail(name: str) -> None:
        try:
            inst.create_user(name)
        except mnemo.Error as e:
            messages.append(f"{type(e).__name__}:{e.message}")

    threads = [threading.Thread(target=fail, args=(n,)) for n in ["dup", ""] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(messages)) == sorted(
        {
            "AlreadyExists:already exists: username 'dup' is taken",
            "InvalidArgument:invalid argument: "
            "a username is 1 to 64 bytes without control characters",
        }
    )


def test_concurrent_durable_commits_to_a_sqlite_file_all_survive(tmp_path) -> None:
    """Eight threads committing at once to their own databases of one SQLite instance
    (their commits share transactions), while another thread creates users (which needs
    the file's writer to itself): after a reopen every acknowledged value is there."""
    url = f"sqlite:{tmp_path / 'group.db'}"
    per_thread = 30
    with mnemo.Instance.open(url) as inst:
        inst.create_user("writer")
        user = inst.login("writer")
        dbs = [user.create_db(f"db{n}") for n in range(8)]
        errors: list[BaseException] = []
        start = threading.Barrier(len(dbs) + 1)

        def commit(n: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    dbs[n].set("s", f"k{i}", [n, i])
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        def create_users() -> None:
            try:
                start.wait()
                for i in range(5):
                    inst.create_user(f"other{i}")
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=commit, args=(n,)) for n in range(len(dbs))]
        threads.append(threading.Thread(target=create_users))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        ids = [db.id for db in dbs]
        for db in dbs:
            db.close()
        user.logout()
    with mnemo.Instance.open(url) as inst:
        user = inst.login("writer")
        assert sorted(inst.list_users()) == ["other0", "other1", "other2", "other3", "other4", "writer"]
        for n, db_id in enumerate(ids):
            db = user.load_db(db_id)
            assert [db.get("s", f"k{i}") for i in range(per_thread)] == [
                [n, i] for i in range(per_thread)
            ]
            db.close()
        user.logout()


def test_concurrent_durable_commits_to_one_sqlite_database_build_one_history(tmp_path) -> None:
    """Eight threads committing at once to one database of a SQLite instance, while another
    reads it. Their commits share transactions, so each builds on the one before it while
    that one may not be durable yet: every commit still has the previous one as its parent
    (one tip, every height once), every write is there, and after a reopen too."""
    url = f"sqlite:{tmp_path / 'one.db'}"
    writers, per_thread = 8, 20
    with mnemo.Instance.open(url) as inst:
        inst.create_user("writer")
        user = inst.login("writer")
        db = user.create_db("shared")
        db.set("docs", "shared", {})
        db_id = db.id
        events = db.watch()
        errors: list[BaseException] = []
        start = threading.Barrier(writers + 2)
        writing = threading.Event()
        writing.set()

        def commit(n: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    db.set("s", f"k{n}-{i}", [n, i])
                    db.set_path("docs", "shared", f"/t{n}", i)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        def read() -> None:
            try:
                start.wait()
                while writing.is_set():
                    assert len(db.tips()) == 1
                    assert isinstance(db.get("docs", "shared"), dict)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=commit, args=(n,)) for n in range(writers)]
        reader = threading.Thread(target=read)
        for t in [*threads, reader]:
            t.start()
        start.wait()
        for t in threads:
            t.join()
        writing.clear()
        reader.join()
        assert not errors
        changes = db.history("docs", "shared")
        assert len(changes) == 1 + writers * per_thread
        assert len({c["height"] for c in changes}) == len(changes)
        assert len(db.tips()) == 1
        # Every change was announced once, in the order of the history.
        heights = {c["entry"]: c["height"] for c in changes}
        for n in range(writers):
            for i in range(per_thread):
                heights.update((c["entry"], c["height"]) for c in db.history("s", f"k{n}-{i}"))
        announced = [heights[e["entry"]] for e in iter(lambda: events.next(0), None)]
        assert announced == sorted(heights.values())[1:]
        events.close()
        db.verify()
        db.close()
        user.logout()
    with mnemo.Instance.open(url) as inst:
        user = inst.login("writer")
        db = user.load_db(db_id)
        assert db.get("docs", "shared") == {f"t{n}": per_thread - 1 for n in range(writers)}
        assert all(
            db.get("s", f"k{n}-{i}") == [n, i] for n in range(writers) for i in range(per_thread)
        )
        assert len(db.tips()) == 1
        db.verify()
        db.close()
        user.logout()
