"""User.change_password. Each password operation costs an Argon2id run (~20 ms), so the
tests with real passwords are few and do several checks each."""

from __future__ import annotations

import pytest
from conftest import PASSWORD

import mnemo

NEW_PASSWORD = "a new and better passphrase"


def test_change_password(inst: mnemo.Instance) -> None:
    inst.create_user("bob", PASSWORD)
    with inst.login("bob", PASSWORD) as bob:
        db_id = bob.create_db("notes").id
        bob.find_db("notes").set("s", "before", 1)
        laptop = bob.add_private_key("laptop")

        with pytest.raises(mnemo.AuthFailed) as info:
            bob.change_password("wrong", NEW_PASSWORD)
        assert info.value.status == mnemo.Status.AUTH_FAILED and info.value.message
        with pytest.raises(mnemo.AuthFailed):
            bob.change_password(None, NEW_PASSWORD)  # bob has a password

        bob.change_password(PASSWORD, NEW_PASSWORD)
        # The session goes on with its keys.
        bob.find_db("notes").set("s", "during", 2)
        phone = bob.add_private_key("phone")  # sealed under the new password

    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob", PASSWORD)
    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob")
    with inst.login("bob", NEW_PASSWORD) as bob:
        assert {k.pubkey for k in bob.list_keys()} >= {laptop, phone}
        with bob.find_db("notes") as db:
            assert db.id == db_id
            assert db.get_all("s") == {"before": 1, "during": 2}
            db.set("s", "after", 3)  # the re-sealed default key still signs
            assert db.get("s", "after") == 3
        with pytest.raises(mnemo.AuthFailed):
            bob.change_password(PASSWORD, "whatever")  # the old one is gone here too


def test_change_to_passwordless_and_back(inst: mnemo.Instance) -> None:
    inst.create_user("bob", PASSWORD)
    with inst.login("bob", PASSWORD) as bob:
        bob.create_db("notes").set("s", "k", "v")
        bob.change_password(PASSWORD, None)
    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob", PASSWORD)
    with inst.login("bob") as bob:  # passwordless now
        assert bob.find_db("notes").get("s", "k") == "v"
        with pytest.raises(mnemo.AuthFailed):
            bob.change_password(PASSWORD, NEW_PASSWORD)  # None is the current one
        bob.change_password(None, NEW_PASSWORD)
    with pytest.raises(mnemo.AuthFailed):
        inst.login("bob")
    with inst.login("bob", NEW_PASSWORD) as bob:
        bob.find_db("notes").set("s", "k", "w")


def test_passwordless_to_passwordless(user: mnemo.User) -> None:
    user.change_password(None, None)  # nothing to re-seal; no Argon2id cost
    user.create_db("still works").set("s", "k", 1)


@pytest.mark.parametrize("new", ["", "x" * 1025, "é" * 513])
def test_new_password_out_of_bounds(inst: mnemo.Instance, new: str) -> None:
    inst.create_user("bob")
    with inst.login("bob") as bob:
        with pytest.raises(mnemo.InvalidArgument) as info:
            bob.change_password(None, new)
        assert info.value.status == mnemo.Status.INVALID_ARGUMENT and info.value.message
    inst.login("bob").logout()  # still passwordless


def test_new_password_longest(user: mnemo.User) -> None:
    user.change_password(None, "x" * 1024)


@pytest.mark.parametrize("side", ["old", "new"])
def test_password_with_nul(user: mnemo.User, side: str) -> None:
    args: dict[str, str | None] = {"old": None, "new": None}
    args[side] = "a\0b"
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        user.change_password(**args)


def test_password_must_be_str(user: mnemo.User) -> None:
    with pytest.raises(TypeError):
        user.change_password(None, b"secret")  # type: ignore[arg-type]


