//! What a listener counts per remote address: open connections, requests in flight,
//! watches held, and a token bucket for the request rate. An attacker can fill only its own address's share.
//! The table is bounded: addresses with nothing open are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::sync::Limits;

/// Who a share belongs to: an IPv4 address, or an IPv6 /64 (one host's usual allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Address {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Address {
    /// The share `ip` belongs to (IPv4-mapped IPv6 addresses count as IPv4).
    pub(super) fn of(ip: IpAddr) -> Address {
        match ip {
            IpAddr::V4(v4) => Address::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Address::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Address::V6Prefix(prefix)
                }
            },
        }
    }
}

#[derive(Clone, Copy)]
struct Counters {
    connections: usize,
    in_flight: usize,
    watches: usize,
    tokens: f64,
    refilled: Instant,
}

struct Table {
    by_address: HashMap<Address, Counters>,
    connections: usize,
    watches: usize,
}

/// What a guard counts.
#[derive(Clone, Copy)]
enum Held {
    Connection,
    Request,
    Watch,
}

/// The counters of every address a listener serves.
pub(super) struct Addresses {
    limits: Limits,
    table: Mutex<Table>,
}

/// Why a request was refused.
pub(super) enum Refusal {
    /// The address made too many requests too fast.
    Rate,
    /// The address has too many requests in flight.
    InFlight,
}

