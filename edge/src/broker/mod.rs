//! Device MQTT: the [`gate`] that every device connects to, and the embedded rumqttd 0.20
//! behind it for local subscribers.
//!
//! The gate authenticates devices, confines each to its patient's topics, terminates TLS and
//! answers their publishes itself, once the reading is durable. Only a device that subscribes
//! gets a relay to rumqttd on loopback (rumqttd admits only the gate); accepted readings are
//! published into rumqttd through an in-process link ([`fanout`]) for those subscribers.
//!
//! Components: [`admission`] (limits on connections on their way in), [`tls`], [`policy`]
//! (what a device may do; pure), [`sessions`] (takeover, persistent sessions), [`session`]
//! (one connection: read, acknowledge, backpressure), [`relay`] (to rumqttd). The wire format
//! is [`wardlink_shared::mqtt`] (sans-IO, fuzzed).
//!
//! rumqttd's hazards (see DESIGN.md) are handled here: every [`rumqttd::RouterConfig`] field is
//! set (its `Default` panics); the in-process link is drained and woken by [`fanout`].
//!
//! The worst hazard: a connection that passes authentication but is then turned away by the
//! router (an illegal client id, or the connection table full) leaves a dangling entry in the
//! server's will-handler map; when that client reconnects with the same id, the server thread
//! panics holding the map's lock, and from then on every new connection panics: the broker is
//! deaf. So no authenticated connection may ever be turned away by the router. The gate
//! admits only registered devices whose client id is their device id
//! (`[A-Za-z0-9_-]`, never `/ + # $`), and the registry holds at most `mqtt.max_devices`
//! devices, which is exactly the router's table size beside the ingest link. A device that
//! reconnects takes over its own slot (MQTT session takeover), so the table cannot overflow.

mod admission;
mod config;
mod devices;
mod fanout;
mod gate;
mod kdf;
mod metrics;
mod policy;
mod relay;
mod session;
mod sessions;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use config::MqttSection;
pub use devices::{
    AuthRefusal, DeviceEntry, DeviceRegistry, RegistryError, add_device, add_devices,
};
pub use fanout::Fanout;
pub use gate::{DENIED_LABELS, GateRefusal};
pub use metrics::BrokerMetrics;
pub use policy::{DEVICE_TOPICS, Topic, own_filter, own_topic};
use rand::RngExt as _;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
pub use session::MAX_UNACKED;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wardlink_shared::DeviceId;

use crate::ingest::IngestMetrics;
use crate::ingest::Ingested;

/// Client id prefix of the edge's own links. Device ids may not start with it.
pub const RESERVED_PREFIX: &str = "wardlink-";
const FANOUT_CLIENT_ID: &str = "wardlink-fanout";

/// The broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The in-process link was refused by the router.
    #[error("broker link: {0}")]
    Link(Box<rumqttd::local::LinkError>),
    /// The broker thread could not be spawned, or no loopback port was free.
    #[error("cannot start the broker: {0}")]
    Thread(#[from] std::io::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// rumqttd did not start listening on its loopback port.
    #[error("the broker is not listening on {0}")]
    NotListening(SocketAddr),
    /// The TLS listener's certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::GateTlsError),
}

impl From<rumqttd::local::LinkError> for BrokerError {
    fn from(e: rumqttd::local::LinkError) -> Self {
        BrokerError::Link(Box::new(e))
    }
}

/// A running broker: where it listens, and a signal that fires if rumqttd stops.
pub struct RunningBroker {
    /// Publishes accepted readings for local subscribers.
    pub fanout: Fanout,
    /// Fires when the broker's server threads have all exited (e.g. the port was taken).
    pub stopped: oneshot::Receiver<()>,
    /// The gate's listeners.
    pub listening: Listening,
}

/// Router settings. Each filter's commit log holds at most `SEGMENT_BYTES × SEGMENT_COUNT`:
/// what a local subscriber has not read by then is gone for it (it is a view, not the record;
/// the outbox is the store).
const SEGMENT_BYTES: usize = 1024 * 1024;
const SEGMENT_COUNT: usize = 4;
/// Connections the router keeps beside the devices: the fan-out link. The router's table size
/// must equal `max_devices` plus this; see the module comment.
const INTERNAL_CONNECTIONS: usize = 1;

