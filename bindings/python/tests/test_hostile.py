"""The sync listener under attack: raw sockets on loopback against a listener of this
process, while a legitimate peer pulls a database through the public API.

Attackers connect from their own loopback addresses (127.0.0.2 and up: every 127/8 address
is this machine), so each has its own share of the listener; the legitimate peer connects
from 127.0.0.1. Threads and memory are counted for this process, which holds the listener.
Attacks above the TLS layer speak TLS 1.3 with a device certificate of their own (an
Ed25519 key and self-signed certificate made with the openssl command); the others send
raw bytes. The last test turns it round: a hostile listener answering this process's client.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path
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
        """A plain TCP connection (no TLS) from `source`."""
        return socket.create_connection((self.host, self.port), timeout=10, source_address=(source, 0))

    def tls_from(self, source: str, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
        """A TLS connection from `source`, as a device of its own (handshake done)."""
        return (context or device_context()).wrap_socket(self.connect_from(source))

    def close(self) -> None:
        self.stack.close()


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.close()


def make_certificate(directory: Path, algorithm: list[str]) -> tuple[Path, Path]:
    """A private key and a self-signed certificate for it, made by the openssl command."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", *algorithm, "-nodes", "-days", "1", "-subj", "/CN=attacker",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return key, cert


def client_context(key: Path | None, cert: Path | None) -> ssl.SSLContext:
    """A TLS 1.3 client context that accepts any server certificate (the attacker does not
    care who it attacks), with the given client certificate if any."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["mnemo-sync/1"])
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


_DEVICE_CONTEXT: list[ssl.SSLContext] = []


def device_context() -> ssl.SSLContext:
    """The context of an attacker with an Ed25519 device certificate of its own."""
    if not _DEVICE_CONTEXT:
        directory = Path(os.environ.get("TMPDIR", "/tmp")) / f"mnemo-hostile-{os.getpid()}"
        directory.mkdir(exist_ok=True)
        _DEVICE_CONTEXT.append(client_context(*make_certificate(directory, ["ed25519"])))
    return _DEVICE_CONTEXT[0]


pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


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
    with served.tls_from(ATTACKERS[0]) as sock:
        sock.sendall(head("/mnemo/sync/v1/db", 1_000_000_000_000_000))
        status, body = read_response(sock)
    assert status == 400 and error_status(body) == mnemo.Status.INVALID_ARGUMENT
    assert served.pull() < PULL_WITHIN


def test_partial_bodies_and_idle_connections_do_not_stop_sync(served: Served) -> None:
    held = []
    refused = 0
    for i in range(40):
        # Beyond an address's share of requests in flight (the partial bodies it holds),
        # the listener refuses its next TLS handshake: that is the defence, not a failure.
        # Whether a body already holds its share when the next handshake arrives depends on
        # timing, so some handshakes may be refused.
        try:
            sock = served.tls_from(ATTACKERS[i % 4])
            sock.sendall(head("/mnemo/sync/v1/db", 1 << 20) + b"0123456789")
        except (ssl.SSLError, OSError):
            refused += 1
            continue
        held.append(sock)
    assert len(held) >= 16, f"only {len(held)} partial bodies held ({refused} refused)"
    for i in range(20):
        held.append(served.connect_from(ATTACKERS[4 + i % 2]))  # idle: not even a TLS hello
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
            sock = served.tls_from(ATTACKERS[i % 8])
            sock.sendall(b"POST /mnemo/sync/v1/db HTTP/1.1\r\nhost: x\r\n")
            held.append(sock)
        time.sleep(0.5)
        for sock in held:  # all still open on the server's side, waiting
            sock.setblocking(False)
            with pytest.raises((BlockingIOError, ssl.SSLWantReadError)):
                sock.recv(1)
        during = thread_count()
        assert during <= 64, f"{during} threads (before the attack: {before})"
        assert served.pull() < PULL_WITHIN
    finally:
        for sock in held:
            sock.close()


def test_connections_over_an_address_share_are_closed_before_any_tls_work(served: Served) -> None:
    held = [served.connect_from(ATTACKERS[0]) for _ in range(32)]
    try:
        with served.connect_from(ATTACKERS[0]) as extra:
            extra.settimeout(5)
            try:
                assert extra.recv(1) == b""  # closed by the listener, nothing sent
            except ConnectionResetError:
                pass
        # Another address still gets in.
        assert served.pull() < PULL_WITHIN
    finally:
        for sock in held:
            sock.close()


def test_a_tls_handshake_flood_does_not_stop_connect_or_sync(served: Served) -> None:
    handshakes = [0]

    def flood(i: int, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with served.tls_from(ATTACKERS[i % len(ATTACKERS)]):
                    handshakes[0] += 1
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
    assert handshakes[0] > 100, handshakes  # the flood was served all along


def test_a_client_without_an_ed25519_device_certificate_is_refused(served: Served, tmp_path: Path) -> None:
    rsa = client_context(*make_certificate(tmp_path, ["rsa:2048"]))
    for context in (client_context(None, None), rsa):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with served.tls_from(ATTACKERS[0], context) as sock:
                # TLS 1.3: the server refuses the client's certificate after the client's
                # side of the handshake ended; the refusal arrives with the first read.
                sock.sendall(head("/mnemo/sync/v1/db", 1) + b"\x01")
                if not sock.recv(1):
                    raise ConnectionError("closed")
    assert served.pull() < PULL_WITHIN


def test_plain_http_gets_no_answer(served: Served) -> None:
    with served.connect_from(ATTACKERS[0]) as sock:
        sock.settimeout(5)
        sock.sendall(head("/mnemo/sync/v1/db", 1) + b"\x01")
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert b"HTTP/1.1" not in reply  # at most a TLS alert


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
    # A rate any client outruns: at the default (a burst of 2,000, refilled at 1,000 a
    # second) the 3,000 requests had to be made within a second, which a loaded machine does
    # not do. A listener takes the limits in force when it starts.
    served.sync.set_limits(requests_per_second_per_address=10, request_burst_per_address=200)
    served.sync.unlisten(served.addr)
    assert served.sync.listen(served.addr) == served.addr
    refused = False
    with served.tls_from(ATTACKERS[0]) as sock:
        for _ in range(3000):  # refused after about 200
            body = b"\x01" + os.urandom(64)
            sock.sendall(head("/mnemo/sync/v1/no-such-endpoint", len(body)) + body)
            status, reply = read_response(sock)
            if status == 503:
                assert error_status(reply) == mnemo.Status.BUSY
                refused = True
                break  # the connection is closed after a refusal: its body was not read
            assert status == 404
    assert refused
    assert served.pull() < PULL_WITHIN


class HostilePeer:
    """A listener that speaks TLS 1.3 with a device certificate of its own and answers every
    request with an error reply of its choosing: a peer this process syncs with, turned
    against it."""

    def __init__(self, directory: Path, status: int, message: bytes) -> None:
        key, cert = make_certificate(directory, ["ed25519"])
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.set_alpn_protocols(["mnemo-sync/1"])
        self.context.load_cert_chain(str(cert), str(key))
        self.reply = b"\x01" + struct.pack(">II", status, len(message)) + message
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.socket.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.socket.accept()
            except OSError:
                return  # closed
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    conn.settimeout(10)
                    self._answer(conn)
            except (OSError, ssl.SSLError, ValueError):
                continue

    def _answer(self, conn: ssl.SSLSocket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        top, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in top.split(b"\r\n")[1:]
            if line.partition(b":")[0].strip().lower() == b"content-length"
        )
        while len(body) < length:
            body += conn.recv(65536)
        conn.sendall(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(self.reply)
            + self.reply
        )

    def close(self) -> None:
        self.socket.close()


def test_a_peers_error_message_cannot_forge_lines_or_drive_the_terminal(tmp_path: Path) -> None:
    # Line breaks that would forge a log line, an escape that clears a terminal, a mark that
    # reorders what follows on screen.
    forged = "busy\nINFO sync finished: 0 entries refused\x1b[2J\u202egnp.exe"
    peer = HostilePeer(tmp_path, mnemo.Status.BUSY, forged.encode())
    try:
        with mnemo.Instance.open("memory:") as inst:
            inst.create_user("bob")
            inst.enable_sync()
            with inst.login("bob") as bob, inst.sync as sync:
                db_id = "sha256:" + "ab" * 32
                with pytest.raises(mnemo.Busy) as refused:
                    sync.sync_db(bob, peer.addr, db_id)
    finally:
        peer.close()
    message = refused.value.message
    assert "INFO sync finished" in message  # the peer's words are kept...
    for raw in ("\n", "\x1b", "\u202e"):
        assert raw not in message  # ...but not what would disguise them
    assert "\\u{a}INFO" in message and "\\u{1b}[2J" in message and "\\u{202e}" in message
