"""mnemo.Instance: opening, device identity, accounts, sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import PASSWORD

import mnemo


def test_open_and_close_idempotent() -> None:
    inst = mnemo.Instance.open("memory:")
    assert not inst.closed
    inst.close()
    inst.close()
    assert inst.closed


def test_context_manager_closes() -> None:
    with mnemo.Instance.open("memory:") as inst:
        assert isinstance(inst, mnemo.Instance)
    assert inst.closed


def test_use_after_close_raises_invalid_argument() -> None:
    inst = mnemo.Instance.open("memory:")
    inst.close()
    for call in (
        lambda: inst.device_id,
        inst.list_users,
        inst.enable_sync,
        lambda: inst.create_user("x"),
    ):
        with pytest.raises(mnemo.InvalidArgument, match="closed"):
            call()


@pytest.mark.parametrize(
    "url", ["", "bogus", "memory:extra", "nosuch:thing", "sqlite:", "MEMORY:"]
)
def test_bad_backend_url(url: str) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        mnemo.Instance.open(url)
    assert info.value.status == mnemo.Status.INVALID_ARGUMENT
    assert info.value.message


def test_sqlites_name_for_memory_is_refused_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, "sqlite::memory:" failed (STORAGE) and left an empty file named ":memory:"
    in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mnemo.InvalidArgument, match="use memory:"):
        mnemo.Instance.open("sqlite::memory:")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "host=db.example password=S3cretPw",
        "host=db.example password=S3cretPw:5432",
        "dbname=x password=S3cretPw sslmode=require",
        "s" * 100_000 + ":rest",
    ],
)
def test_a_bad_backend_url_is_not_repeated(url: str) -> None:
    """A connection string of another form (libpq's key=value) has its password in it:
    the message names the forms mnemo takes, not the string; nor what is before a colon
    when no scheme could be that."""
    with pytest.raises(mnemo.InvalidArgument) as info:
        mnemo.Instance.open(url)
    assert "S3cretPw" not in info.value.message
    assert len(info.value.message) < 200


def test_url_with_nul() -> None:
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        mnemo.Instance.open("memory:\0")


def test_url_must_be_str() -> None:
    with pytest.raises(TypeError):
        mnemo.Instance.open(b"memory:")  # type: ignore[arg-type]


def test_device_id_format_and_stability(inst: mnemo.Instance) -> None:
    first = inst.device_id
    assert re.fullmatch(r"ed25519:[A-Za-z0-9_-]{43}", first)
    assert inst.device_id == first
    with mnemo.Instance.open("memory:") as other:
        assert other.device_id != first


def test_create_user_and_list(inst: mnemo.Instance) -> None:
    assert inst.list_users() == []
    inst.create_user("bob")
    inst.create_user("alice")
    inst.create_user("émile 🦀")
    assert inst.list_users() == sorted(["alice", "bob", "émile 🦀"])


def test_duplicate_username(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    with pytest.raises(mnemo.AlreadyExists) as info:
        inst.create_user("bob")
    assert info.value.status == 3 and "bob" in info.value.message


@pytest.mark.parametrize("name", ["", "x" * 65, "tab\there", "new\nline", "é" * 33])
def test_bad_usernames(inst: mnemo.Instance, name: str) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        inst.create_user(name)
    assert info.value.message


def test_username_limits(inst: mnemo.Instance) -> None:
    inst.create_user("x" * 64)
    inst.create_user("é" * 32)  # 64 bytes


@pytest.mark.parametrize("password", ["", "x" * 1025])
def test_bad_passwords(inst: mnemo.Instance, password: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        inst.create_user("bob", password)
    assert inst.list_users() == []


@pytest.mark.parametrize("field", ["name", "password"])
def test_nul_in_credentials(inst: mnemo.Instance, field: str) -> None:
    args = {"name": "bob", "password": None}
    args[field] = "a\0b"
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        inst.create_user(**args)  # type: ignore[arg-type]
    inst.create_user("bob")
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        inst.login(**args)  # type: ignore[arg-type]


def test_lone_surrogate_is_invalid_argument(inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        inst.create_user("\ud800")


def test_passwordless_login(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    assert isinstance(user, mnemo.User)
    user.logout()


def test_unknown_user_auth_failed(inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.AuthFailed) as info:
        inst.login("nobody")
    assert info.value.status == 4 and info.value.message


def test_empty_login_name(inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        inst.login("")


# The tests below pay for Argon2id; they share one module-scoped user.


def test_password_login(pw_inst: mnemo.Instance) -> None:
    with pw_inst.login("carol", password=PASSWORD) as carol:
        assert not carol.logged_out
    assert carol.logged_out


def test_wrong_password(pw_inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.AuthFailed) as info:
        pw_inst.login("carol", password="wrong")
    assert info.value.status == mnemo.Status.AUTH_FAILED
    assert "password" in info.value.message


def test_missing_password(pw_inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.AuthFailed):
        pw_inst.login("carol")


def test_password_given_where_none_is_set(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob", password="anything")


def test_unknown_user_with_password_is_indistinguishable(pw_inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.AuthFailed) as unknown:
        pw_inst.login("nobody", password=PASSWORD)
    with pytest.raises(mnemo.AuthFailed) as wrong:
        pw_inst.login("carol", password="wrong")
    assert unknown.value.message == wrong.value.message


def test_sync_before_enable(inst: mnemo.Instance) -> None:
    with pytest.raises(mnemo.SyncDisabled) as info:
        _ = inst.sync
    assert info.value.status == 7 and info.value.message


def test_enable_sync_idempotent(inst: mnemo.Instance) -> None:
    inst.enable_sync()
    inst.enable_sync()
    with inst.sync as a, inst.sync as b:
        assert isinstance(a, mnemo.Sync) and a is not b
    assert a.closed and b.closed


def test_objects_outlive_the_instance() -> None:
    inst = mnemo.Instance.open("memory:")
    inst.create_user("bob")
    inst.enable_sync()
    user = inst.login("bob")
    sync = inst.sync
    inst.close()
    db = user.create_db("after close")
    db.set("s", "k", 1)
    assert db.get("s", "k") == 1
    sync.close()
    user.logout()
    db.close()


# --- Argon2id cost -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argon2", [(19456, 2, 1), mnemo.Argon2Params(19456, 2, 1), (64 * 1024, 3, 4)]
)
def test_open_with_argon2(argon2: tuple[int, int, int]) -> None:
    with mnemo.Instance.open("memory:", argon2=argon2) as inst:
        inst.create_user("bob")  # passwordless: no Argon2id cost
        inst.login("bob").logout()


def test_argon2_params_is_a_tuple() -> None:
    params = mnemo.Argon2Params(memory_kib=19456, time_cost=2, parallelism=1)
    assert params == (19456, 2, 1)
    m, t, p = params
    assert (m, t, p) == (params.memory_kib, params.time_cost, params.parallelism)


def test_password_user_with_custom_argon2() -> None:
    with mnemo.Instance.open("memory:", argon2=mnemo.Argon2Params(19456, 3, 1)) as inst:
        inst.create_user("bob", PASSWORD)
        with pytest.raises(mnemo.AuthFailed):
            inst.login("bob", "wrong")
        inst.login("bob", PASSWORD).logout()


@pytest.mark.parametrize(
    "argon2",
    [
        (1024, 2, 1),  # memory below the minimum
        (19455, 2, 1),
        (19456, 1, 1),  # passes below the minimum
        (19456, 0, 1),
        (19456, 2, 0),  # no lane
        (0, 0, 0),
        (19456, 2, 3000),  # Argon2 itself needs 8 KiB per lane
    ],
)
def test_argon2_rejected_by_the_library(argon2: tuple[int, int, int]) -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        mnemo.Instance.open("memory:", argon2=argon2)
    assert info.value.status == mnemo.Status.INVALID_ARGUMENT
    assert "Argon2id" in info.value.message


@pytest.mark.parametrize("argon2", [(-1, 2, 1), (19456, 2**32, 1), (19456, 2, -(2**32) + 1)])
def test_argon2_outside_uint32(argon2: tuple[int, int, int]) -> None:
    # ctypes would silently wrap these into valid-looking uint32_t values.
    with pytest.raises(mnemo.InvalidArgument, match="uint32_t"):
        mnemo.Instance.open("memory:", argon2=argon2)


@pytest.mark.parametrize(
    "argon2",
    [
        (19456, 2),
        (19456, 2, 1, 0),
        [19456, 2, 1],
        "19456,2,1",
        19456,
        (19456.0, 2, 1),
        (19456, True, 1),
    ],
)
def test_argon2_wrong_type(argon2: object) -> None:
    with pytest.raises(TypeError):
        mnemo.Instance.open("memory:", argon2=argon2)  # type: ignore[arg-type]


def test_argon2_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        mnemo.Instance.open("memory:", (19456, 2, 1))  # type: ignore[call-arg]


def test_bad_url_with_argon2() -> None:
    with pytest.raises(mnemo.InvalidArgument, match="URL|url"):
        mnemo.Instance.open("bogus", argon2=(19456, 2, 1))


def test_sqlite_file_keeps_everything_across_opens(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'app.db'}"
    with mnemo.Instance.open(url) as inst:
        device = inst.device_id
        inst.create_user("alice")
        with inst.login("alice") as alice:
            db = alice.create_db("notes")
            db.set("todo", "milk", {"done": False})
            db_id = db.id
    assert oct((tmp_path / "app.db").stat().st_mode & 0o777) == "0o600"
    with mnemo.Instance.open(url) as inst:
        assert inst.device_id == device
        with inst.login("alice") as alice:
            assert alice.load_db(db_id).get("todo", "milk") == {"done": False}


#: Run in another process: takes the write lock of the SQLite file given, says "held" and
#: keeps it until told (a line on stdin).
HOLD_SQLITE_WRITE_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def _while_another_process_holds(script: str, path: Path, change: Callable[[], None]) -> None:
    """Runs ``change`` while another process runs ``script`` (HOLD_SQLITE_WRITE_LOCK or
    HOLD_SQLITE_READ_SNAPSHOT) on the SQLite file ``path``, holding what it takes."""
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        change()
    finally:
        holder.communicate(b"done\n", timeout=30)


def test_a_sqlite_file_locked_elsewhere_past_the_busy_timeout_is_busy(tmp_path: Path) -> None:
    """A write that waited 10 s for another connection's lock on the file says BUSY (retry
    later, as PostgreSQL's lock timeout does), not STORAGE; nothing was written. Writes of
    other threads to other databases in the file, queued behind it for the file's writer,
    are BUSY within their own bounds (10 s for the writer, 10 s for the lock): before, the
    k-th waited k times 10 s (50 s for the fifth here)."""
    path = tmp_path / "app.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice:
            dbs = [alice.create_db(f"notes{n}") for n in range(5)]
            for db in dbs:
                db.set("s", "k", 1)
            outcomes: list[tuple[BaseException | None, float]] = []

            def write(db: mnemo.Database, value: int) -> None:
                started = time.monotonic()
                try:
                    db.set("s", "k", value)
                    outcomes.append((None, time.monotonic() - started))
                except mnemo.Error as e:
                    outcomes.append((e, time.monotonic() - started))

            # Another process (its locks would not exclude this one's) holds the write lock.
            def writes() -> None:
                writers = [threading.Thread(target=write, args=(db, 2)) for db in dbs]
                for writer in writers:
                    writer.start()
                for writer in writers:
                    writer.join()

            _while_another_process_holds(HOLD_SQLITE_WRITE_LOCK, path, writes)
            for error, _ in outcomes:
                assert isinstance(error, mnemo.Busy), outcomes
                assert re.search("locked|kept its writer", str(error)), error
            assert max(took for _, took in outcomes) < 25, outcomes
            for db in dbs:
                assert db.get("s", "k") == 1
                db.set("s", "k", 3)
                assert db.get("s", "k") == 3
                db.close()


#: Run in another process: holds a read snapshot of the SQLite file given (which keeps a
#: checkpoint from finishing), says "held" and keeps it until told (a line on stdin).
HOLD_SQLITE_READ_SNAPSHOT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM meta").fetchone()
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_a_scrub_kept_out_shows_in_stats_until_it_is_finished(tmp_path: Path) -> None:
    """A forget, or a key's removal, whose checkpoint another process's read snapshot keeps
    out succeeds, and ``scrubs_pending`` says that the removed bytes may still be in the
    file, until a later open (or the next removal) finishes the scrub."""
    path = tmp_path / "app.db"
    url = f"sqlite:{path}"
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice:
            with alice.create_db("notes") as db:
                db.set("s", "k", "to be forgotten")
                db_id = db.id
            assert inst.stats()["scrubs_pending"] == 0
            _while_another_process_holds(
                HOLD_SQLITE_READ_SNAPSHOT, path, lambda: alice.forget_db(db_id)
            )
            assert alice.list_dbs() == []
            assert inst.stats()["scrubs_pending"] == 1  # the checkpoint; the rewrite is done
    with mnemo.Instance.open(url) as inst:
        assert inst.stats()["scrubs_pending"] == 0  # the open finished it
        with inst.login("alice") as alice:
            keys = [alice.add_private_key(f"k{i}") for i in range(2)]
            _while_another_process_holds(
                HOLD_SQLITE_READ_SNAPSHOT, path, lambda: alice.remove_key(keys[0])
            )
            assert inst.stats()["scrubs_pending"] == 1
            alice.remove_key(keys[1])  # the next change of secrets finishes it
            assert inst.stats()["scrubs_pending"] == 0


@pytest.mark.parametrize("url", ["sqlite:/nonexistent-dir/x.db", "postgres://nobody@127.0.0.1:1/none"])
def test_unreachable_storage_is_a_storage_error(url: str, tmp_path: Path) -> None:
    with pytest.raises(mnemo.StorageError) as info:
        mnemo.Instance.open(url)
    assert info.value.message


def test_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(mnemo.StorageError):
        mnemo.Instance.open(f"sqlite:{tmp_path}")


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_file_a_dangling_link_names_is_created_private(tmp_path: Path) -> None:
    """Before, mnemo's private create failed on the link (it exists) and SQLite created its
    target with mode 0644: the device key readable by every local user."""
    (tmp_path / "real").mkdir()
    link = tmp_path / "app.db"
    link.symlink_to(tmp_path / "real" / "app.db")
    with mnemo.Instance.open(f"sqlite:{link}") as inst:
        inst.create_user("alice")
    for made in (tmp_path / "real").iterdir():
        assert _mode(made) == 0o600, made


def test_a_name_starting_with_file_is_a_plain_name_not_a_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, SQLite read "file:x.db?mode=ro" as a URI: its parameters obeyed, the file
    made elsewhere and with mode 0644."""
    monkeypatch.chdir(tmp_path)
    name = "file:x.db?mode=ro"
    with mnemo.Instance.open(f"sqlite:{name}") as inst:
        inst.create_user("alice")  # a write: not opened read-only
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        name
    ]
    assert _mode(tmp_path / name) == 0o600


