// The stable status codes of mnemo: the one definition. `src/error/mod.rs` makes the
// `Status` enum of it (used by the core, the FFI and the sync protocol), and build.rs makes
// the header's `MNEMO_STATUS_*` constants of it. A value never changes; a new failure gets
// a new code at the end. Each line: doc, Rust variant = code, C name suffix.
status_codes! {
    /// Success.
    Ok = 0, OK;
    /// NULL where not allowed, bad UTF-8, malformed id, key, name or JSON, bad URL.
    InvalidArgument = 1, INVALID_ARGUMENT;
    /// No such user, database, key, stored value or peer.
    NotFound = 2, NOT_FOUND;
    /// The username (or other unique name) is taken.
    AlreadyExists = 3, ALREADY_EXISTS;
    /// Wrong password or unknown user: deliberately indistinguishable.
    AuthFailed = 4, AUTH_FAILED;
    /// The key lacks the permission, or the user is disabled.
    PermissionDenied = 5, PERMISSION_DENIED;
    /// The user session behind this handle has logged out.
    LoggedOut = 6, LOGGED_OUT;
    /// Sync is not enabled on this instance.
    SyncDisabled = 7, SYNC_DISABLED;
    /// Peer unreachable, timeout, or protocol error.
    Network = 8, NETWORK;
    /// Backend I/O or database error.
    Storage = 9, STORAGE;
    /// Stored or received data fails validation.
    Corrupt = 10, CORRUPT;
    /// A caught panic or a broken invariant inside mnemo.
    Internal = 11, INTERNAL;
    /// A documented limit was reached (a peer's connections, request rate or queue, entries
    /// waiting for their parents, other processes changing a shared database 16 times while
    /// one change was worked out): nothing was changed; retry later.
    Busy = 12, BUSY;
    /// A buffer the caller provided cannot hold the result and its NUL (`mnemo_db_get_into`):
    /// nothing usable was written, the result's length was reported; retry with a larger one.
    BufferTooSmall = 13, BUFFER_TOO_SMALL;
}
