"""A forwarding TCP proxy for sync and PostgreSQL tests: it records what passes, can damage
a byte, can stop forwarding for a while, and can be pointed at another upstream."""

from __future__ import annotations

import socket
import threading


class Proxy:
    """Forwards connections on a loopback port to `upstream` (which may be changed between
    connections), keeping every byte that passes. With `flip_at`, the byte at that offset
    of the first connection's server-to-client stream is changed once."""

    def __init__(self, upstream: str) -> None:
        self.retarget(upstream)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.flip_at: int | None = None
        self.flipped = False
        self.forwarding = threading.Event()
        self.forwarding.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            flip = self.flip_at if not self.flipped else None
            self.flipped = self.flipped or flip is not None
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, flip), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, flip_at: int | None) -> None:
        passed = 0
        try:
            while chunk := source.recv(65536):
                data = bytearray(chunk)
                if flip_at is not None and passed <= flip_at < passed + len(data):
                    data[flip_at - passed] ^= 0x40
                passed += len(data)
                with self.lock:
                    self.seen += data
                self.forwarding.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def freeze(self) -> None:
        """Holds what arrives from now on, in both directions, keeping the connections open:
        a peer that stops answering."""
        self.forwarding.clear()

    def thaw(self) -> None:
        """Forwards again, what was held first."""
        self.forwarding.set()

    def retarget(self, upstream: str) -> None:
        """Sends the next connections to `upstream` ("host:port")."""
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))

    def close(self) -> None:
        self.listener.close()
