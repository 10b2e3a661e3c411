"""The package's docstrings: every public name has one (``help()`` is the Python manual),
and the facts they state that were once wrong are checked against the library."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

import mnemo
from mnemo.instance import Argon2Params


def _public_members(cls: type) -> list[tuple[str, object]]:
    """The public methods and properties ``cls`` defines itself (not inherited from
    ``object``, ``tuple``, ``Exception`` or ``IntEnum``)."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_") or not (
            inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod))
        ):
            continue
        members.append((name, value))
    return members


def _doc(value: object) -> str | None:
    if isinstance(value, (classmethod, staticmethod)):
        value = value.__func__
    return inspect.getdoc(value)


def _exported() -> list[tuple[str, object]]:
    return [(name, getattr(mnemo, name)) for name in mnemo.__all__]


def test_the_package_has_a_docstring() -> None:
    assert inspect.getdoc(mnemo)


@pytest.mark.parametrize("name,obj", _exported(), ids=[n for n, _ in _exported()])
def test_every_public_name_has_a_docstring(name: str, obj: object) -> None:
    if typing.get_origin(obj) is typing.Literal:
        # Type aliases (Permission, AccountStatus) cannot carry one; the module documents them.
        return
    assert inspect.getdoc(obj), f"mnemo.{name} has no docstring"
    if inspect.isclass(obj):
        missing = [m for m, value in _public_members(obj) if not _doc(value)]
        assert not missing, f"mnemo.{name}: no docstring on {', '.join(missing)}"


def test_every_module_has_a_docstring() -> None:
    package = Path(mnemo.__file__).parent
    for path in sorted(package.glob("*.py")):
        first = path.read_text(encoding="utf-8").lstrip()
        assert first.startswith('"""'), f"{path.name} has no module docstring"


# --- Instance.open: the backends and the Argon2id bounds ----------------------------------

OPEN_DOC = inspect.getdoc(mnemo.Instance.open) or ""


def test_open_names_every_backend() -> None:
    # It once said only "memory:" was supported.
    for scheme in ("sqlite:PATH", "postgres://", "memory:"):
        assert scheme in OPEN_DOC, scheme


def test_open_works_with_the_backends_it_names(tmp_path: Path) -> None:
    for url in ("memory:", f"sqlite:{tmp_path / 'doc.db'}"):
        with mnemo.Instance.open(url) as inst:
            assert inst.device_id.startswith("ed25519:")


def _stated(doc: str, what: str) -> Argon2Params:
    """The ``(m, t, p)`` tuple the docstring states right after ``what``."""
    found = re.search(re.escape(what) + r"[^(]*\((\d+), (\d+), (\d+)\)", doc, re.DOTALL)
    assert found, f"no {what} (m, t, p) in the docstring"
    return Argon2Params(*(int(g) for g in found.groups()))


def test_open_states_the_argon2_bounds_the_library_enforces() -> None:
    # It once said "There is no maximum". The bounds it states are the library's.
    assert "no maximum" not in OPEN_DOC
    low, high = _stated(OPEN_DOC, "minimum"), _stated(OPEN_DOC, "maximum")
    assert _stated(inspect.getdoc(Argon2Params) or "", "maximum") == high
    assert low == (19456, 2, 1)
    for params in (low, high):  # both ends are accepted (opening derives nothing)
        with mnemo.Instance.open("memory:", argon2=params):
            pass
    for field in range(3):
        below, above = list(low), list(high)
        below[field] -= 1
        above[field] += 1
        for params in (below, above):
            with pytest.raises(mnemo.InvalidArgument):
                mnemo.Instance.open("memory:", argon2=tuple(params))


def test_error_documents_status_as_the_enum() -> None:
    doc = inspect.getdoc(mnemo.Error) or ""
    assert "Status" in doc and "int" in doc
