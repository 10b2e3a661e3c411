"""Shared fixtures. Makes the `mnemo` package importable from bindings/python."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


#: The test PostgreSQL server of ``scripts/test-all`` (tests that need it skip without it).
POSTGRES_URL = os.environ.get("MNEMO_TEST_POSTGRES_URL")
PSQL = shutil.which("psql")


def psql(sql: str) -> str:
    """Runs one statement as the test server's superuser; returns its unaligned output."""
    assert POSTGRES_URL is not None and PSQL is not None
    done = subprocess.run(
        [PSQL, POSTGRES_URL, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh database on the test server (its URL, without a query), dropped afterwards."""
    if not (POSTGRES_URL and PSQL):
        pytest.skip("needs the test server (MNEMO_TEST_POSTGRES_URL) and psql")
    name = "mnemo_py_" + secrets.token_hex(6)
    psql(f"CREATE DATABASE {name}")
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def wait_until(condition: Callable[[], bool], seconds: float = 15) -> bool:
    """Whether ``condition`` holds within ``seconds`` (checked every 20 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """Raises KeyboardInterrupt in the main thread ``seconds`` after the block starts (as a
    Ctrl-C would), from a SIGALRM handler that the block's end removes."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
