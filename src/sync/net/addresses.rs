//! What a listener counts per remote address: open connections, requests in flight,
//! watches held, and a token bucket for the request rate. An attacker can fill only its own
//! address's share. The table is bounded: addresses with nothing open are forgotten first.
//!
//! A listener holding as many connections as it may makes room for a new one by closing an
//! idle connection (no request being handled on it, nor its reply being written; one still
//! in its handshake counts as idle): of an address holding at least two more than the
//! newcomer's, or else one idle for the limit `evict_idle_after` or more
//! ([`Addresses::make_room`]). So a few addresses cannot keep everyone else out, whether
//! they send a request now and then or open connections again as soon as they close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

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
    watches: usize,
    /// Every connection counted, by its number: how many the listener holds, and what a
    /// full listener looks at to make room.
    open: HashMap<u64, (Address, Arc<Activity>)>,
    next_id: u64,
}

/// [`Activity::idle_since_ms`] while a request is being handled.
const BUSY: u64 = u64::MAX;

/// What a connection's task tells the listener of it, and how the listener tells it to
/// close.
pub(super) struct Activity {
    /// When the table was made: the origin of [`Activity::idle_since_ms`].
    origin: Instant,
    /// Milliseconds from `origin` to when the connection last became idle ([`BUSY`] while a
    /// request is handled on it).
    idle_since_ms: AtomicU64,
    close: Notify,
}

/// Milliseconds since `origin`: the clock of [`Activity::idle_since_ms`].
fn ms_since(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

impl Activity {
    /// A request is being handled on the connection: it is not closed to make room.
    pub(super) fn busy(&self) {
        self.idle_since_ms.store(BUSY, Ordering::Release);
    }

    /// The connection's request was handled and its reply written: it is idle from now on.
    pub(super) fn idle(&self) {
        self.idle_since_ms
            .store(ms_since(self.origin), Ordering::Release);
    }

    /// Returns once the listener closed the connection to make room for another.
    pub(super) async fn evicted(&self) {
        self.close.notified().await;
    }
}

/// What a guard counts.
#[derive(Clone, Copy)]
enum Held {
    Request,
    Watch,
}

/// The counters of every address a listener serves.
pub(super) struct Addresses {
    limits: Limits,
    table: Mutex<Table>,
    /// The origin of every connection's [`Activity`] times.
    origin: Instant,
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
                watches: 0,
                open: HashMap::new(),
                next_id: 0,
            }),
            origin: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `address`, or `None` if the address is at its
    /// connection limit, or the listener is at its own and no connection could be closed to
    /// make room ([`Addresses::make_room`]). The connection is counted until the guard is
    /// dropped or it is evicted.
    pub(super) fn admit(self: &Arc<Self>, address: Address) -> Option<ConnectionGuard> {
        let mut table = self.lock();
        // Looked up, not made: a refused connection leaves nothing in the table.
        let held_here = table.by_address.get(&address).map_or(0, |c| c.connections);
        if held_here >= self.limits.max_connections_per_address {
            return None;
        }
        if table.open.len() >= self.limits.max_connections && !self.make_room(&mut table, held_here)
        {
            return None;
        }
        self.counters(&mut table, address).connections += 1;
        let activity = Arc::new(Activity {
            origin: self.origin,
            idle_since_ms: AtomicU64::new(0),
            close: Notify::new(),
        });
        activity.idle();
        let id = table.next_id;
        table.next_id += 1;
        table.open.insert(id, (address, activity.clone()));
        Some(ConnectionGuard {
            addresses: self.clone(),
            address,
            id,
            activity,
        })
    }

    /// Closes a connection of a full listener for a newcomer whose address holds
    /// `held_here`: first, if some address holds at least two more than that, its
    /// connection idle longest, however briefly (a few addresses cannot keep the others
    /// out, even by opening connections again as soon as they are closed); else the
    /// connection idle longest of all, if idle `evict_idle_after` or more. Never one handling
    /// a request or writing its reply. It stops being counted now, and its task is told to
    /// close it. Whether one was.
    fn make_room(&self, table: &mut Table, held_here: usize) -> bool {
        let now_ms = ms_since(self.origin);
        let idle_since = |activity: &Activity| {
            let since = activity.idle_since_ms.load(Ordering::Acquire);
            (since != BUSY).then_some(since)
        };
        let greediest = (table.by_address.iter())
            .max_by_key(|(_, c)| c.connections)
            .filter(|(_, c)| c.connections > held_here + 1)
            .map(|(address, _)| *address);
        let of_greediest = greediest.and_then(|greediest| {
            (table.open.iter())
                .filter(|(_, (address, _))| *address == greediest)
                .filter_map(|(id, (_, activity))| Some((idle_since(activity)?, *id)))
                .min()
        });
        let limit_ms = self.limits.evict_idle_after.as_millis() as u64;
        let victim = of_greediest.or_else(|| {
            (table.open.iter())
                .filter_map(|(id, (_, activity))| Some((idle_since(activity)?, *id)))
                .filter(|(since, _)| now_ms.saturating_sub(*since) >= limit_ms)
                .min()
        });
        let Some((_, id)) = victim else {
            return false;
        };
        if let Some((address, activity)) = table.open.remove(&id) {
            Self::uncount_connection(table, address);
            activity.close.notify_one();
        }
        true
    }

    fn uncount_connection(table: &mut Table, address: Address) {
        if let Some(c) = table.by_address.get_mut(&address) {
            c.connections = c.connections.saturating_sub(1);
        }
    }

    /// Stops counting connection `id`, unless it was evicted (and so uncounted) before.
    fn close_connection(&self, id: u64) {
        let mut table = self.lock();
        if let Some((address, _)) = table.open.remove(&id) {
            Self::uncount_connection(&mut table, address);
        }
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
        if let Held::Watch = held {
            table.watches = table.watches.saturating_sub(1);
        }
        if let Some(c) = table.by_address.get_mut(&address) {
            let count = match held {
                Held::Request => &mut c.in_flight,
                Held::Watch => &mut c.watches,
            };
            *count = count.saturating_sub(1);
        }
    }

    /// Connections open now (for tests and diagnostics).
    pub(super) fn open_connections(&self) -> usize {
        self.lock().open.len()
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
    addresses: Arc<Addresses>,
    address: Address,
    id: u64,
    activity: Arc<Activity>,
}

