//! The crate's one error type, and the stable status codes each kind of error maps to.

/// Defines [`Status`] from the list in `statuses.rs` (build.rs reads the same list).
macro_rules! status_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $code:literal, $c_name:ident; )*) => {
        /// The stable status of a mnemo call: the value of its C status (`MNEMO_STATUS_*`)
        /// and what the sync protocol sends, so a peer's refusal arrives with its kind.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(i32)]
        pub enum Status {
            $( $(#[doc = $doc])* $variant = $code, )*
        }

        impl Status {
            /// Every status, in code order.
            pub const ALL: &'static [Status] = &[$(Status::$variant),*];

            /// The status with this code; `None` for a code this build does not know.
            pub fn from_code(code: i32) -> Option<Status> {
                match code {
                    $( $code => Some(Status::$variant), )*
                    _ => None,
                }
            }

            /// The status's C name with a terminating NUL, e.g. `b"MNEMO_STATUS_NOT_FOUND\0"`.
            pub fn c_name(self) -> &'static [u8] {
                match self {
                    $( Status::$variant => concat!("MNEMO_STATUS_", stringify!($c_name), "\0").as_bytes(), )*
                }
            }
        }
    };
}

include!("statuses.rs");

impl Status {
    /// The status's code (the value of its `MNEMO_STATUS_*` constant).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status's C name, e.g. `"MNEMO_STATUS_NOT_FOUND"`.
    pub fn name(self) -> &'static str {
        let with_nul = self.c_name();
        std::str::from_utf8(&with_nul[..with_nul.len() - 1]).expect("names are ASCII")
    }
}

/// Everything that can go wrong in mnemo, by kind. The message never contains secrets.
#[derive(Clone, Debug, thiserror::Error)]
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
    /// A documented limit was reached; retrying later may succeed.
    #[error("busy: {0}")]
    Busy(String),
    /// A caller-provided buffer is too small for the result; nothing usable was written.
    #[error("buffer too small: {0}")]
    BufferTooSmall(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// The error's stable status: the value of its C status (`MNEMO_STATUS_*`), also what
    /// the sync protocol sends, so a peer's refusal arrives with its kind.
    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::NotFound(_) => Status::NotFound,
            Error::AlreadyExists(_) => Status::AlreadyExists,
            Error::AuthFailed => Status::AuthFailed,
            Error::PermissionDenied(_) => Status::PermissionDenied,
            Error::LoggedOut => Status::LoggedOut,
            Error::SyncDisabled => Status::SyncDisabled,
            Error::Network(_) => Status::Network,
            Error::Storage(_) => Status::Storage,
            Error::Corrupt(_) => Status::Corrupt,
            Error::Internal(_) => Status::Internal,
            Error::Busy(_) => Status::Busy,
            Error::BufferTooSmall(_) => Status::BufferTooSmall,
        }
    }

    /// The error a peer reported with status `code` and `message`. Refusals keep their kind
    /// (bad argument, not found, permission, corrupt data, busy); anything else, including a
    /// code this build does not know, is a network error. The message is the peer's text,
    /// with what could disguise it when shown or logged escaped (control characters and
    /// the marks that reorder text on screen, as `\u{..}`).
    pub fn from_peer(code: i32, message: &str) -> Error {
        let message = format!("peer: {}", shown_safely(message));
        match Status::from_code(code) {
            Some(Status::InvalidArgument) => Error::InvalidArgument(message),
            Some(Status::NotFound) => Error::NotFound(message),
            Some(Status::PermissionDenied) => Error::PermissionDenied(message),
            Some(Status::Corrupt) => Error::Corrupt(message),
            Some(Status::Busy) => Error::Busy(message),
            _ => Error::Network(message),
        }
    }

    /// True when the error means "no such thing".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}

/// How many characters of a text from an entry or a peer an error message quotes.
const QUOTED_CHARS: usize = 64;

/// `text` from an entry or a peer (a key, a store name, a value), for an error message: its
/// first [`QUOTED_CHARS`] characters (then `...`), escaped as [`shown_safely`] does, between
/// single quotes. A hostile entry's 16 MiB value or terminal escapes never reach the message.
pub(crate) fn quoted(text: &str) -> String {
    format!("'{}'", shown_cut(text, QUOTED_CHARS))
}

/// The first `chars` characters of `text` from someone not trusted (then `...` if there
/// were more), escaped as [`shown_safely`] does.
pub(crate) fn shown_cut(text: &str, chars: usize) -> String {
    let cut = text
        .char_indices()
        .nth(chars)
        .map_or(text, |(at, _)| &text[..at]);
    let more = if cut.len() < text.len() { "..." } else { "" };
    format!("{}{more}", shown_safely(cut))
}

/// `text` from someone not trusted (a peer's error message), as text that cannot pass for
/// something else where it is shown or logged: control characters (line breaks that forge
/// log lines, terminal escape sequences) and the marks that reorder text on screen
/// (bidirectional overrides and isolates) are written as `\u{..}` escapes.
pub(crate) fn shown_safely(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        let reorders = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}')
            || matches!(c, '\u{2066}'..='\u{2069}');
        if c.is_control() || reorders {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_cut_at_64_characters_and_escaped() {
        assert_eq!(quoted("k"), "'k'");
        let exactly = "\u{e9}".repeat(64);
        assert_eq!(quoted(&exactly), format!("'{exactly}'"));
        assert_eq!(quoted(&"x".repeat(65)), format!("'{}...'", "x".repeat(64)));
        assert_eq!(quoted("a\tb\u{202e}"), "'a\\u{9}b\\u{202e}'");
    }

    #[test]
    fn a_peers_message_cannot_forge_a_line_move_the_terminal_or_reorder_text() {
        let hostile = "busy\nERROR admin logged in\r\x1b[2J\u{202e}txt.exe\u{2066}\0";
        let error = Error::from_peer(Status::Busy.code(), hostile);
        assert!(matches!(error, Error::Busy(_)));
        assert_eq!(
            error.to_string(),
            "busy: peer: busy\\u{a}ERROR admin logged in\\u{d}\\u{1b}[2J\\u{202e}txt.exe\
             \\u{2066}\\u{0}"
        );
        let plain = "no such database: d\u{e9}j\u{e0} vu \u{1f600}";
        assert!(Error::from_peer(Status::NotFound.code(), plain)
            .to_string()
            .ends_with(plain));
    }
}
