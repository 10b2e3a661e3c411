#!/usr/bin/env python3
"""Generates docs/reference.md from include/mnemo.h (the header is the manual).

Usage: docs/gen_reference.py           rewrite docs/reference.md
       docs/gen_reference.py --check   fail if docs/reference.md is not what it would write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "include" / "mnemo.h"
OUT = ROOT / "docs" / "reference.md"

GROUPS = [
    ("Library", ("mnemo_version", "mnemo_last_error", "mnemo_status_str", "mnemo_string_free")),
    ("Backends", ("mnemo_backend_",)),
    ("Instances", ("mnemo_instance_",)),
    ("Users", ("mnemo_user_",)),
    ("Databases", ("mnemo_db_",)),
    ("Transactions", ("mnemo_txn_",)),
    ("Subscriptions", ("mnemo_subscription_",)),
    ("Sync", ("mnemo_sync_",)),
]


def clean_doc(comment: str) -> str:
    body = comment.strip()[3:-2]
    lines = [re.sub(r"^\s*\* ?", "", line) for line in body.splitlines()]
    return "\n".join(lines).strip()


def items(text: str) -> list[tuple[str, str]]:
    """(doc, declaration) pairs, in header order, for every documented top-level item."""
    out = []
    for m in re.finditer(r"(/\*\*(?:(?!\*/).)*\*/)\s*\n((?:#define [^\n]*)|(?:[^;/#]*?;))", text, re.S):
        out.append((clean_doc(m.group(1)), " ".join(m.group(2).split())))
    return out


def generate() -> str:
    text = HEADER.read_text(encoding="utf-8")
    conventions = clean_doc("/**" + text.split("/*", 1)[1].split("*/", 1)[0] + "*/")
    conventions = conventions.split("Conventions", 1)[1].split("\n", 1)[1]
    version = re.search(r'#define MNEMO_VERSION_STRING "([^"]+)"', text).group(1)
    abi = re.search(r"#define MNEMO_ABI_VERSION (\d+)", text).group(1)
    types, statuses, functions = [], [], []
    for doc, decl in items(text):
        if decl.startswith("#define MNEMO_STATUS_"):
            _, name, value = decl.split()
            statuses.append((value, name, " ".join(doc.split())))
        elif decl.startswith("typedef"):
            types.append((decl, doc))
        elif re.search(r"\bmnemo_\w+\s*\(", decl):
            functions.append((re.search(r"\b(mnemo_\w+)\s*\(", decl).group(1), decl, doc))

    md = [
        "# mnemo C API reference",
        "",
        "<!-- Generated from include/mnemo.h by docs/gen_reference.py. Do not edit: edit the",
        "     doc comments in src/ffi/, run `cargo build`, then docs/gen_reference.py. -->",
        "",
        f"Version {version}; SONAME `libmnemo.so.{abi}` (`MNEMO_ABI_VERSION`). Every declaration",
        "below is copied from `include/mnemo.h`; the tests compile each block against it.",
        "",
        "## Conventions",
        "",
        conventions,
        "",
        "## Status codes",
        "",
        "| value | name | meaning |",
        "|---|---|---|",
    ]
    md += [f"| {v} | `{n}` | {d} |" for v, n, d in statuses]
    md += ["", "## Types", ""]
    for decl, doc in types:
        md += ["```c", decl, "```", "", doc, ""]
    used = set()
    for title, prefixes in GROUPS:
        group = [f for f in functions if f[0].startswith(prefixes) and f[0] not in used]
        if not group:
            continue
        md += [f"## {title}", ""]
        for name, decl, doc in group:
            used.add(name)
            md += [f"### `{name}`", "", "```c", decl, "```", "", doc, ""]
    rest = [f for f in functions if f[0] not in used]
    if rest:
        md += ["## Other functions", ""]
        for name, decl, doc in rest:
            md += [f"### `{name}`", "", "```c", decl, "```", "", doc, ""]
    return "\n".join(md).rstrip() + "\n"


def main() -> int:
    new = generate()
    if "--check" in sys.argv[1:]:
        old = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if old != new:
            print("docs/reference.md is out of date: run docs/gen_reference.py")
            return 1
        print("docs/reference.md is up to date (1 passed)")
        return 0
    OUT.write_text(new, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
