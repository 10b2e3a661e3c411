"""What the Python layer adds per call: a single-key commit and a get through the mnemo
package, against the same calls made straight through ctypes and through C
(benches/abi_bench.c, memory backend).

Run by ``make bench``; by hand, from the repository root, after ``make bench`` (or
``cargo build --release`` and abi_bench with ``--results``)::

    MNEMO_LIB=target/release/libmnemo.so python3 bindings/python/benchmarks/ctypes_overhead.py \
        --c-results target/bench/abi_results.txt

Rows (same columns as abi_bench):

- ``ctypes call floor``: ``mnemo_version_number()`` through ctypes, the least a ctypes call
  costs.
- ``raw ctypes set/get``: ``lib.mnemo_db_set`` / ``lib.mnemo_db_get`` with pre-encoded bytes
  (get includes copying the string out and ``mnemo_string_free``); ``mnemo_db_get_into``
  into one 1 KiB buffer, as plain ctypes code would call it (the package's ``get`` uses it
  through a twin without argtypes).
- ``package Database.set/get``: the public API (argument checks, handle lending, JSON
  encoding and decoding, error mapping).
- ``ratio Database.set/get / ctypes floor``: the package call's median over the median of
  the ctypes floor timed in batches alternating with the package calls' (every
  ``FLOOR_BATCH`` calls, as many floor calls), so load on the machine falls on both alike.
  Issue 18's target: ``Database.get`` at most 12x the floor.

Each note compares with the C median from the results file: the overhead in microseconds
per call and as a ratio. ``MNEMO_BENCH_QUICK=1`` takes fewer samples. The Python timings
use ``time.perf_counter_ns`` around each call; the garbage collector stays on (as in an
application).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mnemo  # noqa: E402
from mnemo import _native  # noqa: E402

#: Package calls per batch, alternating with as many floor calls (the ratio rows).
FLOOR_BATCH = 500


def quantile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank quantile, as in abi_bench.c."""
    rank = max(1, min(len(sorted_ns), int(q * len(sorted_ns) + 0.999999)))
    return float(sorted_ns[rank - 1])


def fmt_time(ns: float) -> str:
    if ns <= 0:
        return "-"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(per_s: float) -> str:
    if per_s <= 0:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f}M/s"
    if per_s >= 1e4:
        return f"{per_s / 1e3:.1f}k/s"
    return f"{per_s:.0f}/s"


def row(phase: str, samples: list[int], c_ns: float | None = None, note: str = "") -> float:
    """Prints one table row; with ``c_ns``, the note compares the median with C's."""
    samples.sort()
    med, p99 = quantile(samples, 0.5), quantile(samples, 0.99)
    if c_ns:
        note = (f"{(med - c_ns) / 1e3:+.1f} us/call over C ({med / c_ns:.2f}x C's "
                f"{fmt_time(c_ns)}){'; ' + note if note else ''}")
    print(
        f"{'python':<7} {phase:<44} {len(samples):>8} {fmt_time(med):>10} {fmt_time(p99):>10} "
        f"{fmt_rate(1e9 / med if med else 0):>10}  {note}",
        flush=True,
    )
    return med


def time_floor(lib: ctypes.CDLL, count: int, samples: list[int]) -> None:
    """Appends the times of ``count`` back-to-back ``mnemo_version_number()`` calls."""
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        lib.mnemo_version_number()
        samples.append(clock() - t0)


def ratio_row(phase: str, samples: list[int], floor: list[int], note: str) -> None:
    """Prints a row whose value is the median of ``samples`` over the median of ``floor``
    (in the median column, as abi_bench's ratio rows)."""
    samples.sort()
    floor.sort()
    floor_med = quantile(floor, 0.5)
    value = f"{quantile(samples, 0.5) / floor_med:.2f}"
    print(f"{'python':<7} {phase:<44} {'':>8} {value:>10} {'':>10} {'':>10}  "
          f"{note}; floor {fmt_time(floor_med)} in alternating batches", flush=True)


