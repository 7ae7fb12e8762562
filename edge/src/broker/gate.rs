//! The gate: the edge's own MQTT listeners, in front of rumqttd.
//!
//! rumqttd 0.20 has no per-client access control and does not tell the in-process consumer
//! who published. So devices never reach it directly. The gate accepts every device
//! connection (plain or TLS), authenticates the CONNECT, binds the connection to the one
//! patient its device measures, and relays packets to rumqttd on a loopback port that only
//! admits the gate (a per-start secret replaces the device's password on the way).
//!
//! Every packet from a device is framed and checked before it is relayed:
//! - PUBLISH (and a CONNECT's will) only to the device's own patient: `patients/{own}` and
//!   below. Anything else closes the connection (MQTT 5 first gets DISCONNECT 0x87): 3.1.1
//!   has no other way to refuse a publish, and a device that writes into another patient's
//!   record is faulty or hostile.
//! - SUBSCRIBE only to filters inside `patients/{own}/`; otherwise the whole SUBSCRIBE is
//!   answered with failure codes by the gate and never reaches the broker.
//!
//! So a topic seen by the ingest link is proof of the publisher's patient binding, and no
//! device can read another patient's data. The gate also serves MQTT 3.1.1 and 5 on every
//! listener (it routes by the CONNECT's protocol level), runs TLS handshakes off the accept
//! loop with a deadline, and bounds both unauthenticated connections and concurrent Argon2
//! verifications, so a connection flood cannot starve devices that are already connected.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use wardlink_io::pem::{PemError, load_certs, load_key};
use wardlink_shared::{DeviceId, PatientId};

use super::packet::{self, LEVEL_V4, LEVEL_V5, PacketError, Refuse};
use super::{AuthRefusal, DeviceRegistry, RESERVED_PREFIX};
use crate::metrics::EdgeMetrics;

/// Connections that have not yet authenticated, at most. Past it, new connections are
/// closed at once (`refused{reason="busy"}`).
const MAX_PENDING: usize = 256;
/// Argon2 verifications running at once (each takes a core for tens of milliseconds).
const MAX_KDF: usize = 2;
/// First read buffer of a connection.
const BUFFER: usize = 4096;

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
    /// The broker behind the gate could not be reached.
    Internal,
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
        }
    }

    /// Every label.
    pub const LABELS: [&'static str; 7] = [
        "busy",
        "tls_handshake",
        "timeout",
        "malformed",
        "protocol",
        "will_topic",
        "internal",
    ];
}

/// What a device did that the gate refused: the label of `wardlink_edge_mqtt_denied_total`.
pub const DENIED_LABELS: [&str; 2] = ["publish", "subscribe"];

/// The TLS listener's credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GateTlsError {
    /// A PEM file is missing or malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the configuration.
    #[error("mqtt tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("mqtt tls client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The TLS acceptor of the MQTT listener: TLS 1.2 and 1.3 (bedside devices often lack 1.3),
