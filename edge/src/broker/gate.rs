//! The gate: the edge's own MQTT listeners. Every device connection ends here.
//!
//! The gate accepts every connection (plain or TLS) under the admission limits, authenticates
//! the CONNECT, binds the connection to the one patient its device measures, registers it
//! among the device's sessions (a new connection takes over), answers the CONNACK itself and
//! hands the connection to its [`Session`], which answers the device's publishes once they are
//! durable. rumqttd sits behind it on loopback, for subscribers only.
//!
//! A device whose registry entry changes (bound to another patient, or removed) has its open
//! connection closed and its stored session dropped within a second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use wardlink_shared::{DeviceId, PatientId};

use super::admission::{Admission, PendingSlot};
use super::fanout::Fanout;
use super::metrics::BrokerMetrics;
use super::policy::{MAX_ALIASES, Policy, own_topic};
use super::relay::Relay;
use super::session::{End, MAX_UNACKED, Session};
use super::sessions::Sessions;
use super::{AuthRefusal, DeviceRegistry, RESERVED_PREFIX};
use crate::ingest::IngestMetrics;
use crate::ingest::Ingested;
use wardlink_shared::mqtt::{self as packet, LEVEL_V4, LEVEL_V5, PacketError, Refuse};

/// A write to a device that does not complete in this time ends its session (a device that
/// stops reading must not pin a task and a socket for ever).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// First read buffer of a connection.
const BUFFER: usize = 4096;
/// How often the registry file is checked for changes to apply to open sessions.
const REGISTRY_CHECK: Duration = Duration::from_secs(1);

/// Why the gate refused or ended a connection: the label of
/// `wardlink_edge_mqtt_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    /// Too many connections waiting to authenticate.
    Busy,
    /// The TLS handshake failed (e.g. the device does not trust the edge's certificate).
    TlsHandshake,
    /// No CONNECT within `mqtt.connect_timeout_ms`.
    Timeout,
    /// Not MQTT, or a malformed or oversized packet.
    Malformed,
    /// An MQTT version other than 3.1.1 and 5.
    Protocol,
    /// A will message addressed outside the device's patient.
    WillTopic,
    /// rumqttd (for a subscriber) or the sessions file could not be reached.
    Internal,
    /// Still unauthenticated when the pool was full and a connection from a lighter address
    /// took its slot.
    Evicted,
}

impl GateRefusal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            GateRefusal::Busy => "busy",
            GateRefusal::TlsHandshake => "tls_handshake",
            GateRefusal::Timeout => "timeout",
            GateRefusal::Malformed => "malformed",
            GateRefusal::Protocol => "protocol",
            GateRefusal::WillTopic => "will_topic",
            GateRefusal::Internal => "internal",
            GateRefusal::Evicted => "evicted",
        }
    }

    /// Every label.
    pub const LABELS: [&'static str; 8] = [
        "busy",
        "tls_handshake",
        "timeout",
        "malformed",
        "protocol",
        "will_topic",
        "internal",
        "evicted",
    ];
}

/// What a device did that the gate refused: the label of `wardlink_edge_mqtt_denied_total`.
pub const DENIED_LABELS: [&str; 2] = ["publish", "subscribe"];

/// Where subscribers' relays go, and the secret that gets them in.
#[derive(Debug, Clone)]
pub struct Inner {
    /// rumqttd's MQTT 3.1.1 listener (loopback).
    pub v4: SocketAddr,
    /// rumqttd's MQTT 5 listener (loopback).
    pub v5: SocketAddr,
    /// Password the gate presents for every device; rumqttd admits nothing else.
    pub secret: Arc<str>,
}

/// Publishes per second and burst allowed to one device.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Sustained publishes per second.
    pub per_s: u32,
    /// Publishes allowed at once after a quiet spell.
    pub burst: u32,
}