def read_c_results(path: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if not path:
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "result":
                out[f"{parts[1]}.{parts[2]}"] = float(parts[3])
    return out


def main() -> int:
    quick = os.environ.get("MNEMO_BENCH_QUICK", "") not in ("", "0")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-results", help="abi_bench --results file (C medians to compare)")
    ap.add_argument("--count", type=int, default=2000 if quick else 20000,
                    help="commits and gets per variant (default 20000; 2000 quick)")
    ap.add_argument("--header", action="store_true", help="print the table header first")
    args = ap.parse_args()
    c = read_c_results(args.c_results)
    c_commit = c.get("memory.commit_median_ns")
    c_get = c.get("memory.get_median_ns")
    lib = _native.lib
    n = args.count

    if args.header:
        print(f"{'backend':<7} {'phase':<44} {'n':>8} {'median':>10} {'p99':>10} {'rate':>10}  vs floor")
    clock = time.perf_counter_ns

    samples = []
    for _ in range(n):
        t0 = clock()
        lib.mnemo_version_number()
        samples.append(clock() - t0)
    row("ctypes call floor (mnemo_version_number)", samples)

    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    row("perf_counter_ns pair (timer overhead)", samples)

    with mnemo.Instance.open("memory:") as inst:
        inst.create_user("bench", password=None)
        with inst.login("bench") as user:
            db = user.create_db("bench")
            # Raw ctypes, the handle lent once for the whole loop (private API of the
            # package: _handle.use() gives the mnemo_database pointer).
            with db._handle.use() as ptr:
                keys = [f"r{i:07d}".encode() for i in range(n)]
                values = [
                    f'{{"n":{i},"text":"the quick brown fox"}}'.encode() for i in range(n)
                ]
                samples = []
                for i in range(n):
                    t0 = clock()
                    status = lib.mnemo_db_set(ptr, b"bench", keys[i], values[i])
                    samples.append(clock() - t0)
                    if status:
                        _native.check(status)
                raw_set = row("raw ctypes mnemo_db_set", samples, c_commit)

                out = _native.owned_str_t()
                samples = []
                for i in range(n):
                    t0 = clock()
                    status = lib.mnemo_db_get(ptr, b"bench", keys[i], ctypes.byref(out))
                    if status:
                        _native.check(status)
                    ctypes.string_at(out)
                    lib.mnemo_string_free(out)
                    samples.append(clock() - t0)
                raw_get = row("raw ctypes mnemo_db_get (+copy, free)", samples, c_get)

                buf = ctypes.create_string_buffer(1024)
                length = ctypes.c_size_t()
                samples = []
                for i in range(n):
                    t0 = clock()
                    status = lib.mnemo_db_get_into(ptr, b"bench", keys[i], buf, 1024,
                                                   ctypes.byref(length))
                    if status:
                        _native.check(status)
                    buf.value
                    samples.append(clock() - t0)
                row("raw ctypes mnemo_db_get_into (+copy)", samples, c_get)

            # Every FLOOR_BATCH package calls, as many floor calls (the ratio rows' floor).
            samples, set_floor = [], []
            for i in range(n):
                key, value = f"p{i:07d}", {"n": i, "text": "the quick brown fox"}
                t0 = clock()
                db.set("bench", key, value)
                samples.append(clock() - t0)
                if i % FLOOR_BATCH == FLOOR_BATCH - 1:
                    time_floor(lib, FLOOR_BATCH, set_floor)
            samples.sort()
            row("package Database.set (single-key commit)", samples, c_commit,
                f"{(quantile(samples, 0.5) - raw_set) / 1e3:+.1f} us over raw ctypes")
            set_samples = samples

            samples, get_floor = [], []
            for i in range(n):
                key = f"p{i:07d}"
                t0 = clock()
                got = db.get("bench", key)
                samples.append(clock() - t0)
                if i % FLOOR_BATCH == FLOOR_BATCH - 1:
                    time_floor(lib, FLOOR_BATCH, get_floor)
                if i % 997 == 0 and got != {"n": i, "text": "the quick brown fox"}:
                    raise SystemExit(f"ctypes_overhead: read {key}: got {got!r}")
            samples.sort()
            row("package Database.get", samples, c_get,
                f"{(quantile(samples, 0.5) - raw_get) / 1e3:+.1f} us over raw ctypes")
            ratio_row("ratio Database.set / ctypes floor", set_samples, set_floor,
                      "no target (the commit's signature dominates)")
            ratio_row("ratio Database.get / ctypes floor", samples, get_floor,
                      "target <= 12 (issue 18)")
            db.close()

    return 0


if __name__ == "__main__":
    sys.exit(main())
