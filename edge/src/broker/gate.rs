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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
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
/// Distinct MQTT 5 topic aliases one connection may bind.
const MAX_ALIASES: usize = 16;
/// Unauthenticated connections from one address, at most.
const MAX_PENDING_PER_PEER: usize = 64;
/// A write to a device that does not complete in this time ends its session (a device that
/// stops reading must not pin a task and a socket for ever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
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
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    kdf: Semaphore,
    rate: Rate,
}

/// Publishes per second and burst allowed to one device.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Sustained publishes per second.
    pub per_s: u32,
    /// Publishes allowed at once after a quiet spell.
    pub burst: u32,
}

/// A slot among the unauthenticated connections, freed when dropped.
struct PendingSlot {
    _permit: OwnedSemaphorePermit,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
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

/// A token bucket: a device over its rate is not refused but slowed down, by not reading
/// from its socket until the bucket refills (TCP backpressure), so one device's flood cannot
/// crowd out the others' readings.
struct Bucket {
    tokens: f64,
    at: tokio::time::Instant,
    rate: Rate,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        Self {
            tokens: f64::from(rate.burst.max(1)),
            at: tokio::time::Instant::now(),
            rate,
        }
    }

    fn take(&mut self, n: u32) {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(self.rate.per_s);
        self.tokens = (self.tokens + refill).min(f64::from(self.rate.burst.max(1)));
        self.at = now;
        self.tokens -= f64::from(n);
    }

