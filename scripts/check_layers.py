#!/usr/bin/env python3
"""Checks the rooms of src/ against docs/architecture.md.

Reads the table of rooms and what each may import from docs/architecture.md, then:
- every `crate::<room>` path in a room's files (and every `crate::<Name>` root re-export,
  resolved through src/lib.rs) names a room that table allows;
- the graph of rooms actually imported has no cycle;
- no `unsafe` appears outside src/ffi/ and the SQLite VFS shim (src/backend/sqlite/vfs.rs).
Comments are ignored. Prints the graph and exits 1 on any violation.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "architecture.md"
# The one file outside src/ffi/ that may use `unsafe`: functions SQLite calls through C pointers.
UNSAFE_VFS = SRC / "backend" / "sqlite" / "vfs.rs"


def allowed_imports() -> dict[str, set[str]]:
    """room -> rooms it may import, from the doc's table."""
    rules: dict[str, set[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`\w+`", cells[0]):
            continue
        room = cells[0].strip("`")
        rules[room] = {r.strip() for r in cells[2].split(",") if r.strip() not in ("", "—")}
    if not rules:
        sys.exit(f"no room table found in {DOC}")
    return rules


def rooms() -> dict[str, list[Path]]:
    """room -> its source files."""
    found: dict[str, list[Path]] = {}
    for path in sorted(SRC.iterdir()):
        if path.is_dir():
            found[path.name] = sorted(path.rglob("*.rs"))
        elif path.suffix == ".rs" and path.name != "lib.rs":
            found[path.stem] = [path]
    return found


def root_reexports() -> dict[str, str]:
    """Name re-exported at the crate root -> the room it comes from (`pub use user::User;`)."""
    names: dict[str, str] = {}
    for m in re.finditer(r"^pub use (\w+)::(.+);$", (SRC / "lib.rs").read_text(), re.MULTILINE):
        room, items = m.group(1), m.group(2).strip("{}")
        for item in items.split(","):
            names[item.strip().split(" as ")[-1]] = room
    return names


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of a file with comments removed."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.DOTALL)
    return [(n, re.sub(r"//.*", "", line)) for n, line in enumerate(text.splitlines(), 1)]


def main() -> int:
    rules = allowed_imports()
    all_rooms = rooms()
    reexports = root_reexports()
    problems: list[str] = []
    graph: dict[str, set[str]] = {room: set() for room in all_rooms}
    for room in all_rooms:
        if room not in rules:
            problems.append(f"room '{room}' is not in the table of {DOC.relative_to(ROOT)}")
    for room in rules:
        if room not in all_rooms:
            problems.append(f"the table names room '{room}', which src/ does not have")
    for room, files in all_rooms.items():
        for path in files:
            for n, line in code_lines(path):
                where = f"{path.relative_to(ROOT)}:{n}"
                for name in re.findall(r"\bcrate::(\w+)", line):
                    target = name if name in all_rooms else reexports.get(name)
                    if target is None:
                        problems.append(f"{where}: crate::{name} is neither a room nor a root re-export")
                        continue
                    if target == room:
                        continue
                    graph[room].add(target)
                    if target not in rules.get(room, set()):
                        problems.append(f"{where}: room '{room}' may not import '{target}'")
                if re.search(r"\bunsafe\b", line) and room != "ffi" and path != UNSAFE_VFS:
                    problems.append(f"{where}: unsafe outside src/ffi/ and {UNSAFE_VFS.relative_to(ROOT)}")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("the rooms form a cycle: " + " -> ".join(cycle))
    for room in sorted(graph):
        print(f"{room:9} -> {', '.join(sorted(graph[room])) or '(nothing)'}")
    for p in problems:
        print("layers:", p)
    print(f"layers: {len(problems)} problems, {len(graph)} rooms, no cycle" if not problems
          else f"layers: {len(problems)} problems")
    return 1 if problems else 0


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of nodes (first repeated last), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
