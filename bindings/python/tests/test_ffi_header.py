"""include/mnemo_ffi.h, the declarations-only header for FFIs that read C themselves: what it
holds, that it agrees with include/mnemo.h, and that cffi (ABI mode) and LuaJIT load it
verbatim and run a flow through it. Also the two ABI rules the header's conventions state:
the status constants' type, and which calls set and clear the thread's error message."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import REPO_DIR

MNEMO_H = REPO_DIR / "include" / "mnemo.h"
FFI_H = REPO_DIR / "include" / "mnemo_ffi.h"
LIBRARY = os.environ.get("MNEMO_LIB") or str(REPO_DIR / "target" / "debug" / "libmnemo.so")


def without_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))


def function_names(text: str) -> set[str]:
    return set(re.findall(r"\b(mnemo_\w+)\s*\(", without_comments(text)))


def status_macros() -> dict[str, int]:
    text = MNEMO_H.read_text(encoding="utf-8")
    return {n: int(v) for n, v in re.findall(r"^#define (MNEMO_STATUS_\w+) (-?\d+)$", text, re.M)}


def test_declarations_only() -> None:
    code = without_comments(FFI_H.read_text(encoding="utf-8"))
    assert "#" not in code, "a preprocessor line"
    assert "MNEMO_MUST_USE" not in code and "extern" not in code
    for line in code.splitlines():
        if "struct" in line:  # only in the typedefs of the opaque handles
            assert re.fullmatch(r"typedef struct (mnemo_\w+) \1;", line.strip()), line
    # Only types that cffi and LuaJIT know without a header.
    words = set(re.findall(r"\b\w+_t\b|\bbool\b", code))
    assert words <= {"bool", "size_t", "int32_t", "uint32_t", "int64_t", "uint64_t", "uint8_t"}, words


def test_same_functions_and_statuses_as_mnemo_h() -> None:
    ffi_text = FFI_H.read_text(encoding="utf-8")
    names = function_names(MNEMO_H.read_text(encoding="utf-8"))
    assert len(names) >= 20
    assert function_names(ffi_text) == names
    enum = dict(re.findall(r"^\s*(MNEMO_STATUS_\w+) = (-?\d+),$", ffi_text, re.M))
    assert {n: int(v) for n, v in enum.items()} == status_macros()


def test_agrees_with_mnemo_h_for_a_c_compiler(tmp_path: Path) -> None:
    """Both headers in one C file: every function, typedef and constant must be compatible
    (mnemo_ffi.h first, so that mnemo.h's macros do not rewrite its enum)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    src = tmp_path / "both.c"
    src.write_text(
        "#include <stdbool.h>\n#include <stddef.h>\n#include <stdint.h>\n"
        '#include "mnemo_ffi.h"\n#include "mnemo.h"\n'
        "int main(void) { return MNEMO_STATUS_OK; }\n"
    )
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{REPO_DIR / 'include'}",
                    "-c", str(src), "-o", str(tmp_path / "both.o")], check=True)


@pytest.mark.parametrize("compiler", ["gcc", "g++"])
def test_status_constants_are_mnemo_status(compiler: str, tmp_path: Path) -> None:
    """The header says the MNEMO_STATUS_* macros have the type mnemo_status in C and C++."""
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} not found")
    names = sorted(status_macros())
    if compiler == "gcc":
        asserts = "".join(f'_Static_assert(_Generic({n}, mnemo_status: 1, default: 0), "{n}");\n' for n in names)
        src, std = tmp_path / "types.c", "-std=c11"
    else:
        asserts = "#include <type_traits>\n" + "".join(
            f'static_assert(std::is_same<decltype({n}), mnemo_status>::value, "{n}");\n' for n in names)
        src, std = tmp_path / "types.cpp", "-std=c++17"
    src.write_text('#include "mnemo.h"\n' + asserts + "int main(void) { return 0; }\n")
    subprocess.run([compiler, std, "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{REPO_DIR / 'include'}",
                    "-c", str(src), "-o", str(tmp_path / "types.o")], check=True)


def test_every_status_function_sets_and_clears_the_message_through_guard() -> None:
    """The header's rule (status-returning functions clear the thread's message and set it on
    failure; the others never touch it) holds because every exported function returning
    mnemo_status runs its body in `guard`, and only `guard` writes the message."""
    found = 0
    for path in sorted((REPO_DIR / "src" / "ffi").glob("*.rs")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r'pub (?:unsafe )?extern "C" fn (\w+)\((?:.|\n)*?\)\s*(->\s*[\w:*\s]+?)?\s*\{', text):
            body = text[m.end():text.find("\n}\n", m.end())]
            returns_status = (m.group(2) or "").replace("->", "").strip() == "mnemo_status"
            if returns_status:
                found += 1
                assert "guard(" in body, f"{path.name}: {m.group(1)} returns mnemo_status without guard"
            else:
                assert re.search(r"\bguard\(", body) is None, f"{path.name}: {m.group(1)} uses guard"
    assert found >= 20
    guard_rs = (REPO_DIR / "src" / "ffi" / "guard.rs").read_text(encoding="utf-8")
    writers = [p.name for p in (REPO_DIR / "src").rglob("*.rs")
               if "set_last_error(" in p.read_text(encoding="utf-8")]
    assert writers == ["guard.rs"] and "fn set_last_error" in guard_rs


