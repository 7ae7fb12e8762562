//! Ingress: accepts edges over QUIC, checks who they are, stores their records exactly once
//! and acknowledges after the commit.
//!
//! Per connection: a control stream (`Hello` → `Welcome` with the stored watermarks, or
//! `Error`), then one stream per lane carrying `Records` up and `Ack` down. The edge's
//! identity is the CN and ward the OU of its verified client certificate; a `Hello` that claims
//! anything else is refused.

mod control;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wardlink_io::frames::{FrameIoError, read_frame, write_frame};
use wardlink_shared::dashboard::{EdgeState, ServerEvent};
use wardlink_shared::wire::{
    ErrorCode, Frame, FrameDecoder, OLDEST_EDGE_PROTOCOL, PROTOCOL_VERSION, TokenKeys,
};
use wardlink_shared::{EdgeId, WardId};

use crate::metrics::HubMetrics;
use crate::store::{self, Store, StoreError};
pub use tls::{TlsError, peer_identity, server_config};

/// QUIC application close code for a revoked edge.
const REVOKED: u32 = 4;

/// The Hello must arrive within this after the handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an edge session ended.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Sending or receiving a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameIoError),
    /// The edge broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The edge was silent.
    #[error("timed out waiting for the edge")]
    Timeout,
    /// Nothing arrived from the edge, not even its heartbeat, for the offline time.
    #[error("the edge fell silent")]
    Silent,
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store is closed.
    #[error(transparent)]
    Closed(#[from] store::Closed),
}

/// What the hub has told dashboards about one edge, and which connection is its current one.
#[derive(Debug, Default)]
struct EdgePresence {
    /// The current connection's generation.
    current: Option<u64>,
    /// The connection whose end started the present absence.
    left: Option<u64>,
    /// Dashboards were last told `online`.
    online: bool,
}

/// Edge presence: `online` when an edge connects after being offline (or for the first time),
/// `offline` only once it has been absent for the offline time, so a reconnect does not flap.
#[derive(Default)]
struct Presence {
    edges: Mutex<HashMap<EdgeId, EdgePresence>>,
    next: std::sync::atomic::AtomicU64,
    /// Held from deciding an announcement until it is stored, so `online` and `offline`
    /// reach dashboards in the order they were decided.
    announcing: tokio::sync::Mutex<()>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EdgeId, EdgePresence>> {
        self.edges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection passed the handshake: its generation, and whether to announce `online`.
    fn arrive(&self, edge: &EdgeId) -> (u64, bool) {
        let g = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut map = self.lock();
        let p = map.entry(edge.clone()).or_default();
        p.current = Some(g);
        p.left = None;
        let announce = !p.online;
        p.online = true;
        (g, announce)
    }

    /// Connection `generation` ended. True if it was the edge's current one: the edge is now
    /// absent.
    fn leave(&self, edge: &EdgeId, generation: u64) -> bool {
        let mut map = self.lock();
        match map.get_mut(edge) {
            Some(p) if p.current == Some(generation) => {
                p.current = None;
                p.left = Some(generation);
                true
            }
            _ => false,
        }
    }

    /// True (once) if the edge is still absent since connection `generation` ended and was
    /// announced online: now announce it offline.
    fn still_gone(&self, edge: &EdgeId, generation: u64) -> bool {
        let mut map = self.lock();
        match map.get_mut(edge) {
            Some(p) if p.current.is_none() && p.left == Some(generation) && p.online => {
                p.online = false;
                true
            }
            _ => false,
        }
    }
}

/// Binds the QUIC endpoint.
pub fn bind(config: quinn::ServerConfig, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::server(config, addr)
}

/// What ingress enforces besides the protocol.
#[derive(Clone)]
pub struct Limits {
    /// How long an edge may be silent, or away, before it is marked offline.
    pub offline_after: Duration,
    /// Edges whose certificates no longer count (kept current by `revocation::watch`).
    pub revoked: tokio::sync::watch::Receiver<crate::revocation::Revoked>,
    /// What edges need to check dashboard tokens on their ward views: the hub's issuer,
    /// audience and public keys (its `revoked` is filled from `revoked_tokens`).
    pub token_keys: Arc<TokenKeys>,
    /// Revoked dashboard tokens (kept current by `revocation::watch`).
    pub revoked_tokens: tokio::sync::watch::Receiver<crate::revocation::RevokedTokens>,
}

/// Accepts edges until shutdown.
pub async fn run(
    endpoint: quinn::Endpoint,
    store: Store,
    metrics: Arc<HubMetrics>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let presence = Arc::new(Presence::default());
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let (store, metrics, shutdown, presence, limits) = (
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
            presence.clone(),
            limits.clone(),
        );
        tracker.spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    metrics.edges_refused.with("handshake").inc();
                    tracing::info!(error = %e, "edge handshake refused");
                    return;
                }
            };
            let Some((edge, ward)) = peer_identity(&conn) else {
                metrics.edges_refused.with("no_identity").inc();
                tracing::warn!("edge certificate names no edge id and ward; closing");
                conn.close(2u32.into(), b"certificate has no edge identity");
                return;
            };
            if limits.revoked.borrow().contains(&edge) {
                metrics.edges_refused.with("revoked").inc();
                tracing::warn!(edge = %edge, "revoked edge refused");
                conn.close(REVOKED.into(), b"edge certificate revoked");
                return;
            }
            let session = Session {
                conn,
                edge,
                ward,
                store,
                metrics,
                presence,
                offline_after: limits.offline_after,
                revoked: limits.revoked,
                tokens: control::TokenFeed {
                    keys: limits.token_keys,
                    revoked: limits.revoked_tokens,
                },
            };
            session.run(shutdown).await;
        });
    }
    endpoint.close(0u32.into(), b"hub shutting down");
    tracker.close();
    tracker.wait().await;
    // Let closing connections drain, so the UDP port is free when this returns.
    endpoint.wait_idle().await;
}