def test_a_file_other_users_may_read_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
    for loose in (0o644, 0o640, 0o666, 0o604):
        path.chmod(loose)
        before = path.read_bytes()
        with pytest.raises(mnemo.StorageError, match=r"other users .*chmod 600"):
            mnemo.Instance.open(f"sqlite:{path}")
        assert path.read_bytes() == before
    # One made empty by someone else beforehand, as readable: nothing written into it.
    planted = tmp_path / "planted.db"
    planted.touch(mode=0o666)
    planted.chmod(0o666)
    with pytest.raises(mnemo.StorageError, match="other users"):
        mnemo.Instance.open(f"sqlite:{planted}")
    assert planted.stat().st_size == 0
    path.chmod(0o600)
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        assert inst.list_users() == ["alice"]


def test_a_wal_beside_the_file_that_others_may_read_is_refused(tmp_path: Path) -> None:
    """SQLite opens a WAL it finds as it is: one planted beside the file, as readable,
    would have held the file's newest pages, secrets included."""
    path = tmp_path / "app.db"
    wal = tmp_path / "app.db-wal"
    wal.touch()
    wal.chmod(0o644)
    with pytest.raises(mnemo.StorageError, match=r"app\.db-wal may be read or written"):
        mnemo.Instance.open(f"sqlite:{path}")
    assert wal.stat().st_size == 0


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or sys.platform != "linux",
    reason="only root can give a file to another user; the owner is known on Linux",
)
def test_a_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
    os.chown(path, 65534, -1)  # private to its owner, who is someone else
    with pytest.raises(mnemo.StorageError, match=r"owned by another user \(uid 65534\)"):
        mnemo.Instance.open(f"sqlite:{path}")
    os.chown(path, 0, -1)
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        assert inst.list_users() == ["alice"]


