"""Threads of one instance committing at once, each to its own database, through the Python
package: the aggregate commit rate with the URL's `max_connections=1` against the default
(4 on PostgreSQL), alternating in one run, and one thread alone for scale.

    MNEMO_LIB=target/release/libmnemo.so target/venv/bin/python benches/threads.py \\
        URL [--threads N] [--commits N] [--rounds N]

URL names a scratch PostgreSQL database (`postgres://...`). ctypes releases the GIL during
each call, so the threads' calls overlap inside the library. BENCHMARKS.md, "PostgreSQL",
has figures.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bindings" / "python"))

import mnemo  # noqa: E402


def with_option(url: str, option: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{option}"


def rate(url: str, threads: int, commits: int, tag: str) -> float:
    """Commits per second of `threads` threads, each making `commits` to a database of its own."""
    with mnemo.Instance.open(url) as inst, inst.login("u") as user:
        dbs = [user.create_db(f"{tag}-{i}") for i in range(threads)]

        def commit(db: mnemo.Database) -> None:
            for i in range(commits):
                db.set("s", f"k{i}", i)

        workers = [threading.Thread(target=commit, args=(db,)) for db in dbs]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return threads * commits / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with mnemo.Instance.open(args.url) as inst:
        inst.create_user("u")
    for r in range(args.rounds):
        one = rate(with_option(args.url, "max_connections=1"), args.threads, args.commits, f"a{r}")
        pooled = rate(args.url, args.threads, args.commits, f"b{r}")
        alone = rate(args.url, 1, args.commits, f"c{r}")
        print(
            f"round {r + 1}: {args.threads} threads x {args.commits} set: "
            f"max_connections=1 {one:.0f}/s, default {pooled:.0f}/s ({pooled / one:.2f}x); "
            f"1 thread {alone:.0f}/s"
        )


if __name__ == "__main__":
    main()