struct Session {
    conn: quinn::Connection,
    edge: EdgeId,
    ward: WardId,
    store: Store,
    metrics: Arc<HubMetrics>,
    presence: Arc<Presence>,
    offline_after: Duration,
    revoked: tokio::sync::watch::Receiver<crate::revocation::Revoked>,
    tokens: control::TokenFeed,
}

impl Session {
    async fn run(self, shutdown: CancellationToken) {
        let (generation, (stream, version), control) = match self.handshake().await {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(edge = %self.edge, error = %e, "edge refused");
                self.conn.close(2u32.into(), b"refused");
                return;
            }
        };
        self.metrics.edges_connected.add(1);
        tracing::info!(edge = %self.edge, ward = %self.ward, "edge connected");
        let mut revoked = self.revoked.clone();
        // Completes only on a revocation (a closed list means the hub is stopping).
        let revocation = async {
            if revoked.wait_for(|r| r.contains(&self.edge)).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = self.serve(stream, version, control) => r,
            () = revocation => {
                self.metrics.edges_refused.with("revoked").inc();
                tracing::warn!(edge = %self.edge, "edge revoked; connection closed");
                self.conn.close(REVOKED.into(), b"edge certificate revoked");
                Ok(())
            }
            () = shutdown.cancelled() => {
                self.conn.close(0u32.into(), b"hub shutting down");
                Ok(())
            }
        };
        self.metrics.edges_connected.add(-1);
        let silent = matches!(
            result,
            Err(IngressError::Silent)
                | Err(IngressError::Connection(quinn::ConnectionError::TimedOut))
                | Err(IngressError::Frame(FrameIoError::Read(
                    quinn::ReadError::ConnectionLost(quinn::ConnectionError::TimedOut)
                )))
        );
        if silent {
            self.metrics.edges_silent.inc();
            self.conn.close(3u32.into(), b"silent");
        }
        if let Err(e) = &result {
            tracing::info!(edge = %self.edge, error = %e, "edge connection ended");
        }
        if !self.presence.leave(&self.edge, generation) || shutdown.is_cancelled() {
            return;
        }
        if !silent {
            // Give a closed connection the offline time to come back.
            tokio::select! {
                () = tokio::time::sleep(self.offline_after) => {}
                () = shutdown.cancelled() => return,
            }
        }
        let _order = self.presence.announcing.lock().await;
        if self.presence.still_gone(&self.edge, generation) {
            tracing::info!(edge = %self.edge, ward = %self.ward, "edge offline");
            self.announce(EdgeState::Offline).await;
        }
    }

    async fn announce(&self, state: EdgeState) {
        let event = ServerEvent::Edge {
            edge: self.edge.clone(),
            ward: self.ward.clone(),
            state,
        };
        match self.store.append_event(event).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(edge = %self.edge, error = %e, "cannot store edge state"),
            Err(_) => {}
        }
    }

    /// Hello → Welcome; returns this connection's presence generation, the edge's stream and
    /// the control stream.
    #[allow(clippy::type_complexity)]
    async fn handshake(
        &self,
    ) -> Result<(u64, (u64, u16), (quinn::SendStream, quinn::RecvStream)), IngressError> {
        let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, self.conn.accept_bi())
            .await
            .map_err(|_| IngressError::Timeout)??;
        let mut dec = FrameDecoder::new();
        let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, &mut dec))
            .await
            .map_err(|_| IngressError::Timeout)?;
        let mut stream = 0;
        let mut edge_version = PROTOCOL_VERSION;
        let refusal = match hello {
            Ok(Some(Frame::Hello {
                version,
                edge,
                ward,
                stream: s,
            })) => {
                stream = s;
                edge_version = version;
                if !(OLDEST_EDGE_PROTOCOL..=PROTOCOL_VERSION).contains(&version) {
                    Some((
                        "version",
                        ErrorCode::UnsupportedVersion,
                        format!(
                            "this hub speaks protocol versions {OLDEST_EDGE_PROTOCOL} to {PROTOCOL_VERSION}; the edge sent {version}"
                        ),
                    ))
                } else if edge != self.edge || ward != self.ward {
                    Some((
                        "identity_mismatch",
                        ErrorCode::IdentityMismatch,
                        format!(
                            "hello names edge {edge} ward {ward}; the certificate names edge {} ward {}",
                            self.edge, self.ward
                        ),
                    ))
                } else {
                    None
                }
            }
            Ok(_) | Err(FrameIoError::Wire(_)) => {
                Some(("bad_frame", ErrorCode::BadFrame, "expected Hello".into()))
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((label, code, message)) = refusal {
            self.metrics.edges_refused.with(label).inc();
            write_frame(
                &mut send,
                &Frame::Error {
                    code,
                    message: message.clone(),
                },
            )
            .await?;
            let _ = send.finish();
            // Give the error frame a moment to leave before the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            return Err(IngressError::Protocol(message));
        }
        let stored = self.store.watermarks(self.edge.clone(), stream).await?;
        write_frame(
            &mut send,
            &Frame::Welcome {
                version: PROTOCOL_VERSION,
                stored,
            },
        )
        .await?;
        // Present only once welcomed: a handshake that fails leaves presence untouched.
        let generation = {
            let _order = self.presence.announcing.lock().await;
            let (generation, announce) = self.presence.arrive(&self.edge);
            if announce {
                tracing::info!(edge = %self.edge, ward = %self.ward, "edge online");
                self.announce(EdgeState::Online).await;
            }
            generation
        };
        Ok((generation, (stream, edge_version), (send, recv)))
    }

    /// Serves the control stream and the lanes until the connection ends.
    async fn serve(
        &self,
        stream: u64,
        version: u16,
        (send, recv): (quinn::SendStream, quinn::RecvStream),
    ) -> Result<(), IngressError> {
        // Edges of protocol 1 know no token frame.
        let tokens = (version >= 2).then(|| self.tokens.clone());
        let control = control::run(
            (send, recv),
            self.edge.clone(),
            self.store.clone(),
            self.offline_after,
            (version, tokens),
        );
        tokio::pin!(control);
        let mut lanes = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = &mut control => return r,
                s = self.conn.accept_bi() => {
                    let (send, recv) = s?;
                    let lane = Lane {
                        send,
                        recv,
                        edge: self.edge.clone(),
                        stream,
                        ward: self.ward.clone(),
                        store: self.store.clone(),
                        metrics: self.metrics.clone(),
                    };
                    lanes.spawn(lane.run());
                }
                Some(done) = lanes.join_next() => {
                    match done {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) => return Err(IngressError::Protocol(format!("lane task failed: {e}"))),
                    }
                }
            }
        }
    }
}

