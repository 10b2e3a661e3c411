"""Database.get's fast path: mnemo_db_get_into into pooled buffers, grown when a value does
not fit, and the C function itself through ctypes."""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable

import pytest

import mnemo
from mnemo import _native


def text_of_length(n: int) -> str:
    """A JSON string value whose canonical text is exactly ``n`` bytes (n >= 2)."""
    return "x" * (n - 2)


@pytest.mark.parametrize(
    "length",
    [
        2,  # ""
        3,
        _native._FIRST_CAPACITY - 2,
        _native._FIRST_CAPACITY - 1,  # fits exactly with its NUL
        _native._FIRST_CAPACITY,  # one byte too many: the buffer grows
        _native._FIRST_CAPACITY + 1,
        5000,
        _native._KEPT_CAPACITY - 1,  # the largest value a kept buffer holds
        _native._KEPT_CAPACITY,  # read with mnemo_db_get instead
        1 << 20,
    ],
)
def test_values_of_every_size_around_the_buffers(db: mnemo.Database, length: int) -> None:
    value = text_of_length(length)
    db.set("s", "k", value)
    assert db.get("s", "k") == value
    assert db.get("s", "k") == value  # again, with the buffer the first read left


def test_buffers_grow_and_stay_bounded(db: mnemo.Database) -> None:
    db.set("s", "mid", text_of_length(5000))
    db.set("s", "huge", text_of_length(_native._KEPT_CAPACITY * 2))
    db.get("s", "mid")
    assert max(b.cap for b in _native._value_buffers) >= 5001
    db.get("s", "huge")
    assert all(b.cap <= _native._KEPT_CAPACITY for b in _native._value_buffers)


def test_every_kind_of_value(db: mnemo.Database) -> None:
    values: list[Any] = [
        None, True, 0, -1.5, "", "h\u00e9llo \U0001f600", [], {}, [1, [2]], {"a": {"b": None}},
        2**70,
    ]
    for i, value in enumerate(values):
        db.set("kinds", str(i), value)
    assert [db.get("kinds", str(i)) for i in range(len(values))] == values


