"""mnemo.Sync.limits and set_limits: the sync engine's bounds, read and changed through the
ABI (mnemo_sync_limits, mnemo_sync_set_limits)."""

from __future__ import annotations

import ctypes
import json
import re
import socket
from typing import Iterator

import pytest
from conftest import REPO_DIR

import mnemo
from mnemo._native import lib

#: How long a raw socket waits for the listener, in seconds.
TIMEOUT = 15


@pytest.fixture
def sync() -> Iterator[mnemo.Sync]:
    with mnemo.Instance.open("memory:") as inst:
        inst.enable_sync()
        with inst.sync as engine:
            yield engine


def documented_defaults() -> dict[str, int]:
    """The defaults the header's doc comment of mnemo_sync_limits lists."""
    header = (REPO_DIR / "include" / "mnemo.h").read_text()
    doc = header[: header.index("mnemo_sync_limits(")]
    doc = doc[doc.rindex("/**") :]
    text = " ".join(line.lstrip(" *") for line in doc.splitlines())
    match = re.search(r"The defaults: (\{.*?\})", text)
    assert match, "the header no longer lists the defaults"
    defaults: dict[str, int] = json.loads(match.group(1))
    return defaults


def test_the_defaults_are_the_documented_ones(sync: mnemo.Sync) -> None:
    limits = sync.limits()
    assert limits == documented_defaults()
    assert limits["max_connections"] == 256
    assert limits["round_deadline_ms"] == 600_000


def test_set_limits_changes_the_named_and_keeps_the_rest(sync: mnemo.Sync) -> None:
    before = sync.limits()
    sync.set_limits(max_connections=1024, idle_timeout_ms=5000)
    after = sync.limits()
    assert after == {**before, "max_connections": 1024, "idle_timeout_ms": 5000}
    sync.set_limits()
    assert sync.limits() == after


# A limit, a value just inside its bounds and one just outside.
BOUNDS = [
    ("max_connections", 1, 0),
    ("max_connections", 1 << 20, (1 << 20) + 1),
    ("max_watches_per_address", 1 << 20, 2**64 - 1),
    ("requests_per_second_per_address", 2**32 - 1, 2**32),
    ("request_burst_per_address", 1, 0),
    ("idle_timeout_ms", 1, 0),
    ("round_deadline_ms", 86_400_000, 86_400_001),
    ("max_message_bytes", 65_536, 65_535),
    ("max_message_bytes", 32 << 20, (32 << 20) + 1),
    ("max_buffered_bytes", 32 << 20, (32 << 20) - 1),
    ("max_buffered_bytes", 1 << 40, (1 << 40) + 1),
    ("max_header_bytes", 8192, 8191),
    ("max_header_bytes", 1 << 20, (1 << 20) + 1),
    ("watch_timeout_ms", 29_999, 30_000),
]


@pytest.mark.parametrize("name,inside,outside", BOUNDS)
def test_each_bound_is_enforced_and_a_refusal_changes_nothing(
    sync: mnemo.Sync, name: str, inside: int, outside: int
) -> None:
    before = sync.limits()
    with pytest.raises(mnemo.InvalidArgument, match="sync limit"):
        sync.set_limits(**{name: outside})
    assert sync.limits() == before
    sync.set_limits(**{name: inside})
    assert sync.limits() == {**before, name: inside}


def test_a_change_is_all_or_nothing(sync: mnemo.Sync) -> None:
    before = sync.limits()
    with pytest.raises(mnemo.InvalidArgument, match="times must be from 1 ms"):
        sync.set_limits(max_connections=10, idle_timeout_ms=0)
    with pytest.raises(mnemo.InvalidArgument, match="no sync limit is called"):
        sync.set_limits(max_connections=10, max_conections=10)
    assert sync.limits() == before


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"[]",
        b"garbage",
        b"{",
        b'{"max_connections": -1}',
        b'{"max_connections": 1.5}',
        b'{"max_connections": 1e30}',
        b'{"max_connections": "10"}',
        b'{"max_connections": null}',
        b'{"idle_timeout": 1000}',
        b'{"max_connections": 10} trailing',
    ],
)
def test_what_is_not_an_object_of_known_whole_numbers_is_refused(
    sync: mnemo.Sync, text: bytes
) -> None:
    before = sync.limits()
    with sync._handle.use() as ptr:
        status = lib.mnemo_sync_set_limits(ptr, text)
    assert status == mnemo.Status.INVALID_ARGUMENT
    assert sync.limits() == before


def test_null_arguments_are_refused(sync: mnemo.Sync) -> None:
    with sync._handle.use() as ptr:
        assert lib.mnemo_sync_set_limits(ptr, None) == mnemo.Status.INVALID_ARGUMENT
        out = ctypes.POINTER(ctypes.c_char)()
        assert lib.mnemo_sync_limits(None, ctypes.byref(out)) == mnemo.Status.INVALID_ARGUMENT
        assert not out
        assert lib.mnemo_sync_limits(ptr, None) == mnemo.Status.INVALID_ARGUMENT


@pytest.mark.parametrize("value", ["10", 1.0, True, None])
def test_values_that_are_not_ints_raise_type_error(sync: mnemo.Sync, value: object) -> None:
    with pytest.raises(TypeError, match="max_connections must be an int"):
        sync.set_limits(max_connections=value)  # type: ignore[arg-type]


def test_a_closed_sync_raises_invalid_argument(sync: mnemo.Sync) -> None:
    sync.close()
    with pytest.raises(mnemo.InvalidArgument, match="closed"):
        sync.limits()
    with pytest.raises(mnemo.InvalidArgument, match="closed"):
        sync.set_limits(max_connections=1)


def test_listeners_started_afterwards_enforce_the_new_limits(sync: mnemo.Sync) -> None:
    """With one connection allowed, a connection held open (a raw socket, accepted before
    any TLS) makes the listener close the next; a listener started before the change keeps
    the default of 256."""
    before = sync.listen()
    sync.set_limits(max_connections=1)
    after = sync.listen()
    with mnemo.Instance.open("memory:") as other:
        other.enable_sync()
        with other.sync as client:
            held = [hold_a_connection(before), hold_a_connection(after)]
            try:
                client.connect(before)
                with pytest.raises(mnemo.NetworkError):
                    client.connect(after)
            finally:
                for s in held:
                    s.close()


def hold_a_connection(addr: str) -> socket.socket:
    """A TCP connection to `addr` that sends nothing (the listener counts it at accept)."""
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)
