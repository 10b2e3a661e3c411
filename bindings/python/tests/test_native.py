"""The C functions called directly: NULL handling and the functions the classes never need."""

from __future__ import annotations

import ctypes

import pytest

import mnemo
from mnemo import _native

lib = _native.lib


@pytest.mark.parametrize(
    "name",
    [
        "mnemo_backend_free",
        "mnemo_instance_free",
        "mnemo_db_free",
        "mnemo_sync_free",
        "mnemo_string_free",
        "mnemo_txn_abort",
        "mnemo_subscription_free",
        "mnemo_subscription_cancel",
    ],
)
def test_free_functions_accept_null(name: str) -> None:
    getattr(lib, name)(None)


def test_backend_open_and_free() -> None:
    backend = _native.call_handle(lib.mnemo_backend_open, b"memory:")
    lib.mnemo_backend_free(backend)


def test_out_param_is_null_on_failure() -> None:
    out = ctypes.c_void_p(12345)
    assert lib.mnemo_backend_open(b"bogus:", ctypes.byref(out)) == 1
    assert out.value is None


def test_instance_open_null_backend() -> None:
    with pytest.raises(mnemo.InvalidArgument):
        _native.call_handle(lib.mnemo_instance_open, None)


@pytest.mark.parametrize(
    "call",
    [
        lambda: lib.mnemo_instance_device_id(None, ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_instance_create_user(None, b"x", None),
        lambda: lib.mnemo_instance_login(None, b"x", None, ctypes.byref(ctypes.c_void_p())),
        lambda: lib.mnemo_instance_list_users(None, ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_instance_enable_sync(None),
        lambda: lib.mnemo_instance_sync(None, ctypes.byref(ctypes.c_void_p())),
        lambda: lib.mnemo_user_create_db(None, b"x", ctypes.byref(ctypes.c_void_p())),
        lambda: lib.mnemo_user_logout(None),
        lambda: lib.mnemo_db_id(None, ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_db_set(None, b"s", b"k", b"1"),
        lambda: lib.mnemo_db_get(None, b"s", b"k", ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_backend_open(None, ctypes.byref(ctypes.c_void_p())),
        lambda: lib.mnemo_db_delete(None, b"s", b"k"),
        lambda: lib.mnemo_db_get_all(None, b"s", ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_db_grant(None, b"ed25519:x", b"read"),
        lambda: lib.mnemo_db_revoke(None, b"ed25519:x"),
        lambda: lib.mnemo_db_verify(None),
        lambda: lib.mnemo_sync_share(None, b"sha256:x", ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_sync_join(None, None, b"mnemo:x"),
        lambda: lib.mnemo_sync_untrack(None, None, b"127.0.0.1:1", b"sha256:x"),
        lambda: lib.mnemo_db_tips(None, ctypes.byref(_native.owned_str_t())),
        lambda: lib.mnemo_db_begin(None, ctypes.byref(ctypes.c_void_p())),
        lambda: lib.mnemo_txn_set(None, b"s", b"k", b"1"),
        lambda: lib.mnemo_txn_delete(None, b"s", b"k"),
        lambda: lib.mnemo_txn_commit(None, None),
    ],
)
def test_null_handles_are_invalid_argument(call) -> None:  # type: ignore[no-untyped-def]
    assert call() == 1
    assert "NULL" in (_native.last_error_message() or "")


def test_invalid_utf8_is_invalid_argument() -> None:
    assert lib.mnemo_backend_open(b"memory:\xff", ctypes.byref(ctypes.c_void_p())) == 1
    assert "UTF-8" in (_native.last_error_message() or "")


def test_null_optional_password_is_accepted() -> None:
    inst = _native.call_handle(
        lib.mnemo_instance_open, _native.call_handle(lib.mnemo_backend_open, b"memory:")
    )
    try:
        _native.check(lib.mnemo_instance_create_user(inst, b"nopw", None))
        user = _native.call_handle(lib.mnemo_instance_login, inst, b"nopw", None)
        _native.check(lib.mnemo_user_logout(user))
    finally:
        lib.mnemo_instance_free(inst)


def _raw_db() -> tuple[int, int, int]:
    inst = _native.call_handle(
        lib.mnemo_instance_open, _native.call_handle(lib.mnemo_backend_open, b"memory:")
    )
    _native.check(lib.mnemo_instance_create_user(inst, b"u", None))
    user = _native.call_handle(lib.mnemo_instance_login, inst, b"u", None)
    db = _native.call_handle(lib.mnemo_user_create_db, user, b"d")
    return inst, user, db


def _free_raw(inst: int, user: int, db: int) -> None:
    lib.mnemo_db_free(db)
    _native.check(lib.mnemo_user_logout(user))
    lib.mnemo_instance_free(inst)


def test_subscribe_null_arguments_do_not_take_user_data() -> None:
    destroyed: list[int | None] = []
    destroy = _native.destroy_cb_t(destroyed.append)
    change = _native.change_cb_t(lambda *args: None)
    inst, user, db = _raw_db()
    try:
        out = ctypes.c_void_p()
        assert lib.mnemo_db_subscribe(db, _native.change_cb_t(), 7, destroy, ctypes.byref(out)) == 1
        assert "cb" in (_native.last_error_message() or "") and out.value is None
        assert lib.mnemo_db_subscribe(None, change, 7, destroy, ctypes.byref(out)) == 1
        assert lib.mnemo_db_subscribe(db, change, 7, destroy, None) == 1
        assert destroyed == []
        # NULL destroy and NULL user_data are allowed.
        sub = _native.call_handle(lib.mnemo_db_subscribe, db, change, None, _native.destroy_cb_t())
        lib.mnemo_subscription_free(sub)
        # With a destroy: called once, with user_data, by the time free returns.
        sub = _native.call_handle(lib.mnemo_db_subscribe, db, change, 7, destroy)
        assert destroyed == []
        lib.mnemo_subscription_free(sub)
        assert destroyed == [7]
    finally:
        _free_raw(inst, user, db)


def test_subscribe_that_fails_never_destroys_user_data() -> None:
    destroyed: list[int | None] = []
    destroy = _native.destroy_cb_t(destroyed.append)
    change = _native.change_cb_t(lambda *args: None)
    inst, user, db = _raw_db()
    try:
        db_id = _native.call_string(lib.mnemo_db_id, db)
        _native.check(lib.mnemo_user_forget_db(user, db_id.encode()))
        out = ctypes.c_void_p()
        assert lib.mnemo_db_subscribe(db, change, 7, destroy, ctypes.byref(out)) == 2  # NOT_FOUND
        assert out.value is None and destroyed == []
    finally:
        _free_raw(inst, user, db)


def test_txn_commit_without_out_param() -> None:
    inst, user, db = _raw_db()
    try:
        txn = _native.call_handle(lib.mnemo_db_begin, db)
        _native.check(lib.mnemo_txn_set(txn, b"s", b"k", b"1"))
        _native.check(lib.mnemo_txn_commit(txn, None))  # out_entry_id is optional
        assert _native.call_string(lib.mnemo_db_get, db, b"s", b"k") == "1"
    finally:
        _free_raw(inst, user, db)


def test_a_panic_inside_an_exported_function_is_an_internal_error() -> None:
    """Debug builds (the tests') panic in mnemo_backend_open for "mnemo-test:panic"."""
    with pytest.raises(mnemo.InternalError) as info:
        mnemo.Instance.open("mnemo-test:panic")
    assert info.value.status == mnemo.Status.INTERNAL
    assert "forced panic" in info.value.message
    with mnemo.Instance.open("memory:") as inst:  # the library goes on working
        inst.create_user("after")
