"""mnemo quickstart: the whole flow on an in-memory instance.

Run from the repository root after `cargo build`:

    python bindings/python/examples/quickstart.py
"""

from __future__ import annotations

import os
import sys
import threading

# Use the package from this source tree when it is not installed.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mnemo  # noqa: E402


def main() -> None:
    print(f"mnemo {mnemo.version()} (version number {mnemo.version_number()})")

    with mnemo.Instance.open("memory:") as inst:
        print("opened instance on memory:")
        print(f"device id: {inst.device_id}")

        inst.create_user("alice", password="correct horse battery staple")
        print(f"created user alice; users: {inst.list_users()}")

        with inst.login("alice", password="correct horse battery staple") as alice:
            print("logged in as alice")

            with alice.create_db("notes") as db:
                print(f"created database 'notes': {db.id}")

                value = {"title": "buy milk", "done": False, "tags": ["shopping"]}
                db.set("todo", "milk", value)
                print(f"set todo/milk = {value}")
                print(f"get todo/milk -> {db.get('todo', 'milk')}")

                changes = threading.Event()
                with db.subscribe(lambda db_id, entry_id, remote: changes.set()):
                    with db.transaction() as t:  # one signed commit, all or nothing
                        t.set("todo", "bread", {"title": "buy bread", "done": False})
                        t.delete("todo", "milk")
                    print(f"transaction committed as {t.entry_id}")
                    print(f"change notified: {changes.wait(10)}")
                todo = db.store("todo")  # a mapping view of one store
                print(f"todo now holds {len(todo)} item(s): {dict(todo)}")
                print(f"tips: {db.tips()}")

                # Sharing: alice grants bob's key, bob opens the database by its id.
                inst.create_user("bob")  # passwordless
                with inst.login("bob") as bob:
                    bob_key = next(k.pubkey for k in bob.list_keys() if k.is_default)
                    db.grant(bob_key, "write")
                    with bob.load_db(db.id) as shared:
                        shared.set("todo", "eggs", {"title": "buy eggs", "done": False})
                    print(f"bob signs with {bob.signing_key(db.id)}")
                    print(f"bob tracks: {[d.name for d in bob.list_dbs()]}")
                print(f"todo as alice sees it: {sorted(db.store('todo'))}")

                alice.logout()
                print("logged out")
                print(f"get after logout still works -> {db.get('todo', 'bread')}")
                try:
                    db.set("todo", "bread", {"done": True})
                except mnemo.LoggedOut as e:
                    print(f"set after logout refused: {e.message} (status {e.status})")

        inst.enable_sync()
        print("sync enabled")
        with inst.sync as sync:
            print(f"got a sync reference: {sync!r}")
    print("closed")


if __name__ == "__main__":
    main()
