"""Shared fixtures. Makes the `mnemo` package importable from bindings/python."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PYTHON_DIR.parents[1]
sys.path.insert(0, str(PYTHON_DIR))

import mnemo  # noqa: E402

#: The password used by the few tests that pay for Argon2id.
PASSWORD = "correct horse battery staple"


@pytest.fixture
def inst() -> Iterator[mnemo.Instance]:
    """A fresh in-memory instance."""
    with mnemo.Instance.open("memory:") as instance:
        yield instance


@pytest.fixture
def user(inst: mnemo.Instance) -> Iterator[mnemo.User]:
    """A passwordless user (no Argon2id cost), logged in."""
    inst.create_user("alice")
    with inst.login("alice") as u:
        yield u


@pytest.fixture
def db(user: mnemo.User) -> Iterator[mnemo.Database]:
    """A database created by the `user` fixture."""
    with user.create_db("notes") as d:
        yield d


@pytest.fixture(scope="module")
def pw_inst() -> Iterator[mnemo.Instance]:
    """One instance per module with user "carol" protected by PASSWORD (created once)."""
    with mnemo.Instance.open("memory:") as instance:
        instance.create_user("carol", password=PASSWORD)
        yield instance
