//! The crate's one error type. Each variant maps to one stable C status code.

/// Everything that can go wrong in mnemo, by kind. The message never contains secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed something malformed: an empty name, bad JSON, a bad key or id.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No such user, database, key or stored value.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name or record is taken.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// Wrong password or unknown user; deliberately says no more.
    #[error("authentication failed: unknown user or wrong password")]
    AuthFailed,
    /// The key or user lacks the permission for this operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The session behind this handle has logged out.
    #[error("the user session behind this handle has logged out")]
    LoggedOut,
    /// Sync has not been enabled on this instance.
    #[error("sync is not enabled on this instance")]
    SyncDisabled,
    /// A peer could not be reached or broke the protocol.
    #[error("network: {0}")]
    Network(String),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Stored or received data failed validation.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A broken invariant inside mnemo.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The error's stable code: the value of its C status (`MNEMO_STATUS_*`). Also what the
    /// sync protocol sends, so a peer's refusal arrives with its kind.
    pub fn code(&self) -> i32 {
        match self {
            Error::InvalidArgument(_) => 1,
            Error::NotFound(_) => 2,
            Error::AlreadyExists(_) => 3,
            Error::AuthFailed => 4,
            Error::PermissionDenied(_) => 5,
            Error::LoggedOut => 6,
            Error::SyncDisabled => 7,
            Error::Network(_) => 8,
            Error::Storage(_) => 9,
            Error::Corrupt(_) => 10,
            Error::Internal(_) => 11,
        }
    }

    /// The error a peer reported with `code` and `message`; unknown codes are network errors.
    pub fn from_peer(code: i32, message: String) -> Error {
        let message = format!("peer: {message}");
        match code {
            1 => Error::InvalidArgument(message),
            2 => Error::NotFound(message),
            5 => Error::PermissionDenied(message),
            10 => Error::Corrupt(message),
            _ => Error::Network(message),
        }
    }

    /// True when the error means "no such thing".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}