def test_missing_deleted_and_bad_keys_raise_as_before(db: mnemo.Database) -> None:
    with pytest.raises(mnemo.NotFound) as info:
        db.get("s", "never")
    assert info.value.status == mnemo.Status.NOT_FOUND and "never" in info.value.message
    db.set("s", "gone", 1)
    db.delete("s", "gone")
    with pytest.raises(mnemo.NotFound):
        db.get("s", "gone")
    with pytest.raises(mnemo.NotFound):
        db.get("no-such-store", "k")
    with pytest.raises(mnemo.InvalidArgument):
        db.get("s", "")
    with pytest.raises(mnemo.InvalidArgument):
        db.get("", "k")
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        db.get("s", "a\0b")
    with pytest.raises(mnemo.InvalidArgument, match="NUL"):
        db.get("s\0", "k")
    with pytest.raises(mnemo.InvalidArgument, match="UTF-8"):
        db.get("s", "\ud800")
    with pytest.raises(TypeError):
        db.get("s", b"k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.get(["s"], "k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        db.get(b"s", "k")  # type: ignore[arg-type]
    # A failed read leaves the pooled buffers usable.
    db.set("s", "k", "fine")
    assert db.get("s", "k") == "fine"


def test_reads_work_after_logout(inst: mnemo.Instance) -> None:
    inst.create_user("bob")
    user = inst.login("bob")
    db = user.create_db("d")
    db.set("s", "k", {"kept": True})
    user.logout()
    assert db.get("s", "k") == {"kept": True}
    with pytest.raises(mnemo.LoggedOut):
        db.set("s", "k", 2)
    db.close()
    with pytest.raises(mnemo.InvalidArgument, match="closed"):
        db.get("s", "k")


def test_a_value_that_grows_between_the_two_calls(
    db: mnemo.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first call reports the length; before the retry a writer makes the value longer
    # still (up to past the kept size): the read loops until it fits, or falls back.
    sizes = [3000, 9000, _native._KEPT_CAPACITY * 2]
    db.set("s", "k", text_of_length(1500))
    real: Callable[..., int] = _native._get_into_unchecked
    calls = 0

    def racing(*args: Any) -> int:
        nonlocal calls
        status = real(*args)
        calls += 1
        if status == mnemo.Status.BUFFER_TOO_SMALL and sizes:
            db.set("s", "k", text_of_length(sizes.pop(0)))
        return status

    monkeypatch.setattr(_native, "_get_into_unchecked", racing)
    _native._value_buffers.clear()
    assert db.get("s", "k") == text_of_length(_native._KEPT_CAPACITY * 2)
    # Buffers of 1024, 2048, 4096 and 9001 bytes were each too small by then; the value
    # outgrew the kept size, so mnemo_db_get read it.
    assert calls == 4 and not sizes


def test_threads_never_share_a_buffer(user: mnemo.User) -> None:
    # Threads read values of different sizes through one handle at once; each must always
    # get its own value whole.
    db = user.create_db("shared")
    sizes = [2, 700, 1023, 1024, 3000, 20000, 70000]
    for i, size in enumerate(sizes):
        db.set("s", str(i), text_of_length(size))
    errors: list[str] = []

    def reader(i: int) -> None:
        want = text_of_length(sizes[i])
        for _ in range(150):
            got = db.get("s", str(i))
            if got != want:
                errors.append(f"reader {i} got {len(got)} bytes")
                return

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db.close()


def test_the_c_function_through_ctypes(db: mnemo.Database) -> None:
    lib = _native.lib
    db.set("s", "k", "hello")  # "\"hello\"": 7 bytes
    length = ctypes.c_size_t(99)
    buf = ctypes.create_string_buffer(b"x" * 16, 16)
    with db._handle.use() as ptr:
        assert lib.mnemo_db_get_into(ptr, b"s", b"k", None, 0, ctypes.byref(length)) == (
            mnemo.Status.BUFFER_TOO_SMALL
        )
        assert length.value == 7
        assert "8 bytes" in (_native.last_error_message() or "")
        assert lib.mnemo_db_get_into(ptr, b"s", b"k", buf, 7, ctypes.byref(length)) == (
            mnemo.Status.BUFFER_TOO_SMALL
        )
        assert length.value == 7 and buf.raw == b"\0" + b"x" * 15
        assert lib.mnemo_db_get_into(ptr, b"s", b"k", buf, 8, ctypes.byref(length)) == 0
        assert length.value == 7 and buf.raw == b'"hello"\0' + b"x" * 8
        assert lib.mnemo_db_get_into(ptr, b"s", b"no", buf, 16, ctypes.byref(length)) == (
            mnemo.Status.NOT_FOUND
        )
        assert length.value == 0 and buf.raw[0] == 0
        assert lib.mnemo_db_get_into(ptr, b"s", b"k", None, 8, ctypes.byref(length)) == (
            mnemo.Status.INVALID_ARGUMENT
        )
        assert lib.mnemo_db_get_into(ptr, b"s", b"k", buf, 16, None) == (
            mnemo.Status.INVALID_ARGUMENT
        )


def test_buffer_too_small_has_its_class() -> None:
    error = mnemo.errors.error_for_status(13, "buffer too small: x")
    assert type(error) is mnemo.BufferTooSmall and error.status == mnemo.Status.BUFFER_TOO_SMALL
    assert isinstance(error, mnemo.Error)


def test_store_names_are_encoded_once(db: mnemo.Database) -> None:
    db.set("cached-store", "k", 1)
    assert db.get("cached-store", "k") == 1
    assert _native.store_names["cached-store"] == b"cached-store"
    assert db.get("cached-store", "k") == 1
    assert len(_native.store_names) <= _native._STORE_NAMES_KEPT
