"""The :class:`Sync` class: one reference to an instance's sync engine."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from . import _native
from ._handle import HandleOwner, own
from ._native import lib
from .database import Database, Permission, id_of
from .errors import InvalidArgument
from .user import User

_UINT32_MAX = 2**32 - 1

class Sync(HandleOwner):
    """A reference to an instance's sync engine, from :attr:`mnemo.Instance.sync`.

    Each object holds one reference; the engine lives while any reference or the
    instance does. When the last goes, its listeners and tracking stop. Use it as a
    context manager or call :meth:`close`; after closing, methods raise
    :class:`mnemo.InvalidArgument`, as do methods given a user logged in on another
    instance than this engine's. Safe to use from several threads at once; the blocking
    calls (:meth:`connect`, :meth:`sync_db`, :meth:`track`, :meth:`flush`) release the GIL.

    Two instances share a database like this (``alice`` owns it, ``bob`` is on the other
    instance)::

        alice_sync.listen()                              # "127.0.0.1:40123"
        ticket = alice_sync.share(db)                    # "mnemo:…", sent to bob
        request = bob_sync.request_access(bob, ticket, "write")
        alice_sync.approve(alice, request)               # grants bob's key
        bob_sync.join(bob, ticket)                       # pulls the database
        copy = bob.load_db(db.id)
    """

    def __init__(self, make: Callable[..., int], *args: Any) -> None:
        """Internal: owns the ``mnemo_sync *`` that ``make(*args, &out)`` makes. Use
        :attr:`mnemo.Instance.sync`."""
        own(
            self,
            make,
            *args,
            free=lib.mnemo_sync_free,
            closed_error=lambda: InvalidArgument("invalid argument: the Sync is closed"),
        )

    def listen(self, addr: str = "127.0.0.1:0") -> str:
        """Serves other instances over TLS 1.3 on ``addr`` (port 0: any free port), from the
        engine's own threads, until :meth:`unlisten` or until the sync engine is gone.
        Several listeners may run at once. Each connection proves this device's id to the
        client and the client's to this one; there is no plaintext mode. Anyone can connect;
        a database is served only to requests signed by a key with at least read permission
        on it. Everything a connection can hold is bounded (see SECURITY.md): a peer over a
        bound is answered Busy or its connection closed, and others are served.

        Returns the address bound, ``"host:port"`` (e.g. ``"127.0.0.1:40123"``): give it to
        the peers. Raises InvalidArgument for a malformed address, NetworkError if it cannot
        be bound.
        """
        a = _native.encode(addr, "addr")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_sync_listen, ptr, a)

    def unlisten(self, addr: str) -> None:
        """Stops the listener :meth:`listen` started at ``addr`` (the address it returned):
        its socket is closed before this returns, so new connections are refused and the
        port may be bound again; handshakes under way are dropped, and each open connection
        finishes the request it is handling, if any, then closes. Other listeners go on.

        Raises NotFound if no listener of this engine is bound there (e.g. already
        stopped), InvalidArgument if ``addr`` is not an ``"ip:port"`` address.
        """
        a = _native.encode(addr, "addr")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_sync_unlisten(ptr, a))

    def connect(self, addr: str) -> str:
        """Connects to the peer listening at ``addr`` in TLS 1.3, in which each side
        proves its device id. ``addr`` is ``"host:port"``, or ``"ed25519:<key>@host:port"``
        to accept only the device with that id (every method taking a peer address accepts
        both forms).

        Returns the peer's verified device id, ``"ed25519:<base64url>"`` (its
        :attr:`mnemo.Instance.device_id`). Raises InvalidArgument for a malformed address,
        NetworkError if the peer is unreachable, times out, fails the TLS handshake, does
        not prove the pinned id, or closed the connection at its limits.
        """
        a = _native.encode(addr, "addr")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_sync_connect, ptr, a)

    def sync_db(self, user: User, addr: str, db_id: str) -> None:
        """One blocking, bidirectional round for database ``db_id`` with the peer at
        ``addr``, as ``user``: pulls the entries this instance lacks, then pushes those the
        peer lacks. Every entry received is verified before it becomes visible.

        Requests are signed with the user's key of highest permission on the local copy,
        and if the peer refuses it, with each of the user's other keys in turn (a key
        rotated); for a database not here yet, with each of the user's keys in turn until
        the peer accepts one (so the peer learns the public keys tried). Afterwards
        :meth:`mnemo.User.load_db` opens a database pulled for the first time. Rounds with a
        peer go on from where the last one got. If a pull that rejected nothing (or stopped
        busy on entries waiting for parents it did not send) leaves tips the peer named
        missing here, or a push that had nothing to send leaves the peer's tips (asked again)
        all here but different (its storage restored from a backup), the pull or the push
        starts again from the beginning, each at most once an hour for each database with
        each device. Before the first entry goes out, the peer must prove that its device
        holds copies for a key that may read the database in this copy (a holder proof,
        signed by that key and naming the device): a device whose users' keys were all
        revoked, or one answering in place of another at a bare address, is pushed nothing.
        The call also records that a user here asked for the database: this instance's
        listener then takes it when a peer pushes it (it stores no database nobody here
        asked for); and it makes the user's holder proofs for this device, as logging in
        with sync enabled and adding a key do.

        Raises InvalidArgument (malformed address or id, not ``"sha256:<64 hex digits>"``),
        PermissionDenied (no key of the user has permission on the peer's copy, the peer
        refused some of our entries, the peer does not hold the database and nobody there
        asked for it, or the peer proved no key that may read it here: nothing was pushed,
        what was pulled is kept), NotFound (neither side holds the database, or this process forgot it
        while the round pulled it), Corrupt (the peer sent entries that failed verification
        (past 1,024 the round stops), pages that make no progress, or, pulling the database
        for the first time, no root entry; the valid entries were applied), NetworkError
        (unreachable, a request over 30 s, a round over 10 minutes), Busy (the peer, or this
        instance's room for entries waiting for their parents, is at a limit, or 1,024
        entries the peer sent this round wait for parents it did not send: retry later),
        LoggedOut, StorageError; TypeError if ``user`` is not a :class:`mnemo.User`.
        """
        self._with_user(lib.mnemo_sync_db, user, addr, db_id)

    def track(self, user: User, addr: str, db_id: str) -> None:
        """Keeps database ``db_id`` in sync with the peer at ``addr``, as ``user``, in the
        background: first one round like :meth:`sync_db` if the database is not here yet
        (then :meth:`mnemo.User.load_db` opens it), then a push soon after every local
        commit (or one another process stores in the same storage), a pull soon after every
        commit of the peer's (every second as a fallback), and retries while rounds fail,
        waiting twice as long after each failure, from 100 ms up to 5 s. Rounds and
        watches come at most every 250 ms (commits made faster share one). Subscriptions
        on the database then see remote changes (``remote`` True).

        Tracking is recorded: after a restart it resumes by itself when the user logs in
        with sync enabled (or sync is enabled while the user is logged in), accepting only
        the device that answered now (or the one ``addr`` pins). It lasts until
        :meth:`untrack`, pausing while the engine is gone or the user is logged out.
        Tracking the same database and peer again changes nothing. Raises as
        :meth:`sync_db` (from the first round), and Busy when as many tracks run as the
        limit ``max_tracks`` allows (256 by default; :meth:`set_limits`).
        """
        self._with_user(lib.mnemo_sync_track, user, addr, db_id)

    def untrack(self, user: User, addr: str, db_id: str) -> None:
        """Stops keeping ``db_id`` in sync with the peer at ``addr`` (its host and port)
        for ``user``, and forgets it: it no longer resumes at login.

        Raises NotFound if the user does not track it, InvalidArgument for a malformed
        address or id, LoggedOut, StorageError.
        """
        self._with_user(lib.mnemo_sync_untrack, user, addr, db_id)

    def tracks(self, user: User) -> list[dict[str, Any]]:
        """What ``user`` tracks, with how each is doing, ordered by database then peer:
        dicts with ``db``, ``peer`` (the ``host:port`` :meth:`untrack` takes), ``device``
        (the peer's device id it accepts: pinned, or the one that answered its first round
        that succeeded; None before any did), ``running`` (whether it runs in this
        process: a recorded track does not while its database is not here),
        ``last_synced_ms`` (when its last round succeeded, ms since the Unix epoch; None
        when none did since it started in this process) and ``last_error`` (why its last
        round failed; None after a success). For showing sync status: it may change as
        soon as it is read.

        Raises LoggedOut, StorageError; InvalidArgument for a session of another instance.
        """
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            tracks: list[dict[str, Any]] = json.loads(
                _native.call_string(lib.mnemo_sync_tracks, ptr, uptr)
            )
            return tracks

    def flush(self, timeout_ms: int = 10000) -> None:
        """Waits until every local commit made before this call on a tracked database has
        been pushed to its peer, or ``timeout_ms`` milliseconds pass.

        Raises NetworkError on timeout (the message says why the pushes are behind),
        InvalidArgument for a timeout outside 0..2**32-1, TypeError if it is not an int.
        """
        if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool):
            raise TypeError(f"timeout_ms must be an int, not {type(timeout_ms).__name__}")
        if not 0 <= timeout_ms <= _UINT32_MAX:
            raise InvalidArgument(f"invalid argument: timeout_ms {timeout_ms} is not a uint32_t")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_sync_flush(ptr, timeout_ms))

    def limits(self) -> dict[str, int]:
        """The engine's limits by name: each bound on what peers may hold of a listener and
        on what rounds may take, time and memory (SECURITY.md says what each stops). Counts and sizes
        in bytes are as they are; times are in milliseconds and their names end in
        ``_ms``. For example ``{"max_connections": 256, ..., "max_received_bytes":
        134217728}``."""
        with self._handle.use() as ptr:
            limits: dict[str, int] = json.loads(_native.call_string(lib.mnemo_sync_limits, ptr))
            return limits

    def stats(self) -> dict[str, int]:
        """What the engine runs now: ``listeners`` (started and not stopped),
        ``open_connections``, ``requests_in_flight`` and ``watches`` (on them all), and
        ``tracks`` (databases kept in sync in the background, one per user, database and
        peer); and what its listeners refused since sync was enabled:
        ``requests_refused_busy`` (answered Busy: a limit was reached) and
        ``connections_refused`` (closed at a connection or request limit). For monitoring:
        the counts may change as soon as they are read."""
        with self._handle.use() as ptr:
            stats: dict[str, int] = json.loads(_native.call_string(lib.mnemo_sync_stats, ptr))
            return stats

    def set_limits(self, **limits: int) -> None:
        """Changes the limits named (as :meth:`limits` names them), keeping the others, all
        or nothing: ``sync.set_limits(max_connections=1024, idle_timeout_ms=5000)``.
        Listeners started afterwards and rounds started afterwards use them; listeners
        already running keep theirs, except ``max_remembered_requests`` (the replay memory,
        one for every listener), which applies at once, and ``max_access_requests`` and
        ``max_access_requests_per_database`` (access requests kept, pending or rejected),
        which apply to the next request, and ``max_tracks``, which applies to the next
        track and login (lowered, it stops no track running). A listener runs up to its
        ``max_requests_in_flight`` handlers at once, on threads made as they are needed
        (at most 512 per engine, over all its listeners).

        Raises InvalidArgument for an unknown name or a value out of its bounds (counts 1 to
        1048576, ``max_remembered_requests`` from 1024, access requests 1 to 65536,
        requests per second and bursts 1 to
        4294967295, times 1 ms to a day, ``max_message_bytes`` 22020096 to 33554432,
        ``max_buffered_bytes`` and ``max_received_bytes`` at least that and at most 1 TiB,
        ``max_header_bytes`` 8192
        to 1048576, ``watch_timeout_ms`` below ``request_timeout_ms``); nothing is changed
        then.
        TypeError if a value is not an int.
        """
        text = _native.encode_limits(limits)
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_sync_set_limits(ptr, text))

    def _with_user(self, fn: Callable[..., int], user: User, addr: str, db_id: str) -> None:
        _checked(user)
        a = _native.encode(addr, "addr")
        i = _native.encode(db_id, "db_id")
        with self._handle.use() as ptr, _user_ptr(user) as uptr:
            _native.check(fn(ptr, uptr, a, i))

    # --- Sharing by ticket -------------------------------------------------------------

    def share(self, db: Database | str) -> str:
        """A share ticket for ``db`` (a :class:`mnemo.Database` or an id), which this
        instance holds: ``"mnemo:…"``, naming the database, where this engine listens and
        this device's id, signed by the device. It grants nothing by itself; an altered
        ticket is refused.

        Raises InvalidArgument if there is no address to name (not listening, or only on
        a wildcard address and nothing :meth:`advertise`-d), NotFound if the database is
        not here.
        """
        i = _native.encode(id_of(db), "db_id")
        with self._handle.use() as ptr:
            return _native.call_string(lib.mnemo_sync_share, ptr, i)

    def advertise(self, addr: str) -> None:
        """Adds ``addr`` (``"host:port"`` as peers reach this device) to the addresses
        tickets name, in place of the listeners' own. At most 8. Raises InvalidArgument."""
        a = _native.encode(addr, "addr")
        with self._handle.use() as ptr:
            _native.check(lib.mnemo_sync_advertise(ptr, a))

    def request_access(self, user: User, ticket: str, permission: Permission) -> str:
        """Asks the device ``ticket`` names for ``permission`` on its database, as ``user``
        (signed by the user's default key, which the admins there see and grant). Returns
        the request's id.

        Raises InvalidArgument (a malformed or altered ticket, a bad permission),
        PermissionDenied (rejected before), Busy (too many requests wait there, or another
        permission asked for less than a minute after this key's request there was made or
        last changed, or after it changed 3 times), NetworkError (no address answered as
        the ticket's device), LoggedOut. Asking again for the same permission returns the
        same id.
        """
        t = _native.encode(ticket, "ticket")
        p = _native.encode(permission, "permission")
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            return _native.call_string(lib.mnemo_sync_request_access, ptr, uptr, t, p)

    def requests(self, user: User) -> list[dict[str, Any]]:
        """The access requests waiting here for databases ``user`` administers: dicts with
        ``id``, ``db``, ``key``, ``permission``, ``device`` and ``requested_at`` (ms since
        the Unix epoch). Requests are kept 7 days and survive restarts. One whose key
        already holds the permission asked (granted otherwise, or by an approval a crash
        stopped) is no longer waiting: not listed, and :meth:`approve` and :meth:`reject`
        raise NotFound for it."""
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            return json.loads(_native.call_string(lib.mnemo_sync_list_requests, ptr, uptr))

    def approve(self, user: User, request_id: str) -> None:
        """Approves a request: grants its key the permission asked, signed by ``user``'s
        admin key. Raises InvalidArgument (not a request id), NotFound (no such pending
        request on a database ``user`` administers), PermissionDenied (``user``'s key may
        not grant that key)."""
        self._decide(lib.mnemo_sync_approve, user, request_id)

    def reject(self, user: User, request_id: str) -> None:
        """Rejects a request: its key is refused when it joins or asks again (for 7
        days). Raises InvalidArgument and NotFound as :meth:`approve`."""
        self._decide(lib.mnemo_sync_reject, user, request_id)

    def auto_approve(self, user: User, db: Database | str, permission: Permission | None) -> None:
        """Sets ``db``'s auto-approve policy: requests for at most ``permission`` are
        granted as they arrive, signed by ``user``'s admin key, while that user is logged
        in here with sync enabled (others wait until then). A key the database revoked is
        never granted by a policy: its request waits for an admin. A key that still holds a
        grant may ask for more, a demoted one too, and is granted up to ``permission``: to
        keep a key below a level, revoke it or lower the policy. ``None`` removes it.
        Raises PermissionDenied unless ``user`` administers the database."""
        i = _native.encode(id_of(db), "db_id")
        p = _native.encode_optional(permission, "permission")
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            _native.check(lib.mnemo_sync_auto_approve(ptr, uptr, i, p))

    def join(self, user: User, ticket: str) -> None:
        """Pulls the database ``ticket`` names from its device, as ``user``, once an admin
        there approved the user's request (before: PermissionDenied); then
        :meth:`mnemo.User.load_db` opens it. Raises as :meth:`sync_db` too."""
        t = _native.encode(ticket, "ticket")
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            _native.check(lib.mnemo_sync_join(ptr, uptr, t))

    def _decide(self, fn: Callable[..., int], user: User, request_id: str) -> None:
        r = _native.encode(request_id, "request_id")
        with self._handle.use() as ptr, _user_ptr(_checked(user)) as uptr:
            _native.check(fn(ptr, uptr, r))

    def close(self) -> None:
        """Drops this reference to the engine. Idempotent."""
        super().close()

    def __repr__(self) -> str:
        return f"<mnemo.Sync {'closed' if self.closed else 'open'}>"


def _checked(user: User) -> User:
    if not isinstance(user, User):
        raise TypeError(f"user must be a mnemo.User, not {type(user).__name__}")
    return user


@contextmanager
def _user_ptr(user: User) -> Iterator[int]:
    """Lends the session's pointer for one call (LoggedOut once it has logged out), so that
    a logout from another thread waits for the call to end."""
    with user._handle.use() as ptr:
        yield ptr
