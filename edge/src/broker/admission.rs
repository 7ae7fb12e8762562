//! Admission: how many connections may be on their way in (TLS, CONNECT, password check) at
//! once, overall and per address, and how many Argon2 checks may run at once, so that a
//! connection flood cannot starve the devices already connected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// Connections that have not yet authenticated, at most. Past it, new connections are
/// closed at once (`refused{reason="busy"}`).
const MAX_PENDING: usize = 256;
/// Unauthenticated connections from one address (an IPv6 /64 counts as one), at most.
const MAX_PENDING_PER_PEER: usize = 64;
/// Argon2 verifications running at once (each takes a core for a few milliseconds).
const MAX_KDF: usize = 2;

/// The admission limits of every listener of the gate.
#[derive(Debug)]
pub struct Admission {
    pending: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    kdf: Semaphore,
}

/// A slot among the unauthenticated connections, freed when dropped.
pub struct PendingSlot {
    _permit: OwnedSemaphorePermit,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            peers: Arc::new(Mutex::new(HashMap::new())),
            kdf: Semaphore::new(MAX_KDF),
        }
    }
}

impl Admission {
    /// A pending slot for a connection from `ip`, unless too many are pending overall or
    /// from that address.
    pub fn pending_slot(&self, ip: IpAddr) -> Option<PendingSlot> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let peer = peer_of(ip);
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = peers.entry(peer).or_insert(0);
        if *n >= MAX_PENDING_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            _permit: permit,
            peers: self.peers.clone(),
            peer,
        })
    }

    /// Waits for a turn to run an Argon2 check; `None` if the gate is closing.
    pub async fn kdf(&self) -> Option<SemaphorePermit<'_>> {
        self.kdf.acquire().await.ok()
    }
}

/// The address a limit counts by: IPv4 addresses one by one, IPv6 by /64 (one host's share of
/// a LAN, which it can fill with addresses at will).
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

    #[test]
    fn limits_count_per_address_and_per_ipv6_64() {
        let a = Admission::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
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
}