/// the `ring` provider, the certificate and key in `cert`/`key`.
///
/// Devices authenticate with their password inside TLS. A client certificate is not asked
/// for; one sent anyway must chain to `client_ca` (the hub's CA), or the handshake fails.
pub fn acceptor(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsAcceptor, GateTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = wardlink_io::pem::load_roots(client_ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Where the gate relays to, and the secret that gets it in.
#[derive(Debug, Clone)]
pub struct Inner {
    /// rumqttd's MQTT 3.1.1 listener (loopback).
    pub v4: SocketAddr,
    /// rumqttd's MQTT 5 listener (loopback).
    pub v5: SocketAddr,
    /// Password the gate presents for every device; rumqttd admits nothing else.
    pub secret: Arc<str>,
}

/// Shared state of every listener.
pub struct Gate {
    registry: Arc<DeviceRegistry>,
    metrics: Arc<EdgeMetrics>,
    inner: Inner,
    max_packet: usize,
    connect_timeout: Duration,
    pending: Arc<Semaphore>,
    kdf: Semaphore,
}

impl Gate {
    /// A gate relaying to `inner`. `max_payload` is `mqtt.max_payload_bytes`; packets are
    /// allowed that plus room for the topic and properties.
    pub fn new(
        registry: Arc<DeviceRegistry>,
        metrics: Arc<EdgeMetrics>,
        inner: Inner,
        max_payload: usize,
        connect_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            metrics,
            inner,
            max_packet: max_payload.saturating_add(1024),
            connect_timeout,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            kdf: Semaphore::new(MAX_KDF),
        })
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
            let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                self.refused(GateRefusal::Busy);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = gate.connection(stream, peer, tls, permit) => {}
                }
            });
        }
    }

    fn refused(&self, why: GateRefusal) {
        self.metrics.mqtt_refused.with(why.label()).inc();
    }

    async fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        permit: OwnedSemaphorePermit,
    ) {
        let Some(acceptor) = tls else {
            return self.session(stream, peer, permit).await;
        };
        match tokio::time::timeout(self.connect_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.session(stream, peer, permit).await,
            Ok(Err(e)) => {
                self.refused(GateRefusal::TlsHandshake);
                tracing::debug!(%peer, error = %e, "mqtt tls handshake failed");
            }
            Err(_) => self.refused(GateRefusal::Timeout),
        }
    }

    /// One device connection, from CONNECT to close.
    async fn session<S>(&self, mut client: S, peer: SocketAddr, permit: OwnedSemaphorePermit)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(BUFFER);
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
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
        let inner = match connect.level {
            LEVEL_V4 => self.inner.v4,
            LEVEL_V5 => self.inner.v5,
            _ => {
                self.refused(GateRefusal::Protocol);
                let _ = refuse(&mut client, LEVEL_V4, Refuse::Protocol).await;
                return;
            }
        };
        let level = connect.level;
        let patient = match self.authenticate(&connect).await {
            Ok(p) => p,
            Err(why) => {
                let _ = refuse(&mut client, level, why).await;
                return;
            }
        };
        let mut broker = match TcpStream::connect(inner).await {
            Ok(s) => s,
            Err(e) => {
                self.refused(GateRefusal::Internal);
                tracing::error!(error = %e, "mqtt broker behind the gate unreachable");
                let _ = refuse(&mut client, level, Refuse::Busy).await;
                return;
            }
        };
        let _ = broker.set_nodelay(true);
        let forwarded = packet::rewrite_credentials(
            &first,
            &connect,
            &connect.client_id,
            self.inner.secret.as_bytes(),
        );
        if broker.write_all(&forwarded).await.is_err() {
            self.refused(GateRefusal::Internal);
            return;
        }
        drop(permit);

        let device = connect.client_id;
        self.metrics.mqtt_sessions.add(1);
        let (client_rx, client_tx) = tokio::io::split(client);
        let (broker_rx, broker_tx) = broker.into_split();
        let (inject_tx, inject_rx) = mpsc::channel(4);
        let policy = Policy {
            device: device.clone(),
            patient,
            level,
            aliases: Vec::new(),
        };
        let end = tokio::select! {
            end = self.inbound(client_rx, broker_tx, buf, policy, inject_tx) => end,
            end = outbound(broker_rx, client_tx, inject_rx) => end,
        };
        self.metrics.mqtt_sessions.add(-1);
        match end {
            End::Closed => {}
            End::Denied(what) => {
                tracing::warn!(
                    device = %device,
                    what,
                    "device acted outside its patient's topics; connection closed"
                );
            }
            End::Malformed(e) => {
                self.refused(GateRefusal::Malformed);
                tracing::info!(device = %device, error = %e, "malformed mqtt packet; connection closed");
            }
        }
    }

    /// Checks the CONNECT's identity and will; returns the device's patient.
    async fn authenticate(&self, connect: &packet::Connect) -> Result<PatientId, Refuse> {
        let refusal = |why: AuthRefusal| {
            self.metrics.auth_refused.with(why.label()).inc();
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
        let registry = self.registry.clone();
        let verdict = {
            let Ok(_kdf) = self.kdf.acquire().await else {
                return Err(Refuse::Busy);
            };
            // Argon2 is deliberately slow: a blocking thread, at most MAX_KDF at once.
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
            && !own_topic(will, &entry.patient)
        {
            self.refused(GateRefusal::WillTopic);
            self.metrics.mqtt_denied.with("publish").inc();
            tracing::warn!(device = %entry.id, "will message outside the device's patient; connection refused");
            return Err(Refuse::NotAuthorized);
        }
        Ok(entry.patient)
    }

    /// Device → broker: frames, checks and relays. Ends when the device closes or misbehaves.
    async fn inbound<R, W>(
        &self,
        mut client: R,
        mut broker: W,
        mut buf: BytesMut,
        mut policy: Policy,
        inject: mpsc::Sender<Inject>,
    ) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut out = BytesMut::with_capacity(BUFFER);
        loop {
            loop {
                let n = match packet::frame(&buf, self.max_packet) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return End::Malformed(e),
                };
                let p = buf.split_to(n);
                match policy.check(&p) {
                    Ok(Verdict::Relay) => out.extend_from_slice(&p),
                    Ok(Verdict::RefuseSubscribe(answer)) => {
                        self.metrics.mqtt_denied.with("subscribe").inc();
                        tracing::warn!(
                            device = %policy.device,
                            "subscription outside the device's patient refused"
                        );
                        if inject.send(Inject::Packet(answer)).await.is_err() {
                            return End::Closed;
                        }
                    }
                    Ok(Verdict::RefusePublish) => {
                        self.metrics.mqtt_denied.with("publish").inc();
                        // What came before the offending packet still goes through.
                        if !out.is_empty() && broker.write_all(&out).await.is_err() {
                            return End::Closed;
                        }
                        let _ = inject
                            .send(Inject::Close(packet::disconnect_not_authorized(
                                policy.level,
                            )))
                            .await;
                        // The outbound side sends it and closes; wait for that.
                        std::future::pending::<()>().await;
                    }
                    Err(e) => return End::Malformed(e),
                }
            }
            if !out.is_empty() {
                if broker.write_all(&out).await.is_err() {
                    return End::Closed;
                }
                out.clear();
            }
            match client.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(_) => {}
            }
        }
    }
}