def test_a_file_with_two_names_is_refused(tmp_path: Path) -> None:
    """Before, two processes writing one file through two hard links each kept a WAL of
    its own: every write acknowledged, the file corrupt after."""
    path = tmp_path / "a.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("alice")
    (tmp_path / "b.db").hardlink_to(path)
    for name in ("a.db", "b.db"):
        with pytest.raises(mnemo.StorageError, match=r"2 names \(hard links\)"):
            mnemo.Instance.open(f"sqlite:{tmp_path / name}")
    (tmp_path / "b.db").unlink()
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        assert inst.list_users() == ["alice"]


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_is_refused_before_it_is_opened(device: str) -> None:
    """Before, SQLite opened it and failed with "disk I/O error", leaving a world-writable
    journal file beside it (as root, in /dev)."""
    journal = Path(device + "-journal")
    existed = journal.exists()
    with pytest.raises(mnemo.StorageError, match="not a regular file"):
        mnemo.Instance.open(f"sqlite:{device}")
    assert journal.exists() == existed


def test_a_foreign_sqlite_file_is_refused_unchanged(tmp_path: Path) -> None:
    """Before, the refusal came after mnemo had switched the file to WAL mode."""
    import sqlite3
    from contextlib import closing

    path = tmp_path / "theirs.db"
    path.touch(mode=0o600)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value BLOB)")
        conn.commit()
    before = path.read_bytes()
    with pytest.raises(mnemo.StorageError, match="not a mnemo one"):
        mnemo.Instance.open(f"sqlite:{path}")
    assert path.read_bytes() == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


