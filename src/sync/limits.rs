//! Every limit of sync, with its default. SECURITY.md lists them and what they protect.

use std::time::Duration;

/// The bounds a sync engine enforces, as a listener and as a client. [`Limits::default`]
/// holds the documented defaults; Rust callers may set others with
/// [`crate::sync::SyncEngine::set_limits`] before listening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections a listener keeps open at once; more are refused at accept. Default 256.
    pub max_connections: usize,
    /// Connections from one address (an IPv4 address, or an IPv6 /64) at once. Default 32.
    pub max_connections_per_address: usize,
    /// Requests being handled at once (verifying, reading or writing storage); more wait
    /// up to [`Limits::queue_timeout`], then get `MNEMO_STATUS_BUSY`. Default 16. Handlers
    /// run on threads made as they are needed, at most 512 per engine over all its
    /// listeners.
    pub max_requests_in_flight: usize,
    /// Requests from one address handled or waiting at once; more get
    /// `MNEMO_STATUS_BUSY` at once. Default 4.
    pub max_requests_in_flight_per_address: usize,
    /// Requests one address may make per second, on average. Default 1,000 (a tracking
    /// peer syncing a busy database makes a few hundred).
    pub requests_per_second_per_address: u32,
    /// Requests one address may make in a burst above that rate. Default 2,000.
    pub request_burst_per_address: u32,
    /// Largest request or response body, in bytes; checked against the announced length
    /// before anything is read. Default 32 MiB (the protocol's largest message).
    pub max_message_bytes: usize,
    /// Request bodies and replies held in memory at once, across all connections (a reply
    /// counts until it is written, or its connection is gone); a request or reply that does
    /// not fit waits up to [`Limits::queue_timeout`], then gets `MNEMO_STATUS_BUSY`.
    /// Default 64 MiB. Bodies being decoded and checked take more than they are counted for
    /// (measured: up to about 4 times this at peak, SECURITY.md).
    pub max_buffered_bytes: usize,
    /// Largest request head (request line and headers) a listener reads. Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a connection may stay without a complete request head: after it opens and
    /// after each response. Slow headers and idle connections are closed. Default 20 s.
    pub idle_timeout: Duration,
    /// How long a connection must have been idle (no request being handled on it nor its
    /// reply being written, or still in its handshake) before a listener holding
    /// [`Limits::max_connections`] closes it to make room for a new one, the one idle
    /// longest first, when no address holds at least two more connections than the
    /// newcomer's (then that address's idle longest is closed, however briefly idle); with
    /// none, the new one is refused. Default 1 s (a client in the middle of a sync round
    /// waits a few milliseconds between requests).
    pub evict_idle_after: Duration,
    /// How long a request body may take to arrive. Default 30 s.
    pub body_timeout: Duration,
    /// How long a request waits for room (in-flight slots, buffer bytes). Default 10 s.
    pub queue_timeout: Duration,
    /// Addresses whose counters a listener remembers; idle ones are forgotten first.
    /// Default 4,096.
    pub max_tracked_addresses: usize,
    /// Watches (long polls for a database's next change) a listener holds at once; more are
    /// answered `MNEMO_STATUS_BUSY` at once (their client falls back to polling). Default 128.
    pub max_watches: usize,
    /// Watches from one address at once. Default 16.
    pub max_watches_per_address: usize,
    /// Signed requests a listener remembers (their nonces, for the 5-minute window in which
    /// each is accepted once), about 48 bytes each; a sixteenth of it per signing key. Past
    /// it, requests get `MNEMO_STATUS_BUSY` (the keys holding the most first). Default
    /// 262,144: about 870 requests a second, kept up. From 1,024 (then a key may sign 64
    /// requests in 5 minutes: too few for a peer that syncs every few seconds).
    pub max_remembered_requests: usize,
    /// Access requests (by ticket) kept for one database, pending or rejected; when full, a
    /// new request takes the place of the oldest rejected one, or gets `MNEMO_STATUS_BUSY`.
    /// Default 64, at most 65,536. Applies at once (requests kept beyond a lowered bound
    /// stay until approved, replaced or expired).
    pub max_access_requests_per_database: usize,
    /// Access requests kept in all, over every database, as above. Default 1,024, at most
    /// 65,536.
    pub max_access_requests: usize,
    /// Tracks (`mnemo_sync_track`) running at once, each with a thread of its own; one more is
    /// refused with `MNEMO_STATUS_BUSY`, and a login resumes at most this many. Default 256.
    pub max_tracks: usize,
    /// How long a listener holds a watch before answering that nothing changed; less than
    /// [`Limits::request_timeout`]. Default 25 s.
    pub watch_timeout: Duration,
    /// Client: how long connecting to a peer may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Client: how long one request may take, response body included (a trickling peer
    /// is cut off). Default 30 s.
    pub request_timeout: Duration,
    /// Client: how long one round (`mnemo_sync_db`, one background round) may take in all.
    /// Default 10 min.
    pub round_deadline: Duration,
    /// Client: bytes of entries received from peers and not yet stored, across all of the
    /// engine's rounds: each request for entries takes room for its largest reply
    /// (`max_message_bytes`) before it is sent, and gives back what the reply did not use.
    /// A round finding no room first stores what it holds, then waits up to
    /// [`Limits::queue_timeout`] and ends `MNEMO_STATUS_BUSY`. Entries being decoded and
    /// checked take about twice what they are counted for. Default 128 MiB.
    pub max_received_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_connections_per_address: 32,
            max_requests_in_flight: 16,
            max_requests_in_flight_per_address: 4,
            requests_per_second_per_address: 1000,
            request_burst_per_address: 2000,
            max_message_bytes: super::wire::MAX_MESSAGE,
            max_buffered_bytes: 64 << 20,
            max_header_bytes: 16 << 10,
            idle_timeout: Duration::from_secs(20),
            evict_idle_after: Duration::from_secs(1),
            body_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(10),
            max_tracked_addresses: 4096,
            max_watches: 128,
            max_watches_per_address: 16,
            max_remembered_requests: super::replay::CAPACITY,
            max_access_requests_per_database: 64,
            max_access_requests: 1024,
            max_tracks: 256,
            watch_timeout: Duration::from_secs(25),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            round_deadline: Duration::from_secs(600),
            max_received_bytes: 128 << 20,
        }
    }
}