/// What the gate is built from.
pub struct Parts {
    /// The device registry.
    pub registry: Arc<DeviceRegistry>,
    /// The devices' sessions.
    pub sessions: Arc<Sessions>,
    /// Publishing into rumqttd for local subscribers.
    pub fanout: Fanout,
    /// Where accepted readings go.
    pub ingest: mpsc::Sender<Ingested>,
    /// The broker's metrics.
    pub metrics: Arc<BrokerMetrics>,
    /// Ingest's metrics (the gate decodes what devices publish).
    pub ingest_metrics: Arc<IngestMetrics>,
    /// rumqttd's loopback listeners.
    pub inner: Inner,
    /// `mqtt.max_payload_bytes`.
    pub max_payload: usize,
    /// `mqtt.connect_timeout_ms`.
    pub connect_timeout: Duration,
    /// `mqtt.max_publish_rate` and burst.
    pub rate: Rate,
    /// `mqtt.max_reading_age_s`, in ms.
    pub max_age: i64,
}

/// Shared state of every listener.
pub struct Gate {
    parts: Parts,
    max_packet: usize,
    admission: Admission,
}

/// Counts an open session in `wardlink_edge_mqtt_sessions` for as long as it lives, however
/// it ends (shutdown cancels sessions mid-await).
struct SessionCount(Arc<wardlink_shared::metrics::Gauge>);

impl SessionCount {
    fn new(gauge: &Arc<wardlink_shared::metrics::Gauge>) -> Self {
        gauge.add(1);
        Self(gauge.clone())
    }
}

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

impl Gate {
    /// A gate. Packets are allowed `max_payload` plus room for the topic and properties.
    pub fn new(parts: Parts) -> Arc<Self> {
        Arc::new(Self {
            max_packet: parts.max_payload.saturating_add(1024),
            parts,
            admission: Admission::default(),
        })
    }

    pub(super) fn metrics(&self) -> &BrokerMetrics {
        &self.parts.metrics
    }

    pub(super) fn ingest_metrics(&self) -> &IngestMetrics {
        &self.parts.ingest_metrics
    }

    pub(super) fn fanout(&self) -> &Fanout {
        &self.parts.fanout
    }

    pub(super) fn sessions(&self) -> &Sessions {
        &self.parts.sessions
    }

    pub(super) fn inner(&self) -> &Inner {
        &self.parts.inner
    }

    pub(super) fn max_packet(&self) -> usize {
        self.max_packet
    }

    pub(super) fn max_age(&self) -> i64 {
        self.parts.max_age
    }

