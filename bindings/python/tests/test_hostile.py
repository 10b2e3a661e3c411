"""The sync listener under attack: raw sockets on loopback against a listener of this
process, while a legitimate peer pulls a database through the public API.

Attackers connect from their own loopback addresses (127.0.0.2 and up: every 127/8 address
is this machine), so each has its own share of the listener; the legitimate peer connects
from 127.0.0.1. Threads and memory are counted for this process, which holds the listener.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from contextlib import ExitStack
from typing import Callable, Iterator

import pytest

import mnemo

#: A legitimate pull must finish within this many seconds while an attack runs.
PULL_WITHIN = 5.0
#: Attackers' source addresses.
ATTACKERS = [f"127.0.0.{i}" for i in range(2, 14)]
ENTRIES = 200


class Served:
    """A listening instance holding one database, and how to pull it as a stranger would
    legitimately (a fresh instance whose user the owner granted read)."""

    def __init__(self) -> None:
        self.stack = ExitStack()
        self.inst = self.stack.enter_context(mnemo.Instance.open("memory:"))
        self.inst.create_user("owner")
        self.owner = self.stack.enter_context(self.inst.login("owner"))
        self.db = self.stack.enter_context(self.owner.create_db("shared"))
        with self.db.transaction() as txn:
            for i in range(ENTRIES):
                txn.set("s", f"k{i}", i)
        for i in range(20):
            self.db.set("s", f"single{i}", i)
        self.inst.enable_sync()
        self.sync = self.stack.enter_context(self.inst.sync)
        self.addr = self.sync.listen("127.0.0.1:0")
        self.host, port = self.addr.rsplit(":", 1)
        self.port = int(port)

    def pull(self) -> float:
        """Pulls the database into a fresh instance; returns the seconds it took."""
        with mnemo.Instance.open("memory:") as other:
            other.create_user("bob")
            with other.login("bob") as bob:
                self.db.grant(bob.list_keys()[0].pubkey, "read")
                other.enable_sync()
                with other.sync as sync:
                    started = time.monotonic()
                    sync.sync_db(bob, self.addr, self.db.id)
                    took = time.monotonic() - started
                with bob.load_db(self.db.id) as copy:
                    assert copy.get("s", f"k{ENTRIES - 1}") == ENTRIES - 1
                return took

    def connect_from(self, source: str) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10, source_address=(source, 0))

    def close(self) -> None:
        self.stack.close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.close()


def head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\n\r\n".encode()
    )


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response (the body by its content-length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    status = int(top.split()[1])
    length = 0
    for line in top.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length]


def error_status(body: bytes) -> int:
    """The mnemo status inside an error reply (version byte, then a big-endian u32)."""
    return struct.unpack(">I", body[1:5])[0]


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def run_for(seconds: float, workers: int, attack: Callable[[int, threading.Event], None]) -> threading.Event:
    """Starts `workers` threads running `attack(i, stop)`; they stop `seconds` later."""
    stop = threading.Event()
    for i in range(workers):
        threading.Thread(target=attack, args=(i, stop), daemon=True).start()
    threading.Timer(seconds, stop.set).start()
    return stop


def test_an_announced_huge_body_is_refused_before_any_allocation(served: Served) -> None:
    with served.connect_from(ATTACKERS[0]) as sock:
        sock.sendall(head("/mnemo/sync/v1/db", 1_000_000_000_000_000))
        status, body = read_response(sock)
    assert status == 400 and error_status(body) == mnemo.Status.INVALID_ARGUMENT
    assert served.pull() < PULL_WITHIN


def test_partial_bodies_and_idle_connections_do_not_stop_sync(served: Served) -> None:
    held = []
    for i in range(40):
        sock = served.connect_from(ATTACKERS[i % 4])
        sock.sendall(head("/mnemo/sync/v1/db", 1 << 20) + b"0123456789")
        held.append(sock)
    for i in range(20):
        held.append(served.connect_from(ATTACKERS[4 + i % 2]))  # idle: sends nothing
    try:
        assert served.pull() < PULL_WITHIN
    finally:
        for sock in held:
            sock.close()


def test_slow_headers_from_160_connections_hold_no_thread_each(served: Served) -> None:
    before = thread_count()
    held = []
    try:
        for i in range(160):
            sock = served.connect_from(ATTACKERS[i % 8])
            sock.sendall(b"POST /mnemo/sync/v1/db HTTP/1.1\r\nhost: x\r\n")
            held.append(sock)
        time.sleep(0.5)
        for sock in held:  # all still open on the server's side, waiting
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        during = thread_count()
        assert during <= 64, f"{during} threads (before the attack: {before})"
        assert served.pull() < PULL_WITHIN
    finally:
        for sock in held:
            sock.close()


def test_connections_over_an_address_share_are_refused_busy(served: Served) -> None:
    held = [served.connect_from(ATTACKERS[0]) for _ in range(32)]
    try:
        with served.connect_from(ATTACKERS[0]) as extra:
            status, body = read_response(extra)
        assert status == 503 and error_status(body) == mnemo.Status.BUSY
        # Another address still gets in.
        assert served.pull() < PULL_WITHIN
    finally:
        for sock in held:
            sock.close()


def test_a_handshake_flood_does_not_stop_connect_or_sync(served: Served) -> None:
    hellos = [0, 0]  # [answered, refused busy]

    def flood(i: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with served.connect_from(ATTACKERS[i % len(ATTACKERS)]) as sock:
                    while not stop.is_set():
                        body = b"\x01" + os.urandom(64)
                        sock.sendall(head("/mnemo/sync/v1/hello", len(body)) + body)
                        status, _ = read_response(sock)
                        hellos[0 if status == 200 else 1] += 1
            except OSError:
                continue

    stop = run_for(6, 8, flood)
    try:
        time.sleep(1)
        with mnemo.Instance.open("memory:") as other:
            other.enable_sync()
            with other.sync as sync:
                assert sync.connect(served.addr) == served.inst.device_id
        assert served.pull() < PULL_WITHIN
    finally:
        stop.set()
    assert hellos[0] > 1000, hellos  # the flood was answered all along, and stored nothing


def test_a_garbage_flood_keeps_memory_bounded_and_the_listener_serving(served: Served) -> None:
    served.pull()  # warm up: first-use allocations are not the attack's
    before = rss_bytes()

    def garbage(i: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with served.connect_from(ATTACKERS[i % len(ATTACKERS)]) as sock:
                    sock.settimeout(2)
                    sock.sendall(os.urandom(4096) + b"\r\n\r\n" + os.urandom(60000))
                    sock.recv(4096)
            except OSError:
                continue

    stop = run_for(4, 12, garbage)
    peak = before
    while not stop.is_set():
        peak = max(peak, rss_bytes())
        time.sleep(0.1)
    growth = peak - before
    assert growth < 100 << 20, f"RSS grew {growth >> 20} MiB"
    assert served.pull() < PULL_WITHIN


def test_one_address_over_its_request_rate_gets_busy_and_others_do_not(served: Served) -> None:
    refused = 0
    sock = served.connect_from(ATTACKERS[0])
    for _ in range(3000):  # the default burst is 2,000, refilled at 1,000 a second
        body = b"\x01" + os.urandom(64)
        sock.sendall(head("/mnemo/sync/v1/hello", len(body)) + body)
        status, reply = read_response(sock)
        if status == 503:
            assert error_status(reply) == mnemo.Status.BUSY
            refused += 1
            sock.close()  # a refused request's connection is closed: its body was not read
            sock = served.connect_from(ATTACKERS[0])
    sock.close()
    assert refused > 0
    assert served.pull() < PULL_WITHIN