/// Most connections, requests, watches or addresses any count limit may allow.
pub const MAX_COUNT_LIMIT: usize = 1 << 20;
/// Least a message limit may allow: the largest batch of entries the protocol sends (its
/// last entry may take it from just under [`super::wire::BATCH_BYTES`] to that plus the
/// largest entry), with 1 MiB for framing. Less would refuse some batches for good: every
/// round would ask for the same one again.
pub const MIN_MESSAGE_LIMIT: usize =
    super::wire::BATCH_BYTES + crate::entry::MAX_ENTRY_BYTES + (1 << 20);
const _: () = assert!(MIN_MESSAGE_LIMIT <= super::wire::MAX_MESSAGE);
/// Most the body budget may allow: 1 TiB.
pub const MAX_BUFFERED_LIMIT: usize = 1 << 40;
/// Least and most a request head may be: 8 KiB (the least the HTTP parser accepts), 1 MiB.
pub const HEADER_LIMITS: (usize, usize) = (8 << 10, 1 << 20);
/// Least the replay memory may hold: a sixteenth of it, the share of one signing key, is
/// then 64 requests in 5 minutes.
pub const MIN_REMEMBERED_REQUESTS: usize = 1024;
/// Most access requests either access-request limit may allow (each new request reads
/// them all).
pub const MAX_ACCESS_REQUESTS_LIMIT: usize = 1 << 16;
/// Longest any time limit may be: a day.
pub const MAX_TIME_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

/// A limit's value as a number: counts as they are, times in milliseconds.
trait LimitValue: Sized {
    fn to_number(&self) -> u64;
    /// `None` if `n` does not fit.
    fn from_number(n: u64) -> Option<Self>;
}

impl LimitValue for usize {
    fn to_number(&self) -> u64 {
        *self as u64
    }
    fn from_number(n: u64) -> Option<Self> {
        usize::try_from(n).ok()
    }
}

impl LimitValue for u32 {
    fn to_number(&self) -> u64 {
        u64::from(*self)
    }
    fn from_number(n: u64) -> Option<Self> {
        u32::try_from(n).ok()
    }
}

