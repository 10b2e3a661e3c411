"""Library-wide functions, errors, and how the library is found."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PYTHON_DIR, REPO_DIR

import mnemo
from mnemo import _native

ERRORS = {
    mnemo.Status.INVALID_ARGUMENT: mnemo.InvalidArgument,
    mnemo.Status.NOT_FOUND: mnemo.NotFound,
    mnemo.Status.ALREADY_EXISTS: mnemo.AlreadyExists,
    mnemo.Status.AUTH_FAILED: mnemo.AuthFailed,
    mnemo.Status.PERMISSION_DENIED: mnemo.PermissionDenied,
    mnemo.Status.LOGGED_OUT: mnemo.LoggedOut,
    mnemo.Status.SYNC_DISABLED: mnemo.SyncDisabled,
    mnemo.Status.NETWORK: mnemo.NetworkError,
    mnemo.Status.STORAGE: mnemo.StorageError,
    mnemo.Status.CORRUPT: mnemo.Corrupt,
    mnemo.Status.INTERNAL: mnemo.InternalError,
    mnemo.Status.BUSY: mnemo.Busy,
    mnemo.Status.BUFFER_TOO_SMALL: mnemo.BufferTooSmall,
}


def header_statuses() -> dict[str, int]:
    """Every MNEMO_STATUS_* constant of include/mnemo.h, by name without the prefix."""
    header = (REPO_DIR / "include" / "mnemo.h").read_text(encoding="utf-8")
    return {
        name: int(value)
        for name, value in re.findall(r"^#define MNEMO_STATUS_(\w+) (-?\d+)$", header, re.MULTILINE)
    }


def test_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", mnemo.version())
    major, minor, patch = (int(p) for p in mnemo.version().split("."))
    assert mnemo.version_number() == major * 1_000_000 + minor * 1_000 + patch


def test_the_status_table_is_the_headers() -> None:
    # The header's constants come from the library's one status list; this package's table
    # must be exactly that list, and every error status has its exception class.
    assert {s.name: s.value for s in mnemo.Status} == header_statuses()
    assert set(ERRORS) == set(mnemo.Status) - {mnemo.Status.OK}


def test_status_names() -> None:
    assert mnemo.status_name(0) == "MNEMO_STATUS_OK"
    for status in mnemo.Status:
        assert mnemo.status_name(status) == f"MNEMO_STATUS_{status.name}"
    assert mnemo.status_name(99) == "MNEMO_STATUS_UNKNOWN"
    assert mnemo.status_name(-1) == "MNEMO_STATUS_UNKNOWN"
    # Codes past int32_t are unknown, not their low bits' names (2**32 + 2 once named 2).
    for code in (2**31, -(2**31) - 1, 2**32 + 2, 2**64 + 1, -(2**64)):
        assert mnemo.status_name(code) == "MNEMO_STATUS_UNKNOWN", code
    for wrong in (2.0, "2", None):
        with pytest.raises(TypeError):
            mnemo.status_name(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize("status,cls", sorted(ERRORS.items()))
def test_error_classes(status: int, cls: type) -> None:
    assert issubclass(cls, mnemo.Error)
    err = mnemo.errors.error_for_status(status, "detail")
    assert type(err) is cls
    assert err.status == status == int(mnemo.Status(status))
    assert type(err.status) is mnemo.Status
    assert err.message == str(err) == "detail"
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and again.status == status and again.message == "detail"


def test_unknown_status_gives_base_error() -> None:
    err = mnemo.errors.error_for_status(42, "future")
    assert type(err) is mnemo.Error and err.status == 42
    assert type(err.status) is int and repr(err) == "Error('future', status=42)"


def test_status_is_the_enum(inst: mnemo.Instance) -> None:
    # .status is a mnemo.Status member: named, and still equal to the number.
    with pytest.raises(mnemo.AuthFailed) as caught:
        inst.login("nobody")
    status = caught.value.status
    assert type(status) is mnemo.Status and status is mnemo.Status.AUTH_FAILED
    assert status == 4 and status.name == "AUTH_FAILED"
    assert "status=Status.AUTH_FAILED" in repr(caught.value)
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again.status) is mnemo.Status and again.status is mnemo.Status.AUTH_FAILED


def test_python_flavoured_bases() -> None:
    assert issubclass(mnemo.InvalidArgument, ValueError)
    assert issubclass(mnemo.NotFound, LookupError)


def test_check_reads_the_last_error_message() -> None:
    with pytest.raises(mnemo.InvalidArgument) as info:
        _native.check(_native.lib.mnemo_backend_open(b"nope", None))
    assert info.value.status == 1
    assert "out" in info.value.message  # "out-parameter 'out' is NULL"
    # A successful call clears the thread's last error.
    assert _native.lib.mnemo_instance_enable_sync(None) == 1
    assert _native.last_error_message()
    assert mnemo.Instance.open("memory:")
    assert _native.last_error_message() is None


def test_ok_does_not_raise() -> None:
    _native.check(0)


def _import_with(env_lib: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MNEMO_LIB=env_lib, PYTHONPATH=str(PYTHON_DIR))
    code = "import mnemo, mnemo._native as n; print(n.LIBRARY_PATH); print(mnemo.version())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_mnemo_lib_env_var_is_used() -> None:
    proc = _import_with(_native.LIBRARY_PATH)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [_native.LIBRARY_PATH, mnemo.version()]


def test_bad_mnemo_lib_fails_clearly() -> None:
    proc = _import_with("/nonexistent/libmnemo.so")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "MNEMO_LIB" in proc.stderr


def test_build_tree_is_searched() -> None:
    paths = _native.candidate_paths()
    assert set(paths[-2:]) == {
        REPO_DIR / "target" / "release" / "libmnemo.so",
        REPO_DIR / "target" / "debug" / "libmnemo.so",
    }


@pytest.mark.parametrize("newer", ["debug", "release"])
def test_the_freshest_build_is_chosen(
    newer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A release build from last week must not shadow this morning's `cargo build`, nor
    # the other way round: the more recently written library comes first.
    older = "release" if newer == "debug" else "debug"
    for profile, mtime in ((older, 1_000_000), (newer, 2_000_000)):
        lib = tmp_path / "target" / profile / "libmnemo.so"
        lib.parent.mkdir(parents=True)
        lib.write_bytes(b"")
        os.utime(lib, (mtime, mtime))
    monkeypatch.setattr(_native, "_REPO_DIR", tmp_path)
    paths = _native.candidate_paths()
    assert paths[-2:] == [
        tmp_path / "target" / newer / "libmnemo.so",
        tmp_path / "target" / older / "libmnemo.so",
    ]


def test_a_missing_build_comes_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = tmp_path / "target" / "release" / "libmnemo.so"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    monkeypatch.setattr(_native, "_REPO_DIR", tmp_path)
    assert _native.candidate_paths()[-2:] == [lib, tmp_path / "target" / "debug" / "libmnemo.so"]


def test_objects_left_open_at_exit_are_freed_quietly() -> None:
    code = (
        "import mnemo\n"
        "inst = mnemo.Instance.open('memory:')\n"
        "inst.create_user('bob')\n"
        "inst.enable_sync()\n"
        "user = inst.login('bob')\n"
        "db = user.create_db('d')\n"
        "db.set('s', 'k', 1)\n"
        "sync = inst.sync\n"
        "sub = db.subscribe(lambda *change: None)\n"
        "txn = db.transaction()\n"
        "txn.set('s', 'k', 2)\n"
        "db.set('s', 'k', 3)\n"
        "cycle = [inst, user, db, sync, sub, txn]\n"
        "cycle.append(cycle)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
