"""What the network sees of sync: TLS 1.3 between device identities. A forwarding proxy
between two instances records every byte, or damages one, and addresses can be pinned to
the device that must answer."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Iterator

import pytest
from proxy import Proxy

import mnemo

SECRET_NAME = "diary-of-a-very-private-person"
SECRET_STORE = "confidential-store"
SECRET_VALUE = "the-launch-code-is-0000"


class Sides:
    """Alice's instance, listening, with a database holding secrets; bob's instance, granted
    read on it."""

    def __init__(self, stack: ExitStack) -> None:
        self.a = stack.enter_context(mnemo.Instance.open("memory:"))
        self.b = stack.enter_context(mnemo.Instance.open("memory:"))
        for inst, name in ((self.a, "alice"), (self.b, "bob")):
            inst.create_user(name)
            inst.enable_sync()
        self.alice = stack.enter_context(self.a.login("alice"))
        self.bob = stack.enter_context(self.b.login("bob"))
        self.sync_a = stack.enter_context(self.a.sync)
        self.sync_b = stack.enter_context(self.b.sync)
        self.addr = self.sync_a.listen()
        self.db = stack.enter_context(self.alice.create_db(SECRET_NAME))
        for i in range(50):
            self.db.set(SECRET_STORE, f"entry {i}", f"{SECRET_VALUE} #{i}")
        bob_key = next(k.pubkey for k in self.bob.list_keys() if k.is_default)
        self.db.grant(bob_key, "read")


@pytest.fixture
def sides() -> Iterator[Sides]:
    with ExitStack() as stack:
        yield Sides(stack)


def test_a_recording_proxy_sees_no_value_store_or_database_name(sides: Sides) -> None:
    proxy = Proxy(sides.addr)
    try:
        sides.sync_b.sync_db(sides.bob, proxy.addr, sides.db.id)
    finally:
        proxy.close()
    with sides.bob.load_db(sides.db.id) as copy:
        assert copy.get(SECRET_STORE, "entry 7") == f"{SECRET_VALUE} #7"
    seen = bytes(proxy.seen)
    assert len(seen) > 10_000  # the whole database went through the proxy
    db_hex = sides.db.id.split(":", 1)[1]
    for secret in (SECRET_NAME, SECRET_STORE, SECRET_VALUE, "entry 7", db_hex, "/mnemo/sync/v1/db"):
        assert secret.encode() not in seen, secret
    assert bytes.fromhex(db_hex) not in seen


def test_a_damaged_byte_fails_the_round_and_a_clean_retry_succeeds(sides: Sides) -> None:
    proxy = Proxy(sides.addr)
    proxy.flip_at = 3000  # in the first connection's replies, past the TLS handshake
    try:
        with pytest.raises((mnemo.NetworkError, mnemo.Corrupt)):
            sides.sync_b.sync_db(sides.bob, proxy.addr, sides.db.id)
        assert proxy.flipped
        sides.sync_b.sync_db(sides.bob, proxy.addr, sides.db.id)
    finally:
        proxy.close()
    with sides.bob.load_db(sides.db.id) as copy:
        assert copy.get_all(SECRET_STORE) == sides.db.get_all(SECRET_STORE)


def test_an_address_pinned_to_another_device_is_refused(sides: Sides) -> None:
    pinned_right = f"{sides.a.device_id}@{sides.addr}"
    pinned_wrong = f"{sides.b.device_id}@{sides.addr}"
    with pytest.raises(mnemo.NetworkError, match="did not prove"):
        sides.sync_b.connect(pinned_wrong)
    with pytest.raises(mnemo.NetworkError):
        sides.sync_b.sync_db(sides.bob, pinned_wrong, sides.db.id)
    with pytest.raises(mnemo.NotFound):
        sides.bob.load_db(sides.db.id)  # nothing was taken from the impostor
    assert sides.sync_b.connect(pinned_right) == sides.a.device_id
    sides.sync_b.sync_db(sides.bob, pinned_right, sides.db.id)
    with sides.bob.load_db(sides.db.id) as copy:
        assert copy.get(SECRET_STORE, "entry 0") == f"{SECRET_VALUE} #0"


@pytest.mark.parametrize(
    "pin",
    ["ed25519:", "ed25519:short", "rsa:AAAA", "@", "ed25519:" + "A" * 43 + "@@"],
)
def test_malformed_pins_are_invalid_arguments(sides: Sides, pin: str) -> None:
    with pytest.raises(mnemo.InvalidArgument):
        sides.sync_b.connect(f"{pin}@{sides.addr}")
