"""The one place that knows the C ABI: loads libmnemo and declares every function.

Nothing outside this module calls ``mnemo_*`` symbols by name except through :data:`lib`.
To follow a new function in ``include/mnemo.h``, add one line to :data:`SIGNATURES`
(``tests/test_declarations.py`` fails until the table matches the header).

The library is searched, in order, at:

1. the path in the ``MNEMO_LIB`` environment variable (an error if it cannot be loaded);
2. a ``libmnemo.so*`` file next to this package's files;
3. the build tree: ``<repo>/target/debug/libmnemo.so`` and ``<repo>/target/release/libmnemo.so``,
   the more recently built first (so a fresh ``cargo build`` wins over an old release build).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    byref,
    c_char,
    c_char_p,
    c_int,
    c_int32,
    c_size_t,
    c_uint32,
    c_void_p,
)
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import InternalError, InvalidArgument, Status, error_for_status

# --- C types -------------------------------------------------------------------------

#: ``mnemo_status``: an ``int32_t``, 0 on success.
status_t = c_int32
#: Any opaque handle (``mnemo_instance *``, ``mnemo_user *``...).
handle_t = c_void_p
#: An out-parameter receiving a handle (``mnemo_x **``).
handle_out_t = POINTER(c_void_p)
#: An owned string returned by mnemo, freed with ``mnemo_string_free``. ``POINTER(c_char)``
#: and not ``c_char_p``: ctypes would turn a ``c_char_p`` into ``bytes`` and lose the pointer.
owned_str_t = POINTER(c_char)
#: An out-parameter receiving an owned string (``char **``).
owned_str_out_t = POINTER(owned_str_t)
#: A buffer the caller provides (``char *buf`` with its ``size_t cap``): the same ctypes type
#: as :data:`owned_str_t`; a ``ctypes.create_string_buffer`` is passed as it is.
buffer_t = POINTER(c_char)
#: An out-parameter receiving a length (``size_t *``).
size_out_t = POINTER(c_size_t)
#: A borrowed string in (``const char *``), or a static string out (never freed).
str_t = c_char_p
#: ``void *user_data``: passed back to callbacks unchanged (the wrapper passes a small
#: integer key, never a real pointer).
user_data_t = c_void_p
#: ``mnemo_change_cb``: ``void (*)(void *user_data, const char *db_id, const char *entry_id,
#: int32_t remote)``. The strings arrive as ``bytes`` (copied: they are valid only during the
#: call), ``user_data`` as an ``int`` (or None for NULL), ``remote`` as 0 or 1.
change_cb_t = CFUNCTYPE(None, user_data_t, c_char_p, c_char_p, c_int32)
#: ``mnemo_destroy_cb``: ``void (*)(void *user_data)``.
destroy_cb_t = CFUNCTYPE(None, user_data_t)

# --- Every function of include/mnemo.h: name -> (restype, argtypes) --------------------

SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    # library
    "mnemo_version": (str_t, []),
    "mnemo_version_number": (c_uint32, []),
    "mnemo_last_error_message": (str_t, []),
    "mnemo_status_str": (str_t, [status_t]),
    "mnemo_string_free": (None, [owned_str_t]),
    # backend
    "mnemo_backend_open": (status_t, [str_t, handle_out_t]),
    "mnemo_backend_free": (None, [handle_t]),
    # instance
    "mnemo_instance_open": (status_t, [handle_t, handle_out_t]),
    "mnemo_instance_open_with_argon2": (
        status_t,
        [handle_t, c_uint32, c_uint32, c_uint32, handle_out_t],
    ),
    "mnemo_instance_free": (None, [handle_t]),
    "mnemo_instance_limits": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_instance_stats": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_instance_set_limits": (status_t, [handle_t, str_t]),
    "mnemo_instance_device_id": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_instance_create_user": (status_t, [handle_t, str_t, str_t]),
    "mnemo_instance_login": (status_t, [handle_t, str_t, str_t, handle_out_t]),
    "mnemo_instance_list_users": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_instance_enable_sync": (status_t, [handle_t]),
    "mnemo_instance_sync": (status_t, [handle_t, handle_out_t]),
    # user
    "mnemo_user_create_db": (status_t, [handle_t, str_t, handle_out_t]),
    "mnemo_user_load_db": (status_t, [handle_t, str_t, handle_out_t]),
    "mnemo_user_find_db": (status_t, [handle_t, str_t, handle_out_t]),
    "mnemo_user_list_dbs": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_user_forget_db": (status_t, [handle_t, str_t]),
    "mnemo_user_add_private_key": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_user_remove_key": (status_t, [handle_t, str_t]),
    "mnemo_user_set_default_key": (status_t, [handle_t, str_t]),
    "mnemo_user_list_keys": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_user_get_signing_key": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_user_change_password": (status_t, [handle_t, str_t, str_t]),
    "mnemo_user_admin_list_users": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_user_admin_disable": (status_t, [handle_t, str_t]),
    "mnemo_user_admin_enable": (status_t, [handle_t, str_t]),
    "mnemo_user_admin_delete": (status_t, [handle_t, str_t]),
    "mnemo_user_logout": (status_t, [handle_t]),
    # database
    "mnemo_db_id": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_db_set": (status_t, [handle_t, str_t, str_t, str_t]),
    "mnemo_db_insert": (status_t, [handle_t, str_t, str_t, owned_str_out_t]),
    "mnemo_db_get": (status_t, [handle_t, str_t, str_t, owned_str_out_t]),
    "mnemo_db_get_into": (status_t, [handle_t, str_t, str_t, buffer_t, c_size_t, size_out_t]),
    "mnemo_db_delete": (status_t, [handle_t, str_t, str_t]),
    "mnemo_db_get_all": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_db_set_path": (status_t, [handle_t, str_t, str_t, str_t, str_t]),
    "mnemo_db_get_path": (status_t, [handle_t, str_t, str_t, str_t, owned_str_out_t]),
    "mnemo_db_history": (status_t, [handle_t, str_t, str_t, c_size_t, owned_str_out_t]),
    "mnemo_db_scan": (status_t, [handle_t, str_t, str_t, str_t, c_size_t, owned_str_out_t]),
    "mnemo_db_cursor": (status_t, [handle_t, str_t, str_t, str_t, handle_out_t]),
    "mnemo_db_grant": (status_t, [handle_t, str_t, str_t]),
    "mnemo_db_revoke": (status_t, [handle_t, str_t]),
    "mnemo_db_verify": (status_t, [handle_t]),
    "mnemo_db_tips": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_db_begin": (status_t, [handle_t, handle_out_t]),
    "mnemo_db_subscribe": (
        status_t,
        [handle_t, change_cb_t, user_data_t, destroy_cb_t, handle_out_t],
    ),
    "mnemo_db_free": (None, [handle_t]),
    # cursor
    "mnemo_cursor_next": (status_t, [handle_t, owned_str_out_t, owned_str_out_t]),
    "mnemo_cursor_free": (None, [handle_t]),
    # events
    "mnemo_db_watch": (status_t, [handle_t, handle_out_t]),
    "mnemo_events_next": (status_t, [handle_t, c_uint32, owned_str_out_t]),
    "mnemo_events_fd": (status_t, [handle_t, POINTER(c_int)]),
    "mnemo_events_free": (None, [handle_t]),
    # transaction
    "mnemo_txn_set": (status_t, [handle_t, str_t, str_t, str_t]),
    "mnemo_txn_set_path": (status_t, [handle_t, str_t, str_t, str_t, str_t]),
    "mnemo_txn_delete": (status_t, [handle_t, str_t, str_t]),
    "mnemo_txn_commit": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_txn_abort": (None, [handle_t]),
    # subscription
    "mnemo_subscription_free": (None, [handle_t]),
    "mnemo_subscription_cancel": (None, [handle_t]),
    "mnemo_db_flush_notifications": (status_t, [handle_t, c_uint32]),
    # sync
    "mnemo_sync_listen": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_sync_unlisten": (status_t, [handle_t, str_t]),
    "mnemo_sync_connect": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_sync_db": (status_t, [handle_t, handle_t, str_t, str_t]),
    "mnemo_sync_track": (status_t, [handle_t, handle_t, str_t, str_t]),
    "mnemo_sync_untrack": (status_t, [handle_t, handle_t, str_t, str_t]),
    "mnemo_sync_tracks": (status_t, [handle_t, handle_t, owned_str_out_t]),
    "mnemo_sync_share": (status_t, [handle_t, str_t, owned_str_out_t]),
    "mnemo_sync_advertise": (status_t, [handle_t, str_t]),
    "mnemo_sync_request_access": (status_t, [handle_t, handle_t, str_t, str_t, owned_str_out_t]),
    "mnemo_sync_list_requests": (status_t, [handle_t, handle_t, owned_str_out_t]),
    "mnemo_sync_approve": (status_t, [handle_t, handle_t, str_t]),
    "mnemo_sync_reject": (status_t, [handle_t, handle_t, str_t]),
    "mnemo_sync_auto_approve": (status_t, [handle_t, handle_t, str_t, str_t]),
    "mnemo_sync_join": (status_t, [handle_t, handle_t, str_t]),
    "mnemo_sync_flush": (status_t, [handle_t, c_uint32]),
    "mnemo_sync_limits": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_sync_stats": (status_t, [handle_t, owned_str_out_t]),
    "mnemo_sync_set_limits": (status_t, [handle_t, str_t]),
    "mnemo_sync_free": (None, [handle_t]),
}

# --- Loading ---------------------------------------------------------------------------

_PACKAGE_DIR = Path(__file__).resolve().parent
#: The repository root: three levels up from this file (bindings/python/mnemo/_native.py).
_REPO_DIR = _PACKAGE_DIR.parents[2]

if sys.platform == "darwin":
    _LIB_NAME = "libmnemo.dylib"
elif sys.platform == "win32":
    _LIB_NAME = "mnemo.dll"
else:
    _LIB_NAME = "libmnemo.so"


def candidate_paths() -> list[Path]:
    """The places searched for the library when ``MNEMO_LIB`` is not set, in order."""
    beside = sorted(_PACKAGE_DIR.glob(_LIB_NAME + "*"), key=lambda p: (p.name != _LIB_NAME, p.name))
    build = [_REPO_DIR / "target" / profile / _LIB_NAME for profile in ("debug", "release")]
    return beside + sorted(build, key=_built_at, reverse=True)


def _built_at(path: Path) -> float:
    """When ``path`` was last written (its mtime), or -inf if it cannot be read."""
    try:
        return path.stat().st_mtime
    except OSError:
        return float("-inf")


def _load() -> tuple[ctypes.CDLL, str]:
    override = os.environ.get("MNEMO_LIB")
    if override:
        try:
            return ctypes.CDLL(override), override
        except OSError as e:
            raise ImportError(f"mnemo: cannot load MNEMO_LIB={override!r}: {e}") from e
    tried = candidate_paths()
    for path in tried:
        if path.is_file():
            try:
                return ctypes.CDLL(str(path)), str(path)
            except OSError as e:
                raise ImportError(f"mnemo: cannot load {path}: {e}") from e
    raise ImportError(
        "mnemo: libmnemo not found; set MNEMO_LIB or build it with `cargo build`. Tried: "
        + ", ".join(str(p) for p in tried)
    )


def _declare(library: ctypes.CDLL, path: str) -> None:
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            fn = getattr(library, name)
        except AttributeError:
            raise ImportError(f"mnemo: {path} does not export {name}; is it out of date?") from None
        fn.restype = restype
        fn.argtypes = argtypes


lib, LIBRARY_PATH = _load()
_declare(lib, LIBRARY_PATH)
# A twin of mnemo_db_get_into without argtypes, for get_value only: ctypes then converts no
# argument (checking six arguments against argtypes costs about twice the C call itself),
# so every argument must have its C type already: a c_void_p, bytes, a ctypes buffer, a
# c_size_t and a byref (a bare int would be passed as a C int). lib[name] makes a new
# function object, so lib.mnemo_db_get_into keeps its argtypes.
_get_into_unchecked = lib["mnemo_db_get_into"]
_get_into_unchecked.restype = status_t

# --- Helpers shared by the wrapper classes ---------------------------------------------


def last_error_message() -> str | None:
    """The detail of the last failed call on this thread, or None."""
    raw = lib.mnemo_last_error_message()
    return None if raw is None else raw.decode("utf-8", errors="replace")


def status_name(status: int) -> str:
    """The static name of a status code, e.g. ``"MNEMO_STATUS_NOT_FOUND"``; TypeError for
    what is not an int."""
    if not isinstance(status, int):
        raise TypeError(f"a status is an int, not {type(status).__name__}")
    if not -(2**31) <= status < 2**31:
        # Not an int32_t: ctypes would pass only its low bits (2**32 + 2 would name 2).
        return "MNEMO_STATUS_UNKNOWN"
    name: bytes = lib.mnemo_status_str(status)
    return name.decode("ascii")


def check(status: int) -> None:
    """Raises the :class:`~mnemo.errors.Error` subclass for ``status`` unless it is OK.

    Must be called right after the C call: the message is read from the library's
    thread-local last error, which the next mnemo call on this thread replaces.
    """
    if status == Status.OK:
        return
    message = last_error_message() or status_name(status)
    raise error_for_status(status, message)


def encode(value: str, what: str) -> bytes:
    """A Python string as a NUL-terminated UTF-8 argument.

    Raises TypeError if ``value`` is not a ``str``, and InvalidArgument if it contains a
    NUL character (C would silently cut it there) or cannot be encoded (lone surrogates).
    """
    if type(value) is str and "\0" not in value:
        try:
            return value.encode("utf-8")  # the common case, checked in two steps
        except UnicodeEncodeError:
            pass
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise InvalidArgument(f"invalid argument: {what} contains a NUL character")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"invalid argument: {what} is not encodable as UTF-8: {e}") from None


#: Encoded store names, by name: a program uses few stores, so the hot paths
#: (:meth:`mnemo.Database.get` and :meth:`~mnemo.Database.set`) look each up instead of
#: encoding it again. Holds at most :data:`_STORE_NAMES_KEPT` names (the first ones seen),
#: only ``str`` names that encode (the library still checks each name on every call).
store_names: dict[str, bytes] = {}
_STORE_NAMES_KEPT = 256


def encode_limits(limits: dict[str, int]) -> bytes:
    """Named limits as the JSON object ``mnemo_*_set_limits`` takes.

    Raises TypeError if a value is not an ``int`` (``bool`` included).
    """
    for name, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return json.dumps(limits).encode("utf-8")


def encode_store(name: str) -> bytes:
    """As :func:`encode` for a store name, remembered in :data:`store_names`."""
    try:
        return store_names[name]
    except (KeyError, TypeError):
        pass
    encoded = encode(name, "store")
    if type(name) is str and len(store_names) < _STORE_NAMES_KEPT:
        store_names[name] = encoded
    return encoded


def encode_optional(value: str | None, what: str) -> bytes | None:
    """As :func:`encode`, with None passed through as NULL."""
    return None if value is None else encode(value, what)


class _StringOut:
    """A reusable ``char **`` out-parameter: the owned pointer, a ``c_char_p`` view of the
    same memory (``.value`` copies the string out, cheaper than ``string_at``) and a
    ready-made ``byref``. Holds NULL between calls."""

    __slots__ = ("ptr", "view", "ref")

    def __init__(self) -> None:
        self.ptr = owned_str_t()
        self.view = c_char_p.from_buffer(self.ptr)
        self.ref = byref(self.ptr)


#: Idle out-parameters for :func:`call_string`. A call pops one (or makes one) and pushes
#: it back when done, so concurrent and re-entrant calls (a signal handler, a finaliser)
#: never share one; list pop and append are atomic.
_string_outs: list[_StringOut] = []


def call_string(fn: Callable[..., int], *args: Any) -> str:
    """Calls ``fn(*args, char **out)``, checks the status and returns the owned string,
    freed with ``mnemo_string_free`` once copied."""
    try:
        out = _string_outs.pop()
    except IndexError:
        out = _StringOut()
    try:
        status = fn(*args, out.ref)
        if status:
            check(status)
        raw = out.view.value
        if raw is None:
            raise InternalError("internal error: mnemo returned OK and a NULL string")
        return raw.decode("utf-8")
    finally:
        # Out-params are written only on success, so the pointer is NULL on failure;
        # freeing NULL is a no-op. Cleared again before reuse.
        lib.mnemo_string_free(out.ptr)
        out.view.value = None
        _string_outs.append(out)


class _ValueBuffer:
    """A reusable buffer for ``mnemo_db_get_into``: the bytes, their size (an ``int`` and a
    ``c_size_t``), and a ``size_t`` out-parameter for the value's length with a ready-made
    ``byref``."""

    __slots__ = ("buf", "cap", "cap_arg", "length", "length_ref")

    def __init__(self, cap: int) -> None:
        self.buf = ctypes.create_string_buffer(cap)
        self.cap = cap
        self.cap_arg = c_size_t(cap)
        self.length = c_size_t()
        self.length_ref = byref(self.length)


#: The size of a new value buffer: most values are shorter.
_FIRST_CAPACITY = 1024
#: The largest value buffer kept for reuse. A longer value (a value is at most 16 MiB) is
#: read with ``mnemo_db_get`` instead, so idle buffers never hold more than this each.
_KEPT_CAPACITY = 64 * 1024
#: Idle value buffers for :func:`get_value`, used as :data:`_string_outs` is: a call pops
#: one (or makes one) and pushes it back when done, so no two calls in flight (threads,
#: or a signal handler or finaliser interrupting a call) ever share one.
_value_buffers: list[_ValueBuffer] = []
_TOO_SMALL = int(Status.BUFFER_TOO_SMALL)


def get_value(db: c_void_p, store: bytes, key: bytes) -> str:
    """The JSON text of ``key`` in ``store`` of the ``mnemo_database *`` ``db`` (a
    ``c_void_p``, as :attr:`Handle.arg <mnemo._handle.Handle.arg>` gives it): one
    ``mnemo_db_get_into`` call into a pooled buffer in the common case. A value that does
    not fit is read again into a buffer grown to its length (up to
    :data:`_KEPT_CAPACITY`; beyond, with ``mnemo_db_get``). Raises the error of the
    status."""
    try:
        out = _value_buffers.pop()
    except IndexError:
        out = _ValueBuffer(_FIRST_CAPACITY)
    try:
        status = _get_into_unchecked(db, store, key, out.buf, out.cap_arg, out.length_ref)
        # The value may change between two calls: grow until it fits.
        while status == _TOO_SMALL:
            needed = out.length.value + 1
            if needed > _KEPT_CAPACITY:
                return call_string(lib.mnemo_db_get, db, store, key)
            out = _ValueBuffer(min(max(needed, 2 * out.cap), _KEPT_CAPACITY))
            status = _get_into_unchecked(db, store, key, out.buf, out.cap_arg, out.length_ref)
        if status:
            check(status)
        return out.buf.value.decode("utf-8")
    finally:
        _value_buffers.append(out)


def call_handle(fn: Callable[..., int], *args: Any, out: c_void_p | None = None) -> int:
    """Calls ``fn(*args, mnemo_x **out)``, checks the status and returns the new handle.

    ``out`` receives the handle (a new ``c_void_p`` if None): a caller that must free the
    handle should something interrupt it before an owner has it passes its own (it stays
    NULL unless ``fn`` succeeded; see :func:`mnemo._handle.own`)."""
    if out is None:
        out = c_void_p()
    check(fn(*args, byref(out)))
    if not out.value:
        raise InternalError("internal error: mnemo returned OK and a NULL handle")
    return out.value


def ctypes_for(c_type: str) -> Any:
    """The ctypes type this module uses for a C type spelled as in the header (used by the
    tests to check :data:`SIGNATURES` against ``include/mnemo.h``)."""
    t = " ".join(c_type.replace("*", " * ").split())
    table = {
        "void": None,
        "void *": user_data_t,
        "int32_t": c_int32,
        "mnemo_status": status_t,
        "mnemo_change_cb": change_cb_t,
        "mnemo_destroy_cb": destroy_cb_t,
        "uint32_t": c_uint32,
        "int *": POINTER(c_int),
        "size_t": c_size_t,
        "size_t *": size_out_t,
        "const char *": str_t,
        "char *": owned_str_t,
        "char * *": owned_str_out_t,
    }
    if t in table:
        return table[t]
    words = t.split()
    if words[-1] == "*" and (words[0] == "struct" or words[:2] == ["const", "struct"]):
        return handle_out_t if words[-2:] == ["*", "*"] else handle_t
    raise KeyError(f"no ctypes mapping for C type {c_type!r}")


def names() -> Sequence[str]:
    """Every C function name declared here."""
    return tuple(SIGNATURES)
