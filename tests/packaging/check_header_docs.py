#!/usr/bin/env python3
"""Fails when an exported function of include/mnemo.h is not fully documented.

Every function must have a doc comment (the /** ... */ block right above it) that
- says something about thread safety (a sentence containing "thread"), and,
- for a function returning mnemo_status, names the statuses it returns (MNEMO_STATUS_...);
- for a function taking a string (`const char *`), says "UTF-8" (what the bytes must be).

Usage: check_header_docs.py [HEADER]   (default: include/mnemo.h next to this repository)
Prints one line per problem and "N passed, N failed" (one check per function).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A function declaration: optional MNEMO_MUST_USE, return type, mnemo_ name, (args);
DECL = re.compile(
    r"^(?:MNEMO_MUST_USE\s+)?(?P<ret>[A-Za-z_][\w\s\*]*?)\s*\**\s*\b(?P<name>mnemo_\w+)\s*\((?P<args>[^;]*)\)\s*;",
    re.S,
)


def functions(text: str) -> list[tuple[str, str, str, str]]:
    """(name, return type, parameters, doc comment or "") for every function in the header."""
    out = []
    # Split into top-level items: doc comments and the statements that follow them.
    pos = 0
    doc = ""
    item = re.compile(r"/\*\*.*?\*/|/\*.*?\*/|//[^\n]*|#[^\n]*|[^;{}/#]*(?:\{[^}]*\})?[^;{}/#]*;", re.S)
    while pos < len(text):
        m = item.match(text, pos)
        if not m:
            pos += 1
            continue
        chunk = m.group(0).strip()
        pos = m.end()
        if not chunk:
            continue
        if chunk.startswith("/**"):
            doc = chunk
            continue
        if chunk.startswith("#"):
            doc = ""  # a preprocessor line separates a comment from what follows
            continue
        if chunk.startswith(("/*", "//")):
            continue  # plain comments neither document nor separate
        d = DECL.match(chunk)
        if d and not chunk.startswith("typedef"):
            out.append((d.group("name"), " ".join(d.group("ret").split()), d.group("args"), doc))
        doc = ""
    return out


def problems(name: str, ret: str, args: str, doc: str) -> list[str]:
    if not doc:
        return [f"{name}: no doc comment"]
    found = []
    if ret == "mnemo_status" and "MNEMO_STATUS_" not in doc:
        found.append(f"{name}: returns mnemo_status but its doc lists no MNEMO_STATUS_* value")
    if re.search(r"\bconst\s+char\s*\*", args) and "UTF-8" not in doc:
        found.append(f"{name}: takes a string but its doc does not say UTF-8")
    if not re.search(r"thread", doc, re.I):
        found.append(f"{name}: its doc says nothing of thread safety (no sentence with 'thread')")
    return found


def main() -> int:
    header = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "include" / "mnemo.h"
    fns = functions(header.read_text(encoding="utf-8"))
    if not fns:
        print(f"no functions found in {header}")
        return 1
    bad = 0
    for name, ret, args, doc in fns:
        found = problems(name, ret, args, doc)
        if found:
            bad += 1
            for p in found:
                print(p)
    print(f"{len(fns) - bad} passed, {bad} failed ({len(fns)} functions in {header.name})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
