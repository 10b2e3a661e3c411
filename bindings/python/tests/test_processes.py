"""Several processes on one storage (a SQLite file, a PostgreSQL database): each sees what
the others changed; keys of every valid length are stored and scanned on both."""

from __future__ import annotations

import random
import string
import subprocess
import sys
from pathlib import Path

import pytest

import mnemo

from conftest import PYTHON_DIR

#: Run in another process: writes one path of a value in the database given.
WRITE_PATH = """
import sys
sys.path.insert(0, sys.argv[1])
import mnemo
url, db_id, pointer, value = sys.argv[2:]
with mnemo.Instance.open(url) as inst, inst.login("alice") as alice:
    with alice.load_db(db_id) as db:
        db.set_path("s", "k", pointer, int(value))
"""


def write_path_elsewhere(url: str, db_id: str, pointer: str, value: int) -> None:
    subprocess.run(
        [sys.executable, "-c", WRITE_PATH, str(PYTHON_DIR), url, db_id, pointer, str(value)],
        check=True,
        timeout=60,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh storage that several processes can open."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("database_url"))


def test_writes_from_another_process_are_merged_with_this_ones(url: str) -> None:
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", "k", {"a": 1})
            # Another process writes a path of the value: the key now has a document.
            write_path_elsewhere(url, db.id, "/b", 2)
            assert db.get("s", "k") == {"a": 1, "b": 2}
            # A whole value set here replaces that path write, which is older...
            db.set("s", "k", {"a": 3})
            db.verify()
            # ...so the other process's next path write lands on this value.
            write_path_elsewhere(url, db.id, "/c", 4)
            assert db.get("s", "k") == {"a": 3, "c": 4}
            db.verify()


def test_the_longest_keys_are_kept_and_scanned_in_order(url: str) -> None:
    rng = random.Random(5)
    longest = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(4096))
    head = "a" * 600
    keys = [head, head + "b", head + "c", "a" * 599 + "b"]
    with mnemo.Instance.open(url) as inst:
        inst.create_user("alice")
        with inst.login("alice") as alice, alice.create_db("d") as db:
            db.set("s", longest, {"x": 1})
            db.set_path("s", longest, "/" + longest[:4000], 2)
            assert db.get("s", longest) == {"x": 1, longest[:4000]: 2}
            for key in reversed(keys):
                db.set("t", key, 1)
            assert list(db.keys("t")) == keys
            paged, after = [], None
            while page := db.scan("t", prefix="a", after=after, limit=1):
                after = page[0][0]
                paged.append(after)
            assert paged == keys
            db.verify()
