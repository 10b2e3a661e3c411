#!/usr/bin/env python3
"""The docs cannot rot: docs/reference.md must be what docs/gen_reference.py generates from
include/mnemo.h, and every code block in docs/*.md (plus README.md's Python) must work:

- a ```c block with main() is compiled (C11, -Wall -Wextra -Werror -pedantic) against the
  debug build (target/debug) and run; it must exit 0;
- a ```c block without main() (a declaration) is compiled after #include "mnemo.h", so it
  must agree with the header;
- a ```python block is run with MNEMO_LIB=target/debug/libmnemo.so and the package from
  bindings/python; it must exit 0;
- a block of any language right after a line `<!-- example: PATH -->` must be the file PATH
  as it is (scripts/run-ffi-examples runs those files); it is compared, not run here.

Blocks run in a temp dir. Prints one line per block and "N passed, N failed".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBDIR = ROOT / "target" / "debug"
CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", f"-I{ROOT / 'include'}"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\s*$", re.S | re.M)
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n$")


def blocks() -> list[tuple[str, int, str, str]]:
    """(file, line, language, code) for every c/python block to check; language "example:PATH"
    for a block that must be the file PATH."""
    found = []
    files = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            lang, code = m.group(1), m.group(2)
            example = EXAMPLE.search(text, 0, m.start())
            if example and example.end() == m.start():
                lang = "example:" + example.group(1)
            elif path.name == "README.md" and lang != "python":
                continue  # README's C is the readme-c step's
            if lang in ("c", "python") or lang.startswith("example:"):
                line = text.count("\n", 0, m.start()) + 1
                found.append((str(path.relative_to(ROOT)), line, lang, code))
    return found


def run(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, f"timed out: {' '.join(cmd)}"
    return p.returncode == 0, p.stdout + p.stderr


def check_c(code: str, tmp: str, n: int) -> tuple[bool, str]:
    src = Path(tmp) / f"block{n}.c"
    if re.search(r"\bint\s+main\s*\(", code):
        src.write_text(code)
        exe = str(Path(tmp) / f"block{n}")
        ok, out = run(["gcc", *CFLAGS, str(src), "-o", exe, f"-L{LIBDIR}", f"-Wl,-rpath,{LIBDIR}",
                       "-lmnemo", "-lpthread"], tmp)
        if not ok:
            return ok, out
        return run([exe], tmp)
    src.write_text('#include "mnemo.h"\n' + code)
    return run(["gcc", *CFLAGS, "-c", str(src), "-o", str(src.with_suffix(".o"))], tmp)


def check_python(code: str, tmp: str, n: int) -> tuple[bool, str]:
    src = Path(tmp) / f"block{n}.py"
    src.write_text(code)
    env = dict(os.environ, MNEMO_LIB=str(LIBDIR / "libmnemo.so"),
               PYTHONPATH=str(ROOT / "bindings" / "python"))
    return run([sys.executable, str(src)], tmp, env)


def check_example(path: str, code: str) -> tuple[bool, str]:
    file = ROOT / path
    if not file.is_file():
        return False, f"{path} does not exist"
    if file.read_text(encoding="utf-8") != code:
        return False, f"the block is not {path} as it is: copy the file into the block"
    return True, ""


def main() -> int:
    passed = failed = 0
    gen = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_reference.py"), "--check"],
                         capture_output=True, text=True)
    print(("ok   " if gen.returncode == 0 else "FAIL ") + "docs/reference.md matches include/mnemo.h")
    if gen.returncode == 0:
        passed += 1
    else:
        failed += 1
        print("     " + gen.stdout.strip())
    with tempfile.TemporaryDirectory(prefix="mnemo-docs.") as tmp:
        for n, (path, line, lang, code) in enumerate(blocks()):
            if lang.startswith("example:"):
                ok, out = check_example(lang.split(":", 1)[1], code)
            else:
                ok, out = (check_c if lang == "c" else check_python)(code, tmp, n)
            print(f"{'ok  ' if ok else 'FAIL'} {path}:{line} ```{lang}")
            if ok:
                passed += 1
            else:
                failed += 1
                print("\n".join("     " + l for l in out.strip().splitlines()[-30:]))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