impl LimitValue for Duration {
    fn to_number(&self) -> u64 {
        u64::try_from(self.as_millis()).unwrap_or(u64::MAX)
    }
    fn from_number(n: u64) -> Option<Self> {
        Some(Duration::from_millis(n))
    }
}

/// Names each limit once, for [`Limits::by_name`] and [`Limits::set_by_name`]: the field's
/// name, with `_ms` for times.
macro_rules! named_limits {
    ($($name:literal => $field:ident),* $(,)?) => {
        impl Limits {
            /// Each limit with its name, in declaration order: counts and bytes as they
            /// are, times in milliseconds (their names end in `_ms`).
            pub fn by_name(&self) -> Vec<(&'static str, u64)> {
                // Naming every field: one added to `Limits` without a name does not build.
                let Limits { $($field),* } = self;
                vec![$(($name, $field.to_number())),*]
            }

            /// Sets the limit called `name` (as [`Limits::by_name`] names it) to `value`.
            /// [`crate::Error::InvalidArgument`] for an unknown name or a value its field
            /// cannot hold; [`Limits::validate`] checks the rest.
            pub fn set_by_name(&mut self, name: &str, value: u64) -> crate::Result<()> {
                match name {
                    $($name => {
                        self.$field = LimitValue::from_number(value).ok_or_else(|| {
                            let why = format!("sync limit {name}: {value} is too large");
                            crate::Error::invalid(why)
                        })?;
                    })*
                    _ => {
                        let why =
                            format!("no sync limit is called {}", crate::error::quoted(name));
                        return Err(crate::Error::invalid(why));
                    }
                }
                Ok(())
            }
        }
    };
}

named_limits! {
    "max_connections" => max_connections,
    "max_connections_per_address" => max_connections_per_address,
    "max_requests_in_flight" => max_requests_in_flight,
    "max_requests_in_flight_per_address" => max_requests_in_flight_per_address,
    "requests_per_second_per_address" => requests_per_second_per_address,
    "request_burst_per_address" => request_burst_per_address,
    "max_message_bytes" => max_message_bytes,
    "max_buffered_bytes" => max_buffered_bytes,
    "max_header_bytes" => max_header_bytes,
    "idle_timeout_ms" => idle_timeout,
    "evict_idle_after_ms" => evict_idle_after,
    "body_timeout_ms" => body_timeout,
    "queue_timeout_ms" => queue_timeout,
    "max_tracked_addresses" => max_tracked_addresses,
    "max_watches" => max_watches,
    "max_watches_per_address" => max_watches_per_address,
    "max_remembered_requests" => max_remembered_requests,
    "max_access_requests_per_database" => max_access_requests_per_database,
    "max_access_requests" => max_access_requests,
    "max_tracks" => max_tracks,
    "watch_timeout_ms" => watch_timeout,
    "connect_timeout_ms" => connect_timeout,
    "request_timeout_ms" => request_timeout,
    "round_deadline_ms" => round_deadline,
    "max_received_bytes" => max_received_bytes,
}

