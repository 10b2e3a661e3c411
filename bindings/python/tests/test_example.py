"""The quickstart example runs to completion."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import PYTHON_DIR


def test_quickstart_runs() -> None:
    script = PYTHON_DIR / "examples" / "quickstart.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^device id: ed25519:[A-Za-z0-9_-]{43}$", proc.stdout, re.MULTILINE), (
        proc.stdout
    )
    assert re.search(r"^transaction committed as sha256:[0-9a-f]{64}$", proc.stdout, re.MULTILINE)
    assert "change notified: True" in proc.stdout
    assert "bob tracks: ['notes']" in proc.stdout
    assert "todo as alice sees it: ['bread', 'eggs']" in proc.stdout
    assert "sync enabled" in proc.stdout