_OPEN_WHEN_TOLD = """
import os, sys, time
import mnemo
path, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.0002)
with mnemo.Instance.open("sqlite:" + path) as inst:
    print(inst.device_id)
"""


def test_two_processes_creating_one_new_file_share_one_instance(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for round_ in range(4):
        path, go = tmp_path / f"new{round_}.db", tmp_path / f"go{round_}"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_WHEN_TOLD, str(path), str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(0.3)  # both waiting before either starts
        go.touch()
        answers = [c.communicate(timeout=60) for c in children]
        assert all(c.returncode == 0 for c in children), answers
        devices = {out.strip() for out, _ in answers}
        assert len(devices) == 1, f"two instances in one file: {devices}"
        with mnemo.Instance.open(f"sqlite:{path}") as inst:
            assert inst.device_id in devices


_CREATE_USERS_UNTIL_KILLED = """
import sys
import mnemo
path, start = sys.argv[1], int(sys.argv[2])
with mnemo.Instance.open("sqlite:" + path) as inst:
    i = start
    while True:
        inst.create_user(f"u{i}")
        print(f"ack {i}", flush=True)
        i += 1
"""


def test_users_created_through_sigkill_log_in_or_can_be_created_again(tmp_path: Path) -> None:
    """A process killed while creating users: every acknowledged user logs in, and the one
    being created at the kill either logs in or can be created again."""
    import os
    import random
    import subprocess
    import sys
    import threading
    import time

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    path, rng, start = tmp_path / "users.db", random.Random(5), 0
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _CREATE_USERS_UNTIL_KILLED, str(path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        # The kill's delay counts from the child's fourth user: counted from its start, it
        # was mostly spent starting Python and loading the library on a loaded machine
        # (with four busy loops: "the children created too few users (14)").
        acked = []
        watchdog = threading.Timer(60, child.kill)  # a child that hangs ends the reading
        watchdog.start()
        while len(acked) < 4 and (line := child.stdout.readline()):
            if line.startswith("ack "):
                acked.append(int(line.split()[1]))
        watchdog.cancel()
        time.sleep(0.3 + rng.random() * 0.4)
        child.kill()  # SIGKILL
        out, _ = child.communicate(timeout=60)
        acked += [int(line.split()[1]) for line in out.splitlines() if line.startswith("ack ")]
        end = acked[-1] + 1 if acked else start
        with mnemo.Instance.open(f"sqlite:{path}") as inst:
            for i in range(start, end):
                inst.login(f"u{i}").logout()
            try:
                inst.login(f"u{end}").logout()
            except mnemo.AuthFailed:
                inst.create_user(f"u{end}")  # AlreadyExists here was the bug
                inst.login(f"u{end}").logout()
        start = end + 1
    assert start > 20, f"the children created too few users ({start})"


def test_messages_quote_at_most_the_start_of_a_long_argument(inst: mnemo.Instance) -> None:
    """A message names a bad argument by its first characters: a 1 MB address, permission
    or name once came back whole, and stayed in the thread's last message."""
    huge = "h" * 1_000_000
    inst.create_user("alice", None)
    with inst.login("alice") as alice:
        db = alice.create_db("d")
        inst.enable_sync()
        sync = inst.sync
        calls = [
            lambda: db.grant(alice.signing_key(db.id), huge),
            lambda: alice.find_db(huge),
            lambda: sync.connect(huge),
            lambda: sync.connect(huge + ":1"),  # well formed, but no host is that long
            lambda: sync.listen(huge + ":1"),
            lambda: sync.connect("ed25519:" + huge + "@h:1"),
            lambda: sync.listen(huge),
        ]
        for call in calls:
            with pytest.raises(mnemo.Error) as info:
                call()
            assert 0 < len(info.value.message) < 400, info.value.message[:100]
        sync.close()