fn router_config(mqtt: &MqttSection) -> RouterConfig {
    RouterConfig {
        max_connections: mqtt.max_devices + INTERNAL_CONNECTIONS,
        max_outgoing_packet_count: 200,
        max_segment_size: SEGMENT_BYTES,
        max_segment_count: SEGMENT_COUNT,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Settings of rumqttd's own (loopback) listeners: only the gate connects, presenting
/// `secret` as every device's password.
fn connection_settings(mqtt: &MqttSection, secret: Arc<str>) -> ConnectionSettings {
    let mut settings = ConnectionSettings {
        connection_timeout_ms: mqtt.connect_timeout_ms,
        max_payload_size: mqtt.max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    settings.set_auth_handler(move |client_id: String, _user: String, pass: String| {
        // The gate already refused reserved and malformed ids; checked again because a
        // refused id that reached the router would break it (see the module comment).
        let ok = !client_id.starts_with(RESERVED_PREFIX)
            && DeviceId::new(client_id.as_str()).is_ok()
            && same_secret(pass.as_bytes(), secret.as_bytes());
        async move { ok }
    });
    settings
}

/// Compares without an early exit, so timing does not reveal a prefix of the secret.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A free loopback port for one of rumqttd's listeners (rumqttd binds by itself and cannot
/// report a port-0 binding).
fn loopback_port() -> Result<SocketAddr, std::io::Error> {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Where the gate listens.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// `mqtt.listen`, as bound.
    pub plain: SocketAddr,
    /// `mqtt.listen_v5`, as bound.
    pub v5: Option<SocketAddr>,
    /// `mqtt.listen_tls`, as bound.
    pub tls: Option<SocketAddr>,
}

/// What the broker is started with.
pub struct BrokerParts<'a> {
    /// `[mqtt]`.
    pub mqtt: &'a MqttSection,
    /// The TLS listener's certificate, key and client CA, when it is configured.
    pub tls: Option<(&'a Path, &'a Path, &'a Path)>,
    /// The device registry.
    pub registry: Arc<DeviceRegistry>,
    /// Where the devices' persistent sessions are kept.
    pub sessions: &'a Path,
    /// Where accepted readings go.
    pub ingest: mpsc::Sender<Ingested>,
    /// The broker's metrics.
    pub metrics: Arc<BrokerMetrics>,
    /// Ingest's metrics (the gate decodes what devices publish).
    pub ingest_metrics: Arc<IngestMetrics>,
}

/// Starts rumqttd on loopback and the gate on the configured listeners; the gate stops at
/// `shutdown`.
pub async fn start(
    parts: BrokerParts<'_>,
    shutdown: CancellationToken,
) -> Result<RunningBroker, BrokerError> {
    let BrokerParts {
        mqtt,
        tls,
        registry,
        sessions,
        ingest,
        metrics,
        ingest_metrics,
    } = parts;
    let acceptor = tls
        .map(|(cert, key, ca)| tls::acceptor(cert, key, ca))
        .transpose()?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| BrokerError::Bind { addr, source })
    };
    let plain = bind(mqtt.listen).await?;
    let v5 = match mqtt.listen_v5 {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let secure = match (mqtt.listen_tls, acceptor) {
        (Some(a), Some(acceptor)) => Some((bind(a).await?, acceptor)),
        _ => None,
    };
    let listening = Listening {
        plain: plain.local_addr()?,
        v5: v5.as_ref().map(TcpListener::local_addr).transpose()?,
        tls: secure.as_ref().map(|(l, _)| l.local_addr()).transpose()?,
    };

    let secret: Arc<str> = {
        let bytes: [u8; 32] = rand::rng().random();
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into()
    };
    let inner = gate::Inner {
        v4: loopback_port()?,
        v5: loopback_port()?,
        secret: secret.clone(),
    };
    let server = |name: &str, listen: SocketAddr| ServerSettings {
        name: name.into(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: connection_settings(mqtt, secret.clone()),
    };
    let config = Config {
        id: 0,
        router: router_config(mqtt),
        v4: Some(HashMap::from([(
            "v4".to_owned(),
            server("mqtt-v4", inner.v4),
        )])),
        v5: Some(HashMap::from([(
            "v5".to_owned(),
            server("mqtt-v5", inner.v5),
        )])),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = rumqttd::Broker::new(config);
    let (link_tx, link_rx) = broker.link(FANOUT_CLIENT_ID)?;
    let (stopped_tx, stopped) = oneshot::channel();
    // rumqttd's servers run on threads of their own and have no shutdown; they end with the
    // process. `start` returns only if every server failed (e.g. its port was taken).
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "mqtt broker failed");
            }
            let _ = stopped_tx.send(());
        })?;
    for addr in [inner.v4, inner.v5] {
        if !wait_listening(addr, BROKER_START_TIMEOUT).await {
            return Err(BrokerError::NotListening(addr));
        }
    }

    let sessions = Arc::new(sessions::Sessions::load(sessions.to_path_buf()));
    let fanout = fanout::Fanout::start(
        link_tx,
        link_rx,
        sessions.clone(),
        metrics.clone(),
        shutdown.clone(),
    );
    let gate = gate::Gate::new(gate::Parts {
        registry,
        sessions,
        fanout: fanout.clone(),
        ingest,
        metrics,
        ingest_metrics,
        inner,
        max_payload: mqtt.max_payload_bytes,
        connect_timeout: Duration::from_millis(u64::from(mqtt.connect_timeout_ms)),
        rate: gate::Rate {
            per_s: mqtt.max_publish_rate,
            burst: mqtt.max_publish_burst,
        },
        max_age: i64::from(mqtt.max_reading_age_s) * 1000,
    });
    tokio::spawn(gate.clone().watch_registry(shutdown.clone()));
    tokio::spawn(gate.clone().serve(plain, None, shutdown.clone()));
    if let Some(listener) = v5 {
        tokio::spawn(gate.clone().serve(listener, None, shutdown.clone()));
    }
    if let Some((listener, acceptor)) = secure {
        tokio::spawn(gate.serve(listener, Some(acceptor), shutdown));
    }
    Ok(RunningBroker {
        fanout,
        stopped,
        listening,
    })
}

/// How long rumqttd may take to listen.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until `addr` accepts TCP connections (the broker binds on its own thread and does not
/// say when it is listening). Gives up after `timeout`.
pub async fn wait_listening(addr: SocketAddr, timeout: Duration) -> bool {
    let probe = if addr.ip().is_unspecified() {
        SocketAddr::new(
            if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            addr.port(),
        )
    } else {
        addr
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Duration::from_millis(2);
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(probe).await.is_ok() {
            return true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    false
}
