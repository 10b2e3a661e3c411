"""Sharing by ticket, through the Python package: alice's instance listens and hands out
a ticket; bob's instance asks for access with it; alice approves or rejects; bob joins
and writes back. Auto-approval, tampered tickets, bounds and persistence too."""

from __future__ import annotations

import base64
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import pytest
from conftest import wait_until
from proxy import Proxy

import mnemo


class Side:
    """An instance with one user, sync enabled and listening."""

    def __init__(self, stack: ExitStack, name: str, url: str = "memory:") -> None:
        self.inst = stack.enter_context(mnemo.Instance.open(url))
        if name not in self.inst.list_users():
            self.inst.create_user(name)
        self.inst.enable_sync()
        self.user = stack.enter_context(self.inst.login(name))
        self.sync = stack.enter_context(self.inst.sync)
        self.addr = self.sync.listen()
        self.key = next(k.pubkey for k in self.user.list_keys() if k.is_default)


@pytest.fixture
def sides() -> Iterator[tuple[Side, Side]]:
    with ExitStack() as stack:
        alice, bob = Side(stack, "alice"), Side(stack, "bob")
        yield alice, bob


def test_the_whole_ticket_flow(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("shared notes")
    db.set("notes", "hello", "from alice")
    ticket = alice.sync.share(db)
    assert ticket.startswith("mnemo:")
    assert alice.sync.share(db.id) == ticket  # by id too: the same ticket

    with pytest.raises(mnemo.PermissionDenied):
        bob.sync.join(bob.user, ticket)  # not approved yet
    request = bob.sync.request_access(bob.user, ticket, "write")
    assert request.startswith("req-")
    assert bob.sync.request_access(bob.user, ticket, "write") == request  # asking again: same
    with pytest.raises(mnemo.Busy, match="made or changed less than a minute ago"):
        # Another permission: only a minute after the request was made, as documented.
        bob.sync.request_access(bob.user, ticket, "read")

    [pending] = alice.sync.requests(alice.user)
    assert pending["id"] == request
    assert pending["db"] == db.id
    assert pending["key"] == bob.key
    assert pending["permission"] == "write"
    assert pending["device"] == bob.inst.device_id
    assert pending["requested_at"] > 0
    assert bob.sync.requests(bob.user) == []  # bob administers nothing here

    alice.sync.approve(alice.user, request)
    assert alice.sync.requests(alice.user) == []
    with pytest.raises(mnemo.NotFound):
        alice.sync.approve(alice.user, request)  # approved already
    bob.sync.join(bob.user, ticket)
    with bob.user.load_db(db.id) as copy:
        assert copy.get("notes", "hello") == "from alice"
        copy.set("notes", "reply", "from bob")  # write back
    bob.sync.sync_db(bob.user, f"{alice.inst.device_id}@{alice.addr}", db.id)
    assert db.get("notes", "reply") == "from bob"
    assert db.get_all("_settings")[f"auth/{bob.key}"]["permission"] == "write"


def test_a_rejected_request_stays_refused(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("private")
    ticket = alice.sync.share(db)
    request = bob.sync.request_access(bob.user, ticket, "read")
    alice.sync.reject(alice.user, request)
    assert alice.sync.requests(alice.user) == []
    with pytest.raises(mnemo.PermissionDenied):
        bob.sync.join(bob.user, ticket)
    with pytest.raises(mnemo.PermissionDenied, match="rejected"):
        bob.sync.request_access(bob.user, ticket, "read")
    with pytest.raises(mnemo.NotFound):
        alice.sync.approve(alice.user, request)
    with pytest.raises(mnemo.NotFound):
        bob.user.load_db(db.id)


def tamper(ticket: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(ticket[len("mnemo:") :] + "=" * (-len(ticket) % 4)))
    raw[at] ^= 0x01
    return "mnemo:" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


@pytest.mark.parametrize("at", [0, 5, 40, 70, 80, -1])
def test_a_tampered_ticket_is_refused(sides: tuple[Side, Side], at: int) -> None:
    alice, bob = sides
    db = alice.user.create_db("shared")
    ticket = alice.sync.share(db)
    bad = tamper(ticket, at)
    with pytest.raises(mnemo.InvalidArgument, match="ticket"):
        bob.sync.request_access(bob.user, bad, "read")
    with pytest.raises(mnemo.InvalidArgument, match="ticket"):
        bob.sync.join(bob.user, bad)
    assert alice.sync.requests(alice.user) == []


@pytest.mark.parametrize("ticket", ["", "mnemo:", "mnemo:@@@", "http://example.com", "mnemo:" + "A" * 5000])
def test_garbage_tickets_are_invalid_arguments(sides: tuple[Side, Side], ticket: str) -> None:
    _, bob = sides
    with pytest.raises(mnemo.InvalidArgument):
        bob.sync.request_access(bob.user, ticket, "read")


def test_bad_permissions_and_request_ids(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("shared")
    ticket = alice.sync.share(db)
    with pytest.raises(mnemo.InvalidArgument):
        bob.sync.request_access(bob.user, ticket, "owner")  # type: ignore[arg-type]
    for call in (alice.sync.approve, alice.sync.reject):
        with pytest.raises(mnemo.NotFound):
            call(alice.user, "req-0000000000000000")
        # Refused as what they are not (before: "" as a bad key, a long one quoted whole).
        for bad in ("", "req-", "req-0123456789ABCDEF", "x" * 1_000_000):
            with pytest.raises(mnemo.InvalidArgument, match="not an access request id") as info:
                call(alice.user, bad)
            assert len(info.value.message) < 200
    with pytest.raises(TypeError):
        alice.sync.requests("alice")  # type: ignore[arg-type]


def test_share_needs_a_database_here_and_an_address(sides: tuple[Side, Side]) -> None:
    alice, _ = sides
    with pytest.raises(mnemo.NotFound):
        alice.sync.share("sha256:" + "0" * 64)
    with mnemo.Instance.open("memory:") as quiet:
        quiet.create_user("carol")
        quiet.enable_sync()
        with quiet.login("carol") as carol, quiet.sync as sync:
            db = carol.create_db("not listening")
            with pytest.raises(mnemo.InvalidArgument, match="listen"):
                sync.share(db)
            sync.listen("0.0.0.0:0")
            with pytest.raises(mnemo.InvalidArgument, match="advertise"):
                sync.share(db)  # a wildcard address is no use to a peer
            sync.advertise("notes.example.org:7000")
            assert sync.share(db).startswith("mnemo:")
            with pytest.raises(mnemo.InvalidArgument):
                sync.advertise("not an address")


def test_the_ticket_pins_the_device_that_made_it(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("shared")
    with ExitStack() as stack:
        mallory = Side(stack, "mallory")
        # Alice's ticket names an address where mallory answers (a proxy to her listener):
        # bob talks only to the device the ticket names, and never reaches mallory's side.
        proxy = Proxy(mallory.addr)
        try:
            alice.sync.advertise(proxy.addr)
            ticket = alice.sync.share(db)
            with pytest.raises(mnemo.NetworkError, match="did not prove"):
                bob.sync.request_access(bob.user, ticket, "read")
            with pytest.raises(mnemo.NetworkError):
                bob.sync.join(bob.user, ticket)
        finally:
            proxy.close()
        assert mallory.sync.requests(mallory.user) == []


def test_auto_approve_grants_as_requests_arrive(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("open house")
    alice.sync.auto_approve(alice.user, db, "read")
    ticket = alice.sync.share(db)
    bob.sync.request_access(bob.user, ticket, "read")
    assert alice.sync.requests(alice.user) == []  # granted on arrival
    bob.sync.join(bob.user, ticket)
    # More than the policy allows waits for an admin.
    with mnemo.Instance.open("memory:") as other:
        other.create_user("carol")
        other.enable_sync()
        with other.login("carol") as carol, other.sync as sync:
            sync.request_access(carol, ticket, "write")
            [pending] = alice.sync.requests(alice.user)
            assert pending["permission"] == "write"
    with pytest.raises(mnemo.PermissionDenied):
        bob.sync.auto_approve(bob.user, db, "read")  # bob is no admin
    alice.sync.auto_approve(alice.user, db, None)  # removed


def _joined_by_policy(alice: Side, bob: Side, permission: str) -> tuple[str, str, str]:
    """Alice's new database with an auto-approve policy for ``permission``, which bob asked
    for and joined: its id, its ticket and bob's key there."""
    db_id = alice.user.create_db("open house").id
    alice.sync.auto_approve(alice.user, db_id, permission)
    ticket = alice.sync.share(db_id)
    bob.sync.request_access(bob.user, ticket, permission)
    bob.sync.join(bob.user, ticket)
    return db_id, ticket, bob.user.signing_key(db_id)


def test_a_policy_never_grants_a_revoked_key_again(sides: tuple[Side, Side]) -> None:
    """A key the database revoked that asks again waits for an admin, policy or not.
    Before, the policy granted it on arrival: revoking did nothing lasting."""
    alice, bob = sides
    db_id, ticket, bobs_key = _joined_by_policy(alice, bob, "read")
    with alice.user.load_db(db_id) as db:
        db.revoke(bobs_key)
    request = bob.sync.request_access(bob.user, ticket, "read")
    [pending] = alice.sync.requests(alice.user)
    assert (pending["id"], pending["key"]) == (request, bobs_key)
    alice.sync.auto_approve(alice.user, db_id, "write")  # a policy set again: still waits
    assert [r["id"] for r in alice.sync.requests(alice.user)] == [request]
    alice.sync.approve(alice.user, request)  # an admin may let it back
    assert alice.sync.requests(alice.user) == []
    with alice.user.load_db(db_id) as db:
        assert db.get("_settings", f"auth/{bobs_key}")["status"] == "active"


def test_a_policy_grants_a_demoted_key_that_asks_again_up_to_its_level(
    sides: tuple[Side, Side],
) -> None:
    """As documented: a key that still holds a grant may ask for more, a demoted one too;
    revoking is what keeps a key out while a policy stands."""
    alice, bob = sides
    db_id, ticket, bobs_key = _joined_by_policy(alice, bob, "write")
    with alice.user.load_db(db_id) as db:
        db.grant(bobs_key, "read")  # demoted
        bob.sync.request_access(bob.user, ticket, "write")
        assert alice.sync.requests(alice.user) == []  # granted on arrival
        assert db.get("_settings", f"auth/{bobs_key}")["permission"] == "write"


def test_a_copy_syncs_on_after_its_users_key_is_rotated(sides: tuple[Side, Side]) -> None:
    """Alice grants bob's new key and revokes the old one, which bob's copy signed with:
    before, every later round was refused, a track's too, until bob forgot the copy."""
    alice, bob = sides
    db = alice.user.create_db("rotated")
    db.grant(bob.key, "write")
    db.set("s", "x", "before")
    bob.sync.sync_db(bob.user, alice.addr, db.id)
    new_key = bob.user.add_private_key("laptop")
    db.grant(new_key, "write")
    db.revoke(bob.key)
    db.set("s", "x", "after")
    bob.sync.sync_db(bob.user, alice.addr, db.id)
    with bob.user.load_db(db.id) as copy:
        assert copy.get("s", "x") == "after"
        assert bob.user.signing_key(db.id) == new_key
        copy.set("s", "y", "from bob's new key")
    bob.sync.sync_db(bob.user, alice.addr, db.id)
    assert db.get("s", "y") == "from bob's new key"


def test_a_tracks_watch_signs_with_the_rotated_key(sides: tuple[Side, Side]) -> None:
    """A track watches the peer's copy with the key its rounds were last accepted with: after
    bob's key was rotated, the watch signed with the revoked key was refused for good and
    the track fell back to asking every second."""
    alice, bob = sides
    db = alice.user.create_db("watched")
    db.grant(bob.key, "write")
    bob.sync.track(bob.user, alice.addr, db.id)
    assert wait_until(lambda: alice.sync.stats()["watches"] == 1), "bob's track never watched"
    new_key = bob.user.add_private_key("laptop")
    db.grant(new_key, "write")
    db.revoke(bob.key)
    db.set("s", "x", "after")  # answers any watch signed with the old key

    def bobs_copy_has_it() -> bool:
        try:
            with bob.user.load_db(db.id) as copy:
                return bool(copy.get("s", "x") == "after")
        except mnemo.NotFound:
            return False

    assert wait_until(bobs_copy_has_it), "the track never pulled the change"
    assert wait_until(
        lambda: alice.sync.stats()["watches"] == 1
    ), "the track's watch stayed refused after the key rotation"


def test_the_access_request_bounds_are_limits_that_apply_at_once(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    limits = alice.sync.limits()
    assert (limits["max_access_requests_per_database"], limits["max_access_requests"]) == (64, 1024)
    class_notes, other = alice.user.create_db("class notes"), alice.user.create_db("other")
    tickets = alice.sync.share(class_notes), alice.sync.share(other)
    alice.sync.set_limits(max_access_requests_per_database=2)
    with ExitStack() as stack:
        students = []
        for i in range(3):
            bob.inst.create_user(f"student{i}")
            students.append(stack.enter_context(bob.inst.login(f"student{i}")))
        for student in students[:2]:
            bob.sync.request_access(student, tickets[0], "read")
        with pytest.raises(mnemo.Busy, match="too many access requests"):
            bob.sync.request_access(students[2], tickets[0], "read")
        # Raised: room at once, on the same listener. Then the bound in all is reached.
        alice.sync.set_limits(max_access_requests_per_database=3, max_access_requests=3)
        bob.sync.request_access(students[2], tickets[0], "read")
        with pytest.raises(mnemo.Busy, match="too many access requests"):
            bob.sync.request_access(students[0], tickets[1], "read")
        assert len(alice.sync.requests(alice.user)) == 3
        alice.sync.set_limits(max_access_requests=4)
        bob.sync.request_access(students[0], tickets[1], "read")
        assert len(alice.sync.requests(alice.user)) == 4
    for name in ("max_access_requests", "max_access_requests_per_database"):
        for bad in (0, 65537):
            with pytest.raises(mnemo.InvalidArgument):
                alice.sync.set_limits(**{name: bad})
    assert alice.sync.limits()["max_access_requests"] == 4  # refused changes change nothing


def test_requests_and_policies_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'alice.db'}"
    with ExitStack() as stack:
        bob = Side(stack, "bob")
        carol = Side(stack, "carol")
        with ExitStack() as first:
            alice = Side(first, "alice", url)
            db_id = alice.user.create_db("kept").id
            alice.sync.advertise(alice.addr)
            ticket = alice.sync.share(db_id)
            request = bob.sync.request_access(bob.user, ticket, "write")
            alice.sync.auto_approve(alice.user, db_id, "read")  # does not cover "write"
        with ExitStack() as second:
            alice = Side(second, "alice", url)
            ticket = alice.sync.share(db_id)  # the listener's new port
            [pending] = alice.sync.requests(alice.user)  # the request survived
            assert pending["id"] == request
            # The policy survived too: carol's "read" is granted on arrival.
            carol.sync.request_access(carol.user, ticket, "read")
            carol.sync.join(carol.user, ticket)
            assert [r["id"] for r in alice.sync.requests(alice.user)] == [request]
            alice.sync.approve(alice.user, request)
            bob.sync.join(bob.user, ticket)
            with bob.user.load_db(db_id) as copy:
                assert copy.get("_settings", "name") == "kept"


def test_a_track_of_a_database_written_steadily_stays_within_its_request_share(
    sides: tuple[Side, Side],
) -> None:
    """A track's rounds and watches come at most every 250 ms, whatever the commit rate:
    back to back, a track of a database written at 200 commits a second sent hundreds of
    signed requests a second, and the peer refused them (its share of the replay memory)
    for minutes (an audit). Here the share is 256 requests: 4 s of commits at about 200 a
    second stay well within it."""
    alice, bob = sides
    alice.sync.set_limits(max_remembered_requests=4096)  # a sixteenth of it for each key
    db = alice.user.create_db("busy")
    db.grant(bob.key, "write")
    bob.sync.track(bob.user, alice.addr, db.id)
    assert wait_until(lambda: alice.sync.stats()["watches"] == 1), "bob's track never watched"
    deadline = time.monotonic() + 4
    n = 0
    while time.monotonic() < deadline:
        db.set("s", "n", n)
        n += 1
        time.sleep(0.005)

    def bob_has_the_last() -> bool:
        with bob.user.load_db(db.id) as copy:
            return bool(copy.get("s", "n") == n - 1)

    assert wait_until(bob_has_the_last), "the track never caught up"
    assert alice.sync.stats()["requests_refused_busy"] == 0, f"{n} commits"


def _held_by_the_server(port: int) -> int:
    """Sockets of this process's accepted connections on ``port`` still open on the server's
    side (established, or closed by the client only), from /proc/net/tcp*."""
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                held += 1
    return held


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp")
def test_a_stopped_listener_ends_the_watches_it_held(sides: tuple[Side, Side]) -> None:
    """Before, a watch held its connection open until the watch timeout (25 s) after its
    listener stopped, counted by no stat and bound by no limit (an audit: 958 to 1,072
    sockets in churn)."""
    alice, bob = sides
    addr = alice.sync.listen()
    db = alice.user.create_db("watched")
    db.grant(bob.key, "write")
    bob.sync.track(bob.user, addr, db.id)
    assert wait_until(lambda: alice.sync.stats()["watches"] == 1), "bob's track never watched"
    bob.sync.untrack(bob.user, addr, db.id)
    port = int(addr.rsplit(":", 1)[1])
    alice.sync.unlisten(addr)
    assert wait_until(lambda: _held_by_the_server(port) == 0, 5), "connections outlived the listener"


def test_a_request_whose_key_already_holds_the_permission_is_no_longer_waiting(
    sides: tuple[Side, Side],
) -> None:
    """As after an approval stopped by a crash between its grant and its bookkeeping (an
    audit: 4 of 11 kills after the grant): before, the request stayed listed, and a
    rejection answered OK while the grant stayed in effect."""
    alice, bob = sides
    db = alice.user.create_db("asked")
    ticket = alice.sync.share(db)
    request = bob.sync.request_access(bob.user, ticket, "write")
    db.grant(bob.key, "write")  # the approval's grant, its request still recorded
    assert alice.sync.requests(alice.user) == []
    with pytest.raises(mnemo.NotFound):
        alice.sync.reject(alice.user, request)
    with pytest.raises(mnemo.NotFound):
        alice.sync.approve(alice.user, request)
    bob.sync.join(bob.user, ticket)
    assert db.get("_settings", f"auth/{bob.key}")["permission"] == "write"


def test_a_request_for_more_than_the_key_holds_still_waits(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    db = alice.user.create_db("asked")
    ticket = alice.sync.share(db)
    request = bob.sync.request_access(bob.user, ticket, "write")
    db.grant(bob.key, "read")
    [waiting] = alice.sync.requests(alice.user)
    assert waiting["id"] == request
    alice.sync.approve(alice.user, request)
    assert db.get("_settings", f"auth/{bob.key}")["permission"] == "write"
