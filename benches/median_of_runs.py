"""Combines the tables of several `make bench` runs into one: for each row, the run whose
median is the middle one (so every printed row, with its p99, rate and ratio notes, is one
real observation, internally consistent), followed by the medians of all runs.

Usage: python3 benches/median_of_runs.py target/bench/table-1.txt target/bench/table-2.txt ...

The tables are abi_bench's and ctypes_overhead.py's fixed-width rows:
backend(7) phase(44) n(8) median(10) p99(10) rate(10), two spaces, note.
"""

from __future__ import annotations

import re
import sys

UNITS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9, "MiB": 1.0}


def value(text: str) -> float | None:
    """The number in a median cell, in ns for times ('29.4 us'), as is otherwise."""
    m = re.fullmatch(r"\s*([0-9.]+)(?:\s*(ns|us|ms|s|MiB))?\s*", text)
    if not m:
        return None
    return float(m.group(1)) * UNITS.get(m.group(2) or "", 1.0)


def parse(path: str) -> tuple[list[str], dict[tuple[str, str], str]]:
    order: list[str] = []
    rows: dict[tuple[str, str], str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if len(line) < 72 or line.startswith(("backend", "-------", "mnemo ")):
                continue
            backend, phase = line[0:7].strip(), line[8:52].strip()
            if not backend or phase.startswith("(") or backend.startswith("=="):
                continue
            key = (backend, phase)
            if key not in rows:
                order.append(f"{backend}\0{phase}")
            rows[key] = line
    return order, rows


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    tables = [parse(p) for p in paths]
    order = tables[0][0]
    print(f"median of {len(paths)} runs per row ({', '.join(paths)}); the row shown is the "
          "middle run's; 'runs:' lists every run's median")
    print(f"{'backend':<7} {'phase':<44} {'n':>8} {'median':>10} {'p99':>10} {'rate':>10}  vs floor")
    print(f"{'-------':<7} {'-----':<44} {'-':>8} {'------':>10} {'---':>10} {'----':>10}  --------")
    for item in order:
        backend, phase = item.split("\0")
        lines = [t[1][(backend, phase)] for t in tables if (backend, phase) in t[1]]
        cells = [ln[62:72] for ln in lines]
        vals = [value(c) for c in cells]
        if any(v is None for v in vals) or len(lines) < 2:
            print(lines[len(lines) // 2])
            continue
        ranked = sorted(range(len(lines)), key=lambda i: vals[i])
        middle = lines[ranked[(len(lines) - 1) // 2]]
        runs = " / ".join(c.strip() for c in cells)
        note = middle[96:].strip()
        print(f"{middle[:96].ljust(96)}{note + '; ' if note else ''}runs: {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