impl Addresses {
    pub(super) fn new(limits: Limits) -> Arc<Addresses> {
        Arc::new(Addresses {
            limits,
            table: Mutex::new(Table {
                by_address: HashMap::new(),
                connections: 0,
                watches: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `address`, or `None` if the listener or the address is
    /// at its connection limit. The connection is counted until the guard is dropped.
    pub(super) fn admit(self: &Arc<Self>, address: Address) -> Option<ConnectionGuard> {
        let mut table = self.lock();
        if table.connections >= self.limits.max_connections {
            return None;
        }
        let counters = self.counters(&mut table, address);
        if counters.connections >= self.limits.max_connections_per_address {
            return None;
        }
        counters.connections += 1;
        table.connections += 1;
        Some(ConnectionGuard {
            held: Guard {
                addresses: self.clone(),
                address,
                held: Held::Connection,
            },
        })
    }

    /// Counts a watch from `address`, or `None` if the listener or the address holds as
    /// many as it may. The watch is counted until the guard is dropped.
    pub(super) fn begin_watch(self: &Arc<Self>, address: Address) -> Option<WatchGuard> {
        let mut table = self.lock();
        if table.watches >= self.limits.max_watches {
            return None;
        }
        let counters = self.counters(&mut table, address);
        if counters.watches >= self.limits.max_watches_per_address {
            return None;
        }
        counters.watches += 1;
        table.watches += 1;
        Some(WatchGuard {
            _held: Guard {
                addresses: self.clone(),
                address,
                held: Held::Watch,
            },
        })
    }

    /// Admits one request from `address`: within its rate and its in-flight share. The
    /// request counts as in flight until the guard is dropped.
    pub(super) fn begin_request(
        self: &Arc<Self>,
        address: Address,
    ) -> Result<RequestGuard, Refusal> {
        let (rate, burst) = (
            f64::from(self.limits.requests_per_second_per_address),
            f64::from(self.limits.request_burst_per_address),
        );
        let max_in_flight = self.limits.max_requests_in_flight_per_address;
        let mut table = self.lock();
        let counters = self.counters(&mut table, address);
        let now = Instant::now();
        let elapsed = now.duration_since(counters.refilled).as_secs_f64();
        counters.tokens = (counters.tokens + elapsed * rate).min(burst);
        counters.refilled = now;
        if counters.tokens < 1.0 {
            return Err(Refusal::Rate);
        }
        if counters.in_flight >= max_in_flight {
            return Err(Refusal::InFlight);
        }
        counters.tokens -= 1.0;
        counters.in_flight += 1;
        Ok(RequestGuard {
            _held: Guard {
                addresses: self.clone(),
                address,
                held: Held::Request,
            },
        })
    }

    /// The counters of `address`, made (full bucket) if absent. When the table is full,
    /// addresses with nothing open are forgotten first; connected ones never are (there are
    /// at most `max_connections` of those).
    fn counters<'a>(&self, table: &'a mut Table, address: Address) -> &'a mut Counters {
        if !table.by_address.contains_key(&address)
            && table.by_address.len() >= self.limits.max_tracked_addresses
        {
            table
                .by_address
                .retain(|_, c| c.connections > 0 || c.in_flight > 0 || c.watches > 0);
        }
        table.by_address.entry(address).or_insert(Counters {
            connections: 0,
            in_flight: 0,
            watches: 0,
            tokens: f64::from(self.limits.request_burst_per_address),
            refilled: Instant::now(),
        })
    }

    fn release(&self, address: Address, held: Held) {
        let mut table = self.lock();
        match held {
            Held::Connection => table.connections = table.connections.saturating_sub(1),
            Held::Watch => table.watches = table.watches.saturating_sub(1),
            Held::Request => {}
        }
        if let Some(c) = table.by_address.get_mut(&address) {
            let count = match held {
                Held::Connection => &mut c.connections,
                Held::Request => &mut c.in_flight,
                Held::Watch => &mut c.watches,
            };
            *count = count.saturating_sub(1);
        }
    }

    /// Connections open now (for tests and diagnostics).
    pub(super) fn open_connections(&self) -> usize {
        self.lock().connections
    }

    /// Watches held now (for diagnostics).
    pub(super) fn watches(&self) -> usize {
        self.lock().watches
    }
}

/// Something counted for an address until dropped.
struct Guard {
    addresses: Arc<Addresses>,
    address: Address,
    held: Held,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.addresses.release(self.address, self.held);
    }
}

/// One counted connection.
pub(super) struct ConnectionGuard {
    held: Guard,
}

impl ConnectionGuard {
    /// The address the connection came from.
    pub(super) fn address(&self) -> Address {
        self.held.address
    }
}

/// One counted request.
pub(super) struct RequestGuard {
    _held: Guard,
}

/// One counted watch.
pub(super) struct WatchGuard {
    _held: Guard,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 3,
            max_connections_per_address: 2,
            max_requests_in_flight_per_address: 1,
            requests_per_second_per_address: 1,
            request_burst_per_address: 2,
            max_tracked_addresses: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn each_address_fills_only_its_own_share() {
        let table = Addresses::new(limits());
        let a = Address::of("127.0.0.2".parse().unwrap());
        let b = Address::of("127.0.0.1".parse().unwrap());
        let held: Vec<_> = (0..2).map(|_| table.admit(a).unwrap()).collect();
        assert!(table.admit(a).is_none(), "a's share is full");
        let b1 = table.admit(b).expect("b still gets in");
        assert!(table.admit(b).is_none(), "the listener is full");
        drop(held);
        assert!(table.admit(b).is_some());
        drop(b1);

        // One request in flight per address; the burst is two, then one a second.
        let first = table.begin_request(a).ok().unwrap();
        assert!(matches!(table.begin_request(a), Err(Refusal::InFlight)));
        drop(first);
        drop(table.begin_request(a).ok().unwrap());
        assert!(matches!(table.begin_request(a), Err(Refusal::Rate)));
        assert!(table.begin_request(b).is_ok());

        // Watches: two in all, one per address.
        let small = Addresses::new(Limits {
            max_watches: 2,
            max_watches_per_address: 1,
            ..limits()
        });
        let c = Address::of("127.0.0.3".parse().unwrap());
        let wa = small.begin_watch(a).unwrap();
        assert!(small.begin_watch(a).is_none(), "a's watch share is full");
        let _wb = small.begin_watch(b).unwrap();
        assert!(
            small.begin_watch(c).is_none(),
            "the listener's watches are full"
        );
        drop(wa);
        assert!(small.begin_watch(c).is_some());
    }

    #[test]
    fn ipv6_hosts_share_by_64_prefix_and_mapped_ipv4_is_ipv4() {
        let one = Address::of("2001:db8:1:2::1".parse().unwrap());
        let two = Address::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let other = Address::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, two);
        assert_ne!(one, other);
        assert_eq!(
            Address::of("::ffff:10.0.0.1".parse().unwrap()),
            Address::of("10.0.0.1".parse().unwrap())
        );
    }
}
