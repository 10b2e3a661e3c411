"""The :class:`Sync` class: one reference to an instance's sync engine."""

from __future__ import annotations

from types import TracebackType

from ._handle import Handle
from ._native import lib
from .errors import InvalidArgument


class Sync:
    """A reference to an instance's sync engine, from :attr:`mnemo.Instance.sync`.

    Each object holds one reference; the engine lives while any reference or the
    instance does. Use it as a context manager or call :meth:`close`; after closing,
    methods raise :class:`mnemo.InvalidArgument`.
    """

    def __init__(self, ptr: int) -> None:
        """Internal: wraps a ``mnemo_sync *``. Use :attr:`mnemo.Instance.sync`."""
        self._handle = Handle(
            ptr,
            lib.mnemo_sync_free,
            lambda: InvalidArgument("invalid argument: the Sync is closed"),
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._handle.closed

    def close(self) -> None:
        """Drops this reference to the engine. Idempotent."""
        self._handle.close()

    def __enter__(self) -> Sync:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            handle.close()

    def __repr__(self) -> str:
        return f"<mnemo.Sync {'closed' if self.closed else 'open'}>"
