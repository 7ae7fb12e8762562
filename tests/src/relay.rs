//! A UDP relay between an edge and its hub that the scenario controls: pass everything, cut
//! the link, or make it lossy (drop a share of datagrams) and reordering (hold one datagram back
//! and send it after the next). QUIC must deliver through all of it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngExt as _;
use tokio::net::UdpSocket;

/// What the relay does to datagrams, both ways.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Forward everything in order.
    Pass,
    /// Drop everything (a network partition).
    Cut,
    /// Drop `drop_percent` % of datagrams; with `reorder`, swap neighbours now and then.
    Lossy {
        /// Share of datagrams dropped, 0–100.
        drop_percent: u8,
        /// Hold a datagram back and send it after the next one.
        reorder: bool,
    },
}

/// Datagrams the relay dropped and reordered.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Forwarded.
    pub forwarded: AtomicU64,
    /// Dropped (cut or lossy).
    pub dropped: AtomicU64,
    /// Sent after a later one.
    pub reordered: AtomicU64,
}

/// A running relay. The edge connects to [`Relay::addr`]; the relay talks to the hub.
pub struct Relay {
    /// Where the edge should send.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Counts.
    pub stats: Arc<RelayStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts a relay to `upstream` in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(upstream).await?;
        let addr = front.local_addr()?;
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let stats = Arc::new(RelayStats::default());
        let task = tokio::spawn(run(front, back, mode.clone(), stats.clone()));
        Ok(Relay {
            addr,
            mode,
            stats,
            task,
        })
    }

    /// Changes what the relay does from now on.
    pub fn set(&self, mode: Mode) {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One direction's reordering slot.
#[derive(Default)]
struct Held(Option<Vec<u8>>);

async fn run(front: UdpSocket, back: UdpSocket, mode: Arc<Mutex<Mode>>, stats: Arc<RelayStats>) {
    let mut client: Option<SocketAddr> = None;
    let mut up = Held::default();
    let mut down = Held::default();
    let mut a = vec![0u8; 65536];
    let mut b = vec![0u8; 65536];
    loop {
        let current = *mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tokio::select! {
            r = front.recv_from(&mut a) => {
                let Ok((n, from)) = r else { continue };
                // The edge's newest socket is the one to answer (it reconnects from new ports).
                client = Some(from);
                for d in shape(current, &mut up, &a[..n], &stats) {
                    let _ = back.send(&d).await;
                }
            }
            r = back.recv(&mut b) => {
                let Ok(n) = r else { continue };
                let Some(to) = client else { continue };
                for d in shape(current, &mut down, &b[..n], &stats) {
                    let _ = front.send_to(&d, to).await;
                }
            }
        }
    }
}

/// What to send now for one received datagram.
fn shape(mode: Mode, held: &mut Held, d: &[u8], stats: &RelayStats) -> Vec<Vec<u8>> {
    match mode {
        Mode::Pass => {
            let mut out: Vec<Vec<u8>> = held.0.take().into_iter().collect();
            out.push(d.to_vec());
            stats
                .forwarded
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            out
        }
        Mode::Cut => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            held.0 = None;
            Vec::new()
        }
        Mode::Lossy {
            drop_percent,
            reorder,
        } => {
            let mut rng = rand::rng();
            if rng.random_range(0..100u8) < drop_percent {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Vec::new();
            }
            if let Some(earlier) = held.0.take() {
                // The held datagram goes after this one.
                stats.reordered.fetch_add(1, Ordering::Relaxed);
                stats.forwarded.fetch_add(2, Ordering::Relaxed);
                return vec![d.to_vec(), earlier];
            }
            if reorder && rng.random_range(0..10u8) == 0 {
                held.0 = Some(d.to_vec());
                return Vec::new();
            }
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            vec![d.to_vec()]
        }
    }
}