impl Limits {
    /// Fails unless every limit is usable: counts from 1 to [`MAX_COUNT_LIMIT`] (a replay
    /// memory of at least [`MIN_REMEMBERED_REQUESTS`], access requests at most
    /// [`MAX_ACCESS_REQUESTS_LIMIT`]), times from
    /// 1 ms to [`MAX_TIME_LIMIT`], messages from [`MIN_MESSAGE_LIMIT`] to the protocol's
    /// largest, a body budget and a received-entries budget of at least one message and at
    /// most [`MAX_BUFFERED_LIMIT`],
    /// request heads within [`HEADER_LIMITS`], and watches shorter than a request.
    pub fn validate(&self) -> crate::Result<()> {
        let counts = [
            self.max_connections,
            self.max_connections_per_address,
            self.max_requests_in_flight,
            self.max_requests_in_flight_per_address,
            self.max_tracked_addresses,
            self.max_watches,
            self.max_watches_per_address,
            self.max_remembered_requests,
            self.max_access_requests_per_database,
            self.max_access_requests,
            self.max_tracks,
        ];
        let times = [
            self.idle_timeout,
            self.evict_idle_after,
            self.body_timeout,
            self.queue_timeout,
            self.watch_timeout,
            self.connect_timeout,
            self.request_timeout,
            self.round_deadline,
        ];
        let refuse = |what: String| Err(crate::Error::invalid(format!("sync limits: {what}")));
        if counts.iter().any(|&n| n == 0 || n > MAX_COUNT_LIMIT)
            || self.requests_per_second_per_address == 0
            || self.request_burst_per_address == 0
        {
            return refuse(format!("counts must be from 1 to {MAX_COUNT_LIMIT}"));
        }
        if self
            .max_access_requests_per_database
            .max(self.max_access_requests)
            > MAX_ACCESS_REQUESTS_LIMIT
        {
            return refuse(format!(
                "access requests may be kept up to {MAX_ACCESS_REQUESTS_LIMIT}"
            ));
        }
        if times.iter().any(|&t| t.is_zero() || t > MAX_TIME_LIMIT) {
            return refuse(format!(
                "times must be from 1 ms to a day ({} ms)",
                MAX_TIME_LIMIT.as_millis()
            ));
        }
        if !(MIN_MESSAGE_LIMIT..=super::wire::MAX_MESSAGE).contains(&self.max_message_bytes) {
            return refuse(format!(
                "messages must be allowed from {MIN_MESSAGE_LIMIT} to {} bytes",
                super::wire::MAX_MESSAGE
            ));
        }
        if !(self.max_message_bytes..=MAX_BUFFERED_LIMIT).contains(&self.max_buffered_bytes) {
            return refuse(format!(
                "the body budget must hold one message and be at most {MAX_BUFFERED_LIMIT} bytes"
            ));
        }
        if !(self.max_message_bytes..=MAX_BUFFERED_LIMIT).contains(&self.max_received_bytes) {
            return refuse(format!(
                "the received-entries budget must hold one message and be at most \
                 {MAX_BUFFERED_LIMIT} bytes"
            ));
        }
        if !(HEADER_LIMITS.0..=HEADER_LIMITS.1).contains(&self.max_header_bytes) {
            return refuse(format!(
                "request heads must be allowed from {} to {} bytes",
                HEADER_LIMITS.0, HEADER_LIMITS.1
            ));
        }
        if self.max_remembered_requests < MIN_REMEMBERED_REQUESTS {
            return refuse(format!(
                "the replay memory must hold at least {MIN_REMEMBERED_REQUESTS} requests"
            ));
        }
        if self.watch_timeout >= self.request_timeout {
            return refuse("watches must be shorter than a request".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_nonsense_is_refused() {
        Limits::default().validate().unwrap();
        for broken in [
            Limits {
                max_connections: 0,
                ..Limits::default()
            },
            Limits {
                idle_timeout: Duration::ZERO,
                ..Limits::default()
            },
            Limits {
                max_header_bytes: 100,
                ..Limits::default()
            },
            Limits {
                max_buffered_bytes: 1,
                ..Limits::default()
            },
            Limits {
                max_connections: usize::MAX,
                ..Limits::default()
            },
            Limits {
                round_deadline: Duration::MAX,
                ..Limits::default()
            },
            Limits {
                max_message_bytes: super::super::wire::MAX_MESSAGE + 1,
                max_buffered_bytes: 1 << 30,
                ..Limits::default()
            },
            Limits {
                max_message_bytes: 1024,
                max_buffered_bytes: 1024,
                ..Limits::default()
            },
            Limits {
                max_header_bytes: 1 << 30,
                ..Limits::default()
            },
            Limits {
                max_remembered_requests: MIN_REMEMBERED_REQUESTS - 1,
                ..Limits::default()
            },
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }

    #[test]
    fn every_limit_has_a_name_that_sets_it() {
        let defaults = Limits::default();
        let named = defaults.by_name();
        let mut changed = defaults.clone();
        for (name, value) in &named {
            changed.set_by_name(name, value + 1).unwrap();
        }
        let after: Vec<_> = changed.by_name();
        for ((name, before), (same, now)) in named.iter().zip(&after) {
            assert_eq!((name, before + 1), (same, *now));
        }
        assert_eq!(
            changed.idle_timeout,
            defaults.idle_timeout + Duration::from_millis(1)
        );
        assert!(changed.set_by_name("max_conections", 1).is_err());
        assert!(changed.set_by_name("idle_timeout", 1).is_err());
        assert!(changed
            .set_by_name("requests_per_second_per_address", u64::from(u32::MAX) + 1)
            .is_err());
    }
}