impl ConnectionGuard {
    /// The address the connection came from.
    pub(super) fn address(&self) -> Address {
        self.address
    }

    /// What the connection's task reports of it, and hears of its eviction through.
    pub(super) fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.addresses.close_connection(self.id);
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
    use std::time::Duration;

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

    /// Long enough that no connection of a test is closed to make room.
    const NEVER: Duration = Duration::from_secs(3600);

    fn evicting_after(limits: Limits, evict_idle_after: Duration) -> Arc<Addresses> {
        Addresses::new(Limits {
            evict_idle_after,
            ..limits
        })
    }

    #[test]
    fn each_address_fills_only_its_own_share() {
        let table = evicting_after(limits(), NEVER);
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
        let small = evicting_after(
            Limits {
                max_watches: 2,
                max_watches_per_address: 1,
                ..limits()
            },
            NEVER,
        );
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

    /// A full listener makes room for a new connection by closing the one idle longest,
    /// never one handling a request nor one idle for less than the bound; an address at its
    /// own cap gets no room that way.
    #[test]
    fn a_full_listener_closes_the_connection_idle_longest_for_a_new_one() {
        use futures_util::FutureExt;
        let evicted = |guard: &ConnectionGuard| guard.activity().evicted().now_or_never();
        let [a, b, c, d] = [2, 3, 4, 5].map(|n| Address::of([127, 0, 0, n].into()));
        let table = evicting_after(limits(), Duration::ZERO);
        let oldest = table.admit(a).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let (newer, busy) = (table.admit(a).unwrap(), table.admit(b).unwrap());
        busy.activity().busy();
        assert!(
            table.admit(a).is_none(),
            "a's own share is full: no room made"
        );
        let from_c = table.admit(c).expect("room made for c");
        assert!(
            evicted(&oldest).is_some(),
            "the one idle longest is told to close"
        );
        assert!(evicted(&newer).is_none() && evicted(&busy).is_none());
        assert_eq!(table.open_connections(), 3);
        drop(oldest); // counted once only
        assert_eq!(table.open_connections(), 3);
        for guard in [&newer, &from_c] {
            guard.activity().busy();
        }
        assert!(
            table.admit(d).is_none(),
            "every connection is handling a request"
        );
        busy.activity().idle();
        assert!(table.admit(d).is_some(), "one became idle");
        assert!(evicted(&busy).is_some());

        // Idle for less than the bound, and no address holding two more than the newcomer:
        // not closed.
        let patient = evicting_after(limits(), NEVER);
        let _held = [a, b, c].map(|address| patient.admit(address).unwrap());
        assert!(patient.admit(d).is_none());
    }

    /// A full listener closes a connection, however briefly idle, of an address holding at
    /// least two more than the newcomer's: a few addresses cannot keep the others out by
    /// opening connections again as soon as they are closed.
    #[test]
    fn a_full_listener_makes_room_from_the_address_holding_the_most() {
        use futures_util::FutureExt;
        let [a, b, c] = [2, 3, 4].map(|n| Address::of([127, 0, 0, n].into()));
        let table = evicting_after(limits(), NEVER);
        let greedy = [table.admit(a).unwrap(), table.admit(a).unwrap()];
        let _from_b = table.admit(b).unwrap();
        greedy[1].activity().busy();
        let from_c = table.admit(c).expect("a holds two more than c: room made");
        assert!(greedy[0].activity().evicted().now_or_never().is_some());
        assert!(greedy[1].activity().evicted().now_or_never().is_none());
        // Now a, b and c hold one each: nobody makes room for another.
        assert!(table.admit(a).is_none());
        drop(from_c);
        assert!(
            table.admit(a).is_some(),
            "room freed by a closed connection"
        );
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