    /// Accepts connections on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: wait for some to close.
                    tracing::warn!(error = %e, "mqtt accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some((permit, _)) = self.admission.pending_slot(peer.ip()) else {
                self.refused(GateRefusal::Busy);
                continue;
            };
            let evicted = permit.evicted().clone();
            // One deadline for the TLS handshake, the CONNECT and its authentication.
            let deadline = tokio::time::Instant::now() + self.parts.connect_timeout;
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    // Only while it is pending: once authenticated its slot is gone.
                    () = evicted.cancelled() => gate.refused(GateRefusal::Evicted),
                    () = gate.connection(stream, peer, tls, permit, deadline) => {}
                }
            });
        }
    }

    /// Applies registry changes to open and stored sessions until `shutdown`.
    pub async fn watch_registry(self: Arc<Self>, shutdown: CancellationToken) {
        let mut version = None;
        let mut tick = tokio::time::interval(REGISTRY_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let registry = self.parts.registry.clone();
            let now = match tokio::task::spawn_blocking(move || registry.refresh()).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "device registry unreadable; sessions unchanged");
                    continue;
                }
                Err(_) => continue,
            };
            if now == version {
                continue;
            }
            version = now;
            match self.parts.sessions.apply(&self.parts.registry).await {
                Ok(wipe) => {
                    let inner = &self.parts.inner;
                    for device in wipe {
                        if let Err(e) =
                            Relay::wipe(inner.v4, device.as_str(), inner.secret.as_bytes()).await
                        {
                            tracing::warn!(device = %device, error = %e, "could not clear a rebound device's subscriptions");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "sessions of rebound devices not saved"),
            }
        }
    }

    fn refused(&self, why: GateRefusal) {
        self.parts.metrics.refused.with(why.label()).inc();
    }

    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        permit: PendingSlot,
        deadline: tokio::time::Instant,
    ) {
        let Some(acceptor) = tls else {
            return self.handshake(stream, peer, permit, deadline).await;
        };
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.handshake(stream, peer, permit, deadline).await,
            Ok(Err(e)) => {
                self.refused(GateRefusal::TlsHandshake);
                tracing::debug!(%peer, error = %e, "mqtt tls handshake failed");
            }
            Err(_) => self.refused(GateRefusal::Timeout),
        }
    }

    /// From the first byte to the CONNACK, then the session.
    async fn handshake<S>(
        &self,
        mut client: S,
        peer: SocketAddr,
        permit: PendingSlot,
        deadline: tokio::time::Instant,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(BUFFER);
        let first = match tokio::time::timeout_at(
            deadline,
            read_packet(&mut client, &mut buf, self.max_packet),
        )
        .await
        {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                self.refused(GateRefusal::Malformed);
                tracing::debug!(%peer, error = %e, "mqtt connection refused");
                return;
            }
            Err(_) => {
                self.refused(GateRefusal::Timeout);
                return;
            }
        };
        let connect = match (packet::kind(&first), packet::parse_connect(&first)) {
            (packet::CONNECT, Ok(c)) => c,
            (_, e) => {
                self.refused(GateRefusal::Malformed);
                tracing::debug!(%peer, error = ?e.err(), "mqtt connection without CONNECT");
                return;
            }
        };
        let level = connect.level;
        if level != LEVEL_V4 && level != LEVEL_V5 {
            self.refused(GateRefusal::Protocol);
            let _ = refuse(&mut client, LEVEL_V4, Refuse::Protocol).await;
            return;
        }
        let (device, patient) =
            match tokio::time::timeout_at(deadline, self.authenticate(&connect)).await {
                Ok(Ok(p)) => p,
                Ok(Err(why)) => {
                    let _ = refuse(&mut client, level, why).await;
                    return;
                }
                Err(_) => {
                    self.refused(GateRefusal::Timeout);
                    let _ = refuse(&mut client, level, Refuse::Busy).await;
                    return;
                }
            };
        // Authenticated: no longer pending, so no longer evictable (the slot must not be taken
        // from a connection that has started to replace the device's previous one).
        drop(permit);
        let sessions = &self.parts.sessions;
        let opened = match sessions
            .open(&device, &patient, connect.clean, connect.persistent())
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.refused(GateRefusal::Internal);
                tracing::error!(device = %device, error = %e, "session not stored; connection refused");
                let _ = refuse(&mut client, level, Refuse::Busy).await;
                return;
            }
        };
        // The binding read before the password check may have changed since, and the registry
        // watcher may have applied the change before this session was registered.
        if self.parts.registry.patient_of(&device).as_ref() != Some(&patient) {
            sessions.closed(&device, opened.id);
            self.parts
                .metrics
                .auth_refused
                .with(AuthRefusal::UnknownDevice.label())
                .inc();
            let _ = refuse(&mut client, level, Refuse::Credentials).await;
            return;
        }
        let _counted = SessionCount::new(&self.parts.metrics.sessions);
        let mut session = Session::new(
            self,
            device.clone(),
            &connect,
            Policy::new(patient),
            &opened,
            self.parts.ingest.clone(),
        );
        if let Err(end) = session.resume(&opened).await {
            self.refused(GateRefusal::Internal);
            tracing::error!(device = %device, end = ?end, "stored subscriptions not restored; connection refused");
            sessions.closed(&device, opened.id);
            let _ = refuse(&mut client, level, Refuse::Busy).await;
            return;
        }
        let limits = packet::Limits {
            receive_maximum: MAX_UNACKED as u16,
            topic_alias_maximum: MAX_ALIASES,
            maximum_packet_size: u32::try_from(self.max_packet).unwrap_or(u32::MAX),
        };
        let connack = packet::connack_accepted(level, opened.present, limits);
        if !send(&mut client, &connack).await {
            sessions.closed(&device, opened.id);
            return;
        }
        match session
            .run(client, buf, &opened.kick, self.parts.rate)
            .await
        {
            End::Closed | End::Disconnected | End::Kicked | End::KeepAlive | End::Pipeline => {}
            End::Denied => {}
            End::Malformed(e) => {
                self.refused(GateRefusal::Malformed);
                tracing::info!(device = %device, error = %e, "malformed mqtt packet; connection closed");
            }
            End::Lost => {
                tracing::warn!(device = %device, "readings lost before they were durable; connection closed for the device to send them again");
            }
            End::Relay(e) => {
                tracing::warn!(device = %device, error = %e, "relay to rumqttd failed; connection closed");
            }
            End::Sessions(e) => {
                tracing::error!(device = %device, error = %e, "session not stored; connection closed");
            }
        }
    }

    /// Checks the CONNECT's identity and will; returns the device and its patient.
    async fn authenticate(
        &self,
        connect: &packet::Connect,
    ) -> Result<(DeviceId, PatientId), Refuse> {
        let refusal = |why: AuthRefusal| {
            self.parts.metrics.auth_refused.with(why.label()).inc();
            tracing::debug!(reason = why.label(), "mqtt connection refused");
            match why {
                AuthRefusal::BadClientId => Refuse::ClientId,
                AuthRefusal::OverCapacity => Refuse::NotAuthorized,
                _ => Refuse::Credentials,
            }
        };
        if connect.client_id.starts_with(RESERVED_PREFIX)
            || DeviceId::new(connect.client_id.as_str()).is_err()
        {
            return Err(refusal(AuthRefusal::BadClientId));
        }
        let user = connect.username.clone().unwrap_or_default();
        let Ok(pass) = String::from_utf8(connect.password.clone().unwrap_or_default()) else {
            return Err(refusal(AuthRefusal::BadPassword));
        };
        let client_id = connect.client_id.clone();
        let registry = self.parts.registry.clone();
        let verdict = {
            let Some(_kdf) = self.admission.kdf().await else {
                return Err(Refuse::Busy);
            };
            // Argon2 is deliberately slow: a blocking thread, a few at once.
            tokio::task::spawn_blocking(move || registry.authenticate(&client_id, &user, &pass))
                .await
        };
        let entry = match verdict {
            Ok(Ok(entry)) => entry,
            Ok(Err(why)) => return Err(refusal(why)),
            Err(e) => {
                tracing::warn!(error = %e, "authentication task failed");
                return Err(Refuse::Busy);
            }
        };
        if let Some(will) = &connect.will_topic
            && own_topic(will, &entry.patient).is_none()
        {
            self.refused(GateRefusal::WillTopic);
            self.parts.metrics.denied.with("publish").inc();
            tracing::warn!(device = %entry.id, "will message outside the device's patient; connection refused");
            return Err(Refuse::NotAuthorized);
        }
        Ok((entry.id, entry.patient))
    }
}

/// Reads one whole packet into `buf` and splits it off; `None` if the peer closed first.
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, PacketError> {
    loop {
        if let Some(n) = packet::frame(buf, max)? {
            return Ok(Some(buf.split_to(n)));
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Writes and flushes within [`WRITE_TIMEOUT`]; false if that failed.
pub(super) async fn send<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8]) -> bool {
    let write = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, level: u8, why: Refuse) -> bool {
    send(client, &packet::connack(level, why)).await
        && tokio::time::timeout(WRITE_TIMEOUT, client.shutdown())
            .await
            .is_ok()
}