/// How a session ended.
enum End {
    Closed,
    Denied(&'static str),
    Malformed(PacketError),
}

/// A packet the gate itself sends to the device.
enum Inject {
    /// Send and carry on.
    Packet(Vec<u8>),
    /// Send (possibly nothing) and close the connection.
    Close(Vec<u8>),
}

enum Verdict {
    Relay,
    RefuseSubscribe(Vec<u8>),
    RefusePublish,
}

/// What one connection may do.
struct Policy {
    device: String,
    patient: PatientId,
    level: u8,
    /// MQTT 5 topic aliases this connection has bound (always to its own topics).
    aliases: Vec<u16>,
}

impl Policy {
    fn check(&mut self, p: &[u8]) -> Result<Verdict, PacketError> {
        match packet::kind(p) {
            packet::PUBLISH => {
                let publish = packet::parse_publish(p, self.level)?;
                let allowed = if publish.topic.is_empty() {
                    // An alias alone stands for a topic this connection bound earlier.
                    publish.alias.is_some_and(|a| self.aliases.contains(&a))
                } else {
                    own_topic(publish.topic, &self.patient)
                };
                if !allowed {
                    return Ok(Verdict::RefusePublish);
                }
                if let Some(alias) = publish.alias
                    && !publish.topic.is_empty()
                    && !self.aliases.contains(&alias)
                {
                    self.aliases.push(alias);
                }
                Ok(Verdict::Relay)
            }
            packet::SUBSCRIBE => {
                let sub = packet::parse_subscribe(p, self.level)?;
                if sub.filters.iter().all(|f| own_filter(f, &self.patient)) {
                    Ok(Verdict::Relay)
                } else {
                    Ok(Verdict::RefuseSubscribe(packet::suback_refused(
                        self.level,
                        sub.id,
                        sub.filters.len(),
                    )))
                }
            }
            // A second CONNECT is a protocol violation; rumqttd closes the connection.
            _ => Ok(Verdict::Relay),
        }
    }
}

/// Broker → device: relays whole packets, so that what the gate injects never lands inside
/// one of the broker's.
async fn outbound<R, W>(mut broker: R, mut client: W, mut inject: mpsc::Receiver<Inject>) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(BUFFER);
    loop {
        tokio::select! {
            biased;
            i = inject.recv() => {
                let (bytes, close) = match i {
                    Some(Inject::Packet(b)) => (b, false),
                    Some(Inject::Close(b)) => (b, true),
                    None => return End::Closed,
                };
                if client.write_all(&bytes).await.is_err() || client.flush().await.is_err() {
                    return End::Closed;
                }
                if close {
                    let _ = client.shutdown().await;
                    return End::Denied("publish");
                }
            }
            r = broker.read_buf(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => {
                        // rumqttd closed (keep-alive expired, session taken over, protocol
                        // error): pass on what it sent last.
                        let _ = client.write_all(&buf).await;
                        let _ = client.shutdown().await;
                        return End::Closed;
                    }
                    Ok(_) => {}
                }
                let mut complete = 0;
                while let Ok(Some(n)) = packet::frame(&buf[complete..], usize::MAX) {
                    complete += n;
                }
                if complete > 0 {
                    let chunk = buf.split_to(complete);
                    if client.write_all(&chunk).await.is_err() || client.flush().await.is_err() {
                        return End::Closed;
                    }
                }
            }
        }
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

async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    level: u8,
    why: Refuse,
) -> std::io::Result<()> {
    client.write_all(&packet::connack(level, why)).await?;
    client.flush().await?;
    client.shutdown().await
}

/// `patients/{patient}` or below it: where a device of `patient` may publish.
pub fn own_topic(topic: &str, patient: &PatientId) -> bool {
    topic
        .strip_prefix("patients/")
        .and_then(|rest| rest.strip_prefix(patient.as_str()))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A filter that can only match topics of `patient` (wildcards only below the patient
/// level; no shared subscriptions).
pub fn own_filter(filter: &str, patient: &PatientId) -> bool {
    own_topic(filter, patient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_are_confined_to_the_patient() {
        let p = PatientId::new("p1").unwrap();
        for ok in [
            "patients/p1/vitals",
            "patients/p1",
            "patients/p1/status/battery",
        ] {
            assert!(own_topic(ok, &p), "{ok}");
        }
        for bad in [
            "patients/p2/vitals",
            "patients/p10/vitals",
            "patients/p1x",
            "patients/+/vitals",
            "patients/#",
            "#",
            "+/p1/vitals",
            "$share/g/patients/p1/vitals",
            "$SYS/broker",
            "/patients/p1/vitals",
            "",
        ] {
            assert!(!own_topic(bad, &p), "{bad}");
        }
        for ok in ["patients/p1/#", "patients/p1/+", "patients/p1/vitals"] {
            assert!(own_filter(ok, &p), "{ok}");
        }
        for bad in [
            "#",
            "patients/+/vitals",
            "patients/p1#",
            "patients/#",
            "+/+/+",
        ] {
            assert!(!own_filter(bad, &p), "{bad}");
        }
    }
}