/// Most records of one lane merged into one store write, so an alarm on the other lane waits
/// for at most one modest commit (the store commits up to 4,096 edge records at once).
const MAX_COALESCED_RECORDS: usize = 2048;

struct Lane {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    edge: EdgeId,
    stream: u64,
    ward: WardId,
    store: Store,
    metrics: Arc<HubMetrics>,
}

impl Lane {
    async fn run(mut self) -> Result<(), IngressError> {
        let mut dec = FrameDecoder::new();
        let lane = match read_frame(&mut self.recv, &mut dec).await? {
            Some(Frame::OpenLane { lane }) => lane,
            _ => return self.refuse("a lane stream must start with OpenLane").await,
        };
        // A frame read ahead while coalescing, handled before reading another.
        let mut ahead = None;
        loop {
            let next = match ahead.take() {
                Some(frame) => frame,
                None => read_frame(&mut self.recv, &mut dec).await,
            };
            match next {
                Ok(Some(Frame::Records { mut records })) => {
                    // Frames that already arrived behind this one join its commit: under load
                    // one transaction (one fsync) stores many frames, instead of each frame
                    // waiting for the commits of all those ahead of it. Reading stops at the
                    // first frame not yet here, so an idle lane adds no wait.
                    while records.len() < MAX_COALESCED_RECORDS {
                        match read_frame(&mut self.recv, &mut dec).now_or_never() {
                            Some(Ok(Some(Frame::Records { records: more }))) => {
                                records.extend(more);
                            }
                            Some(other) => {
                                ahead = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    if records.iter().any(|r| r.body.lane() != lane) {
                        return self.refuse("record on the wrong lane").await;
                    }
                    let ingested = match self
                        .store
                        .ingest(
                            self.edge.clone(),
                            self.stream,
                            self.ward.clone(),
                            lane,
                            records,
                        )
                        .await?
                    {
                        Ok(i) => i,
                        Err(e @ StoreError::Gap { .. }) => {
                            return self.refuse(&e.to_string()).await;
                        }
                        Err(e) => return Err(e.into()),
                    };
                    write_frame(
                        &mut self.send,
                        &Frame::Ack {
                            seq: ingested.watermark,
                        },
                    )
                    .await?;
                }
                Ok(Some(Frame::Ping { nonce })) => {
                    write_frame(&mut self.send, &Frame::Pong { nonce }).await?
                }
                Ok(None) => return Ok(()),
                Ok(Some(_)) => return self.refuse("unexpected frame on a lane").await,
                Err(FrameIoError::Wire(e)) => return self.refuse(&e.to_string()).await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn refuse(&mut self, message: &str) -> Result<(), IngressError> {
        self.metrics.edges_refused.with("bad_frame").inc();
        write_frame(
            &mut self.send,
            &Frame::Error {
                code: ErrorCode::BadFrame,
                message: message.into(),
            },
        )
        .await?;
        let _ = self.send.finish();
        Err(IngressError::Protocol(message.into()))
    }
}
