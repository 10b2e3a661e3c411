"""Exceptions raised by mnemo, one class per status code of the C library.

Every failing call raises a subclass of :class:`Error`. The exception carries the
status (``.status``, a :class:`Status` member, which compares equal to its number) and the library's explanation (``.message``, read from
``mnemo_last_error_message()`` right after the failing call, on the same thread).

Some errors are raised by the Python wrapper itself before the library is called
(a NUL character in a string, a value that is not JSON, a closed handle); they use
the same classes, with the status the library would have given.
"""

from __future__ import annotations

import enum

__all__ = [
    "Status",
    "Error",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "AuthFailed",
    "PermissionDenied",
    "LoggedOut",
    "SyncDisabled",
    "NetworkError",
    "StorageError",
    "Corrupt",
    "InternalError",
    "Busy",
    "BufferTooSmall",
    "error_for_status",
]


class Status(enum.IntEnum):
    """The stable status codes of the C ABI (``MNEMO_STATUS_*``); :attr:`Error.status`."""

    OK = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    ALREADY_EXISTS = 3
    AUTH_FAILED = 4
    PERMISSION_DENIED = 5
    LOGGED_OUT = 6
    SYNC_DISABLED = 7
    NETWORK = 8
    STORAGE = 9
    CORRUPT = 10
    INTERNAL = 11
    BUSY = 12
    BUFFER_TOO_SMALL = 13


_KNOWN_CODES = frozenset(int(s) for s in Status)


class Error(Exception):
    """Base class of every mnemo error.

    Attributes:
        status: the status, a :class:`Status` member: an ``IntEnum``, so
            ``e.status == Status.NOT_FOUND`` and ``e.status == 2`` both hold, and
            ``e.status.name`` is ``"NOT_FOUND"``. A plain ``int`` only for a code this
            version of the package does not know.
        message: the library's explanation of the failure (never empty).
    """

    #: The status code this class stands for; the base class has none of its own.
    default_status: int = -1

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        code = self.default_status if status is None else int(status)
        self.status: Status | int = Status(code) if code in _KNOWN_CODES else code
        self.message: str = message

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        # Keep .status when the exception is pickled (e.g. across processes).
        return (type(self), (self.message, self.status))

    def __repr__(self) -> str:
        status = f"Status.{self.status.name}" if isinstance(self.status, Status) else self.status
        return f"{type(self).__name__}({self.message!r}, status={status})"


class InvalidArgument(Error, ValueError):
    """A malformed argument: empty or bad name, bad key or store, bad JSON, bad URL,
    NUL in a string, or use of a closed handle. Also a :class:`ValueError`."""

    default_status = Status.INVALID_ARGUMENT


class NotFound(Error, LookupError):
    """No such user, database, key or stored value. Also a :class:`LookupError`."""

    default_status = Status.NOT_FOUND


class AlreadyExists(Error):
    """The username (or other unique name) is taken."""

    default_status = Status.ALREADY_EXISTS


class AuthFailed(Error):
    """Wrong password or unknown user (deliberately indistinguishable)."""

    default_status = Status.AUTH_FAILED


class PermissionDenied(Error):
    """The key lacks the permission, or the user is disabled."""

    default_status = Status.PERMISSION_DENIED


class LoggedOut(Error):
    """The user session behind this object has logged out."""

    default_status = Status.LOGGED_OUT


class SyncDisabled(Error):
    """Sync is not enabled on this instance (call ``Instance.enable_sync()`` first)."""

    default_status = Status.SYNC_DISABLED


class NetworkError(Error):
    """A peer is unreachable, timed out, or broke the protocol."""

    default_status = Status.NETWORK


class StorageError(Error):
    """The storage backend failed."""

    default_status = Status.STORAGE


class Corrupt(Error):
    """Stored or received data fails validation."""

    default_status = Status.CORRUPT


class InternalError(Error):
    """A caught panic or a broken invariant inside mnemo."""

    default_status = Status.INTERNAL


class Busy(Error):
    """A documented limit was reached (a peer's connections, request rate or queue, entries
    waiting for their parents, other processes changing a shared database 16 times while
    one change was worked out); nothing was changed: retry later."""

    default_status = Status.BUSY


class BufferTooSmall(Error):
    """A buffer given to the C library was too small for the result (the C function
    ``mnemo_db_get_into``). The wrapper sizes its buffers itself, so Python code does not
    see this error; it exists because every status has its class."""

    default_status = Status.BUFFER_TOO_SMALL


_BY_STATUS: dict[int, type[Error]] = {
    cls.default_status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        AuthFailed,
        PermissionDenied,
        LoggedOut,
        SyncDisabled,
        NetworkError,
        StorageError,
        Corrupt,
        InternalError,
        Busy,
        BufferTooSmall,
    )
}


def error_for_status(status: int, message: str) -> Error:
    """The exception for a non-OK ``status``: its subclass, or :class:`Error` itself for a
    code this version of the wrapper does not know."""
    cls = _BY_STATUS.get(status, Error)
    return cls(message, status)
