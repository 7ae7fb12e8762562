//! Admission: how many connections may be on their way in (TLS, CONNECT, password check) at
//! once, overall and per address, and how many Argon2 checks may run at once, so that a
//! connection flood cannot starve the devices already connected, nor lock out those coming
//! back.
//!
//! Fairness: when every pending slot is taken, a newcomer from an address that holds fewer
//! slots than the heaviest address takes the oldest slot of that heaviest address, whose
//! connection is closed. A flood from a few addresses then only churns its own connections;
//! a device reconnecting from its own address always gets in. Addresses are counted one by one
//! for IPv4 and by /64 for IPv6 (one host's share of a LAN, which it can fill at will).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

/// Connections that have not yet authenticated, at most.
const MAX_PENDING: usize = 256;
/// Unauthenticated connections from one address, at most. Past it, its new connections are
/// closed at once (`refused{reason="busy"}`).
const MAX_PENDING_PER_PEER: usize = 64;
/// Argon2 verifications running at once (each takes a core for a few milliseconds).
const MAX_KDF: usize = 2;

#[derive(Debug, Default)]
struct Pool {
    /// Pending connections per address: (slot id, cancelled to evict it), oldest first.
    peers: HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>,
    total: usize,
    next_id: u64,
}

/// The admission limits of every listener of the gate.
#[derive(Debug)]
pub struct Admission {
    pool: Arc<Mutex<Pool>>,
    kdf: Semaphore,
}

/// A slot among the unauthenticated connections, freed when dropped. Its connection must end
/// when [`PendingSlot::evicted`] fires.
pub struct PendingSlot {
    pool: Arc<Mutex<Pool>>,
    peer: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

impl PendingSlot {
    /// Fires when a newcomer from a lighter address took this slot.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.pool);
        let Pool { peers, total, .. } = &mut *guard;
        let Some(queue) = peers.get_mut(&self.peer) else {
            return;
        };
        if let Some(i) = queue.iter().position(|(id, _)| *id == self.id) {
            queue.remove(i);
            *total -= 1;
        }
        if queue.is_empty() {
            peers.remove(&self.peer);
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            pool: Arc::new(Mutex::new(Pool::default())),
            kdf: Semaphore::new(MAX_KDF),
        }
    }
}

fn lock(pool: &Mutex<Pool>) -> std::sync::MutexGuard<'_, Pool> {
    // Every critical section leaves the pool consistent.
    pool.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a connection was admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A free slot.
    Free,
    /// The oldest slot of the heaviest address, whose connection is closed.
    Evicted,
}

impl Admission {
    /// A pending slot for a connection from `ip`, unless that address holds its share or every
    /// slot is held by addresses no heavier than it.
    pub fn pending_slot(&self, ip: IpAddr) -> Option<(PendingSlot, Admitted)> {
        let peer = peer_of(ip);
        let mut pool = lock(&self.pool);
        let mine = pool.peers.get(&peer).map_or(0, VecDeque::len);
        if mine >= MAX_PENDING_PER_PEER {
            return None;
        }
        let mut how = Admitted::Free;
        if pool.total >= MAX_PENDING {
            let heaviest = pool
                .peers
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(p, q)| (*p, q.len()))?;
            if heaviest.1 <= mine + 1 {
                return None;
            }
            let queue = pool.peers.get_mut(&heaviest.0)?;
            let (_, token) = queue.pop_front()?;
            if queue.is_empty() {
                pool.peers.remove(&heaviest.0);
            }
            token.cancel();
            pool.total -= 1;
            how = Admitted::Evicted;
        }
        pool.next_id += 1;
        let id = pool.next_id;
        let evicted = CancellationToken::new();
        pool.peers
            .entry(peer)
            .or_default()
            .push_back((id, evicted.clone()));
        pool.total += 1;
        Some((
            PendingSlot {
                pool: self.pool.clone(),
                peer,
                id,
                evicted,
            },
            how,
        ))
    }

    /// Waits for a turn to run an Argon2 check; `None` if the gate is closing.
    pub async fn kdf(&self) -> Option<SemaphorePermit<'_>> {
        self.kdf.acquire().await.ok()
    }
}

/// The address a limit counts by: IPv4 addresses one by one, IPv6 by /64.
fn peer_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = !0u128 << 64;
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn limits_count_per_address_and_per_ipv6_64() {
        let a = Admission::default();
        let mut held = Vec::new();
        for i in 0..MAX_PENDING_PER_PEER {
            // Every address of one /64 counts as one peer.
            let slot = a.pending_slot(ip(&format!("2001:db8::{:x}", i + 1)));
            held.push(slot.unwrap_or_else(|| panic!("slot {i}")));
        }
        assert!(a.pending_slot(ip("2001:db8::ffff:1")).is_none());
        assert!(
            a.pending_slot(ip("2001:db8:0:1::1")).is_some(),
            "another /64"
        );
        assert!(a.pending_slot(ip("10.0.0.1")).is_some());
        held.pop();
        assert!(
            a.pending_slot(ip("2001:db8::ffff:1")).is_some(),
            "freed on drop"
        );
    }

    #[test]
    fn a_full_pool_gives_way_to_a_lighter_address() {
        let a = Admission::default();
        let flooders = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
        let mut held = Vec::new();
        for f in flooders {
            for _ in 0..MAX_PENDING_PER_PEER {
                held.push(a.pending_slot(ip(f)).unwrap_or_else(|| panic!("{f}")));
            }
        }
        // Full. A flooder gets nothing more; a device from elsewhere gets in, and the oldest
        // connection of a heaviest flooder is told to close.
        assert!(a.pending_slot(ip("10.0.0.1")).is_none());
        let (device, how) = a
            .pending_slot(ip("192.168.1.20"))
            .unwrap_or_else(|| panic!("the device was locked out"));
        assert_eq!(how, Admitted::Evicted);
        let evicted: Vec<_> = held
            .iter()
            .filter(|(s, _)| s.evicted().is_cancelled())
            .collect();
        assert_eq!(evicted.len(), 1);
        assert!(!device.evicted().is_cancelled());
        // The evicted slot no longer counts, even before its connection drops it.
        drop(held);
        assert!(a.pending_slot(ip("10.0.0.1")).is_some());
    }
}