# ----- cffi, ABI mode: the header loaded verbatim -----

@pytest.fixture(scope="module")
def cffi_lib():
    cffi = pytest.importorskip("cffi", reason="cffi is not installed (scripts/test-all installs it)")
    ffi = cffi.FFI()
    ffi.cdef(FFI_H.read_text(encoding="utf-8"))
    return ffi, ffi.dlopen(LIBRARY)


def test_cffi_flow(cffi_lib) -> None:
    ffi, lib = cffi_lib

    def message():
        m = lib.mnemo_last_error_message()
        return None if m == ffi.NULL else ffi.string(m).decode("utf-8")

    def ok(status: int) -> None:
        assert status == lib.MNEMO_STATUS_OK, (ffi.string(lib.mnemo_status_str(status)), message())
        assert message() is None

    def take(out) -> str:
        s = ffi.string(out[0]).decode("utf-8")
        lib.mnemo_string_free(out[0])
        return s

    assert lib.mnemo_version_number() == lib.MNEMO_VERSION_NUMBER
    for name, value in status_macros().items():
        assert getattr(lib, name) == value
        assert ffi.string(lib.mnemo_status_str(value)).decode() == name
    backend = ffi.new("mnemo_backend **")
    inst = ffi.new("mnemo_instance **")
    user = ffi.new("mnemo_user **")
    db = ffi.new("mnemo_database **")
    out = ffi.new("char **")
    ok(lib.mnemo_backend_open(b"memory:", backend))
    ok(lib.mnemo_instance_open(backend[0], inst))
    name = "zoë".encode("utf-8")  # strings cross as UTF-8 bytes, whatever the locale
    ok(lib.mnemo_instance_create_user(inst[0], name, ffi.NULL))
    ok(lib.mnemo_instance_login(inst[0], name, ffi.NULL, user))
    ok(lib.mnemo_instance_list_users(inst[0], out))
    assert take(out) == '["zoë"]'
    ok(lib.mnemo_user_create_db(user[0], b"notes", db))
    ok(lib.mnemo_db_set(db[0], b"todo", b"milk", '{"by": "zoë"}'.encode("utf-8")))
    ok(lib.mnemo_db_get(db[0], b"todo", b"milk", out))
    assert take(out) == '{"by":"zoë"}'

    # The error path: the status, then this thread's message.
    assert lib.mnemo_db_get(db[0], b"todo", b"bread", out) == lib.MNEMO_STATUS_NOT_FOUND
    assert out[0] == ffi.NULL
    assert "not found" in message()
    assert lib.mnemo_db_set(db[0], b"todo", b"\xff", b"1") == lib.MNEMO_STATUS_INVALID_ARGUMENT
    assert "UTF-8" in message()

    lib.mnemo_db_free(db[0])
    ok(lib.mnemo_user_logout(user[0]))
    lib.mnemo_instance_free(inst[0])


def test_cffi_which_calls_set_and_clear_the_message(cffi_lib) -> None:
    """Status-returning calls clear and set this thread's message; other calls leave it; a
    failure on another thread leaves this thread's message alone."""
    ffi, lib = cffi_lib
    backend = ffi.new("mnemo_backend **")

    def message():
        m = lib.mnemo_last_error_message()
        return None if m == ffi.NULL else ffi.string(m).decode("utf-8")

    assert lib.mnemo_backend_open(b"nope:", backend) == lib.MNEMO_STATUS_INVALID_ARGUMENT
    first = message()
    assert first and "nope" in first
    lib.mnemo_string_free(ffi.NULL)
    lib.mnemo_backend_free(ffi.NULL)
    lib.mnemo_txn_abort(ffi.NULL)
    lib.mnemo_status_str(3)
    lib.mnemo_version()
    assert message() == first, "a function that returns no status changed the message"

    seen = {}

    def elsewhere() -> None:
        seen["before"] = message()
        assert lib.mnemo_backend_open(b"other:", backend) == lib.MNEMO_STATUS_INVALID_ARGUMENT
        seen["after"] = message()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert seen["before"] is None and "other" in seen["after"]
    assert message() == first, "another thread's failure changed this thread's message"

    assert lib.mnemo_backend_open(b"memory:", backend) == lib.MNEMO_STATUS_OK
    assert message() is None, "a success must clear the message"
    lib.mnemo_backend_free(backend[0])


# ----- LuaJIT: tests/ffi/flow.lua loads the header verbatim with ffi.cdef -----

def test_luajit_flow() -> None:
    luajit = shutil.which("luajit")
    if luajit is None:
        pytest.skip("luajit not found (scripts/test-all installs it through apt when root)")
    run = subprocess.run([luajit, str(REPO_DIR / "tests" / "ffi" / "flow.lua"), LIBRARY, str(FFI_H)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"luajit flow: [1-9]\d* passed, 0 failed", run.stdout), run.stdout
