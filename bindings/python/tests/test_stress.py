"""Concurrency stress from Python threads: 8 threads share one instance, logging in and out,
creating databases, committing and reading on a shared and on their own databases, while a
subscription counts commits. A watchdog (the join timeout) fails the test on a deadlock."""

from __future__ import annotations

import threading
import time

import mnemo

THREADS = 8
SECONDS = 1.5


def test_eight_python_threads_share_one_instance() -> None:
    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("owner")
        owner = inst.login("owner")
        shared = owner.create_db("shared")
        for t in range(THREADS):
            inst.create_user(f"t{t}")
            with inst.login(f"t{t}") as u:
                (key,) = [k.pubkey for k in u.list_keys()]
            shared.grant(key, "write")
        heard = threading.Semaphore(0)
        sub = shared.subscribe(lambda db_id, entry_id, remote: heard.release())
        acknowledged: dict[str, int] = {}
        lock = threading.Lock()
        errors: list[BaseException] = []
        deadline = time.monotonic() + SECONDS

        def work(t: int) -> None:
            try:
                i = 0
                while time.monotonic() < deadline:
                    with inst.login(f"t{t}") as user:
                        own = user.create_db(f"own{t}-{i}")
                        common = user.load_db(shared.id)
                        for _ in range(10):
                            key = f"t{t}-{i}"
                            target = common if i % 2 else own
                            target.set("s", key, i)
                            assert target.get("s", key) == i
                            if target is common:
                                with lock:
                                    acknowledged[key] = i
                            i += 1
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        workers = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
            assert not w.is_alive(), "deadlock: a worker still runs 60 s after its deadline"
        assert not errors, errors
        for key, value in acknowledged.items():
            assert shared.get("s", key) == value
        assert len(shared.tips()) >= 1
        expected = len(acknowledged)  # one callback per commit to the shared database
        for _ in range(expected):
            assert heard.acquire(timeout=10), "a subscription callback never came"
        sub.close()
        owner.logout()
        assert len(acknowledged) > 0
