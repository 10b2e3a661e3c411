"""mnemo sync between two processes: the Python side of the C example sync_peer.

The C peer (bindings/c/examples/sync_peer.c) owns database "shared" as user alice and
listens for other instances. This script is another instance: it creates user "bob", prints
bob's public key, waits until alice granted that key, then tracks the database (one sync
round, then a push after every commit and a pull every second), writes a few values,
flushes them to the owner and prints the merged state. Every further line read on stdin
runs one more sync round and prints the state again; end of input (Ctrl-D) quits.

By hand, in two terminals, from the repository root after `cargo build`:

    # terminal 1: build and start the owner
    make -C bindings/c
    target/c-examples/sync_peer
    # it prints:  ADDR 127.0.0.1:40123
    #             DB sha256:9f2c...

    # terminal 2: start bob with the ADDR and DB printed above
    python3 bindings/python/examples/sync_peer.py 127.0.0.1:40123 sha256:9f2c...
    # it prints:  KEY ed25519:Qm1x...   and waits

    # terminal 1: grant bob's key, write a value of alice's
    GRANT ed25519:Qm1x... write
    SET notes from-alice {"by": "alice"}

    # terminal 2: press Enter: bob tracks the database, writes notes/bob-1..3, flushes
    # and prints STATE {"bob-1": ..., "from-alice": ...} and TIPS [...]

    # terminal 1: the owner sees bob's values
    ALL notes
    SET notes later {"by": "alice"}

    # terminal 2: press Enter again: one more sync round, STATE now holds "later" too;
    # Ctrl-D quits. In terminal 1, QUIT.

Usage: sync_peer.py ADDR DB [BACKEND_URL] [--user NAME] [--store NAME] [--count N]

BACKEND_URL defaults to "memory:" (e.g. "sqlite:/tmp/bob.db" keeps bob's copy). Standard
output carries one line per step, for programs to read: ``KEY <pubkey>``, ``TRACKING <db>``,
``WROTE <store>/<key>``, ``FLUSHED``, ``STATE <json of the store>``, ``TIPS <json array>``;
hints for people go to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Use the package from this source tree when it is not installed.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mnemo  # noqa: E402


def say(line: str) -> None:
    """One line for programs on stdout, flushed so that a pipe sees it at once."""
    print(line, flush=True)


def hint(text: str) -> None:
    """A line for people, on stderr."""
    print(text, file=sys.stderr, flush=True)


def show(db: mnemo.Database, store: str) -> None:
    say("STATE " + json.dumps(db.get_all(store), sort_keys=True, separators=(",", ":")))
    say("TIPS " + json.dumps(db.tips(), separators=(",", ":")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addr", help="the owner's ADDR line, host:port")
    parser.add_argument("db", help="the owner's DB line, sha256:<64 hex digits>")
    parser.add_argument("backend", nargs="?", default="memory:", help='default "memory:"')
    parser.add_argument("--user", default="bob", help='the local user (default "bob")')
    parser.add_argument("--store", default="notes", help='the store written (default "notes")')
    parser.add_argument("--count", type=int, default=3, help="values to write (default 3)")
    args = parser.parse_args(argv)

    with mnemo.Instance.open(args.backend) as inst:
        try:
            inst.create_user(args.user)  # passwordless
        except mnemo.AlreadyExists:
            pass  # a durable backend from an earlier run
        inst.enable_sync()
        with inst.login(args.user) as user, inst.sync as sync:
            key = next(k.pubkey for k in user.list_keys() if k.is_default)
            say(f"KEY {key}")
            hint(f"grant this key on the owner (GRANT {key} write), then press Enter")
            if not sys.stdin.readline():
                hint("no grant: end of input")
                return 1

            sync.track(user, args.addr, args.db)  # one round now, then in the background
            say(f"TRACKING {args.db}")
            with user.load_db(args.db) as db:
                for i in range(1, args.count + 1):
                    k = f"{args.user}-{i}"
                    db.set(args.store, k, {"by": args.user, "n": i})
                    say(f"WROTE {args.store}/{k}")
                sync.flush(timeout_ms=10000)  # every write above is now at the owner
                say("FLUSHED")
                show(db, args.store)
                hint("press Enter to sync again and show the state, Ctrl-D to quit")
                while sys.stdin.readline():
                    sync.sync_db(user, args.addr, args.db)
                    show(db, args.store)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except mnemo.Error as e:
        print(f"sync_peer: {type(e).__name__}: {e.message}", file=sys.stderr)
        sys.exit(1)
