"""The :class:`Store` class: one store of a database, seen as a mutable mapping."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, MutableMapping, ValuesView
from typing import TYPE_CHECKING, Any

from .errors import NotFound

if TYPE_CHECKING:
    from .database import Database


class Store(MutableMapping[str, Any]):
    """A live view of one store, from :meth:`mnemo.Database.store`::

        todo = db.store("todo")
        todo["milk"] = {"done": False}     # one signed commit
        if "milk" in todo:
            del todo["milk"]               # one signed commit
        for key, value in todo.items():    # a snapshot, sorted by key
            ...

    Missing keys raise :class:`KeyError` (``db.get`` raises :class:`mnemo.NotFound`, also
    a :class:`LookupError`). Iteration, ``len``, ``keys()``, ``values()`` and ``items()``
    read the whole store once, so they see one consistent state. Every other error of
    :class:`mnemo.Database` passes through unchanged.
    """

    __slots__ = ("_db", "_name")

    def __init__(self, db: Database, name: str) -> None:
        """Internal: use :meth:`mnemo.Database.store`."""
        self._db = db
        self._name = name

    @property
    def name(self) -> str:
        """The store's name."""
        return self._name

    def _snapshot(self) -> dict[str, Any]:
        return self._db.get_all(self._name)

    def __getitem__(self, key: str) -> Any:
        try:
            return self._db.get(self._name, key)
        except NotFound as e:
            raise KeyError(key) from e

    def __setitem__(self, key: str, value: Any) -> None:
        self._db.set(self._name, key, value)

    def __delitem__(self, key: str) -> None:
        try:
            self._db.delete(self._name, key)
        except NotFound as e:
            raise KeyError(key) from e

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self._db.get(self._name, key)
        except NotFound:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot())

    def __len__(self) -> int:
        return len(self._snapshot())

    def keys(self) -> KeysView[str]:
        """The keys, sorted (a snapshot)."""
        return self._snapshot().keys()

    def values(self) -> ValuesView[Any]:
        """The values, in key order (a snapshot)."""
        return self._snapshot().values()

    def items(self) -> ItemsView[str, Any]:
        """The ``(key, value)`` pairs, sorted by key (a snapshot)."""
        return self._snapshot().items()

    def __repr__(self) -> str:
        return f"<mnemo.Store {self._name!r}>"
