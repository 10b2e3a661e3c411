"""Several processes committing to one mnemo database on one storage, through the Python
package: the aggregate commit rate, and how many commits gave up busy (each after 16
tries; the script then retries it, so every commit lands).

    MNEMO_LIB=target/release/libmnemo.so target/venv/bin/python benches/processes.py \\
        URL [--grants N] [--procs N] [--commits N] [--documents]

URL names a fresh storage (`sqlite:PATH` or a scratch PostgreSQL database). `--grants`
adds that many read grants first (settings entries a process reloads when it must forget
what it holds); `--documents` writes with `set_path` (one document per key) instead of
`set`. BENCHMARKS.md, "Several processes on one database", has figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

import mnemo  # noqa: E402


def commit(url: str, db_id: str, count: int, tag: str, documents: bool, out: mp.Queue) -> None:
    busy = 0
    with mnemo.Instance.open(url) as inst, inst.login("u") as user, user.load_db(db_id) as db:
        for i in range(count):
            while True:
                try:
                    if documents:
                        db.set_path("s", f"{tag}{i}", "/x", i)
                    else:
                        db.set("s", f"{tag}{i}", i)
                    break
                except mnemo.Busy:
                    busy += 1
    out.put(busy)


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("url")
    args.add_argument("--grants", type=int, default=0)
    args.add_argument("--procs", type=int, default=4)
    args.add_argument("--commits", type=int, default=100)
    args.add_argument("--documents", action="store_true")
    a = args.parse_args()
    with mnemo.Instance.open(a.url) as inst:
        inst.create_user("u")
        with inst.login("u") as user, user.create_db("d") as db:
            for _ in range(a.grants):
                db.grant(user.add_private_key(), "read")
            db_id = db.id
    out: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=commit, args=(a.url, db_id, a.commits, f"p{p}_", a.documents, out))
        for p in range(a.procs)
    ]
    started = time.perf_counter()
    for p in procs:
        p.start()
    busy = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    wall = time.perf_counter() - started
    total = a.procs * a.commits
    kind = "set_path" if a.documents else "set"
    print(
        f"{a.procs} processes x {a.commits} {kind} ({a.grants} grants): {wall:.2f} s, "
        f"{total / wall:.0f} commits/s, {busy} gave up busy"
    )


if __name__ == "__main__":
    main()