    /// How long to stop reading, if the bucket is overdrawn.
    fn wait(&self) -> Option<Duration> {
        (self.tokens < 0.0 && self.rate.per_s > 0)
            .then(|| Duration::from_secs_f64(-self.tokens / f64::from(self.rate.per_s)))
    }
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
        rate: Rate,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            metrics,
            inner,
            max_packet: max_payload.saturating_add(1024),
            connect_timeout,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            peers: Arc::new(Mutex::new(HashMap::new())),
            kdf: Semaphore::new(MAX_KDF),
            rate,
        })
    }

    /// A pending slot for a connection from `ip`, unless too many are pending overall or
    /// from that address.
    fn pending_slot(&self, ip: IpAddr) -> Option<PendingSlot> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = peers.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_PER_PEER {
            return None;
        }
        *n += 1;
        Some(PendingSlot {
            _permit: permit,
            peers: self.peers.clone(),
            ip,
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
            let Some(permit) = self.pending_slot(peer.ip()) else {
                self.refused(GateRefusal::Busy);
                continue;
            };
            // One deadline for the TLS handshake, the CONNECT and its authentication.
            let deadline = tokio::time::Instant::now() + self.connect_timeout;
            let _ = stream.set_nodelay(true);
            let gate = self.clone();
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = gate.connection(stream, peer, tls, permit, deadline) => {}
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
        permit: PendingSlot,
        deadline: tokio::time::Instant,
    ) {
        let Some(acceptor) = tls else {
            return self.session(stream, peer, permit, deadline).await;
        };
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => self.session(stream, peer, permit, deadline).await,
            Ok(Err(e)) => {
                self.refused(GateRefusal::TlsHandshake);
                tracing::debug!(%peer, error = %e, "mqtt tls handshake failed");
            }
            Err(_) => self.refused(GateRefusal::Timeout),
        }
    }

    /// One device connection, from CONNECT to close.
    async fn session<S>(
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
        let patient = match tokio::time::timeout_at(deadline, self.authenticate(&connect)).await {
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
        let _counted = SessionCount::new(&self.metrics.mqtt_sessions);
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
        let mut bucket = Bucket::new(self.rate);
        loop {
            let mut publishes = 0;
            loop {
                let n = match packet::frame(&buf, self.max_packet) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => return End::Malformed(e),
                };
                let p = buf.split_to(n);
                if packet::kind(&p) == packet::PUBLISH {
                    publishes += 1;
                }
                match policy.check(&p) {
                    Ok(Verdict::Relay) => out.extend_from_slice(&p),
                    Ok(Verdict::RelayInstead(bytes)) => out.extend_from_slice(&bytes),
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
            bucket.take(publishes);
            if let Some(pause) = bucket.wait() {
                self.metrics.mqtt_throttled.inc();
                tokio::time::sleep(pause).await;
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
    /// Relay these bytes in place of the packet.
    RelayInstead(Vec<u8>),
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
                    // A device has two topics: a few aliases are plenty.
                    if self.aliases.len() >= MAX_ALIASES {
                        return Err(PacketError::Unexpected("topic alias beyond the limit"));
                    }
                    self.aliases.push(alias);
                }
                Ok(Verdict::Relay)
            }
            packet::SUBSCRIBE => {
                let sub = packet::parse_subscribe(p, self.level)?;
                if sub.filters.iter().all(|f| own_filter(f, &self.patient)) {
                    Ok(Verdict::RelayInstead(packet::encode_subscribe(
                        self.level, &sub,
                    )))
                } else {
                    Ok(Verdict::RefuseSubscribe(packet::suback_refused(
                        self.level,
                        sub.id,
                        sub.filters.len(),
                    )))
                }
            }
            // A second CONNECT is a protocol violation (rumqttd would ignore it).
            packet::CONNECT => Err(PacketError::Unexpected("second CONNECT")),
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
                if !send(&mut client, &bytes).await {
                    return End::Closed;
                }
                if close {
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, client.shutdown()).await;
                    return End::Denied("publish");
                }
            }
            r = broker.read_buf(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => {
                        // rumqttd closed (keep-alive expired, session taken over, protocol
                        // error): pass on what it sent last.
                        let _ = send(&mut client, &buf).await;
                        let _ = tokio::time::timeout(WRITE_TIMEOUT, client.shutdown()).await;
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
                    if !send(&mut client, &chunk).await {
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

/// Writes and flushes within [`WRITE_TIMEOUT`]; false if that failed.
async fn send<W: AsyncWrite + Unpin>(client: &mut W, bytes: &[u8]) -> bool {
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

/// The topics below `patients/{patient}/` that a device may publish on.
pub const DEVICE_TOPICS: [&str; 2] = ["vitals", "status"];

/// Where a device of `patient` may publish: `patients/{patient}/vitals` or `…/status`. An
/// allow-list, not a prefix: every topic a device can create costs the broker memory.
pub fn own_topic(topic: &str, patient: &PatientId) -> bool {
    below_patient(topic, patient).is_some_and(|rest| DEVICE_TOPICS.contains(&rest))
}

/// A filter that can only match topics of `patient`: one of its topics, `+` or `#` below it.
pub fn own_filter(filter: &str, patient: &PatientId) -> bool {
    below_patient(filter, patient)
        .is_some_and(|rest| rest == "+" || rest == "#" || DEVICE_TOPICS.contains(&rest))
}

fn below_patient<'a>(topic: &'a str, patient: &PatientId) -> Option<&'a str> {
    topic
        .strip_prefix("patients/")?
        .strip_prefix(patient.as_str())?
        .strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_paces_to_the_rate() {
        let mut b = Bucket::new(Rate {
            per_s: 10,
            burst: 5,
        });
        b.take(5);
        assert_eq!(b.wait(), None, "the burst is free");
        b.take(5);
        let pause = b.wait().unwrap_or_default();
        // Five over the budget at 10/s: about half a second (less the instant that passed).
        assert!(
            pause > Duration::from_millis(450) && pause <= Duration::from_millis(500),
            "{pause:?}"
        );
    }

    #[test]
    fn topics_and_filters_are_confined_to_the_patient() {
        let p = PatientId::new("p1").unwrap();
        for ok in ["patients/p1/vitals", "patients/p1/status"] {
            assert!(own_topic(ok, &p), "{ok}");
        }
        for bad in [
            "patients/p1",
            "patients/p1/status/battery",
            "patients/p1/anything",
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