def _secrets(path) -> dict[str, bytes]:
    """The secrets table of a mnemo SQLite file, read with Python's own sqlite3."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {key: bytes(value) for key, value in conn.execute("SELECT key, value FROM secrets")}
    finally:
        conn.close()


def _raw(path) -> bytes:
    """Every byte of the file and its WAL, as an attacker with the disk would read them."""
    out = b""
    for suffix in ("", "-wal"):
        try:
            with open(f"{path}{suffix}", "rb") as f:
                out += f.read()
        except FileNotFoundError:
            pass
    return out


def test_a_new_password_leaves_no_older_secret_in_the_file(tmp_path) -> None:
    path = tmp_path / "secrets.db"
    with mnemo.Instance.open(f"sqlite:{path}") as inst:
        inst.create_user("changer", PASSWORD)
        inst.create_user("first")
        before = {k: v for k, v in _secrets(path).items() if k.startswith("account/")}
        assert len(before) == 2
        # The search finds secrets that are there (so it could find a left-over one).
        for value in before.values():
            assert value in _raw(path)
        with inst.login("changer", PASSWORD) as u:
            u.change_password(PASSWORD, NEW_PASSWORD)
        with inst.login("first") as u:
            u.change_password(None, NEW_PASSWORD)
        raw = _raw(path)
        after = _secrets(path)
        for key, old in before.items():
            assert after[key] != old and after[key] in raw
            # Neither the secret the old password opened nor the unsealed account key of
            # the once passwordless user is anywhere in the file.
            assert old not in raw, key
        with pytest.raises(mnemo.AuthFailed):
            inst.login("changer", PASSWORD)
        with pytest.raises(mnemo.AuthFailed):
            inst.login("first")
        inst.login("first", NEW_PASSWORD).logout()


def test_every_failed_login_takes_the_time_of_a_right_one(inst: mnemo.Instance) -> None:
    """No failure costs measurably less CPU than a successful password login: each costs one
    Argon2id run, what a path that answered early would skip. Each try is timed in CPU time
    of the calling thread (where the library does the derivation): wall time on a loaded
    machine depends on when each try got the CPU, and the fastest tries of two cases could
    differ five times over. Cases are interleaved and each is judged by its fastest try. A
    path that skipped the key derivation would take under a tenth of a right login; the
    bounds leave room for noise, not for that. (Waits that cost no CPU are not compared.)"""
    import time

    inst.create_user("admin")  # first user: the instance admin
    inst.create_user("pw", PASSWORD)
    inst.create_user("nopw")
    inst.create_user("off", PASSWORD)
    inst.create_user("later")  # passwordless at first, then given a password
    with inst.login("later") as later:
        later.change_password(None, PASSWORD)
    with inst.login("admin") as admin:
        admin.disable_user("off")

    def right() -> None:
        inst.login("pw", PASSWORD).logout()

    failures = {
        "unknown user": lambda: inst.login("nobody", PASSWORD),
        "wrong password": lambda: inst.login("pw", "not the password"),
        "no password for a password user": lambda: inst.login("pw"),
        "a password for a passwordless user": lambda: inst.login("nopw", PASSWORD),
        "a disabled user": lambda: inst.login("off", PASSWORD),
        "a wrong password for a user given one later": lambda: inst.login("later", "wrong"),
        "no password for a user given one later": lambda: inst.login("later"),
    }
    times: dict[str, list[float]] = {name: [] for name in ["right", *failures]}
    for _ in range(9):
        started = time.thread_time()
        right()
        times["right"].append(time.thread_time() - started)
        for name, attempt in failures.items():
            started = time.thread_time()
            with pytest.raises((mnemo.AuthFailed, mnemo.PermissionDenied)):
                attempt()
            times[name].append(time.thread_time() - started)
    reference = min(times["right"])
    for name in failures:
        ratio = min(times[name]) / reference
        assert 0.6 <= ratio <= 1.6, f"{name}: {ratio:.2f}x a right login"


def test_password_derivations_run_at_most_one_per_core(inst: mnemo.Instance) -> None:
    """Logins at once derive their passwords a few at a time, each holding 19 MiB: before,
    32 at once held 32 (an audit: peak memory 282 MiB to 624 MiB)."""
    import os
    import threading

    cores = min(16, len(os.sched_getaffinity(0)))
    logins = 3 * cores + 4
    inst.create_user("many", PASSWORD)
    seen: list[int] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(inst.stats()["password_derivations"])

    def login() -> None:
        try:
            with inst.login("many", PASSWORD):
                pass
        except BaseException as e:  # reported below, not lost in the thread
            failures.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=login) for _ in range(logins)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    watcher.join()
    assert failures == []
    assert 1 <= max(seen) <= cores, f"{max(seen)} derivations at once on {cores} cores"
    assert inst.stats()["password_derivations"] == 0
