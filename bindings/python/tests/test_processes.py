"""Several processes on one storage file: each sees what the others changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_writes_from_another_process_are_merged_with_this_ones(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'shared.db'}"
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
