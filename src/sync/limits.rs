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
    /// up to [`Limits::queue_timeout`], then get `MNEMO_STATUS_BUSY`. Default 16.
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
    /// Request bodies held in memory at once, across all connections; a request that does
    /// not fit waits up to [`Limits::queue_timeout`], then gets `MNEMO_STATUS_BUSY`.
    /// Default 64 MiB.
    pub max_buffered_bytes: usize,
    /// Largest request head (request line and headers) a listener reads. Default 16 KiB.
    pub max_header_bytes: usize,
    /// How long a connection may stay without a complete request head: after it opens and
    /// after each response. Slow headers and idle connections are closed. Default 20 s.
    pub idle_timeout: Duration,
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
            body_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(10),
            max_tracked_addresses: 4096,
            max_watches: 128,
            max_watches_per_address: 16,
            watch_timeout: Duration::from_secs(25),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            round_deadline: Duration::from_secs(600),
        }
    }
}

impl Limits {
    /// Fails unless every limit is usable (positive, and the header limit at least 8 KiB,
    /// the least the HTTP parser accepts).
    pub fn validate(&self) -> crate::Result<()> {
        let counts = [
            self.max_connections,
            self.max_connections_per_address,
            self.max_requests_in_flight,
            self.max_requests_in_flight_per_address,
            self.max_message_bytes,
            self.max_buffered_bytes,
            self.max_tracked_addresses,
            self.max_watches,
            self.max_watches_per_address,
        ];
        let times = [
            self.idle_timeout,
            self.body_timeout,
            self.queue_timeout,
            self.watch_timeout,
            self.connect_timeout,
            self.request_timeout,
            self.round_deadline,
        ];
        if counts.contains(&0)
            || times.contains(&Duration::ZERO)
            || self.requests_per_second_per_address == 0
            || self.request_burst_per_address == 0
            || self.max_header_bytes < 8192
            || self.max_message_bytes > self.max_buffered_bytes
            || self.watch_timeout >= self.request_timeout
        {
            return Err(crate::Error::invalid(
                "sync limits must be positive, headers at least 8 KiB, the buffer at least one message, and watches shorter than a request",
            ));
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
        ] {
            assert!(broken.validate().is_err(), "{broken:?}");
        }
    }
}
