//! Status codes: stable forever; new failures get new codes.

use crate::error::Error;

/// The result of every fallible mnemo function: `MNEMO_STATUS_OK` (0) or an error code.
pub type mnemo_status = i32;

/// Success.
pub const MNEMO_STATUS_OK: mnemo_status = 0;
/// NULL where not allowed, bad UTF-8, malformed id, key, name or JSON, bad URL.
pub const MNEMO_STATUS_INVALID_ARGUMENT: mnemo_status = 1;
/// No such user, database, key, stored value or peer.
pub const MNEMO_STATUS_NOT_FOUND: mnemo_status = 2;
/// The username (or other unique name) is taken.
pub const MNEMO_STATUS_ALREADY_EXISTS: mnemo_status = 3;
/// Wrong password or unknown user: deliberately indistinguishable.
pub const MNEMO_STATUS_AUTH_FAILED: mnemo_status = 4;
/// The key lacks the permission, or the user is disabled.
pub const MNEMO_STATUS_PERMISSION_DENIED: mnemo_status = 5;
/// The user session behind this handle has logged out.
pub const MNEMO_STATUS_LOGGED_OUT: mnemo_status = 6;
/// Sync is not enabled on this instance.
pub const MNEMO_STATUS_SYNC_DISABLED: mnemo_status = 7;
/// Peer unreachable, timeout, or protocol error.
pub const MNEMO_STATUS_NETWORK: mnemo_status = 8;
/// Backend I/O or database error.
pub const MNEMO_STATUS_STORAGE: mnemo_status = 9;
/// Stored or received data fails validation.
pub const MNEMO_STATUS_CORRUPT: mnemo_status = 10;
/// A caught panic or a broken invariant inside mnemo.
pub const MNEMO_STATUS_INTERNAL: mnemo_status = 11;

/// The status code of a core error.
pub(crate) fn status_of(error: &Error) -> mnemo_status {
    error.code()
}

/// The static, NUL-terminated name of a status.
pub(crate) fn status_name(status: mnemo_status) -> &'static [u8] {
    match status {
        MNEMO_STATUS_OK => b"MNEMO_STATUS_OK\0",
        MNEMO_STATUS_INVALID_ARGUMENT => b"MNEMO_STATUS_INVALID_ARGUMENT\0",
        MNEMO_STATUS_NOT_FOUND => b"MNEMO_STATUS_NOT_FOUND\0",
        MNEMO_STATUS_ALREADY_EXISTS => b"MNEMO_STATUS_ALREADY_EXISTS\0",
        MNEMO_STATUS_AUTH_FAILED => b"MNEMO_STATUS_AUTH_FAILED\0",
        MNEMO_STATUS_PERMISSION_DENIED => b"MNEMO_STATUS_PERMISSION_DENIED\0",
        MNEMO_STATUS_LOGGED_OUT => b"MNEMO_STATUS_LOGGED_OUT\0",
        MNEMO_STATUS_SYNC_DISABLED => b"MNEMO_STATUS_SYNC_DISABLED\0",
        MNEMO_STATUS_NETWORK => b"MNEMO_STATUS_NETWORK\0",
        MNEMO_STATUS_STORAGE => b"MNEMO_STATUS_STORAGE\0",
        MNEMO_STATUS_CORRUPT => b"MNEMO_STATUS_CORRUPT\0",
        MNEMO_STATUS_INTERNAL => b"MNEMO_STATUS_INTERNAL\0",
        _ => b"MNEMO_STATUS_UNKNOWN\0",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_documented_status() {
        let cases = [
            (
                Error::InvalidArgument(String::new()),
                MNEMO_STATUS_INVALID_ARGUMENT,
            ),
            (Error::NotFound(String::new()), MNEMO_STATUS_NOT_FOUND),
            (
                Error::AlreadyExists(String::new()),
                MNEMO_STATUS_ALREADY_EXISTS,
            ),
            (Error::AuthFailed, MNEMO_STATUS_AUTH_FAILED),
            (
                Error::PermissionDenied(String::new()),
                MNEMO_STATUS_PERMISSION_DENIED,
            ),
            (Error::LoggedOut, MNEMO_STATUS_LOGGED_OUT),
            (Error::SyncDisabled, MNEMO_STATUS_SYNC_DISABLED),
            (Error::Network(String::new()), MNEMO_STATUS_NETWORK),
            (Error::Storage(String::new()), MNEMO_STATUS_STORAGE),
            (Error::Corrupt(String::new()), MNEMO_STATUS_CORRUPT),
            (Error::Internal(String::new()), MNEMO_STATUS_INTERNAL),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(&error), status, "{error:?}");
        }
    }
}
